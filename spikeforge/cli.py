"""`spikeforge` command line: the programmatic front door that the Makefile calls.

    spikeforge demo   [--images N] [--points N] [--board B] [--no-synth]
                                              digits transformers + PINN on the simulated
                                              accelerator vs golden, then the board build
    spikeforge lif-demo [--no-synth]          one LIF layer golden vs RTL, then a board build
    spikeforge sim    [--simulator S] ...     one LIF layer on Verilator or Icarus vs golden
    spikeforge synth  --board B [--target-mhz F] [--core C | --accelerator digits|pinn [--lanes N]
                      [--engine-lanes E]]
    spikeforge report [--no-golden]           golden report (accuracy, PINN errors, plots) and
                                              build/reports/*.json into a Markdown summary
    spikeforge bench                          Fmax/utilization and cycle benchmarks
    spikeforge run --model digits-ssa|digits-sdsa|digits-statten|pinn-sin|pinn-multi
                   [--sim golden|verilator|icarus | --port /dev/ttyUSB0] [--count N] [--divisor N]
                                              compile, load over the host link, run, compare
Heavy imports happen inside the subcommands so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPORTS = Path("build/reports")
LATENCY = 6  # LIFArray input-to-output cycles (docs/interfaces.md)


def progress(msg: str) -> None:
    print(f"[spikeforge] {msg}", flush=True)


def _lif_params_from_args(args):
    from .golden.lif import LIFParams
    return LIFParams(theta=args.theta, leak_shift=args.leak_shift, width=args.width,
                     reset=args.reset)


def _generated_currents(args):
    """A reproducible layer input: Poisson-like spike counts times random weights."""
    import numpy as np
    from .golden.lif import signed_range
    rng = np.random.default_rng(args.seed)
    lo, hi = signed_range(args.width)
    currents = rng.normal(args.theta * 0.4, args.theta, size=(args.timesteps, args.neurons))
    return np.clip(np.rint(currents), lo, hi).astype(np.int64)


def run_layer(args) -> dict:
    from .golden.lif import lif_array
    from .sim.lif_demo import run_lif_layer
    params = _lif_params_from_args(args)
    currents = _generated_currents(args)
    gold = lif_array(currents, params)
    progress(f"LIF layer: N={args.neurons} T={args.timesteps} W={params.width} "
             f"k={params.leak_shift} theta={params.theta} reset={params.reset} "
             f"P={args.lanes}; golden model: {int(gold.spikes.sum())} spikes")
    progress(f"building and running the RTL on {args.simulator} (first build takes ~20 s)")
    t0 = time.monotonic()
    res = run_lif_layer(currents, params, lanes=args.lanes, simulator=args.simulator,
                        gap_prob=args.gap_prob, backpressure_prob=args.backpressure_prob,
                        seed=args.seed)
    res["elapsed_s"] = round(time.monotonic() - t0, 1)
    verdict = "MATCH (bit-exact)" if res["matched"] else f"MISMATCH ({res['mismatches']} beats)"
    groups = args.neurons // args.lanes
    ideal = (args.timesteps + 1) * groups  # UPDATE beats + one READ beat per group
    print(f"\n  golden vs {args.simulator} RTL : {verdict}")
    print(f"  neuron updates          : {res['updates']}")
    pauses = (f"with {args.gap_prob:.0%} input gaps / {args.backpressure_prob:.0%} backpressure"
              if args.gap_prob or args.backpressure_prob else "no pauses")
    print(f"  cycles                  : {res['cycles']} ({pauses}; ideal: {ideal} beats "
          f"incl. {groups} membrane reads + {LATENCY} latency = {ideal + LATENCY})")
    print(f"  spikes                  : {int(res['spikes'].sum())} "
          f"(golden {int(gold.spikes.sum())})")
    print(f"  saturations             : {res['sat_count']} (golden {gold.sat_count})\n")
    return res


def cmd_sim(args) -> int:
    return 0 if run_layer(args)["matched"] else 1


def cmd_synth(args) -> int:
    from .boards.flow import format_report_table, synth_board
    if args.accelerator:
        if args.core:
            raise ValueError("give --core or --accelerator, not both")
        from .boards.accelerator_top import (MODEL_GROUPS, PLACEMENT_SEED, default_build,
                                             synth_accelerator)
        build = (default_build(args.board) if args.build == "auto"
                 else {"compact": args.build == "compact"})
        extra = {"compact": True} if build.get("compact") else {
            "lanes": args.lanes, "engine_lanes": args.engine_lanes}
        report = synth_accelerator(args.board, models=MODEL_GROUPS[args.accelerator],
                                   target_mhz=args.target_mhz,
                                   seed=PLACEMENT_SEED if args.seed is None else args.seed,
                                   progress=progress, **extra)
    else:
        report = synth_board(args.board, target_mhz=args.target_mhz, core=args.core,
                             progress=progress)
    print(format_report_table(report))
    return 0


def cmd_demo(args) -> int:
    """The main job (spikeforge/demo.py): shipped digits transformers and PINN on the
    Verilator-simulated accelerator through the host driver, then the board build."""
    from .demo import run_demo
    result = run_demo(images=args.images, points=args.points, board=args.board,
                      synth=not args.no_synth, sim=args.simulator, progress=progress)
    return 0 if result["ok"] else 1


def cmd_lif_demo(args) -> int:
    t0 = time.monotonic()
    res = run_layer(args)
    if not args.no_synth:
        progress(f"building the {args.board} bitstream (built-in self test around a "
                 "64-neuron LIFArray)")
        from .boards.flow import format_report_table, synth_board
        report = synth_board(args.board, progress=progress)
        print(format_report_table(report))
    progress(f"demo finished in {time.monotonic() - t0:.0f} s")
    return 0 if res["matched"] else 1


def cmd_report(args) -> int:
    REPORTS.mkdir(parents=True, exist_ok=True)
    if args.golden:
        from .report import golden_report
        golden_report(REPORTS, progress=progress)
    rows = []
    for path in sorted(REPORTS.glob("synth-*.json")):
        r = json.loads(path.read_text())
        rows.append(f"| {r.get('top', '')} | {r['board']} | {r['device']} | {r['fmax_mhz']:.1f} | "
                    f"{r['target_mhz']} | "
                    f"{'yes' if r['timing_met'] else 'NO'} | {r['luts']} | {r['ffs']} | "
                    f"{r['brams']} | {r['dsps']} |")
    md = ["# spikeforge hardware report", ""]
    if rows:
        md += ["| design | board | device | Fmax MHz | target MHz | timing met | LUTs/LCs | FFs | "
               "BRAMs | DSPs |", "|---|---|---|---|---|---|---|---|---|---|", *rows]
    else:
        md.append("No synthesis reports yet: run `make synth BOARD=icebreaker`.")
    out = REPORTS / "summary.md"
    out.write_text("\n".join(md) + "\n")
    print("\n".join(md))
    progress(f"wrote {out}")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench
    return run_bench(progress=progress)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spikeforge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def layer_args(sp, pause_prob):
        sp.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
        sp.add_argument("--neurons", type=int, default=64)
        sp.add_argument("--timesteps", type=int, default=32)
        sp.add_argument("--lanes", type=int, default=1)
        sp.add_argument("--width", type=int, default=16)
        sp.add_argument("--leak-shift", type=int, default=4)
        sp.add_argument("--theta", type=int, default=256)
        sp.add_argument("--reset", choices=("subtract", "zero"), default="subtract")
        sp.add_argument("--gap-prob", type=float, default=pause_prob,
                        help="probability of an input idle cycle")
        sp.add_argument("--backpressure-prob", type=float, default=pause_prob,
                        help="probability of an output not-ready cycle")
        sp.add_argument("--seed", type=int, default=1)

    sp = sub.add_parser("demo", help="digits transformers and PINN on the simulated "
                                     "accelerator vs golden, then the board build")
    sp.add_argument("--images", type=int, default=20, help="held-out digits per transformer")
    sp.add_argument("--points", type=int, default=32, help="PINN grid points")
    sp.add_argument("--board", default="ulx3s", help="board of the digits accelerator build")
    sp.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    sp.add_argument("--no-synth", action="store_true", help="skip the bitstream build")
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("lif-demo", help="one LIF layer golden vs RTL, then a board build")
    layer_args(sp, pause_prob=0.0)  # no pauses: the cycle count is the core's own
    sp.add_argument("--board", default="icebreaker")
    sp.add_argument("--no-synth", action="store_true", help="skip the bitstream build")
    sp.set_defaults(func=cmd_lif_demo)

    sp = sub.add_parser("sim", help="run one LIF layer on a simulator against golden")
    layer_args(sp, pause_prob=0.1)
    sp.set_defaults(func=cmd_sim)

    sp = sub.add_parser("synth", help="build a board bitstream and its report")
    sp.add_argument("--board", default="icebreaker")
    sp.add_argument("--target-mhz", type=float, default=None)
    sp.add_argument("--core", default=None,
                    help="build one core in a keep-alive harness instead of the self test "
                         "(lif, lif-p4, synapse, spiking-linear, attention)")
    sp.add_argument("--accelerator", choices=("digits", "pinn"), default=None,
                    help="build the whole accelerator (UART host link + Accelerator) sized "
                         "for the digits transformers or the PINNs")
    sp.add_argument("--lanes", type=int, default=4, help="accelerator lanes (--accelerator)")
    sp.add_argument("--engine-lanes", type=int, default=None,
                    help="the engine's accumulate lanes, a power-of-two multiple of --lanes "
                         "(--accelerator; default: --lanes; the digits throughput build: 32)")
    sp.add_argument("--seed", type=int, default=None,
                    help="nextpnr placement seed (--accelerator; default: PLACEMENT_SEED of "
                         "boards/accelerator_top.py)")
    sp.add_argument("--build", choices=("auto", "fast", "compact"), default="auto",
                    help="--accelerator: the fast (lanes) or the compact build (one neuron a "
                         "cycle, docs/compact.md); auto: compact on iCE40, else fast")
    sp.set_defaults(func=cmd_synth)

    sp = sub.add_parser("report", help="golden-model report and build/reports summary")
    sp.add_argument("--no-golden", dest="golden", action="store_false",
                    help="only summarize the synthesis reports")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("bench", help="benchmarks -> build/reports/bench.{md,json}")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("run", help="run a shipped network through the host link")
    sp.add_argument("--model", choices=MODELS, default="digits-ssa")
    where = sp.add_mutually_exclusive_group()
    where.add_argument("--sim", choices=("golden", "verilator", "icarus"), default="golden",
                       help="the device: the golden reference (in-process) or the RTL "
                            "accelerator top simulated over its UART")
    where.add_argument("--port", default=None, help="serial port of a board")
    sp.add_argument("--baud", type=int, default=115200)
    sp.add_argument("--count", type=int, default=20,
                    help="held-out digits, or PINN grid points")
    sp.add_argument("--timesteps", type=int, default=16, help="PINN timesteps")
    sp.add_argument("--timeout", type=float, default=2.0, help="seconds per reply")
    sp.add_argument("--divisor", type=int, default=8,
                    help="--sim verilator|icarus: clock cycles per UART bit")
    sp.add_argument("--lanes", type=int, default=4,
                    help="--sim verilator|icarus: accelerator lanes (power of two; the digits "
                         "throughput build uses 16)")
    sp.add_argument("--engine-lanes", type=int, default=None,
                    help="--sim verilator|icarus: the engine's accumulate lanes (default: "
                         "--lanes; the digits throughput build uses 32)")
    sp.add_argument("--compact", action="store_true",
                    help="--sim verilator|icarus: the compact build (the iCE40UP5K's, "
                         "docs/compact.md) instead of --lanes")
    sp.add_argument("--timeout-cycles", type=int, default=500_000,
                    help="--sim verilator|icarus: simulated cycles of silence before a reply "
                         "times out (longer than the slowest RUN)")
    sp.set_defaults(func=cmd_run)
    return p


MODELS = ("digits-ssa", "digits-sdsa", "digits-statten", "pinn-sin", "pinn-multi")


def cmd_run(args) -> int:
    """Compile a shipped network, load it through the host link, run it, compare with the
    golden network (sim/link_jobs.py `run_model`: one implementation for every device).
    Devices: the golden reference device (`--sim golden`), a board on a serial port
    (`--port`), or the RTL accelerator top on Verilator / Icarus over a simulated UART."""
    if args.count < 1:
        raise ValueError(f"--count must be positive, got {args.count}")
    if args.port or args.sim == "golden":
        from .driver import AcceleratorLink, GoldenTransport, SerialTransport
        from .sim.link_jobs import run_model
        transport = (SerialTransport(args.port, args.baud) if args.port else GoldenTransport())
        where = args.port or "the golden reference device"
        link = AcceleratorLink(transport, timeout_s=args.timeout)
        summary, _ = run_model(link, args.model, args.count, args.timesteps, device=where,
                               progress=progress)
    else:
        summary = _run_on_rtl(args)
        if isinstance(summary, int):
            return summary
    print(json.dumps(summary, indent=1))
    return 0 if summary["bit_identical_to_golden"] else 1


def _run_on_rtl(args):
    """`run --sim verilator|icarus`: the same job in a cocotb bench around the device top."""
    try:
        from .rtl.device import Device, device_params
    except ImportError as e:
        print(f"spikeforge: error: the RTL accelerator top is not available: {e} "
              "(needs spikeforge.rtl.device: Device and device_params)", file=sys.stderr)
        return 2
    from .sim.link_jobs import prepare_model
    from .sim.link_runner import LinkJobError, run_link_job

    progress(f"compiling {args.model} for the device top")
    run = prepare_model(args.model, args.count, args.timesteps)
    build = ({"compact": True} if args.compact else
             {"lanes": args.lanes, "engine_lanes": args.engine_lanes})
    params = device_params(run.program, divisor=args.divisor, **build)
    where = f"the RTL accelerator ({'compact' if args.compact else 'fast'}) on {args.sim}"
    t0 = time.monotonic()
    try:
        summary, _ = run_link_job(
            Device, params, toplevel="device", sim=args.sim,
            job="spikeforge.sim.link_jobs:run_model",
            args={"model": args.model, "count": args.count, "timesteps": args.timesteps,
                  "device": where},
            divisor=args.divisor, timeout_cycles=args.timeout_cycles, progress=progress)
    except LinkJobError as e:
        print(f"spikeforge: error: {e}", file=sys.stderr)
        return 1
    progress(f"simulation finished in {time.monotonic() - t0:.0f} s "
             f"({summary['link']['sim_time_ns'] / 1e6:.2f} ms simulated)")
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # bad parameters, unknown board: a message, not a traceback
        print(f"spikeforge: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
