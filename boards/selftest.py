"""LIFSelfTest: a built-in self test around a LIFArray, the board top of `make synth`.

An on-chip LFSR makes the input currents (one UPDATE beat per cycle, groups in order,
timestep-major); every output beat (spikes and membranes) is folded into a 32-bit checksum.
After `timesteps` timesteps the checksum is compared with the one `expected_checksum`
computes from the golden model: green LED = pass, red = fail; the green LED blinks while
the test runs. On a board the clock comes from the FPGA's PLL at the target frequency
(iCE40 SB_PLL40, ECP5 EHXPLLL), so the board really runs at the clock the report is
constrained to.
"""

from __future__ import annotations

import numpy as np
from amaranth import (Cat, ClockDomain, ClockSignal, Elaboratable, Instance, Module, Mux,
                      ResetSignal, Signal)
from amaranth.lib import io

from ..golden.lif import LIFParams, lif_array
from ..rtl.lif_array import LIFArray, LIFOp

LFSR_TAPS = 0x80200003  # x^32 + x^22 + x^2 + x + 1, maximal length (Galois form)
LFSR_SEED = 0xACE1
CURRENT_BITS = 12       # currents are the LFSR's low bits as a signed 12-bit value


def lfsr_sequence(count: int, seed: int = LFSR_SEED) -> np.ndarray:
    """The LFSR states the hardware uses for its first `count` beats."""
    out = np.empty(count, dtype=np.int64)
    state = seed
    for k in range(count):
        out[k] = state
        state = (state >> 1) ^ (LFSR_TAPS if state & 1 else 0)
    return out


def lfsr_currents(n: int, timesteps: int) -> np.ndarray:
    """[T, n] currents of the self test (lanes = 1: one neuron per beat)."""
    raw = lfsr_sequence(n * timesteps) & ((1 << CURRENT_BITS) - 1)
    signed = np.where(raw >= 1 << (CURRENT_BITS - 1), raw - (1 << CURRENT_BITS), raw)
    return signed.reshape(timesteps, n)


def fold(checksum: int, word: int) -> int:
    """Checksum step: rotate left by one, xor the output word (32 bits)."""
    return (((checksum << 1) | (checksum >> 31)) & 0xFFFFFFFF) ^ (word & 0xFFFFFFFF)


def expected_checksum(n: int, timesteps: int, params: LIFParams) -> int:
    res = lif_array(lfsr_currents(n, timesteps), params, record_membranes=True)
    mask = (1 << params.width) - 1
    checksum = 0
    for t in range(timesteps):
        for i in range(n):
            word = int(res.spikes[t, i]) | ((int(res.membranes[t, i]) & mask) << 1)
            checksum = fold(checksum, word)
    return checksum


def ice40_pll_config(f_in_mhz: float, f_out_mhz: float) -> dict:
    """DIVR/DIVF/DIVQ/FILTER_RANGE for SB_PLL40 in SIMPLE feedback (as icepll computes):
    f_out = f_in * (DIVF+1) / ((DIVR+1) * 2^DIVQ), 10 <= f_pfd <= 133, 533 <= f_vco <= 1066."""
    best = None
    for divr in range(16):
        f_pfd = f_in_mhz / (divr + 1)
        if not 10 <= f_pfd <= 133:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533 <= f_vco <= 1066:
                continue
            for divq in range(1, 7):
                f = f_vco / (1 << divq)
                if best is None or abs(f - f_out_mhz) < abs(best["f_out_mhz"] - f_out_mhz):
                    filt = next(i for i, lim in enumerate((17, 26, 44, 66, 101), 1)
                                if f_pfd < lim) if f_pfd < 101 else 6
                    best = dict(DIVR=divr, DIVF=divf, DIVQ=divq, FILTER_RANGE=filt,
                                f_out_mhz=f)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting makes {f_out_mhz} MHz from {f_in_mhz} MHz")
    return best


class LIFSelfTest(Elaboratable):
    def __init__(self, *, n=64, width=16, leak_shift=4, theta=1500, reset="subtract",
                 timesteps=256, pll=None):
        self.params = LIFParams(theta=theta, leak_shift=leak_shift, width=width, reset=reset,
                                current_width=max(width, CURRENT_BITS))
        self.n, self.timesteps = n, timesteps
        self.pll = pll  # (f_in_mhz, f_out_mhz) on iCE40 / ECP5 boards; None: platform clock
        self.expected = expected_checksum(n, timesteps, self.params)
        self.done = Signal()
        self.passed = Signal()
        self.checksum = Signal(32)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.lif = lif = LIFArray(n=self.n, lanes=1, width=p.width,
                                          current_width=p.in_width, leak_shift=p.leak_shift,
                                          theta=p.theta, reset=p.reset)
        total = self.n * self.timesteps
        lfsr = Signal(32, init=LFSR_SEED)
        index = Signal(lif.index_width)
        sent = Signal(range(total + 1))
        received = Signal(range(total + 1))

        current = lfsr[:CURRENT_BITS].as_signed()
        m.d.comb += [lif.i.valid.eq(sent < total), lif.i.payload.op.eq(LIFOp.UPDATE),
                     lif.i.payload.index.eq(index), lif.i.payload.current[0].eq(current),
                     lif.o.ready.eq(1)]
        with m.If(lif.i.valid & lif.i.ready):
            m.d.sync += [lfsr.eq((lfsr >> 1) ^ Cat([lfsr[0]] * 32) & LFSR_TAPS),
                         index.eq(Mux(index == self.n - 1, 0, index + 1)), sent.eq(sent + 1)]
        with m.If(lif.o.valid):
            word = Cat(lif.o.payload.spikes[0], lif.o.payload.membrane[0].as_unsigned())
            m.d.sync += [self.checksum.eq(Cat(self.checksum[31], self.checksum[:31]) ^ word),
                         received.eq(received + 1)]
        m.d.comb += [self.done.eq(received == total),
                     self.passed.eq(self.done & (self.checksum == self.expected))]

        if platform is not None:
            self._board_io(m, platform)
        return m

    def _board_io(self, m, platform):
        if self.pll is not None:
            add_pll_domain(m, platform, *self.pll)
        leds = request_leds(platform, 2)
        m.submodules.led_pass, m.submodules.led_fail = leds
        blink = Signal(24)
        m.d.sync += blink.eq(blink + 1)
        m.d.comb += [leds[0].o.eq(self.passed | (~self.done & blink[-1])),
                     leds[1].o.eq(self.done & ~self.passed)]


def request_leds(platform, count):
    """`count` output buffers on the board's LEDs: iCEBreaker's green/red, else led 0, 1, ..."""
    names = {name for name, _ in platform.resources}
    pins = [("led_g", 0), ("led_r", 0)] if "led_g" in names else [("led", k) for k in range(8)]
    return [io.Buffer("o", platform.request(n, k, dir="-")) for n, k in pins[:count]]


def ecp5_pll_config(f_in_mhz: float, f_out_mhz: float) -> dict:
    """CLKI_DIV/CLKFB_DIV/CLKOP_DIV/CLKOP_CPHASE for EHXPLLL with CLKOP feedback, as Project
    Trellis' ecppll computes them: f_pfd = f_in / CLKI_DIV in [3.125, 400], f_vco = f_pfd *
    CLKFB_DIV * CLKOP_DIV in [400, 800], f_out = f_vco / CLKOP_DIV; ties go to the f_vco
    nearest 600; CLKOP_CPHASE is half an output period in VCO cycles (ecppll's 180 degrees)."""
    best = None
    for clki in range(1, 129):
        f_pfd = f_in_mhz / clki
        if not 3.125 <= f_pfd <= 400:
            continue
        for clkfb in range(1, 81):
            for clkop in range(1, 129):
                f_vco = f_pfd * clkfb * clkop
                if not 400 <= f_vco <= 800:
                    continue
                key = (abs(f_vco / clkop - f_out_mhz), abs(f_vco - 600))
                if best is None or key < best[0]:
                    best = (key, dict(CLKI_DIV=clki, CLKFB_DIV=clkfb, CLKOP_DIV=clkop,
                                      CLKOP_CPHASE=clkop // 2, f_out_mhz=f_vco / clkop))
    if best is None:
        raise ValueError(f"no ECP5 PLL setting makes {f_out_mhz} MHz from {f_in_mhz} MHz")
    return best[1]


def add_pll_domain(m, platform, f_in_mhz, f_out_mhz):
    """The `sync` domain from the FPGA's PLL at `f_out_mhz`; nextpnr derives the PLL output
    constraint from the oscillator pin's. Returns the PLL settings (with the exact `f_out_mhz`).

    iCE40 (SB_PLL40_PAD): held in a registered synchronous reset until the PLL locks and 2^8
    cycles more (BRAM contents are unusable for ~3 us after configuration). ECP5 (EHXPLLL): as
    amaranth's own ECP5 clocking, a reset-less domain reset through the global set/reset
    (SGSR) from a two-flop synchronizer of the lock signal, so reset costs no LUTs."""
    from amaranth.vendor import LatticeECP5Platform, SiliconBluePlatform
    clk_pin = platform.request(platform.default_clk, dir="-")
    pll_clk, locked = Signal(), Signal(name="pll_locked")
    if isinstance(platform, SiliconBluePlatform):
        cfg = ice40_pll_config(f_in_mhz, f_out_mhz)
        m.submodules.pll = Instance(
            "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=cfg["DIVR"], p_DIVF=cfg["DIVF"], p_DIVQ=cfg["DIVQ"],
            p_FILTER_RANGE=cfg["FILTER_RANGE"],
            i_PACKAGEPIN=clk_pin.io, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=pll_clk, o_LOCK=locked)
        m.domains.sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True)
        por_count = Signal(8)
        in_reset = Signal(init=1)  # a register: the reset net fans out to the whole design
        m.d.comb += [ClockSignal("sync").eq(pll_clk), ClockSignal("por").eq(pll_clk)]
        with m.If(~locked):
            m.d.por += por_count.eq(0)
        with m.Elif(~por_count.all()):
            m.d.por += por_count.eq(por_count + 1)
        m.d.por += in_reset.eq(~por_count.all())
        m.d.comb += ResetSignal("sync").eq(in_reset)
    elif isinstance(platform, LatticeECP5Platform):
        cfg = ecp5_pll_config(f_in_mhz, f_out_mhz)
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
        m.submodules.pll = Instance(
            "EHXPLLL", p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED",
            p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKOP_ENABLE="ENABLED", p_CLKI_DIV=cfg["CLKI_DIV"], p_CLKFB_DIV=cfg["CLKFB_DIV"],
            p_CLKOP_DIV=cfg["CLKOP_DIV"], p_CLKOP_CPHASE=cfg["CLKOP_CPHASE"], p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk_buf.i, i_CLKFB=pll_clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0,
            i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0,
            i_ENCLKOP=0, o_CLKOP=pll_clk, o_LOCK=locked)
        gsr0, gsr1 = Signal(), Signal()
        m.submodules.gsr = Instance("SGSR", i_CLK=pll_clk, i_GSR=gsr1)  # GSR low: reset
        m.submodules.gsr_sync0 = Instance("FD1S3AX", p_GSR="DISABLED", i_CK=pll_clk,
                                          i_D=locked, o_Q=gsr0)
        m.submodules.gsr_sync1 = Instance("FD1S3AX", p_GSR="DISABLED", i_CK=pll_clk,
                                          i_D=gsr0, o_Q=gsr1)
        m.domains.sync = ClockDomain("sync", reset_less=True)
        m.d.comb += ClockSignal("sync").eq(pll_clk)
    else:
        raise ValueError(f"no PLL wrapper for {type(platform).__name__}")
    return cfg
