"""`make demo` / `spikeforge demo`: the product's main job end to end.

1. Compile the shipped digits transformers (SSA, SDSA, STAtten) and the spiking PINN.
2. Run them on the Verilator-simulated accelerator (rtl/device.py) through the UART host link
   and the real driver: one build for the three transformers, one for the PINN, and the
   compact build (the iCE40UP5K's, docs/compact.md) for the PINN. Every output is compared
   with the golden network (bit-identical or the demo fails).
3. Cycles per inference (the device's PERF counter) next to the golden ideal bound
   (golden/accelerator.py), and inferences/s at the board's clock (the constraint its build
   met) and at its reported Fmax.
4. The board bitstreams and reports (boards/accelerator_top.py): the digits accelerator on
   the ULX3S, the PINN's compact build on the iCEBreaker.
A summary table at the end; `--no-synth` skips step 4 (then the rates use the last reports
found in build/reports, and say so).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

DIGITS = ("digits-ssa", "digits-sdsa", "digits-statten")
DIVISOR = 4                # UART bit time in simulated clock cycles (fastest simulation)
REPORTS = Path("build/reports")


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / max(1, total))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _progress_lines(progress):
    """The simulation's progress lines, with a bar for "k/n inferences"."""
    def show(line: str) -> None:
        m = re.match(r"(\d+)/(\d+) inferences", line)
        progress(f"  {_bar(int(m.group(1)), int(m.group(2)))} inferences" if m else f"  {line}")
    return show


def _simulate(programs, steps, build, progress, sim):
    from .rtl.device import Device, device_params
    from .sim.link_runner import run_link_job
    params = device_params(*programs, divisor=DIVISOR, **build)
    summary, _ = run_link_job(Device, params, toplevel="device", sim=sim,
                              job="spikeforge.sim.link_jobs:sequence", args={"steps": steps},
                              divisor=DIVISOR, timeout_cycles=2_000_000,
                              progress=_progress_lines(progress))
    return summary["steps"]


def _row(run, prepared, build):
    """One summary row: device vs golden, cycles vs the ideal bound."""
    from .golden.accelerator import accelerator_cycles
    from .golden.pinn import rel_l2
    from .golden.program_loader import AcceleratorConfig
    from .rtl.device import build_label
    cfg = AcceleratorConfig.for_programs(prepared.program, **build)
    ideal = accelerator_cycles(prepared.program, prepared.inputs[-1], cfg)["total"]
    row = {"model": prepared.model, "build": build_label(build), "inferences": run["inferences"],
           "bit_identical": run["bit_identical_to_golden"], "lanes": cfg.lanes,
           "engine_lanes": cfg.eng_lanes,
           "cycles": run["perf"]["cycles"], "ideal_cycles": ideal,
           "cycles_vs_ideal": round(run["perf"]["cycles"] / ideal, 3),
           "layer_cycles": run["layer_cycles"]}
    if prepared.family == "digits":
        golden_pred = np.asarray(prepared.golden).argmax(axis=1)
        row["quality"] = f"accuracy {run['accuracy']:.3f}"
        row["golden_quality"] = f"accuracy {np.mean(golden_pred == prepared.labels):.3f}"
    else:
        u = np.asarray(prepared.golden)[:, 0] * prepared.readout_scale
        row["quality"] = f"rel L2 {run['rel_l2_vs_analytic']:.2e}"
        row["golden_quality"] = f"rel L2 {rel_l2(u, prepared.exact):.2e}"
    return row


def _board_report(board, models, build, synth, progress):
    """A build's board report: built now, or the last one on disk."""
    from .boards.accelerator_top import accelerator_report_path, synth_accelerator
    from .rtl.device import build_label
    path = accelerator_report_path(board, build)
    if synth:
        progress(f"building the {board} bitstream of the {build_label(build)} accelerator "
                 f"for {', '.join(models)} (place and route takes minutes)")
        return synth_accelerator(board, models=models, progress=progress, **build), "built now"
    if path.is_file():
        return json.loads(path.read_text()), f"from {path}"
    return None, "no board report"


def format_table(rows: list[dict]) -> str:
    """The summary; a row's rates are at its board's clock (`clock`, the constraint its build
    met) and at its Fmax, when it has a board report."""
    head = ("model", "build", "n", "device", "golden", "bit-identical", "cycles/inf",
            "vs ideal", "board clock", "inf/s", "inf/s at Fmax")
    body = []
    for r in rows:
        clock = r.get("clock")
        body.append((r["model"], r["build"], str(r["inferences"]), r["quality"],
                     r["golden_quality"], "yes" if r["bit_identical"] else "NO",
                     f"{r['cycles']:,}", f"{r['cycles_vs_ideal']:.2f}x",
                     f"{clock['board']} {clock['mhz']} MHz"
                     f"{'' if clock['met'] else ' (NOT met)'}" if clock else "no report",
                     f"{clock['mhz'] * 1e6 / r['cycles']:,.0f}" if clock else "n/a",
                     f"{clock['fmax'] * 1e6 / r['cycles']:,.0f} ({clock['fmax']:.1f} MHz)"
                     if clock else "n/a"))
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line, fmt(head), line, *map(fmt, body), line,
                      "inf/s: host link excluded; the PINN's fast build has no board of its "
                      "own (rated at the ULX3S digits build's clock)"])


def run_demo(images: int = 20, points: int = 32, board: str = "ulx3s", synth: bool = True,
             sim: str = "verilator", progress=print) -> dict:
    from .sim.link_jobs import prepare_model
    if images < 1 or points < 2:
        raise ValueError(f"need images >= 1 and points >= 2, got {images}, {points}")
    t0 = time.monotonic()
    progress(f"compiling {', '.join(DIGITS)} and pinn-sin")
    digits = [prepare_model(m, images) for m in DIGITS]
    pinn = prepare_model("pinn-sin", points)
    from .rtl.device import COMPACT_BUILD, DIGITS_BUILD, PINN_BUILD, build_label
    progress(f"digits transformers on the {sim} accelerator ({build_label(DIGITS_BUILD)}), "
             f"{images} held-out images each, through the UART host link")
    runs = _simulate([p.program for p in digits],
                     [{"job": "run_model", "args": {"model": p.model, "count": images}}
                      for p in digits], DIGITS_BUILD, progress, sim)
    rows = [_row(r, p, DIGITS_BUILD) for r, p in zip(runs, digits)]
    for build in (PINN_BUILD, COMPACT_BUILD):   # the compact build: the iCE40UP5K's
        progress(f"spiking PINN on the {sim} accelerator ({build_label(build)}), "
                 f"{points} points")
        run, = _simulate([pinn.program], [{"job": "run_model",
                                           "args": {"model": "pinn-sin", "count": points}}],
                         build, progress, sim)
        rows.append(_row(run, pinn, build))
    from .boards.accelerator_top import MODEL_GROUPS
    from .boards.flow import format_report_table
    boards = {}
    for name, models, build in ((board, DIGITS, DIGITS_BUILD),
                                ("icebreaker", MODEL_GROUPS["pinn"], COMPACT_BUILD)):
        report, note = _board_report(name, models, build, synth, progress)
        if report is not None:
            print(format_report_table(report))
            boards[build_label(build)] = {
                "board": name, "mhz": report["target_mhz"], "met": report["timing_met"],
                "fmax": report["fmax_mhz"], "source": note}
    for row in rows:
        row["clock"] = boards.get("compact" if row["build"] == "compact"
                                  else build_label(DIGITS_BUILD))
    print(format_table(rows))
    result = {"rows": rows, "boards": boards, "seconds": round(time.monotonic() - t0, 1)}
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "demo.json").write_text(json.dumps(result, indent=1))
    progress(f"demo finished in {result['seconds']:.0f} s; wrote {REPORTS / 'demo.json'}")
    result["ok"] = all(r["bit_identical"] for r in rows)
    return result
