"""`spikeforge bench`: speed and size targets, measured (never asserted in tests).

Writes build/reports/bench.json and bench.md:
- LIFArray throughput (beats per cycle) from the RTL in Amaranth's simulator;
- SynapseEngine busy cycles vs the ideal bound of golden `synapse_engine_cycles`, and the
  speed-up of 90 % sparse input over dense input;
- AttentionCore busy cycles vs the ideal bound of golden `attention_core_cycles` for every
  mode and order, by spike sparsity;
- the whole Accelerator on the shipped networks: cycles per inference and per op vs the
  ideal bound of golden `accelerator_cycles` (target: total <= 1.15x), inferences/s at the
  board's Fmax when its accelerator report exists;
- Fmax and utilization of the LIFArray built-in self test on each board that builds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

REPORTS = Path("build/reports")


def bench_lif_throughput(n=64, timesteps=32, lanes=1) -> dict:
    from .golden.lif import LIFParams, lif_array
    from .rtl.lif_array import LIFArray, LIFOp
    from .sim.amaranth_runs import run_lif_array

    params = LIFParams(theta=256, leak_shift=4)
    currents = np.random.default_rng(0).integers(-300, 600, size=(timesteps, n))
    dut = LIFArray(n=n, lanes=lanes, theta=params.theta, leak_shift=params.leak_shift)
    groups = n // lanes
    beats = [(LIFOp.UPDATE, g, currents[t, g * lanes:(g + 1) * lanes])
             for t in range(timesteps) for g in range(groups)]
    out, state = run_lif_array(dut, beats)
    got = [[int(s) for s in payload.spikes] for payload in out]
    gold = lif_array(currents, params)
    matched = np.array(got).reshape(timesteps, n).tolist() == gold.spikes.tolist()
    return {"n": n, "timesteps": timesteps, "lanes": lanes, "beats": len(beats),
            "cycles": state["cycles"], "beats_per_cycle": round(len(beats) / state["cycles"], 4),
            "matches_golden": matched}


def bench_synapse_sparsity(n_in=64, n_out=64, lanes=4, timesteps=4,
                           sparsities=(0.0, 0.5, 0.9, 0.99)) -> dict:
    from .golden.synapse import spike_events, synapse_engine, synapse_engine_cycles
    from .rtl.synapse_engine import SynapseEngine
    from .sim.amaranth_runs import event_beats, run_synapse_engine

    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, size=(n_out, n_in))
    rows = []
    for kind in ("spike", "neuron"):
        for sparsity in sparsities:
            if kind == "spike":  # each (t, i) spike independently silent
                spikes = (rng.random((timesteps, n_in)) >= sparsity).astype(np.int64)
            else:  # a fraction of input neurons silent for the whole inference
                spikes = np.zeros((timesteps, n_in), dtype=np.int64)
                active = rng.permutation(n_in)[:round(n_in * (1 - sparsity))]
                spikes[:, active] = rng.integers(0, 2, size=(timesteps, len(active)))
                spikes[0, active] = 1
            dut = SynapseEngine(n_in=n_in, n_out=n_out, lanes=lanes, timesteps=timesteps,
                                weights=w)
            got, counters = run_synapse_engine(dut, [event_beats(spikes)])
            events = len(spike_events(spikes))
            ideal = synapse_engine_cycles(events, n_out, lanes, timesteps)
            rows.append({"kind": kind, "sparsity": sparsity, "events": events,
                         "busy_cycles": counters["busy_cycles"], "ideal_cycles": ideal,
                         "ratio": round(counters["busy_cycles"] / ideal, 3),
                         "matches_golden": got[0].tolist() == synapse_engine(
                             spike_events(spikes), w, timesteps).tolist()})

    def speedup(kind):
        by = {r["sparsity"]: r["busy_cycles"] for r in rows if r["kind"] == kind}
        return round(by[0.0] / by[0.9], 2)
    return {"n_in": n_in, "n_out": n_out, "lanes": lanes, "timesteps": timesteps, "rows": rows,
            "speedup_90_vs_0": {"spike": speedup("spike"), "neuron": speedup("neuron")},
            "max_ratio": max(r["ratio"] for r in rows)}


ATTENTION_SETTINGS = [("ssa", 1, "reference", None), ("ssa", 1, "reference", "q_kv"),
                      ("statten", 2, "reference", None), ("statten", 4, "reference", None),
                      ("sdsa", 1, "reference", None), ("sdsa", 1, "paper", None)]


def bench_attention(n=8, d=16, timesteps=4, lanes=4, sparsities=(0.0, 0.5, 0.9, 0.99)) -> dict:
    """One head of the digits transformer: every setting at every spike sparsity."""
    from .golden.attention_core import (attention_core_cycles, attention_core_ops,
                                        attention_core_outputs)
    from .golden.lif import LIFParams
    from .rtl.attention_core import MODE_OF, ORDER_OF, VARIANT_OF, AttentionCore
    from .sim.amaranth_runs import run_attention_core

    rng = np.random.default_rng(0)
    dut = AttentionCore(n=n, d=d, timesteps=timesteps, lanes=lanes, theta=8)
    lif = LIFParams(theta=8, current_width=dut.acc_width + 1)
    rows = []
    for mode, block, variant, order in ATTENTION_SETTINGS:
        for sparsity in sparsities:
            q, k, v = ((rng.random((timesteps, n, d)) >= sparsity).astype(np.int64)
                       for _ in range(3))
            cfg = dict(mode=MODE_OF[mode], block=block, variant=VARIANT_OF[variant],
                       order=ORDER_OF[order])
            got, counters = run_attention_core(dut, [(q, k, v)], configs=[cfg])
            expect = attention_core_outputs(q, k, v, lif, mode=mode, block=block,
                                            variant=variant, lanes=lanes)
            ideal = attention_core_cycles(q, k, v, mode=mode, block=block, variant=variant,
                                          order=order, lanes=lanes)
            ops = attention_core_ops(q, k, v, mode=mode, block=block, variant=variant,
                                     order=order)
            rows.append({"mode": mode, "block": block, "variant": variant,
                         "order": order or "auto", "sparsity": sparsity, **ops,
                         "busy_cycles": counters["busy_cycles"], "ideal_cycles": ideal,
                         "ratio": round(counters["busy_cycles"] / ideal, 3),
                         "matches_golden": got[0] == expect})

    def speedup(mode, order):
        by = {r["sparsity"]: r["busy_cycles"] for r in rows
              if r["mode"] == mode and r["order"] == order and r["block"] == 1}
        return round(by[0.0] / by[0.9], 2)
    return {"n": n, "d": d, "timesteps": timesteps, "lanes": lanes, "rows": rows,
            "speedup_90_vs_0": {"ssa auto": speedup("ssa", "auto"),
                                "ssa q_kv": speedup("ssa", "q_kv")},
            "max_ratio": max(r["ratio"] for r in rows)}


# (model, build): the digits transformers' throughput build, the PINN's small one, and the
# compact build (the iCE40UP5K's)
ACCEL_RUNS = (("digits-ssa", "digits"), ("digits-sdsa", "digits"), ("digits-statten", "digits"),
              ("pinn-sin", "pinn"), ("pinn-sin", "compact"))


def bench_accelerator(runs=ACCEL_RUNS, progress=print) -> dict:
    """Each shipped network, one held-out input, on the RTL Accelerator (Amaranth simulator;
    the UART and the driver are proven separately): output bit-exact with golden, cycles
    per op (LAYERS) and per inference vs the golden ideal bound."""
    from .golden.accelerator import accelerator_cycles
    from .golden.compile import run_program
    from .golden.program_loader import AcceleratorConfig
    from .rtl.accelerator import Accelerator
    from .rtl.compact import CompactAccelerator
    from .boards.accelerator_top import BOARD_BUILDS, accelerator_report_path
    from .rtl.device import COMPACT_BUILD, DIGITS_BUILD, PINN_BUILD, build_label
    from .sim.amaranth_runs import run_accelerator
    from .sim.link_jobs import prepare_model
    builds = {"digits": DIGITS_BUILD, "pinn": PINN_BUILD, "compact": COMPACT_BUILD}
    rows = []
    for model, build in runs:
        build = builds[build]
        progress(f"accelerator: {model}, {build_label(build)} (Amaranth simulator, about a "
                 "minute)")
        run = prepare_model(model, 1)
        cfg = AcceleratorConfig.for_programs(run.program, **build)
        core = (CompactAccelerator if cfg.compact else Accelerator)(cfg)
        got = run_accelerator(core, run.program.to_bytes(), [run.inputs[0]])
        error, cycles, out = got["runs"][0]
        want = run_program(run.program, run.inputs[:1]).output[0].reshape(-1)
        ideal = accelerator_cycles(run.program, run.inputs[0], cfg)
        layers = got["layer_cycles"][0]
        rows.append({"model": model, "build": build_label(build), "lanes": cfg.lanes,
                     "engine_lanes": cfg.eng_lanes,
                     "error": int(error),
                     "matches_golden": error == 0 and out.tolist() == want.tolist(),
                     "cycles": cycles, "ideal_cycles": ideal["total"],
                     "ratio": round(cycles / ideal["total"], 3),
                     "encode_cycles": cycles - sum(layers), "ideal_encode": ideal["encode"],
                     "ops": [{"op": op.op.name, "cycles": c, "ideal": i,
                              "ratio": round(c / i, 3)}
                             for op, c, i in zip(run.program.ops, layers, ideal["ops"])],
                     "events": got["counters"]["perf_events"],
                     "skipped": got["counters"]["perf_skipped"]})
    # each row's board (BOARD_BUILDS): the clock its report was constrained to (met or not)
    # and its Fmax
    rated = {build_label(build): (board, build) for board, _, build in BOARD_BUILDS}
    for row in rows:
        board, build = rated.get(row["build"], rated[build_label(DIGITS_BUILD)])
        path = accelerator_report_path(board, build)
        report = json.loads(path.read_text()) if path.is_file() else {}
        if report.get("fmax_mhz"):
            row["board"] = f"{board} ({build_label(build)})"
            row.update(clock_mhz=report["target_mhz"], timing_met=report["timing_met"],
                       fmax_mhz=report["fmax_mhz"])
    return {"rows": rows, "max_ratio": max(r["ratio"] for r in rows)}


def bench_synth(progress) -> list[dict]:
    """The self test on every board, then every core in the harness on every board."""
    from .boards.flow import synth_board
    from .boards.harness import CORES
    from .boards.registry import BOARDS
    boards = {board: spec for board, spec in BOARDS.items() if not spec.missing_tools()}
    for board in BOARDS.keys() - boards.keys():
        progress(f"{board}: skipped, its tools are not installed "
                 f"(pip install {' '.join(BOARDS[board].pip_packages)})")
    builds = [(board, None) for board, spec in boards.items() if spec.family != "xc7"]
    builds += [(board, core) for core in CORES for board in boards]
    reports = []
    # the digits accelerator's throughput build on ECP5, the PINN's compact build on iCE40
    from .boards.accelerator_top import BOARD_BUILDS, MODEL_GROUPS, synth_accelerator
    from .rtl.device import build_label
    for board, model, build in BOARD_BUILDS:
        if board not in boards:
            continue
        try:
            reports.append(synth_accelerator(board, models=MODEL_GROUPS[model],
                                             progress=progress, **build))
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            progress(f"{board} accelerator: not built ({e})")
            reports.append({"board": board, "top": f"Device ({model}, {build_label(build)})",
                            "error": str(e)})
    for board, core in builds:
        try:
            reports.append(synth_board(board, core=core, progress=progress))
        except Exception as e:  # a failed build is reported, not fatal
            progress(f"{board} {core or 'self test'}: not built ({e})")
            reports.append({"board": board, "top": core or "LIFSelfTest", "error": str(e)})
    return reports


def to_markdown(result: dict) -> str:
    lif, syn = result["lif_throughput"], result["synapse_sparsity"]
    md = ["# spikeforge benchmarks", "",
          f"Generated {result['generated']} in {result['elapsed_s']} s.", "",
          "## LIFArray throughput (RTL, Amaranth simulator)", "",
          f"N={lif['n']}, T={lif['timesteps']}, P={lif['lanes']}: {lif['beats']} beats in "
          f"{lif['cycles']} cycles = {lif['beats_per_cycle']} beats/cycle "
          f"(matches golden: {lif['matches_golden']}).", "",
          "## SynapseEngine: cycles vs ideal bound, by input sparsity", "",
          f"{syn['n_in']} inputs x {syn['n_out']} outputs, P={syn['lanes']}, T={syn['timesteps']}."
          f" Target: ratio <= 1.15; >= 5x fewer cycles at 90 % sparsity than dense.", "",
          "Spike sparsity: each (t, i) spike is silent independently; with T-bit temporal",
          "packing a neuron costs work if any of its T bits is set, so at T=4 a 90 % spike",
          "sparsity leaves 1 - 0.9^4 = 34 % of the neurons active. Neuron sparsity: that",
          "fraction of input neurons is silent for the whole inference (zero word). The",
          "drain (T x outputs/P cycles into the LIF) is a fixed cost per inference.", "",
          "| sparsity kind | sparsity | events | busy cycles | ideal | ratio | matches golden |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['kind']} | {r['sparsity']:.0%} | {r['events']} | {r['busy_cycles']} | "
           f"{r['ideal_cycles']} | {r['ratio']} | {r['matches_golden']} |" for r in syn["rows"]]
    sp = syn["speedup_90_vs_0"]
    md += ["", f"Speed-up at 90 % vs 0 % sparsity: **{sp['neuron']}x** (neuron sparsity), "
           f"**{sp['spike']}x** (spike sparsity).", ""]
    att = result["attention"]
    md += ["## AttentionCore: cycles vs ideal bound, by spike sparsity", "",
           f"N={att['n']} tokens, D={att['d']} channels, T={att['timesteps']}, "
           f"P={att['lanes']} LIF lanes; Q, K, V spikes silent independently with the given "
           "probability. Silent key rows are dropped on arrival (`skipped`); `ops` are the "
           "accumulate cycles issued. Target: ratio <= 1.15.", "",
           "| mode | B | SDSA form | order | sparsity | key rows stored | skipped | ops | "
           "busy cycles | ideal | ratio | matches golden |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['mode']} | {r['block']} | {r['variant'] if r['mode'] == 'sdsa' else ''} | "
           f"{r['order'] if r['mode'] != 'sdsa' else ''} | {r['sparsity']:.0%} | {r['events']} | "
           f"{r['skipped']} | {r['ops']} | {r['busy_cycles']} | {r['ideal_cycles']} | "
           f"{r['ratio']} | {r['matches_golden']} |" for r in att["rows"]]
    md += ["", "Speed-up at 90 % vs 0 % spike sparsity: " + ", ".join(
        f"{name} **{x}x**" for name, x in att["speedup_90_vs_0"].items()), ""]
    acc = result.get("accelerator")
    if acc:
        md += ["## Accelerator: cycles per inference vs the ideal bound", "",
               "One held-out input per shipped network on the RTL Accelerator (Amaranth "
               "simulator; the compact build: CompactAccelerator), bound from golden "
               "`accelerator_cycles` (golden/accelerator.py; a compact build has its own). "
               "Target: ratio <= 1.15; digits >= 10,000 inferences/s on ECP5. Inferences/s at "
               "the board's clock (the build's constraint) and at its Fmax, host link "
               "excluded, from the last board report in build/reports.", "",
               "| model | build | matches golden | cycles | ideal | ratio | per op (ratio) | "
               "board | inf/s at its clock | inf/s at Fmax |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for r in acc["rows"]:
            per_op = ", ".join(f"{o['op'][:4]} {o['ratio']}" for o in r["ops"])
            if "clock_mhz" in r:
                board = (f"{r['board']}: {r['clock_mhz']} MHz "
                         f"({'met' if r['timing_met'] else 'NOT met'}), Fmax {r['fmax_mhz']:.1f}")
                rates = (f"{r['clock_mhz'] * 1e6 / r['cycles']:,.0f} | "
                         f"{r['fmax_mhz'] * 1e6 / r['cycles']:,.0f}")
            else:
                board, rates = "no board report", "n/a | n/a"
            md.append(f"| {r['model']} | {r['build']} | {r['matches_golden']} | {r['cycles']} | "
                      f"{r['ideal_cycles']} | {r['ratio']} | {per_op} | {board} | {rates} |")
        md.append("")
    md += ["## Board builds", "",
           "LIFSelfTest: the board self test (LIFArray N=64, W=16, P=1, constant θ/k). Cores:",
           "in the keep-alive harness with every input (config included) driven at random,",
           "see boards/harness.py for their parameters. iCE40: LCs; ECP5: LUT4s; Arty A7:",
           "Yosys synth_xilinx estimate of the core alone (LUT6 count, no place and route).", "",
           "| design | board | device | Fmax MHz | target MHz | met | LUTs/LCs | FFs | BRAMs | DSPs |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["synth"]:
        if "error" in r:
            md.append(f"| {r['top']} | {r['board']} | not built: {r['error'][:60]} | | | | | | | |")
        else:
            fmax = "estimate" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f}"
            md.append(f"| {r['top']} | {r['board']} | {r['device']} | {fmax} | "
                      f"{r['target_mhz'] or ''} | {r['timing_met'] if r['timing_met'] is not None else ''} | "
                      f"{r['luts']} | {r['ffs']} | {r['brams']} | {r['dsps']} |")
    return "\n".join(md) + "\n"


def run_bench(progress=print, synth=True) -> int:
    t0 = time.monotonic()
    progress("LIFArray throughput (Amaranth simulator)")
    lif = bench_lif_throughput()
    progress("SynapseEngine sparsity sweep (Amaranth simulator)")
    syn = bench_synapse_sparsity()
    progress("AttentionCore modes x sparsity (Amaranth simulator)")
    att = bench_attention()
    synth_reports = bench_synth(progress) if synth else []
    acc = bench_accelerator(progress=progress)
    result = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "lif_throughput": lif,
              "synapse_sparsity": syn, "attention": att, "accelerator": acc,
              "synth": synth_reports}
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "bench.json").write_text(json.dumps(result, indent=1))
    md = to_markdown(result)
    (REPORTS / "bench.md").write_text(md)
    print(md)
    progress(f"wrote {REPORTS / 'bench.json'} and {REPORTS / 'bench.md'}")
    return 0
