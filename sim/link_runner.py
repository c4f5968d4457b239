"""Run a host-link job (sim/link_jobs.py) against simulated RTL, host side.

    summary, arrays = run_link_job(Device, params, toplevel="device", sim="verilator",
                                   job="spikeforge.sim.link_jobs:ping", args={},
                                   divisor=8, timeout_cycles=200_000)

builds `factory(**params)` once per parameter set (`sim.runner.build_component`) and runs
`link_bench` on it: the job drives the real `AcceleratorLink` over a simulated UART. A job
that raises (DeviceError, LinkTimeout, AssertionError, ...) raises `LinkJobError` here with
the job's own message. With `progress`, the job's progress lines are shown as they happen.
"""

from __future__ import annotations

import os
import tempfile
import threading

from .runner import SimulationError, _log_excerpt, build_component, build_root

BENCH = "spikeforge.sim.link_bench"


class LinkJobError(SimulationError):
    """The job raised inside the simulation; `error_type` is its exception's class name."""

    def __init__(self, message: str, error_type: str | None = None):
        super().__init__(message)
        self.error_type = error_type


class _Tail:
    """Follows a file the simulator appends lines to, calling `progress` for each line."""

    def __init__(self, path: str, progress):
        self.path, self.progress = path, progress
        self.offset = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _poll(self) -> None:
        with open(self.path) as f:
            f.seek(self.offset)
            text = f.read()
        done = text[:text.rfind("\n") + 1]        # whole lines only
        self.offset += len(done.encode())
        for line in done.splitlines():
            self.progress(line)

    def _loop(self) -> None:
        while not self.stopped.wait(0.25):
            self._poll()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()
        self._poll()


def run_link_job(factory, params: dict, *, toplevel: str, sim: str, job: str,
                 args: dict | None = None, divisor: int, timeout_cycles: int,
                 max_gap_cycles: int = 0, seed: int = 0, progress=None,
                 build_args: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Build (or reuse) `factory(**params)` for `sim` ("verilator" | "icarus") and run `job`
    ("module:function", called as `function(link, **args)`) over its UART at `divisor` clock
    cycles per bit. Returns the job's (summary, arrays); summary["link"] has the byte counts
    and the simulated time."""
    if divisor < 2:
        raise ValueError(f"divisor must be at least 2 clock cycles per bit, got {divisor}")
    if timeout_cycles < 1:
        raise ValueError(f"timeout_cycles must be positive, got {timeout_cycles}")
    if progress:
        progress(f"building {toplevel} for {sim} (reused when already built)")
    build = build_component(factory, params, toplevel=toplevel, sim=sim, build_args=build_args)
    config = {"divisor": divisor, "timeout_cycles": timeout_cycles,
              "max_gap_cycles": max_gap_cycles, "seed": seed, "job": job, "args": args or {}}
    if progress is None:
        result = build.run(BENCH, config, seed=seed, check=False)
    else:
        build_root().mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="link-progress-", suffix=".txt", dir=build_root())
        os.close(fd)
        config["progress_file"] = path
        progress(f"running {job.rsplit(':', 1)[-1]} on {sim}")
        try:
            with _Tail(path, progress):
                result = build.run(BENCH, config, seed=seed, check=False)
        finally:
            os.unlink(path)
    if not result.passed:
        error = result.results.get("error")
        where = f" (run kept in {result.run_dir})" if result.run_dir else ""
        if error:
            raise LinkJobError(f"{job} on {sim}: {error}{where}", result.results.get("error_type"))
        # no job error recorded: the simulator or the bench itself failed
        log = _log_excerpt(result.run_dir / "sim.log") if result.run_dir else ""
        raise SimulationError(f"{job} on {sim} failed{where}:\n{log}")
    return result.results, result.arrays
