"""AttentionCore's generated Verilog on Verilator and Icarus against the golden attention.

A few structural parameter sets are built once per simulator; each runs many random cases in
one simulation, every case with its own run-time settings (mode SSA / STAtten(B) / SDSA
reference or paper, evaluation order auto or forced, θ, leak) and sparsity from 0 % to 99 %,
with random input gaps and output backpressure. At least 200 cases per simulator.
"""

import functools

import numpy as np
import pytest

from spikeforge.golden.attention import attention_y_max
from spikeforge.sim.attention_bench import build_attention, run_attention
from spikeforge.sim.runner import SIMULATORS, SimulationError

pytestmark = pytest.mark.cocotb

CONFIGS = {
    "n8-d16-t4-p4": dict(n=8, d=16, timesteps=4, lanes=4, theta=8),
    # odd sizes, a 10-bit membrane that saturates, three lanes
    "n5-d6-t4-p3-w10": dict(n=5, d=6, timesteps=4, lanes=3, width=10, theta=4),
    # T = 6 with blocks of up to 3, one lane: six beats per token row
    "n3-d4-t6-p1-w8": dict(n=3, d=4, timesteps=6, max_block=3, lanes=1, width=8, theta=3),
    # more tokens than channels: the auto order is Q (Kᵀ V); one output group per row
    "n12-d8-t2-p8": dict(n=12, d=8, timesteps=2, lanes=8, theta=10),
}
CASES_PER_CONFIG = 50


@functools.lru_cache(maxsize=None)
def built(sim, name):
    return build_attention(sim, **CONFIGS[name])


def random_cases(cfg, n_cases, seed):
    rng = np.random.default_rng(seed)
    T, N, D = cfg["timesteps"], cfg["n"], cfg["d"]
    blocks = [b for b in range(2, cfg.get("max_block", T) + 1) if T % b == 0]
    hi = (1 << (cfg.get("width", 16) - 1)) - 1
    cases = []
    for _ in range(n_cases):
        mode = str(rng.choice(["ssa", "statten", "sdsa"] if blocks else ["ssa", "sdsa"]))
        block = int(rng.choice(blocks)) if mode == "statten" else 1
        sparsity = rng.choice([0.0, 0.5, 0.9, 0.99, rng.random()])
        q, k, v = ((rng.random((T, N, D)) >= sparsity).astype(np.int64) for _ in range(3))
        y_max = attention_y_max(N, D, mode, block)
        cases.append(dict(
            q=q, k=k, v=v, mode=mode, block=block,
            variant=str(rng.choice(["reference", "paper"])),
            order=[None, "qk_v", "q_kv"][rng.integers(3)],
            theta=int(min(hi, rng.integers(1, max(2, y_max // 2 + 1)))),
            leak_shift=None if rng.random() < 0.5 else int(rng.integers(0, 4))))
    return cases


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("sim", SIMULATORS)
def test_random_cases_match_golden(sim, name):
    cfg = CONFIGS[name]
    result = run_attention(built(sim, name), random_cases(cfg, CASES_PER_CONFIG, len(name)),
                           gap_prob=0.25, backpressure_prob=0.25, seed=7)
    assert result.results["matched"]
    cases = result.results["cases"]
    assert len(cases) == CASES_PER_CONFIG
    assert {c["mode"] for c in cases} >= {"ssa", "sdsa"}


@pytest.mark.parametrize("sim", SIMULATORS)
def test_cycles_within_bound_of_ideal(sim):
    """No pauses: ideal <= busy cycles <= 1.15 x ideal on every case."""
    name = "n8-d16-t4-p4"
    result = run_attention(built(sim, name), random_cases(CONFIGS[name], 12, seed=3), seed=1)
    for case in result.results["cases"]:
        assert case["ideal_cycles"] <= case["busy_cycles"] <= 1.15 * case["ideal_cycles"], case


@pytest.mark.parametrize("sim", SIMULATORS)
def test_bench_can_fail(sim):
    name = "n5-d6-t4-p3-w10"
    with pytest.raises(SimulationError, match="mismatch"):
        run_attention(built(sim, name), random_cases(CONFIGS[name], 2, seed=5), corrupt_case=1)
