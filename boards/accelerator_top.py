"""AcceleratorBoardTop: the whole accelerator (`rtl/device.py` `Device`: UART host link +
Accelerator) on a board, and `synth_accelerator`, its build and report.

The board top runs `sync` from the FPGA's PLL at the target clock (the self test's
`add_pll_domain`), wires the Device's `rx` / `tx` to the board's first UART (`uart` 0: the
FTDI bridge on iCEBreaker and ULX3S) and shows `busy` on an LED. The UART divisor is the one
for `baud` (115200) at the PLL clock: the host talks to the board at a standard rate.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from amaranth import Elaboratable, Module
from amaranth.lib import io

from ..golden.program_loader import AcceleratorConfig
from ..rtl.device import COMPACT_BUILD, DIGITS_BUILD, Device, device_params
from ..rtl.uart import divisor_for
from .selftest import add_pll_domain, request_leds

BAUD = 115200
# `--accelerator` groups: one build sized for every model of the group.
MODEL_GROUPS = {"digits": ("digits-ssa", "digits-sdsa", "digits-statten"),
                "pinn": ("pinn-sin", "pinn-multi")}
MAX_BAUD_ERROR = 0.02  # 8N1 tolerates a few percent between the two ends
# nextpnr placement seed of the accelerator builds: the best of three the reported ULX3S
# digits build (b0112e1) was placed with, 85.09 MHz; nextpnr's default seed gave 77.09 and
# seed 3 76.72 on the same netlist (docs/boards.md): placement moves Fmax by ~8 MHz here.
PLACEMENT_SEED = 2
# The clock an accelerator build is constrained to by default (the PLL makes it, the board
# runs at it): the digits throughput build on ECP5 routes at 85.6 MHz at a 70 MHz constraint
# (at 120 it placed at 70.7-75.0, failing it); the compact build's one-stage LIF update
# limits it to ~21 MHz on a UP5K (the PINN on an iCEBreaker is bound by the 115200-baud link
# anyway). Other builds: the board's default target.
ACCEL_TARGET_MHZ = {("ecp5", False): 70, ("ice40", True): 18}


def default_build(board) -> dict:
    """The accelerator build a board gets when none is asked for: compact on iCE40 (the only
    one that fits a UP5K), else the fast one."""
    from .registry import get_board
    return {"compact": True} if get_board(board).family == "ice40" else {}
# Yosys 0.70's synth_ecp5 (synth_lattice) always maps LUTs with abc9, which dies on this
# design in ABC_OPS_REINTEGRATE ("Assert `GetSize(conn.first) == GetSize(conn.second)'
# failed", kernel/rtlil.cc:3091; with or without LUT RAMs). Stop synth_ecp5 before its
# map_luts step, map LUTs with the classic `abc` (4-input LUTs, PFUMX/L6MUX up to 7 inputs,
# as synth_ecp5 did before abc9), then let synth_ecp5 finish from map_cells.
ECP5_ABC_FLOW = {"synth_opts": "-run begin:map_luts",
                 "script_after_synth": "techmap -map +/lattice/latches_map.v; "
                                       "abc -dress -lut 4:7; clean; "
                                       "synth_ecp5 -top top -run map_cells:"}


class AcceleratorBoardTop(Elaboratable):
    """`params`: `Device` parameters (`device_params(...)` or `AcceleratorConfig` fields); a
    `divisor` in them must equal the one for `baud` at the PLL clock. `pll`: (oscillator MHz,
    target MHz)."""

    def __init__(self, params, pll, baud=BAUD):
        try:
            f_in, f_out = pll
        except (TypeError, ValueError):
            raise ValueError(f"pll must be (f_in_mhz, f_out_mhz), got {pll!r}") from None
        if not all(isinstance(f, (int, float)) and f > 0 for f in (f_in, f_out)):
            raise ValueError(f"pll frequencies must be positive numbers, got {pll!r}")
        if not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"baud must be a positive integer, got {baud!r}")
        params = dict(params)
        divisor = divisor_for(f_out * 1e6, baud)
        if params.setdefault("divisor", divisor) != divisor:
            raise ValueError(f"divisor {params['divisor']} is not the one for {baud} baud at "
                             f"{f_out} MHz ({divisor}); leave it out of params")
        self.pll, self.baud, self.divisor = (f_in, f_out), baud, divisor
        self.params = params
        self.device = Device(**params)

    def elaborate(self, platform):
        m = Module()
        m.submodules.device = dev = self.device
        if platform is None:
            return m
        cfg = add_pll_domain(m, platform, *self.pll)
        # The PLL makes the nearest clock it can: the divisor was computed for the nominal one.
        actual_baud = cfg["f_out_mhz"] * 1e6 / self.divisor
        if abs(actual_baud / self.baud - 1) > MAX_BAUD_ERROR:
            raise ValueError(f"the PLL runs at {cfg['f_out_mhz']:.3f} MHz: {actual_baud:.0f} "
                             f"baud instead of {self.baud}")
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        led, = request_leds(platform, 1)
        m.submodules.led_busy = led
        m.d.comb += [dev.rx.eq(rx.i), tx.o.eq(dev.tx), led.o.eq(dev.busy)]
        return m


def accelerator_programs(models):
    """The compiled programs of `models` (names of `sim.link_jobs.MODELS`)."""
    from ..sim.link_jobs import prepare_model
    if isinstance(models, str) or not models:
        raise ValueError(f"models must be a non-empty sequence of model names, got {models!r}")
    return [prepare_model(name, 1).program for name in models]


def accelerator_report_name(board, lanes=4, engine_lanes=None, compact=False) -> str:
    """`accelerator-<board>`, with `-l<lanes>` when lanes != 4 and `-e<engine_lanes>` when
    set (`-compact` for the compact build): the report is build/reports/synth-<name>.json."""
    if compact:
        return f"accelerator-{board}-compact"
    return (f"accelerator-{board}" + (f"-l{lanes}" if lanes != 4 else "")
            + (f"-e{engine_lanes}" if engine_lanes else ""))


# The accelerator builds the bench and the demo put on boards: (board, model group, build).
# A build without a board of its own (the PINN's fast one) is rated at the first one's clock.
BOARD_BUILDS = (("ulx3s", "digits", DIGITS_BUILD), ("icebreaker", "pinn", COMPACT_BUILD))


def accelerator_report_path(board, build, build_dir="build") -> Path:
    """The board report of `build` (a build dict of rtl/device.py) on `board`."""
    return Path(build_dir, "reports", f"synth-{accelerator_report_name(board, **build)}.json")


def synth_accelerator(board, models=MODEL_GROUPS["digits"], lanes=4, target_mhz=None,
                      build_dir="build", progress=print, report_name=None, synth_opts=None,
                      seed=PLACEMENT_SEED, **overrides):
    """Build ONE accelerator sized for every program of `models` (`device_params`; `overrides`
    replace AcceleratorConfig fields) for `board` at `target_mhz` (default: the board's);
    report build/reports/synth-<report_name>.json, default `accelerator_report_name`. `synth_opts` go to Yosys' synth_<family> (e.g. "-spram");
    `seed` (an int) to nextpnr's `--seed` (placement varies with it; None: nextpnr's default).
    Same tree and seed, same result (Yosys and nextpnr are deterministic)."""
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    from .flow import synth_board
    from .registry import get_board
    spec = get_board(board)
    if spec.family not in ("ice40", "ecp5"):
        raise ValueError(f"the accelerator top needs an iCE40 or ECP5 PLL; {board!r} is "
                         f"{spec.family}")
    compact = bool(overrides.get("compact"))
    target = target_mhz or ACCEL_TARGET_MHZ.get((spec.family, compact),
                                                spec.default_target_mhz)
    models = tuple(models) if not isinstance(models, str) else models
    programs = accelerator_programs(models)
    params = device_params(*programs, divisor=divisor_for(target * 1e6, BAUD), lanes=lanes,
                           **overrides)
    top = AcceleratorBoardTop(params, pll=(spec.osc_mhz, target))
    report_name = report_name or accelerator_report_name(board, lanes,
                                                         overrides.get("engine_lanes"), compact)
    cfg = {k: v for k, v in params.items() if k != "divisor"}
    progress(f"{board}: accelerator for {', '.join(models)} "
             f"({'compact' if compact else f'{lanes} lanes'}): "
             + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    build_opts = dict(ECP5_ABC_FLOW) if spec.family == "ecp5" else {}
    if compact:
        from ..rtl.compact import collision_free_script
        build_opts["script_after_read"] = collision_free_script()
        if spec.family == "ice40":
            build_opts["synth_opts"] = "-dsp"   # the micro-engine's and the walk's multipliers
    if synth_opts:
        build_opts["synth_opts"] = f"{build_opts.get('synth_opts', '')} {synth_opts}".strip()
    if seed is not None:
        build_opts["nextpnr_opts"] = f"--seed {seed}"
    return synth_board(board, top=top, target_mhz=target, build_dir=build_dir, name="top",
                       progress=progress, report_name=report_name, top_pll=True,
                       build_opts=build_opts,
                       extra={"models": list(models), "lanes": lanes,
                              "config": asdict(AcceleratorConfig(**cfg)),
                              "divisor": top.divisor, "baud": top.baud,
                              "yosys_flow": build_opts, "nextpnr_seed": seed})
