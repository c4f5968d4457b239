"""CompactAccelerator: the accelerator for small FPGAs (iCE40UP5K), bit-exact with the golden
interpreter `golden.compile.run_program` and loader `golden.program_loader` for a compact
build (`AcceleratorConfig.compact`; docs/compact.md). Same host port as `Accelerator`
(`dev`: the HostLink device port), same program image, same protocol and driver.

Area first: the control (LOAD's checks, op sequencing, counters) is firmware
(rtl/compact_firmware.py) on a MicroEngine (rtl/microcode.py); weights and biases are read in
place from the program memory (SPRAM on iCE40), so nothing is copied at LOAD; the datapath
handles one neuron a cycle:

  scan     a source's words of one (token, t) -> an event list (channel, plane) of its set
           bits, in one of two banks (the next step is scanned while this one is walked)
  walk     per unit: every event's weight byte (program memory, one a cycle) x 2^plane
           (UINT) or -1 (the -1 plane of signed spikes), summed; the sum shifted by
           acc_shift a bit a cycle (S); `repeat` neurons get sum + bias (a bias cache filled
           per row), range-checked, into a LIFArray (one lane); READOUT sums into per-output
           registers instead. A unit takes max(events, |shift| + 2, repeat) cycles, so the
           post stages never stall.
  collect  LIF spikes (or ENCODE's bits) into 16-channel words of the activation memory
  encode   an input element a cycle per destination plane, range-checked
  crc      CRC-32 of the image, a bit a cycle
Activation word `T·w + t` (w: the golden loader's buffer word with 16 channels a word) holds
one plane of 16 channels at timestep t.
"""

from __future__ import annotations

import enum

from amaranth import (Cat, ClockSignal, Const, Instance, Module, Mux, ResetInserter, Signal,
                      signed, unsigned)
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from ..golden.compile import BufKind
from ..golden.host_link import Space
from ..golden.program_loader import COMPACT_ACT_LANES, AcceleratorConfig
from ..golden.synapse import plane_sum_width
from .host_link import device_signature
from .lif_array import LIFArray, LIFOp
from .microcode import MicroEngine

A = COMPACT_ACT_LANES
# Memories whose ports never read and write one address in the same cycle (every reader and
# writer of one works in its own phase or on another buffer / bank), so what a read returns
# on such a collision does not matter. Amaranth's read ports promise the old data; iCE40
# block RAMs leave the collision undefined, so Yosys would emulate it with a register and a
# comparator per data bit. `no_rw_check` says so for Verilog flows; for Amaranth's netlists the
# board flow marks these memories' read ports collision-undefined (`collision_free_script`).
NO_RW = {"no_rw_check": 1}
COLLISION_FREE = ("act", "events", "bias", "sums", "in_mem", "out_mem", "hostregs", "rf",
                  "membranes", "frame_buf")   # frame_buf: the host link's (filled, then read)
HOST_WORDS = 11         # the register map in 32-bit words (load_info: words 8..10)
LAYERS_AT = 32          # LAYERS: op k's cycles at half-words LAYERS_AT + 2k, + 1


def collision_free_script(names=COLLISION_FREE) -> str:
    """Yosys commands (after reading the design) marking the read ports of the memories
    `names` as undefined on a read-write collision (each has one write port)."""
    return "; ".join(f"setparam -set COLLISION_X_MASK 1 t:$memrd_v2 r:MEMID=\\\\{name} %i"
                     for name in names)
MAX_LEFT_SHIFT = 7      # acc_shift range the walk supports: [-31, 7] (as the Accelerator)
SPRAM_WORDS = 16384     # one iCE40 SB_SPRAM256KA: 16K x 16 bits


class PortIn(enum.IntEnum):
    """IN ports of the firmware (rtl/compact_firmware.py)."""
    CMD = 0             # bit 4: a command is pending, bits 0..3: its code
    LOAD_SIZE = 1
    CRC = 2
    STATUS = 3          # Status bits
    SCAN_COUNT = 4      # events of the last finished scan
    SATS = 5            # LIF saturations since LIF_CLEAR
    CYCLES = 6          # the run's cycles so far
    SUM_LO = 7          # readout sum at SUM_ADDR: bits 0..31
    SUM_HI = 8          # ... bits 32.. (sign-extended)
    CODE = 9            # the code of the failing check (the engine's `code`)


class PortOut(enum.IntEnum):
    """OUT ports of the firmware."""
    CMD_DONE = 0        # answer the pending command with error code `value` (0: ACK)
    STATE = 1
    LOADED = 2
    INPUT_SIZE = 3
    OUTPUT_SIZE = 4
    LAYERS_SIZE = 5
    REG0 = 6            # .. REG0 + 10: word k of the register map (host_link.REGISTERS)
    REASON = 18         # the loader's reason code (a port for tests)
    RUN = 19            # 1: a run starts (cycle counter cleared, counting, abort enabled); 0: ends
    OP_START = 20       # op cycle counter cleared
    LAYERS_WR = 21      # LAYERS[value] <- op cycles
    SOFT_RESET = 22
    CRC_START = 23      # value: bytes
    CLEAR_INPUT = 24
    LIF_LEAK = 25       # bit 8: leak on, bits 0..7: shift
    LIF_THETA = 26      # writes the LIF configuration (theta and the leak above)
    LIF_CLEAR = 27      # clears the LIF's saturation count
    SCAN_ADDR = 28      # activation address of the first word
    SCAN_GO = 29        # value: words | planes << 16 | bank << 24
    W_ROW = 30          # program-memory byte address of W[0, 0]
    W_NIN = 31          # row stride (bytes)
    W_UNITS = 32        # n_out | repeat << 16
    W_MODE = 33         # WalkMode bits
    W_SHIFT = 34        # acc_shift (signed)
    W_PERIOD = 35       # cycles a unit takes at least: max(|shift|, repeat) + 1
    W_MASK = 36         # current range: x fits when x & mask is 0 or mask
    COL_ADDR = 37       # activation address of the collector's first word
    W_GO = 38           # value: bank (the walk of one (token, t))
    W_LOAD = 39         # value: v0 (a LIF LOAD pass over every neuron)
    W_BIAS = 40         # value: byte address of a bias row (the bias cache fill)
    E_IN = 41           # input-memory element of (token, t, channel 0)
    E_GO = 42           # value: channels | planes << 16 | kind << 24
    E_HI = 43           # the destination's largest value (its smallest: 0, or -1 signed)
    SUM_ADDR = 44
    OUT_ADDR = 45
    OUT_BYTE = 46       # OUTPUT[OUT_ADDR++] <- value
    RAN = 47            # LAYERS reads return the counts (a RUN since the LOAD)
    W_NEURONS = 48      # neurons of the op (bias fill, LOAD pass, the walk's last neuron)


class Status(enum.IntFlag):
    CRC_BUSY = 1
    SCAN_BUSY = 2
    WALK_BUSY = 4
    ENC_BUSY = 8
    CLEAR_BUSY = 16
    ENC_ERROR = 32      # an input element out of its buffer's range
    WALK_ERROR = 64     # a LIF current out of the op's current width
    LOADED = 128
    FILL_BUSY = 256


class WalkMode(enum.IntFlag):
    # the two low bits are the source's BufKind (SPIKES 0, SIGNED_SPIKES 1, UINT 2)
    SIGNED = 1          # source plane 1 is the -1 plane
    UINT = 2            # source planes are bits of an unsigned integer (weight x 2^plane)
    READOUT = 4
    BIAS = 8
    FIRST = 16          # the LIF's first timestep (FIRST: from v = 0)
    SUM_INIT = 32       # READOUT: the first step (sums start at this step's values)
    SPIKES2 = 64        # the destination has two planes (signed spikes)


def compact_widths(cfg: AcceleratorConfig) -> dict:
    """Datapath widths of a compact build: the exact sum of a unit, after the shift, plus the
    bias, and a readout total over T x tokens."""
    acc = plane_sum_width(cfg.max_in, cfg.weight_width, cfg.max_planes)
    shifted = acc + MAX_LEFT_SHIFT
    x = max(shifted, cfg.bias_width) + 1
    total = x + bits_for(cfg.timesteps * cfg.max_tokens)
    return {"acc": acc, "shifted": shifted, "x": x, "total": max(total, 33)}


class ProgramMemory(wiring.Component):
    """16-bit words, one port: a read (`re`) answers on `rdata` the next cycle; a write
    (`we`) stores the bytes of `wmask`. SB_SPRAM256KA on iCE40 UltraPlus, else lib.memory."""

    def __init__(self, words: int):
        self.words = words
        super().__init__({"addr": In(range(words)), "wdata": In(16), "wmask": In(2),
                          "we": In(1), "re": In(1), "rdata": Out(16)})

    def elaborate(self, platform):
        m = Module()
        device = getattr(platform, "device", "") or ""
        if device.startswith("iCE40UP"):
            banks = -(-self.words // SPRAM_WORDS)
            outs = [Signal(16, name=f"spram{k}_out") for k in range(banks)]
            sel = Signal(range(max(banks, 2)))
            m.d.sync += sel.eq(self.addr >> 14)
            for k in range(banks):
                here = (self.addr >> 14) == k
                m.submodules[f"spram{k}"] = Instance(
                    "SB_SPRAM256KA", i_ADDRESS=self.addr[:14], i_DATAIN=self.wdata,
                    i_MASKWREN=Cat(self.wmask[0], self.wmask[0], self.wmask[1], self.wmask[1]),
                    i_WREN=self.we & here, i_CHIPSELECT=(self.we | self.re) & here,
                    i_CLOCK=ClockSignal("sync"), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=outs[k])
            m.d.comb += self.rdata.eq(Mux(sel < banks, Cat(*outs).word_select(sel, 16), 0)
                                      if banks > 1 else outs[0])
        else:
            m.submodules.mem = mem = Memory(shape=16, depth=self.words, init=[], attrs=NO_RW)
            rd, wr = mem.read_port(), mem.write_port(granularity=8)
            m.d.comb += [rd.addr.eq(self.addr), rd.en.eq(self.re), self.rdata.eq(rd.data),
                         wr.addr.eq(self.addr), wr.data.eq(self.wdata),
                         wr.en.eq(Mux(self.we, self.wmask, 0))]
        return m


def _lowest(m, mask, name):
    """Index of the lowest set bit of `mask` (0 when none)."""
    low = Signal(range(len(mask)), name=name)
    for k in reversed(range(len(mask))):
        with m.If(mask[k]):
            m.d.comb += low.eq(k)
    return low


class CompactAccelerator(wiring.Component):
    def __init__(self, cfg: AcceleratorConfig):
        if not isinstance(cfg, AcceleratorConfig) or not cfg.compact:
            raise ValueError("CompactAccelerator needs a compact AcceleratorConfig "
                             "(AcceleratorConfig.for_programs(..., compact=True))")
        from .compact_firmware import firmware
        self.cfg = cfg
        T = cfg.timesteps
        self.input_bytes = 2 * cfg.input_elements
        self.output_bytes = 4 * cfg.max_readout
        self.program_words = -(-cfg.program_bytes // 2)
        self.addr_width = max(1, ceil_log2(max(cfg.program_bytes, self.input_bytes,
                                               self.output_bytes)))
        self.widths = compact_widths(cfg)
        self.rom, self.labels = firmware(cfg)
        self.engine = MicroEngine(self.rom, fail_vector=self.labels["fail"],
                                  trap_vector=self.labels["abort"],
                                  addr_width=max(1, ceil_log2(cfg.program_bytes + 1)))
        # (its input carries the currents and, on a LOAD pass, v0: as wide as both)
        self.lif = LIFArray(n=cfg.max_neurons, lanes=1, width=cfg.width,
                            current_width=max(cfg.width, cfg.current_width), theta=1,
                            reset=cfg.reset, signed_spikes=cfg.signed_spikes, compact=True)
        # neurons of a LINEAR or outputs of a READOUT: the bias cache, the walk's counters
        self.units = max(cfg.max_neurons, cfg.max_readout)
        self.act_depth = cfg.act_words * T
        self.ev_depth = 1 << ceil_log2(max(2, cfg.events))
        # the activation memory (a handle for tests: `act_mem.data[k]` in a testbench)
        self.act_mem = Memory(shape=A, depth=self.act_depth, init=[], attrs=NO_RW)
        super().__init__({
            "dev": In(device_signature(self.addr_width)),
            "abort": In(1),
            "busy": Out(1),
            "reason": Out(8),           # the loader's last refusal reason (golden Reason)
        })

    def elaborate(self, platform):
        m = Module()
        cfg, T = self.cfg, self.cfg.timesteps
        dev, W = self.dev, self.widths
        soft_reset = Signal()
        m.submodules.engine = eng = self.engine
        m.submodules.lif = ResetInserter(soft_reset)(self.lif)
        lif = self.lif

        # ------------------------------------------------------------------ memories
        m.submodules.pm = pm = ProgramMemory(self.program_words)
        m.submodules.in_mem = in_mem = Memory(attrs=NO_RW, shape=16, depth=cfg.input_elements, init=[])
        m.submodules.out_mem = out_mem = Memory(attrs=NO_RW, shape=8, depth=self.output_bytes, init=[])
        # The register map the host link replies from and the LAYERS counts, as 16-bit
        # halves in one block RAM (256 deep: a memory of a few words would be flip-flops).
        # Register word k: halves 2k, 2k + 1; op k's cycles: LAYERS_AT + 2k, + 1.
        m.submodules.hostregs = hostregs = Memory(
            attrs=NO_RW, shape=16, depth=max(256, LAYERS_AT + 2 * cfg.max_ops), init=[])
        m.submodules.act = act = self.act_mem
        ev_ch = max(1, ceil_log2(cfg.max_in))
        ev_layout = data.StructLayout({"ch": ev_ch, "plane": 4})
        m.submodules.events = ev_mem = Memory(attrs=NO_RW, shape=ev_layout, depth=2 * self.ev_depth,
                                              init=[])
        m.submodules.bias = bias_mem = Memory(attrs=NO_RW, shape=signed(cfg.bias_width),
                                              depth=self.units, init=[])
        m.submodules.sums = sum_mem = Memory(attrs=NO_RW, shape=signed(W["total"]), depth=cfg.max_readout,
                                             init=[])
        in_rd, in_wr = in_mem.read_port(), in_mem.write_port(granularity=8)
        out_rd, out_wr = out_mem.read_port(), out_mem.write_port()
        regs_rd, regs_wr = hostregs.read_port(), hostregs.write_port()
        act_rd, act_wr = act.read_port(), act.write_port()
        ev_rd, ev_wr = ev_mem.read_port(), ev_mem.write_port()
        bias_rd, bias_wr = bias_mem.read_port(), bias_mem.write_port()
        sum_rd, sum_wr = sum_mem.read_port(), sum_mem.write_port()
        for port in (in_rd, act_rd, ev_rd, bias_rd, sum_rd):
            m.d.comb += port.en.eq(0)      # enabled where they read: they hold otherwise

        # ------------------------------------------------------------- IO registers
        io_we, io_addr, io_wdata = eng.io_we, eng.io_addr, eng.io_wdata
        io_rdata = Signal(32)
        m.d.comb += eng.io_rdata.eq(io_rdata)

        def reg(port, shape, name=None, init=0):
            """A register the firmware writes with OUT `port`."""
            r = Signal(shape, name=name or PortOut(port).name.lower(), init=init)
            with m.If(io_we & (io_addr == port)):
                m.d.sync += r.eq(io_wdata)
            return r

        def strobe(port):
            """One cycle high on OUT `port`."""
            return io_we & (io_addr == port)

        size = unsigned(self.addr_width + 1)
        state = Signal(2)
        loaded = Signal()
        with m.If(strobe(PortOut.STATE)):
            m.d.sync += state.eq(io_wdata)
        with m.If(strobe(PortOut.LOADED)):
            m.d.sync += loaded.eq(io_wdata)
        with m.If(dev.program_written):        # a new image: unloaded until the next LOAD
            m.d.sync += [loaded.eq(0), state.eq(0)]
        m.d.comb += [dev.state.eq(state), dev.program_size.eq(cfg.program_bytes),
                     dev.input_size.eq(reg(PortOut.INPUT_SIZE, size)),
                     dev.output_size.eq(reg(PortOut.OUTPUT_SIZE, size)),
                     dev.layers_size.eq(reg(PortOut.LAYERS_SIZE, size)),
                     self.reason.eq(reg(PortOut.REASON, 8))]
        ran = reg(PortOut.RAN, 1)

        # commands: latched until the firmware answers
        cmd_pending, cmd_code = Signal(), Signal(4)
        with m.If(dev.cmd_start):
            m.d.sync += [cmd_pending.eq(1), cmd_code.eq(dev.cmd)]
        m.d.sync += [dev.cmd_done.eq(strobe(PortOut.CMD_DONE)), dev.cmd_error.eq(io_wdata)]
        with m.If(strobe(PortOut.CMD_DONE)):
            m.d.sync += cmd_pending.eq(0)
        m.d.comb += self.busy.eq(cmd_pending)

        # run / op cycle counters; abort (the port or a RESET frame) while running
        running, cycles, op_cycles = Signal(), Signal(32), Signal(32)
        with m.If(strobe(PortOut.RUN)):
            m.d.sync += running.eq(io_wdata[0])
            with m.If(io_wdata[0]):
                m.d.sync += cycles.eq(0)
        with m.Elif(running):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(strobe(PortOut.OP_START)):
            m.d.sync += op_cycles.eq(0)
        with m.Elif(running):
            m.d.sync += op_cycles.eq(op_cycles + 1)
        # abort: the port, or the host link's (held high until the RUN answers): the trap
        # fires once per run
        abort_taken = Signal()
        with m.If(eng.trap):
            m.d.sync += abort_taken.eq(1)
        with m.If(strobe(PortOut.RUN)):
            m.d.sync += abort_taken.eq(0)
        m.d.comb += [eng.trap.eq(running & ~abort_taken & (self.abort | dev.abort)),
                     soft_reset.eq(strobe(PortOut.SOFT_RESET))]
        # A register word (OUT REG0 + k) or an op's cycles (OUT LAYERS_WR, value: the op) is
        # written as its low half, then the next cycle its high half.
        reg_out = io_we & (io_addr >= PortOut.REG0) & (io_addr < PortOut.REG0 + HOST_WORDS)
        half_hi, half_addr, half_data = Signal(), Signal(8), Signal(16)
        m.d.sync += half_hi.eq(reg_out | strobe(PortOut.LAYERS_WR))
        with m.If(reg_out | strobe(PortOut.LAYERS_WR)):
            low_addr = Mux(reg_out, (io_addr - PortOut.REG0) << 1,
                           LAYERS_AT + (io_wdata[:7] << 1))
            value = Mux(reg_out, io_wdata, op_cycles)
            m.d.comb += [regs_wr.addr.eq(low_addr), regs_wr.data.eq(value[:16]),
                         regs_wr.en.eq(1)]
            m.d.sync += [half_addr.eq(low_addr + 1), half_data.eq(value[16:])]
        with m.Elif(half_hi):
            m.d.comb += [regs_wr.addr.eq(half_addr), regs_wr.data.eq(half_data),
                         regs_wr.en.eq(1)]

        # -------------------------------------------- program memory: one port, four users
        # (never two at once: the host between commands, the engine's loads, CRC, walk)
        pm_addr, pm_re = Signal(range(self.program_words)), Signal()
        m.d.comb += [pm.addr.eq(pm_addr), pm.re.eq(pm_re)]

        def pm_read(byte_addr):
            m.d.comb += [pm_addr.eq(byte_addr >> 1), pm_re.eq(1)]

        def pm_byte(sel):
            return Mux(sel, pm.rdata[8:], pm.rdata[:8])

        # the engine's byte loads
        eng_sel, eng_valid = Signal(), Signal()
        m.d.sync += [eng_valid.eq(eng.rd_en), eng_sel.eq(eng.rd_addr[0])]
        m.d.comb += [eng.rd_data.eq(pm_byte(eng_sel)), eng.rd_valid.eq(eng_valid)]

        # ------------------------------------------------------------------ host access
        space = dev.mem_space
        with m.If(~cmd_pending):
            m.d.comb += [pm_addr.eq(dev.mem_addr >> 1), pm_re.eq(dev.mem_re),
                         pm.wdata.eq(dev.mem_wdata.replicate(2)),
                         pm.wmask.eq(Cat(~dev.mem_addr[0], dev.mem_addr[0])),
                         pm.we.eq(dev.mem_we & (space == Space.PROGRAM))]
        with m.Elif(eng.rd_en):
            pm_read(eng.rd_addr)
        clearing = Signal()
        clear_addr = Signal(range(cfg.input_elements))
        m.d.comb += [in_wr.addr.eq(dev.mem_addr >> 1), in_wr.data.eq(dev.mem_wdata.replicate(2)),
                     in_wr.en.eq(Mux(dev.mem_we & (space == Space.INPUT),
                                     Cat(~dev.mem_addr[0], dev.mem_addr[0]), 0))]
        with m.If(strobe(PortOut.CLEAR_INPUT)):
            m.d.sync += [clearing.eq(1), clear_addr.eq(0)]
        with m.If(clearing):
            m.d.comb += [in_wr.addr.eq(clear_addr), in_wr.data.eq(0), in_wr.en.eq(0b11)]
            m.d.sync += clear_addr.eq(clear_addr + 1)
            with m.If(clear_addr == cfg.input_elements - 1):
                m.d.sync += clearing.eq(0)
        out_addr = Signal(range(self.output_bytes + 1))
        with m.If(strobe(PortOut.OUT_ADDR)):
            m.d.sync += out_addr.eq(io_wdata)
        with m.If(strobe(PortOut.OUT_BYTE)):
            m.d.sync += out_addr.eq(out_addr + 1)
        m.d.comb += [out_wr.addr.eq(out_addr), out_wr.data.eq(io_wdata),
                     out_wr.en.eq(strobe(PortOut.OUT_BYTE)),
                     out_rd.addr.eq(dev.mem_addr)]
        # the host registers' read port: the register byte at reg_addr (its half-word, the
        # byte chosen a cycle later), or a LAYERS byte on a host read
        reg_byte = Signal()
        m.d.sync += reg_byte.eq(dev.reg_addr[0])
        m.d.comb += [regs_rd.addr.eq(Mux(dev.mem_re, LAYERS_AT + (dev.mem_addr >> 1),
                                         dev.reg_addr >> 1)),
                     dev.reg_data.eq(regs_rd.data.word_select(reg_byte, 8))]
        read_pending, read_space, read_byte = Signal(), Signal(2), Signal(2)
        m.d.sync += [read_pending.eq(dev.mem_re), dev.mem_rvalid.eq(read_pending)]
        with m.If(dev.mem_re):
            m.d.sync += [read_space.eq(space), read_byte.eq(dev.mem_addr[:2])]
            m.d.comb += [in_rd.addr.eq(dev.mem_addr >> 1), in_rd.en.eq(1)]
        with m.If(read_pending):
            with m.Switch(read_space):
                with m.Case(Space.PROGRAM):
                    m.d.sync += dev.mem_rdata.eq(pm_byte(read_byte[0]))
                with m.Case(Space.INPUT):
                    m.d.sync += dev.mem_rdata.eq(in_rd.data.word_select(read_byte[0], 8))
                with m.Case(Space.OUTPUT):
                    m.d.sync += dev.mem_rdata.eq(out_rd.data)
                with m.Case(Space.LAYERS):    # little-endian u32 per op, 0 before a RUN
                    m.d.sync += dev.mem_rdata.eq(
                        Mux(ran, regs_rd.data.word_select(read_byte[0], 8), 0))

        # ---------------------------------------------------------------------- CRC-32
        # zlib's CRC of `size` bytes, the header's CRC field (bytes 20..23) counted as 0:
        # a word fetched, then its bytes a bit a cycle (reflected, polynomial 0xEDB88320)
        crc, crc_busy = Signal(32), Signal()
        c_addr = Signal(range(cfg.program_bytes + 2))
        c_left = Signal(range(cfg.program_bytes + 2))
        c_bits, c_bit = Signal(8), Signal(3)
        c_phase = Signal(2)                      # 0: fetch, 1: data arrives, 2: shifting
        with m.If(strobe(PortOut.CRC_START)):
            m.d.sync += [crc.eq(0xFFFFFFFF), c_addr.eq(0), c_phase.eq(0),
                         c_left.eq(io_wdata), crc_busy.eq(io_wdata != 0)]
        with m.Elif(crc_busy):
            with m.Switch(c_phase):
                with m.Case(0):
                    pm_read(c_addr)
                    m.d.sync += c_phase.eq(1)
                with m.Case(1):
                    in_field = (c_addr >= 20) & (c_addr < 24)
                    m.d.sync += [c_bits.eq(Mux(in_field, 0, pm_byte(c_addr[0]))), c_bit.eq(0),
                                 c_phase.eq(2)]
                with m.Case(2):
                    feedback = crc[0] ^ c_bits[0]
                    m.d.sync += [crc.eq((crc >> 1) ^ Mux(feedback, 0xEDB88320, 0)),
                                 c_bits.eq(c_bits >> 1), c_bit.eq(c_bit + 1)]
                    with m.If(c_bit == 7):
                        m.d.sync += [c_addr.eq(c_addr + 1), c_left.eq(c_left - 1),
                                     c_phase.eq(0)]
                        with m.If(c_left == 1):
                            m.d.sync += crc_busy.eq(0)

        # -------------------------------------------------------------------- scan
        # the words of one (token, t) of a source, consecutive (group, plane) pairs T apart
        scan_addr = reg(PortOut.SCAN_ADDR, range(self.act_depth + 1))
        s_busy, s_phase = Signal(), Signal(2)    # phase 0: read, 1: data, 2: pop bits
        s_addr = Signal(range(self.act_depth + T + 1))
        s_left = Signal(16)
        s_planes, s_p = Signal(5), Signal(5)
        s_ch = Signal(ev_ch + 5)                 # channel of the word's bit 0
        s_bits = Signal(A)
        s_bank = Signal()
        s_count = Signal(range(self.ev_depth + 1))
        scan_count = Signal.like(s_count)
        bank_count = [Signal.like(s_count, name=f"bank{b}_count") for b in range(2)]

        def s_next_word(count):
            """The word is done (`count` events so far): the next, or the end of the scan."""
            with m.If(s_p == s_planes - 1):
                m.d.sync += [s_p.eq(0), s_ch.eq(s_ch + A)]
            with m.Else():
                m.d.sync += s_p.eq(s_p + 1)
            with m.If(s_left == 0):
                m.d.sync += [s_busy.eq(0), scan_count.eq(count)]
                for b in range(2):
                    with m.If(s_bank == b):
                        m.d.sync += bank_count[b].eq(count)
            with m.Else():
                m.d.sync += s_phase.eq(0)

        with m.If(strobe(PortOut.SCAN_GO)):
            m.d.sync += [s_busy.eq(io_wdata[:16] != 0), s_addr.eq(scan_addr),
                         s_left.eq(io_wdata[:16]), s_planes.eq(io_wdata[16:21]), s_p.eq(0),
                         s_ch.eq(0), s_bank.eq(io_wdata[24]), s_count.eq(0), s_phase.eq(0)]
            for b in range(2):
                with m.If((io_wdata[24] == b) & (io_wdata[:16] == 0)):
                    m.d.sync += [bank_count[b].eq(0), scan_count.eq(0)]
        with m.Elif(s_busy):
            with m.Switch(s_phase):
                with m.Case(0):
                    m.d.comb += [act_rd.addr.eq(s_addr), act_rd.en.eq(1)]
                    m.d.sync += [s_addr.eq(s_addr + T), s_left.eq(s_left - 1), s_phase.eq(1)]
                with m.Case(1):
                    m.d.sync += s_bits.eq(act_rd.data)
                    with m.If(act_rd.data == 0):
                        s_next_word(s_count)
                    with m.Else():
                        m.d.sync += s_phase.eq(2)
                with m.Case(2):
                    low = _lowest(m, s_bits, "scan_low")
                    rest = s_bits & (s_bits - 1)
                    m.d.comb += [ev_wr.addr.eq(Cat(s_count[:ceil_log2(self.ev_depth)], s_bank)),
                                 ev_wr.data.ch.eq(s_ch + low), ev_wr.data.plane.eq(s_p),
                                 ev_wr.en.eq(1)]
                    m.d.sync += [s_count.eq(s_count + 1), s_bits.eq(rest)]
                    with m.If(rest == 0):
                        s_next_word(s_count + 1)

        # -------------------------------------------------------------------- walk
        w_row0 = reg(PortOut.W_ROW, range(cfg.program_bytes + 1))
        w_nin = reg(PortOut.W_NIN, 16)
        w_units = reg(PortOut.W_UNITS, 24)
        n_out, repeat = w_units[:16], w_units[16:24]
        w_mode = reg(PortOut.W_MODE, 7)
        w_shift = reg(PortOut.W_SHIFT, signed(6))
        w_period = reg(PortOut.W_PERIOD, 9)
        w_mask = reg(PortOut.W_MASK, signed(32))
        w_neurons = reg(PortOut.W_NEURONS, range(self.units + 1))
        mode = {f: w_mode[k] for k, f in enumerate(("signed", "uint", "readout", "bias",
                                                    "first", "sum_init", "spikes2"))}
        # issue: unit i_j, its cycle i_t (the event read while i_t < K)
        i_busy, i_bank = Signal(), Signal()
        i_K = Signal.like(s_count)
        i_j = Signal(16)
        i_t = Signal(16)
        i_row = Signal(range(cfg.program_bytes + 1 << 1))
        beats = Mux(i_K == 0, 1, i_K)
        unit_end = (i_t + 1 >= beats) & (i_t + 1 >= w_period)
        with m.If(strobe(PortOut.W_GO)):
            m.d.sync += [i_busy.eq(n_out != 0), i_bank.eq(io_wdata[0]), i_j.eq(0), i_t.eq(0),
                         i_row.eq(w_row0),
                         i_K.eq(Mux(io_wdata[0], bank_count[1], bank_count[0]))]
        # stage R: the event arrives; M: the weight byte; T: term; A: accumulate
        r_valid, r_first, r_last, r_empty = Signal(), Signal(), Signal(), Signal()
        r_row = Signal.like(i_row)
        issue = i_busy & (i_t < beats)
        m.d.sync += [r_valid.eq(issue), r_first.eq(i_t == 0), r_last.eq(i_t == beats - 1),
                     r_empty.eq(i_K == 0), r_row.eq(i_row)]
        with m.If(issue & (i_K != 0)):
            m.d.comb += [ev_rd.addr.eq(Cat(i_t[:ceil_log2(self.ev_depth)], i_bank)),
                         ev_rd.en.eq(1)]
        with m.If(i_busy):
            m.d.sync += i_t.eq(i_t + 1)
            with m.If(unit_end):
                m.d.sync += [i_t.eq(0), i_j.eq(i_j + 1), i_row.eq(i_row + w_nin)]
                with m.If(i_j == n_out - 1):
                    m.d.sync += i_busy.eq(0)
        m_valid, m_first, m_last, m_empty = Signal(), Signal(), Signal(), Signal()
        m_sel, m_plane = Signal(), Signal(4)
        w_addr = r_row + ev_rd.data.ch
        with m.If(r_valid & ~r_empty):
            pm_read(w_addr)
        m.d.sync += [m_valid.eq(r_valid), m_first.eq(r_first), m_last.eq(r_last),
                     m_empty.eq(r_empty), m_sel.eq(w_addr[0]), m_plane.eq(ev_rd.data.plane)]
        # the weight's factor: 2^plane (UINT), -1 (plane 1 of signed spikes) or 1
        t_valid, t_first, t_last = Signal(), Signal(), Signal()
        t_w, t_f = Signal(signed(8)), Signal(signed(16))
        m.d.sync += [t_valid.eq(m_valid), t_first.eq(m_first), t_last.eq(m_last),
                     t_w.eq(Mux(m_empty, 0, pm_byte(m_sel).as_signed())),
                     t_f.eq(Mux(mode["uint"], Const(1, 16) << m_plane,
                                Mux(mode["signed"] & (m_plane == 1), -1, 1)))]
        term = Signal(signed(24))
        a_valid, a_first, a_last = Signal(), Signal(), Signal()
        m.d.sync += [term.eq(t_w * t_f), a_valid.eq(t_valid), a_first.eq(t_first),
                     a_last.eq(t_last)]
        acc = Signal(signed(W["acc"]))
        acc_next = Mux(a_first, 0, acc) + term
        with m.If(a_valid):
            m.d.sync += acc.eq(acc_next)
        # S: the unit's sum shifted by acc_shift, a bit a cycle
        s_full = Signal()
        sh_val = Signal(signed(W["shifted"]))
        sh_left = Signal(6)
        right = w_shift < 0
        b_left = Signal(9)                       # B: beats of the unit left
        walk_error = Signal()
        # S hands its value to B once shifted and B is free
        take = s_full & (sh_left == 0) & (b_left == 0)
        with m.If(a_valid & a_last):
            m.d.sync += [sh_val.eq(acc_next), s_full.eq(1),
                         sh_left.eq(Mux(mode["readout"], 0,
                                        Mux(right, -w_shift, w_shift)))]
            with m.If(s_full & ~take):           # not with W_PERIOD >= max(|s|, repeat) + 1
                m.d.sync += walk_error.eq(1)
        with m.Elif(s_full & (sh_left != 0)):
            m.d.sync += [sh_val.eq(Mux(right, sh_val >> 1, sh_val << 1)),
                         sh_left.eq(sh_left - 1)]
        # B: `repeat` neurons (READOUT: one output) get the value + their bias
        b_cur = Signal(signed(W["shifted"]))
        b_n = Signal(range(self.units + 1))            # neuron (READOUT: output) index
        b_issue = b_left != 0
        with m.If(take):
            m.d.sync += [b_cur.eq(sh_val), b_left.eq(Mux(mode["readout"], 1, repeat))]
            with m.If(~(a_valid & a_last)):
                m.d.sync += s_full.eq(0)
        with m.Elif(b_issue):
            m.d.sync += b_left.eq(b_left - 1)
        # (b_cur holds while B1 uses it: B takes a new value only after its last beat)
        b1_valid, b1_n = Signal(), Signal.like(b_n)
        with m.If(b_issue):
            m.d.sync += b_n.eq(b_n + 1)
            m.d.comb += [bias_rd.addr.eq(b_n), bias_rd.en.eq(1),
                         sum_rd.addr.eq(b_n), sum_rd.en.eq(1)]
        m.d.sync += [b1_valid.eq(b_issue), b1_n.eq(b_n)]
        x = Signal(signed(W["x"]))
        m.d.comb += x.eq(b_cur + Mux(mode["bias"], bias_rd.data, 0))
        b2_valid, b2_n = Signal(), Signal.like(b_n)
        b2_x = Signal(signed(W["x"]))
        m.d.sync += [b2_valid.eq(b1_valid), b2_n.eq(b1_n), b2_x.eq(x)]
        # the current must fit the op's width: its bits above cur_width - 1 all equal
        high = x & w_mask
        with m.If(b1_valid & ~mode["readout"] & (high != 0) & (high != w_mask)):
            m.d.sync += walk_error.eq(1)
        with m.If(b1_valid & mode["readout"]):    # the sum is read with the bias
            m.d.sync += [b2_x.eq(x + Mux(mode["sum_init"], 0, sum_rd.data))]
        m.d.comb += [sum_wr.addr.eq(b2_n), sum_wr.data.eq(b2_x),
                     sum_wr.en.eq(b2_valid & mode["readout"])]
        walk_busy = i_busy | r_valid | m_valid | t_valid | a_valid | s_full | (b_left != 0) | \
            b1_valid | b2_valid
        with m.If(strobe(PortOut.W_GO)):
            m.d.sync += [b_n.eq(0), walk_error.eq(0)]

        # the v0 LOAD pass and the bias fill
        l_left = Signal(range(self.units + 1))
        l_n = Signal.like(l_left)
        l_v0 = Signal(signed(cfg.width))
        with m.If(strobe(PortOut.W_LOAD)):
            m.d.sync += [l_left.eq(w_neurons), l_n.eq(0), l_v0.eq(io_wdata)]
        f_busy, f_phase = Signal(), Signal()
        f_addr = Signal(range(cfg.program_bytes + 1))
        f_n = Signal(range(self.units + 1))
        f_k = Signal(2)
        f_val = Signal(32)
        with m.If(strobe(PortOut.W_BIAS)):
            m.d.sync += [f_busy.eq(w_neurons != 0), f_addr.eq(io_wdata), f_n.eq(0), f_k.eq(0),
                         f_phase.eq(0)]
        with m.Elif(f_busy):
            with m.If(f_phase == 0):
                pm_read(f_addr)
                m.d.sync += f_phase.eq(1)
            with m.Else():
                value = Cat(f_val[8:], pm_byte(f_addr[0]))
                m.d.sync += [f_val.eq(value), f_addr.eq(f_addr + 1), f_k.eq(f_k + 1),
                             f_phase.eq(0)]
                with m.If(f_k == 3):
                    m.d.comb += [bias_wr.addr.eq(f_n), bias_wr.data.eq(value),
                                 bias_wr.en.eq(1)]
                    m.d.sync += f_n.eq(f_n + 1)
                    with m.If(f_n == w_neurons - 1):
                        m.d.sync += f_busy.eq(0)

        # the LIF: the walk's currents (or the LOAD pass); its spikes go to the collector
        with m.If(l_left != 0):
            m.d.comb += [lif.i.valid.eq(1), lif.i.payload.op.eq(LIFOp.LOAD),
                         lif.i.payload.index.eq(l_n), lif.i.payload.current[0].eq(l_v0)]
            with m.If(lif.i.ready):
                m.d.sync += [l_left.eq(l_left - 1), l_n.eq(l_n + 1)]
        with m.Else():
            m.d.comb += [lif.i.valid.eq(b2_valid & ~mode["readout"]),
                         lif.i.payload.op.eq(Mux(mode["first"], LIFOp.FIRST, LIFOp.UPDATE)),
                         lif.i.payload.index.eq(b2_n), lif.i.payload.current[0].eq(b2_x)]
        m.d.comb += lif.o.ready.eq(1)
        with m.If(b2_valid & ~mode["readout"] & ~lif.i.ready):   # the walk never waits
            m.d.sync += walk_error.eq(1)
        # the LIF takes its configuration with `we`: θ from the OUT, the leak set before
        leak = reg(PortOut.LIF_LEAK, 9)
        m.d.comb += [lif.cfg.we.eq(strobe(PortOut.LIF_THETA)), lif.cfg.theta.eq(io_wdata),
                     lif.cfg.leak_en.eq(leak[8]), lif.cfg.leak_shift.eq(leak[:8])]
        m.d.comb += lif.clear_flags.eq(strobe(PortOut.LIF_CLEAR))

        # ------------------------------------------------------------------- collector
        # bits into a 16-channel word, written at col_addr; signed spikes: the -1 plane's
        # word T further on, a cycle later; the next word T (or 2T) on
        col_addr = Signal(range(self.act_depth + 2 * T + 1))
        with m.If(strobe(PortOut.COL_ADDR)):
            m.d.sync += col_addr.eq(io_wdata)
        col_pos, col_neg = Signal(A), Signal(A)
        col_idx = Signal(range(A))
        neg_pending, neg_word = Signal(), Signal(A)
        bit_valid, bit_pos, bit_neg, bit_end, two = Signal(), Signal(), Signal(), Signal(), Signal()
        m.d.sync += neg_pending.eq(0)
        with m.If(neg_pending):
            m.d.comb += [act_wr.addr.eq(col_addr - T), act_wr.data.eq(neg_word),
                         act_wr.en.eq(1)]
        with m.If(bit_valid):
            pos_word = col_pos | (bit_pos << col_idx)[:A]
            with m.If(bit_end):
                m.d.comb += [act_wr.addr.eq(col_addr), act_wr.data.eq(pos_word), act_wr.en.eq(1)]
                m.d.sync += [col_pos.eq(0), col_neg.eq(0), col_idx.eq(0),
                             col_addr.eq(col_addr + Mux(two, 2 * T, T))]
                with m.If(two):
                    m.d.sync += [neg_pending.eq(1),
                                 neg_word.eq(col_neg | (bit_neg << col_idx)[:A])]
            with m.Else():
                m.d.sync += [col_pos.eq(pos_word), col_neg.eq(col_neg | (bit_neg << col_idx)[:A]),
                             col_idx.eq(col_idx + 1)]
        spike = lif.o.payload.spikes[0]
        lif_index = lif.o.payload.index
        lif_bit = lif.o.valid & (lif.o.payload.op != LIFOp.LOAD)
        if cfg.signed_spikes:       # a -1 spike into a SPIKES buffer: out of its range
            with m.If(lif_bit & (spike.as_signed() == -1) & ~mode["spikes2"]):
                m.d.sync += walk_error.eq(1)

        # ------------------------------------------------------------------- encode
        e_in = reg(PortOut.E_IN, range(cfg.input_elements + 1))
        e_hi = reg(PortOut.E_HI, 16)
        e_busy = Signal()
        e_ch, e_planes, e_kind = Signal(16), Signal(5), Signal(2)
        e_g, e_p, e_c = Signal(16), Signal(5), Signal(range(A))
        e_error = Signal()
        q_valid, q_end, q_p = Signal(), Signal(), Signal(5)
        with m.If(strobe(PortOut.E_GO)):
            m.d.sync += [e_busy.eq(io_wdata[:16] != 0), e_ch.eq(io_wdata[:16]),
                         e_planes.eq(io_wdata[16:21]), e_kind.eq(io_wdata[24:26]),
                         e_g.eq(0), e_p.eq(0), e_c.eq(0), e_error.eq(0)]
        e_last_c = (e_c == A - 1) | (e_g + e_c == e_ch - 1)
        with m.If(e_busy):
            m.d.comb += [in_rd.addr.eq(e_in + e_g + e_c), in_rd.en.eq(1)]
            m.d.sync += e_c.eq(e_c + 1)
            with m.If(e_last_c):
                m.d.sync += [e_c.eq(0), e_p.eq(e_p + 1)]
                with m.If(e_p == e_planes - 1):
                    m.d.sync += [e_p.eq(0), e_g.eq(e_g + A)]
                    with m.If(e_g + A >= e_ch):
                        m.d.sync += e_busy.eq(0)
        m.d.sync += [q_valid.eq(e_busy), q_end.eq(e_last_c), q_p.eq(e_p)]
        v = in_rd.data.as_signed()
        is_signed = e_kind == BufKind.SIGNED_SPIKES
        with m.If(q_valid & ((v > e_hi.as_signed()) | (v < Mux(is_signed, -1, 0)))):
            m.d.sync += e_error.eq(1)
        enc_bit = Mux(is_signed, Mux(q_p == 0, v == 1, v == -1), in_rd.data.bit_select(q_p, 1))

        with m.If(q_valid):
            m.d.comb += [bit_valid.eq(1), bit_pos.eq(enc_bit), bit_neg.eq(0), bit_end.eq(q_end),
                         two.eq(0)]
        with m.Else():
            m.d.comb += [bit_valid.eq(lif_bit), bit_pos.eq(spike == 1),
                         bit_neg.eq((spike.as_signed() == -1) if cfg.signed_spikes else 0),
                         bit_end.eq((lif_index[:ceil_log2(A)] == A - 1) |
                                    (lif_index == w_neurons - 1)),
                         two.eq(mode["spikes2"])]

        # ----------------------------------------------------------------- IN ports
        lif_busy = lif.o.valid | (l_left != 0)
        status = Cat(crc_busy, s_busy, walk_busy | lif_busy | neg_pending, e_busy | q_valid,
                     clearing, e_error, walk_error, loaded, f_busy)
        sum_addr = reg(PortOut.SUM_ADDR, range(cfg.max_readout))
        with m.If(~walk_busy):
            m.d.comb += [sum_rd.addr.eq(sum_addr), sum_rd.en.eq(1)]
        total = sum_rd.data
        with m.Switch(io_addr):
            with m.Case(PortIn.CMD):
                m.d.comb += io_rdata.eq(Cat(cmd_code, cmd_pending))
            with m.Case(PortIn.LOAD_SIZE):
                m.d.comb += io_rdata.eq(dev.load_size)
            with m.Case(PortIn.CRC):
                m.d.comb += io_rdata.eq(~crc)
            with m.Case(PortIn.STATUS):
                m.d.comb += io_rdata.eq(status)
            with m.Case(PortIn.SCAN_COUNT):
                m.d.comb += io_rdata.eq(scan_count)
            with m.Case(PortIn.SATS):
                m.d.comb += io_rdata.eq(lif.sat_count)
            with m.Case(PortIn.CYCLES):
                m.d.comb += io_rdata.eq(cycles)
            with m.Case(PortIn.SUM_LO):
                m.d.comb += io_rdata.eq(total[:32])
            with m.Case(PortIn.SUM_HI):
                m.d.comb += io_rdata.eq(total[32:].as_signed())
            with m.Case(PortIn.CODE):
                m.d.comb += io_rdata.eq(eng.code)
        return m
