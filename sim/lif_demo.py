"""Run one LIF layer on the simulated RTL (Verilator by default) and compare it with golden.

Used by `spikeforge demo` / `spikeforge sim`: the same bench as the cocotb tests
(`spikeforge.sim.lif_bench`), but a mismatch is reported in the result instead of raised.
"""

from __future__ import annotations

import numpy as np

from ..golden.lif import LIFParams
from .lif_bench import build_lif, run_lif
from .runner import SimulationError


def run_lif_layer(currents, params: LIFParams, lanes: int, simulator: str = "verilator",
                  gap_prob: float = 0.0, backpressure_prob: float = 0.0, seed: int = 0) -> dict:
    """`currents` [T, N] through a `LIFArray(n=N, lanes=lanes, **params)`.

    Returns matched, mismatches (output beats that differ or are missing), cycles (first
    input to last output), updates (neuron-updates done), spikes [T, N] and v [N] as the RTL
    produced them, sat_count (RTL) and golden_sat_count.
    """
    currents = np.asarray(currents)
    build = build_lif(params, currents.shape[1], lanes, simulator)
    run = run_lif(build, currents, gap_prob=gap_prob, backpressure_prob=backpressure_prob,
                  seed=seed, check=False)
    if not run.results:
        raise SimulationError(f"the bench wrote no results; see {run.run_dir}/sim.log")
    keys = ("mismatches", "cycles", "updates", "sat_count", "golden_sat_count")
    return {"matched": run.passed and run.results["matched"],
            **{k: run.results[k] for k in keys},
            "spikes": run.arrays["spikes"], "v": run.arrays["v"]}
