"""Board builds: amaranth-boards + yowasp (Yosys, nextpnr, packer) -> bitstream and a
utilization / Fmax report in build/reports/synth-<board>.json.

Where each number comes from: `fmax_mhz` and the cell counts from nextpnr's `--report`
JSON (after place and route); `ffs` from Yosys' final `stat` in the synthesis log (nextpnr's
iCE40 report counts logic cells, which pack a LUT and a flip-flop together); `tools` from
the installed pip packages' metadata and the Yosys log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from .registry import get_board

# nextpnr cell types per family: LUTs (or logic cells), block RAMs, DSPs.
CELLS = {
    "ice40": {"luts": "ICESTORM_LC", "brams": "ICESTORM_RAM", "dsps": "ICESTORM_DSP",
              "sprams": "ICESTORM_SPRAM"},
    "ecp5": {"luts": "TRELLIS_COMB", "brams": "DP16KD", "dsps": "MULT18X18D",
             "lutrams": "TRELLIS_RAMW"},
}


def _use_yowasp_tools(board, build_dir: Path) -> None:
    """Point amaranth's build scripts at the pip-installed tools, even without an active venv."""
    board.require_tools()
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    for var, exe in board.tools.items():
        os.environ.setdefault(var, exe)
    if board.family == "ecp5" and "OPENFPGALOADER" not in os.environ:
        stub = build_dir / "openFPGALoader-stub"
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\necho 'spikeforge builds only; install openFPGALoader to "
                        "program a board' >&2\nexit 1\n")
        stub.chmod(0o755)
        os.environ["OPENFPGALOADER"] = str(stub.resolve())


def count_flip_flops(synth_log: str) -> int:
    """Flip-flop cells in the last `stat` of a Yosys log (SB_DFF*, TRELLIS_FF, DFF*): its
    design-hierarchy total when there is one, else its only module."""
    stats = synth_log.split("Printing statistics")[-1].split("=== design hierarchy ===")[-1]
    total = 0
    for line in stats.splitlines():
        m = re.match(r"\s*(?:(\d+)\s+(\S*(?:DFF|_FF)\S*)|(\S*(?:DFF|_FF)\S*)\s+(\d+))\s*$", line)
        if m:
            total += int(m.group(1) or m.group(4))
    return total


def parse_nextpnr_report(report: dict, family: str) -> dict:
    """Fmax of the slowest clock and the used/available counts of the family's cells."""
    fmax = report.get("fmax", {})
    if not fmax:
        raise ValueError("nextpnr report has no clock (fmax) section")
    slowest = min(fmax.values(), key=lambda c: c["achieved"])
    util = report.get("utilization", {})

    def used(kind):
        if family not in CELLS:
            return None  # no cell mapping for this family yet: see `utilization`
        return util.get(CELLS[family].get(kind, ""), {}).get("used", 0)

    out = {"fmax_mhz": round(slowest["achieved"], 2),
           "constraint_mhz": round(slowest["constraint"], 2),
           "timing_met": all(c["achieved"] >= c["constraint"] for c in fmax.values()),
           "luts": used("luts"), "brams": used("brams"), "dsps": used("dsps"),
           "utilization": {k: v for k, v in util.items() if v.get("used")},
           "utilization_pct": {k: round(100 * v["used"] / v["available"], 1)
                               for k, v in util.items() if v.get("used") and v.get("available")}}
    if family == "ice40":
        out["lcs"] = out["luts"]
        out["sprams"] = used("sprams")
    else:
        out["lutrams"] = used("lutrams")
    return out


XILINX_CELLS = {"luts": r"LUT[1-6]", "ffs": r"FD[CEPRS]+", "brams": r"RAMB(?:18|36)\w*",
                "dsps": r"DSP48\w*", "lutrams": r"RAM(?:32|64|128|256)\w*", "carry4": r"CARRY4"}


def estimate_xilinx(core: str, build_dir="build", progress=print) -> dict:
    """Yosys `synth_xilinx` cell counts for a core alone (no harness, no IO buffers
    counted): an estimate of what a 7-series part needs. No Fmax: no open 7-series P&R."""
    from amaranth.back import verilog
    from .harness import CORES
    if core not in CORES:
        raise ValueError(f"unknown core {core!r}; known cores: {', '.join(sorted(CORES))}")
    spec = get_board("arty_a7")
    _use_yowasp_tools(spec, Path(build_dir))
    out_dir = Path(build_dir, "boards", f"{core}-arty_a7").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{core}.v").write_text(verilog.convert(CORES[core](), name="core"))
    progress(f"arty_a7: synth_xilinx estimate of {core} for {spec.device}")
    t0 = time.monotonic()
    subprocess.run([os.environ["YOSYS"], "-q", "-l", "synth.log", "-p",
                    f"read_verilog {core}.v; synth_xilinx -family xc7 -top core; stat"],
                   cwd=out_dir, check=True)
    stats = (out_dir / "synth.log").read_text().split("Printing statistics")[-1]
    counts = {k: 0 for k in XILINX_CELLS}
    for line in stats.splitlines():
        m = re.match(r"\s*(\d+)\s+(\S+)\s*$", line) or re.match(r"\s*(\S+)\s+(\d+)\s*$", line)
        if not m:
            continue
        n, cell = (m.group(1), m.group(2)) if m.group(1).isdigit() else (m.group(2), m.group(1))
        for kind, pattern in XILINX_CELLS.items():
            if re.fullmatch(pattern, cell):
                counts[kind] += int(n)
    result = {"board": "arty_a7", "device": spec.device, "family": "xc7", "estimate": True,
              "fmax_mhz": None, "target_mhz": None, "timing_met": None, **counts,
              "elapsed_s": round(time.monotonic() - t0, 1), "top": f"{core} (synth_xilinx)"}
    reports = Path(build_dir, "reports")
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"estimate-{core}-arty_a7.json").write_text(json.dumps(result, indent=1))
    return result


def git_commit() -> dict:
    """The commit being built and whether the working tree differs from it (other engineers
    edit the same tree: a report names what it measured)."""
    root = Path(__file__).resolve().parent.parent
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=False).stdout.strip()
    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


class BuildFailed(RuntimeError):
    """Synthesis or place and route failed (typically: the design does not fit). `summary`
    has the cell counts Yosys mapped (`mapped`) and nextpnr's error lines (`errors`)."""

    def __init__(self, board, out_dir: Path, name: str):
        self.out_dir = out_dir
        self.summary = summarize_failed_build(out_dir, name)
        errors = "; ".join(self.summary["errors"]) or "see the logs"
        super().__init__(f"{board}: the build failed in {out_dir}: {errors}")


def summarize_failed_build(out_dir: Path, name: str) -> dict:
    """What a failed build got to: the final Yosys `stat` cell counts (from <name>.rpt) and
    the ERROR lines of nextpnr's log (<name>.tim)."""
    out_dir = Path(out_dir)
    rpt, tim = out_dir / f"{name}.rpt", out_dir / f"{name}.tim"
    mapped = {}
    if rpt.is_file():
        stats = rpt.read_text().split("Printing statistics")[-1]
        stats = stats.split("=== design hierarchy ===")[-1]
        for line in stats.splitlines():
            m = re.match(r"\s*(\d+)\s+([A-Z]\w+)\s*$", line) or \
                re.match(r"\s*([A-Z]\w+)\s+(\d+)\s*$", line)
            if m:
                n, cell = (m.group(1), m.group(2)) if m.group(1).isdigit() else m.group(2, 1)
                mapped[cell] = mapped.get(cell, 0) + int(n)
    errors = [line.strip() for line in (tim.read_text().splitlines() if tim.is_file() else [])
              if "ERROR" in line]
    return {"mapped": mapped, "errors": errors}


def tool_versions(board, synth_log: str = "") -> dict:
    """Versions of the pip packages that provide the board's tools (and of amaranth), plus the
    Yosys version line of the synthesis log."""
    versions = {}
    for pkg in ("amaranth", "amaranth-boards", *board.pip_packages):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    m = re.search(r"^Yosys (\d[^ ]*)", synth_log, re.M)
    if m:
        versions["yosys"] = m.group(1)
    return versions


def synth_board(board: str, top=None, target_mhz: float | None = None, build_dir="build",
                name="top", progress=print, report_name=None, core=None, top_pll=False,
                build_opts=None, extra=None) -> dict:
    """Build `top` (default: the LIFArray self test; with `core`, that core in the harness)
    for `board`; returns the report and writes build/reports/synth-<report_name>.json.
    `top_pll`: the caller's top makes its clock with `add_pll_domain` at `target_mhz` (keep
    the oscillator's real constraint). `build_opts`: amaranth build overrides (`synth_opts`,
    ...). `extra`: fields added to the report."""
    spec = get_board(board)
    if spec.family == "xc7":
        if core is None:
            raise ValueError("arty_a7 is an estimate only: give a core (--core lif, ...)")
        return estimate_xilinx(core, build_dir=build_dir, progress=progress)
    target = target_mhz or spec.default_target_mhz
    pll = (spec.osc_mhz, target) if spec.family in ("ice40", "ecp5") else None
    user_top = top is not None and core is None
    if core is not None:
        from .harness import CORES, CoreHarness
        if core not in CORES:
            raise ValueError(f"unknown core {core!r}; known cores: {', '.join(sorted(CORES))}")
        top = CoreHarness(CORES[core](), pll=pll)
        report_name = report_name or f"{core}-{board}"
        name = core
    elif top is None:
        from .selftest import LIFSelfTest
        top = LIFSelfTest(pll=pll)
    report_name = report_name or board
    _use_yowasp_tools(spec, Path(build_dir))
    out_dir = Path(build_dir, "boards", report_name).resolve()
    report_path = out_dir / f"{name}.nextpnr.json"
    progress(f"{board}: synthesis, place and route for {spec.device} at {target} MHz "
             f"(yowasp tools; about a minute)")
    t0 = time.monotonic()
    # A top of the caller's has no PLL of ours: constrain its oscillator at the target.
    platform = spec.make_platform(target, retime=(user_top and not top_pll) or pll is None)
    opts = dict(build_opts or {})
    # relative: the build runs in out_dir, and yowasp's sandboxed tools may not see absolute
    # paths outside it
    opts["nextpnr_opts"] = (f"--report {report_path.name} --timing-allow-fail "
                            + opts.get("nextpnr_opts", "")).strip()
    commit = git_commit()
    try:
        platform.build(top, name=name, build_dir=str(out_dir), do_program=False, **opts)
    except subprocess.CalledProcessError as err:
        failed = BuildFailed(board, out_dir, name)
        # A design that does not fit still gets its report: what Yosys mapped, why it failed.
        reports = Path(build_dir, "reports")
        reports.mkdir(parents=True, exist_ok=True)
        (reports / f"synth-{report_name}.json").write_text(json.dumps(
            {"board": board, "device": spec.device, "family": spec.family,
             "target_mhz": target, "fit": False, **failed.summary,
             "elapsed_s": round(time.monotonic() - t0, 1), "top": type(top).__name__,
             "git": commit, **(extra or {})}, indent=1))
        raise failed from err
    elapsed = time.monotonic() - t0
    bitstream = next((out_dir / f"{name}.{ext}" for ext in ("bin", "bit", "fs")
                      if (out_dir / f"{name}.{ext}").is_file()), None)
    if bitstream is None or bitstream.stat().st_size == 0:
        raise RuntimeError(f"{board}: the build produced no bitstream in {out_dir}")
    synth_log = (out_dir / f"{name}.rpt").read_text()
    result = {"board": board, "device": spec.device, "family": spec.family,
              "target_mhz": target, "fit": True,
              **parse_nextpnr_report(json.loads(report_path.read_text()), spec.family),
              "ffs": count_flip_flops(synth_log), "tools": tool_versions(spec, synth_log),
              "bitstream": str(bitstream), "bitstream_bytes": bitstream.stat().st_size,
              "elapsed_s": round(elapsed, 1),
              "top": f"{type(top.core).__name__} ({core})" if core else type(top).__name__,
              "git": commit, **(extra or {})}
    reports = Path(build_dir, "reports")
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"synth-{report_name}.json").write_text(json.dumps(result, indent=1))
    progress(f"{board}: done in {elapsed:.0f} s; wrote {reports / f'synth-{report_name}.json'}")
    return result


def format_report_table(r: dict) -> str:
    fmax = ("none: synthesis estimate only (no open 7-series place and route)"
            if r["fmax_mhz"] is None else
            f"{r['fmax_mhz']:.1f} MHz (target {r['target_mhz']} MHz, "
            f"{'met' if r['timing_met'] else 'NOT met'})")
    bitstream = (f"{r['bitstream']} ({r['bitstream_bytes']} bytes)" if "bitstream" in r
                 else "none")
    pct = r.get("utilization_pct", {})
    luts = r["luts"] if r["luts"] is not None else "n/a"
    lut_cell = CELLS.get(r.get("family"), {}).get("luts")
    if lut_cell in pct:
        luts = f"{luts} ({pct[lut_cell]} % of the device)"
    tools = ", ".join(f"{k} {v}" for k, v in r.get("tools", {}).items()
                      if k == "yosys" or k.startswith("yowasp-nextpnr")) or "?"
    rows = [("board", r["board"]), ("device", r["device"]), ("design", r.get("top", "")),
            ("Fmax", fmax), ("logic cells / LUTs", luts), ("flip-flops", r["ffs"]),
            ("block RAMs", r["brams"]), ("DSPs", r["dsps"]), ("bitstream", bitstream),
            ("build time", f"{r['elapsed_s']} s"), ("tools", tools)]
    width = max(len(k) for k, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * 62 + "+"
    body = [f"| {k:<{width}} | {str(v):<60} |" for k, v in rows]
    return "\n".join([line, *body, line])
