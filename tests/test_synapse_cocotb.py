"""SynapseEngine's generated Verilog on Verilator and Icarus against golden `synapse_engine`.

A few structural parameter sets are built once per simulator; each runs many random cases in
one simulation (weights, biases and sparsity from 0 % to 99 % drawn per case, weights loaded
through the run-time `load` port), with random input gaps, output backpressure, explicit
silent beats and out-of-range indices. At least 200 cases per simulator; one build has the
Accelerator's two accumulator banks.
"""

import functools

import numpy as np
import pytest

from spikeforge.golden.lif import signed_range
from spikeforge.sim.runner import SIMULATORS, SimulationError
from spikeforge.sim.synapse_bench import build_synapse, run_synapse

pytestmark = pytest.mark.cocotb

CONFIGS = {
    "64x32-p4-t4-w8": dict(n_in=64, n_out=32, lanes=4, timesteps=4, weight_width=8),
    # n_in = 50 behind a 6-bit index: out-of-range events exist; 4-bit weights, biases.
    "50x12-p2-t8-w4-b6": dict(n_in=50, n_out=12, lanes=2, timesteps=8, weight_width=4,
                              bias_width=6),
    # One output group: every event hits the same accumulator word back to back.
    "16x8-p8-t2-w8-b10": dict(n_in=16, n_out=8, lanes=8, timesteps=2, weight_width=8,
                              bias_width=10),
    "33x9-p3-t6-w6": dict(n_in=33, n_out=9, lanes=3, timesteps=6, weight_width=6),
    # The Accelerator's engine: two accumulator banks used in turn (case k in bank k % 2),
    # cleared by flags; a case's untouched groups must read as 0 in either bank.
    "40x16-p4-t4-w8-b9-banks2": dict(n_in=40, n_out=16, lanes=4, timesteps=4, weight_width=8,
                                     bias_width=9, acc_banks=2),
}
CASES_PER_CONFIG = 50


@functools.lru_cache(maxsize=None)
def built(sim, name):
    return build_synapse(sim, **CONFIGS[name])


def random_cases(cfg, n_cases, seed):
    rng = np.random.default_rng(seed)
    lo, hi = signed_range(cfg["weight_width"])
    cases = []
    for _ in range(n_cases):
        sparsity = rng.choice([0.0, 0.5, 0.9, 0.99, rng.random()])
        weights = rng.integers(lo, hi + 1, size=(cfg["n_out"], cfg["n_in"]))
        weights[rng.random(weights.shape) < 0.1] = rng.choice([lo, hi])  # extremes
        case = {"weights": weights,
                "spikes": (rng.random((cfg["timesteps"], cfg["n_in"])) >= sparsity).astype(int)}
        if "bias_width" in cfg:
            blo, bhi = signed_range(cfg["bias_width"])
            case["bias"] = rng.integers(blo, bhi + 1, size=cfg["n_out"])
        cases.append(case)
    return cases


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("sim", SIMULATORS)
def test_random_cases_match_golden(sim, name):
    cfg = CONFIGS[name]
    result = run_synapse(built(sim, name), random_cases(cfg, CASES_PER_CONFIG, seed=len(name)),
                         gap_prob=0.25, backpressure_prob=0.25, bad_index_prob=0.05,
                         silent_beat_prob=0.2, seed=7)
    assert result.results["matched"]
    assert len(result.results["cases"]) == CASES_PER_CONFIG


@pytest.mark.parametrize("sim", SIMULATORS)
def test_cycles_within_bound_of_ideal(sim):
    """No pauses, no extra beats: busy cycles <= 1.15 x the ideal bound of every case."""
    name = "64x32-p4-t4-w8"
    result = run_synapse(built(sim, name), random_cases(CONFIGS[name], 12, seed=3), seed=1)
    for case in result.results["cases"]:
        assert case["busy_cycles"] <= 1.15 * case["ideal_cycles"], case


@pytest.mark.parametrize("sim", SIMULATORS)
def test_bench_can_fail(sim):
    name = "33x9-p3-t6-w6"
    with pytest.raises(SimulationError, match="mismatch"):
        run_synapse(built(sim, name), random_cases(CONFIGS[name], 2, seed=5), corrupt_case=1)
