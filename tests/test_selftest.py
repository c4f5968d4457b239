"""The board self test in Amaranth's simulator: the on-chip checksum must equal the one the
golden model predicts (and a wrong prediction must be caught)."""

import pytest

from spikeforge.boards.selftest import (LIFSelfTest, ecp5_pll_config, expected_checksum,
                                        ice40_pll_config, lfsr_currents)
from spikeforge.sim.amaranth_runs import run_testbenches


def run_selftest(top, max_cycles):
    state = {}

    async def bench(ctx):
        for _ in range(max_cycles):
            await ctx.tick()
            if ctx.get(top.done):
                break
        state.update(done=ctx.get(top.done), passed=ctx.get(top.passed),
                     checksum=ctx.get(top.checksum))

    run_testbenches(top, bench)
    return state


def test_selftest_passes_with_golden_checksum():
    top = LIFSelfTest(n=16, width=12, leak_shift=2, theta=900, timesteps=24)
    state = run_selftest(top, 16 * 24 + 50)
    assert state["done"] and state["checksum"] == top.expected and state["passed"]


def test_selftest_catches_a_wrong_expectation():
    top = LIFSelfTest(n=8, width=16, timesteps=10)
    top.expected ^= 1
    state = run_selftest(top, 8 * 10 + 50)
    assert state["done"] and not state["passed"]


def test_stimulus_exercises_the_neurons():
    from spikeforge.golden.lif import lif_array
    top = LIFSelfTest()
    res = lif_array(lfsr_currents(top.n, top.timesteps), top.params)
    assert 0.01 < res.spikes.mean() < 0.9
    assert expected_checksum(top.n, top.timesteps, top.params) == top.expected


@pytest.mark.parametrize("f_out", [48, 60, 72])
def test_ice40_pll_config(f_out):
    cfg = ice40_pll_config(12, f_out)
    f = 12 * (cfg["DIVF"] + 1) / ((cfg["DIVR"] + 1) * 2 ** cfg["DIVQ"])
    assert abs(f - f_out) < 1 and f == cfg["f_out_mhz"]
    assert 533 <= 12 / (cfg["DIVR"] + 1) * (cfg["DIVF"] + 1) <= 1066


# What Project Trellis' `ecppll -i 25 -o F` prints (CLKI_DIV, CLKFB_DIV, CLKOP_DIV, CPHASE, MHz)
@pytest.mark.parametrize("f_out, expected", [
    (120, (5, 24, 5, 2, 120.0)), (200, (1, 8, 3, 1, 200.0)), (48, (8, 15, 13, 6, 46.875))])
def test_ecp5_pll_config_matches_ecppll(f_out, expected):
    cfg = ecp5_pll_config(25, f_out)
    assert (cfg["CLKI_DIV"], cfg["CLKFB_DIV"], cfg["CLKOP_DIV"], cfg["CLKOP_CPHASE"],
            cfg["f_out_mhz"]) == expected
