"""LIFArray's generated Verilog on Verilator and Icarus against the golden `lif_array`, via cocotb.

Each parameter set is built once per simulator (session fixture + on-disk build cache) and run
with random currents that include full-range values and runs of max/min (saturation). The
2 x 2 backpressure matrix runs on the base set, random stress (input gaps and output pauses)
on the others. The bench's scoreboard failing fails the test (`test_bench_can_fail` proves it).
"""

import functools
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from spikeforge.golden.lif import LIFParams, signed_range
from spikeforge.sim.lif_bench import build_lif, run_lif
from spikeforge.sim.runner import SIMULATORS, SimulationError

pytestmark = pytest.mark.cocotb

LATENCY = 6  # docs/interfaces.md: input transfer to output transfer, no pauses


@dataclass(frozen=True)
class Case:
    params: LIFParams
    n: int
    lanes: int
    timesteps: int
    load_v0: bool = False  # start from random membranes written with LOAD beats

    @property
    def updates(self) -> int:
        return self.timesteps * self.n


BASE = "if-w16-p1"
CASES = {
    # G = 48 groups behind a 6-bit index: out-of-range indices 48..63 exist.
    BASE: Case(LIFParams(theta=1000, width=16), n=48, lanes=1, timesteps=60),
    "k1-zero-w8-p4": Case(LIFParams(theta=50, leak_shift=1, width=8, reset="zero"),
                          n=64, lanes=4, timesteps=64),
    "k4-sub-w16-p4-load": Case(LIFParams(theta=3000, leak_shift=4, width=16),
                               n=40, lanes=4, timesteps=64, load_v0=True),
    "k4-zero-vreset-w8-p1": Case(LIFParams(theta=40, leak_shift=4, width=8, reset="zero",
                                           v_reset=-7), n=24, lanes=1, timesteps=90, load_v0=True),
    "signed-k1-w8-cur10-p4": Case(LIFParams(theta=30, leak_shift=1, width=8, signed_spikes=True,
                                            current_width=10), n=24, lanes=4, timesteps=100),
    # One or two groups: back-to-back beats for the same group (forwarding / bubbles).
    "k0-w16-p4-g1": Case(LIFParams(theta=200, leak_shift=0, width=16), n=4, lanes=4,
                         timesteps=150),
    "k2-zero-w16-p1-g2": Case(LIFParams(theta=500, leak_shift=2, width=16, reset="zero",
                                        v_reset=100), n=2, lanes=1, timesteps=300),
}
PAUSES = {"none": (0.0, 0.0), "input-gaps": (0.3, 0.0), "backpressure": (0.0, 0.3),
          "both": (0.3, 0.3)}
STRESS = (0.25, 0.25)  # (gap_prob, backpressure_prob) for the random stress runs
BAD_INDEX_PROB = 0.05


def stress_currents(rng, case: Case) -> np.ndarray:
    """Mostly near θ, 15 % uniform over the full input range, plus runs of max / min."""
    lo, hi = signed_range(case.params.in_width)
    shape = (case.timesteps, case.n)
    theta = case.params.theta
    x = rng.normal(0.3 * theta, theta, shape)
    full = rng.random(shape) < 0.15
    x[full] = rng.integers(lo, hi + 1, int(full.sum()))
    for _ in range(max(1, case.n // 4)):
        j, t0 = rng.integers(case.n), rng.integers(case.timesteps)
        x[t0:t0 + rng.integers(2, 12), j] = rng.choice((lo, hi))
    return np.clip(np.rint(x), lo, hi).astype(np.int64)


def random_v0(rng, case: Case) -> np.ndarray:
    """Membranes a LOAD can write exactly: within both the membrane and the input range."""
    lo_w, hi_w = signed_range(case.params.width)
    lo_x, hi_x = signed_range(case.params.in_width)
    return rng.integers(max(lo_w, lo_x), min(hi_w, hi_x) + 1, case.n)


@pytest.fixture(scope="session")
def lif_build():
    """Build each (simulator, case) once per session; the on-disk cache spans sessions."""
    @functools.cache
    def get(sim: str, name: str):
        case = CASES[name]
        return build_lif(case.params, case.n, case.lanes, sim)
    return get


def run_case(lif_build, sim, name, gap_prob, backpressure_prob):
    case = CASES[name]
    seed = zlib.crc32(f"{name}/{gap_prob}/{backpressure_prob}".encode())
    rng = np.random.default_rng(seed)
    currents = stress_currents(rng, case)
    v0 = random_v0(rng, case) if case.load_v0 else None
    result = run_lif(lif_build(sim, name), currents, v0=v0, gap_prob=gap_prob,
                     backpressure_prob=backpressure_prob, bad_index_prob=BAD_INDEX_PROB,
                     seed=seed)
    res = result.results
    assert res["matched"] and res["updates"] == case.updates, res
    return res


@pytest.mark.parametrize("pauses", PAUSES)
@pytest.mark.parametrize("sim", SIMULATORS)
def test_backpressure_matrix(lif_build, sim, pauses):
    res = run_case(lif_build, sim, BASE, *PAUSES[pauses])
    assert res["bad_index_beats"] > 0 and res["sat_count"] > 0
    if pauses == "none":  # one beat per cycle, including the dropped out-of-range beats
        assert res["cycles"] == res["beats_in"] + LATENCY, res


@pytest.mark.parametrize("name", [name for name in CASES if name != BASE])
@pytest.mark.parametrize("sim", SIMULATORS)
def test_random_stress(lif_build, sim, name):
    res = run_case(lif_build, sim, name, *STRESS)
    # Stimulus sanity: saturation is exercised (k = 0 forgets v, so h = x never saturates).
    assert res["sat_count"] > 0 or CASES[name].params.leak_shift == 0


@pytest.mark.parametrize("sim", SIMULATORS)
def test_bench_can_fail(lif_build, sim):
    """One falsified expected beat must fail the cocotb test and, through it, pytest."""
    case = CASES[BASE]
    currents = np.zeros((2, case.n), dtype=np.int64)
    with pytest.raises(SimulationError, match="1 mismatches"):
        run_lif(lif_build(sim, BASE), currents, corrupt_beat=case.n + 3)


def test_update_budget():
    """At least 10,000 neuron-updates per simulator per run (each test asserts its count)."""
    per_sim = len(PAUSES) * CASES[BASE].updates + sum(
        case.updates for name, case in CASES.items() if name != BASE)
    assert per_sim >= 10_000, per_sim
