"""LIFArray in Amaranth's simulator against the golden `lif_array` (fast unit tests), both
datapaths: the pipelined one and the compact one (`compact=True`, two stages, for small FPGAs)."""

import numpy as np
import pytest

from spikeforge.sim.amaranth_runs import run_lif_array
from spikeforge.golden.lif import LIFParams, lif_array, signed_range
from spikeforge.rtl.lif_array import LIFArray, LIFOp


def run_rtl(currents, params: LIFParams, lanes, *, gap=0.0, stall=0.0, seed=0, order=None,
            extra_beats=(), compact=False):
    """Drive UPDATE beats for every timestep (group order `order`, default 0..G-1), then READ
    every group. Returns (output beats, sat_count, flags, cycles)."""
    T, n = currents.shape
    dut = LIFArray(n=n, lanes=lanes, width=params.width, current_width=params.current_width,
                   leak_shift=params.leak_shift, theta=params.theta, reset=params.reset,
                   v_reset=params.v_reset, signed_spikes=params.signed_spikes, compact=compact)
    groups = n // lanes
    order = list(range(groups)) if order is None else order
    beats = [(LIFOp.UPDATE, g, currents[t, g * lanes:(g + 1) * lanes]) for t in range(T)
             for g in order]
    beats += list(extra_beats)
    beats += [(LIFOp.READ, g, [0] * lanes) for g in range(groups)]
    return run_lif_array(dut, beats, gap=gap, stall=stall, seed=seed)


def check_against_golden(currents, params, lanes, **kw):
    T, n = currents.shape
    groups = n // lanes
    out, state = run_rtl(currents, params, lanes, **kw)
    gold = lif_array(currents, params, record_membranes=True)
    updates, reads = out[:T * groups], out[T * groups:]
    for k, beat in enumerate(updates):
        t, g = divmod(k, groups)
        sl = slice(g * lanes, (g + 1) * lanes)
        assert beat.op == LIFOp.UPDATE and beat.index == g
        assert [int(s) for s in beat.spikes] == gold.spikes[t, sl].tolist(), (t, g)
        assert [int(v) for v in beat.membrane] == gold.membranes[t, sl].tolist(), (t, g)
    final = np.concatenate([[int(v) for v in beat.membrane] for beat in reads])
    assert final.tolist() == gold.v.tolist()
    assert state["sat_count"] == gold.sat_count
    return gold, state


CASES = [
    dict(theta=100, leak_shift=None, width=16, reset="subtract"),
    dict(theta=37, leak_shift=1, width=16, reset="zero"),
    dict(theta=20, leak_shift=4, width=8, reset="subtract"),
    dict(theta=5, leak_shift=0, width=8, reset="zero", v_reset=-3),
    dict(theta=30, leak_shift=2, width=8, reset="subtract", signed_spikes=True),
    dict(theta=60, leak_shift=3, width=8, reset="zero", signed_spikes=True, v_reset=2),
    dict(theta=1000, leak_shift=None, width=12, reset="subtract", current_width=16),
    # shifts >= 4: the barrel shifter is split over stages B (4·k[2:]) and S (k[:2])
    dict(theta=900, leak_shift=7, width=16, reset="subtract"),
    dict(theta=700, leak_shift=13, width=16, reset="zero", current_width=14),
    dict(theta=9, leak_shift=3, width=5, reset="subtract"),
]


@pytest.mark.parametrize("compact", [False, True], ids=["pipelined", "compact"])
@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_matches_golden_with_backpressure(case, lanes, compact):
    params = LIFParams(**case)
    rng = np.random.default_rng(hash(str(case)) % 2**32 + lanes)
    lo, hi = signed_range(params.in_width)
    T, n = 12, 8
    currents = rng.integers(lo // 2, hi // 2 + 1, size=(T, n))
    currents[rng.random((T, n)) < 0.1] = hi  # saturation extremes
    currents[rng.random((T, n)) < 0.1] = lo
    gold, _ = check_against_golden(currents, params, lanes, gap=0.3, stall=0.3, seed=lanes,
                                   compact=compact)
    assert gold.spikes.any(), "stimulus should make neurons fire"


@pytest.mark.parametrize("compact", [False, True], ids=["pipelined", "compact"])
@pytest.mark.parametrize("n,lanes", [(1, 1), (4, 4), (3, 1), (8, 2)])
def test_back_to_back_same_group_forwarding(n, lanes, compact):
    """G=1 makes every beat hit the same membrane word: exercises both forwarding paths
    (pipelined) or the wait for the write (compact)."""
    params = LIFParams(theta=50, leak_shift=2, width=10)
    rng = np.random.default_rng(n * 10 + lanes)
    currents = rng.integers(-200, 200, size=(40, n))
    check_against_golden(currents, params, lanes, gap=0.2, stall=0.2, seed=n, compact=compact)
    check_against_golden(currents, params, lanes, compact=compact)  # full rate, no bubbles


@pytest.mark.parametrize("compact,latency", [(False, 6), (True, 3)],
                         ids=["pipelined", "compact"])
def test_full_throughput_without_backpressure(compact, latency):
    params = LIFParams(theta=64, leak_shift=1)
    currents = np.random.default_rng(1).integers(-100, 100, size=(20, 16))
    _, state = check_against_golden(currents, params, lanes=1, compact=compact)
    beats = 20 * 16 + 16
    assert state["cycles"] <= beats + latency, "one beat per cycle plus the latency"


def test_out_of_range_index_is_dropped_and_flagged():
    params = LIFParams(theta=40, leak_shift=1, width=10)
    n = 6  # G = 6 groups, index is 3 bits: 6 and 7 are out of range
    currents = np.random.default_rng(2).integers(-60, 60, size=(5, n))
    bad = [(LIFOp.UPDATE, 6, [300]), (LIFOp.UPDATE, 7, [-300])]
    out, state = run_rtl(currents, params, 1, extra_beats=bad)
    gold = lif_array(currents, params)
    final = [int(b.membrane[0]) for b in out[-n:]]
    assert final == gold.v.tolist()
    assert len(out) == 5 * n + n
    assert state["index_error"] == 1


def test_constructor_rejects_bad_parameters():
    for kwargs, name in [(dict(theta=0), "theta"), (dict(theta=5, leak_shift=16), "leak_shift"),
                         (dict(theta=5, width=1), "width"), (dict(theta=5, lanes=3), "lanes"),
                         (dict(theta=5, reset="hard"), "reset"),
                         (dict(theta=40000), "theta")]:
        with pytest.raises(ValueError, match=name):
            LIFArray(n=64, **kwargs)


def test_runtime_config_write_and_flags():
    """θ and k written at run time take effect for later beats (golden with the new
    parameters from the current membranes on); an invalid θ is ignored and flags
    cfg_error; clear_flags clears the sticky flags and the saturation count."""
    from spikeforge.sim.amaranth_runs import run_testbenches, stream_get, stream_put
    first = LIFParams(theta=40, leak_shift=1, width=8)
    second = LIFParams(theta=25, leak_shift=3, width=8)
    rng = np.random.default_rng(9)
    x1, x2 = rng.integers(-128, 128, size=(6, 4)), rng.integers(-128, 128, size=(6, 4))
    dut = LIFArray(n=4, lanes=1, width=8, leak_shift=1, theta=40)
    got, flags = [], {}

    async def updates(ctx, x):
        for t in range(x.shape[0]):
            for g in range(4):
                await stream_put(ctx, dut.i, {"op": LIFOp.UPDATE, "index": g,
                                              "current": [int(x[t, g])]})
                payload, _ = await stream_get(ctx, dut.o)  # one in flight: config is quiet
                got.append(int(payload.spikes[0]))

    async def bench(ctx):
        await updates(ctx, x1)
        ctx.set(dut.cfg.we, 1)
        ctx.set(dut.cfg.theta, 0)  # invalid: ignored, flagged
        await ctx.tick()
        ctx.set(dut.cfg.theta, 25)
        ctx.set(dut.cfg.leak_en, 1)
        ctx.set(dut.cfg.leak_shift, 3)
        await ctx.tick()
        ctx.set(dut.cfg.we, 0)
        flags["cfg_error"] = ctx.get(dut.cfg_error)
        await updates(ctx, x2)
        flags["sat_before"] = ctx.get(dut.sat_count)
        ctx.set(dut.clear_flags, 1)
        await ctx.tick()
        ctx.set(dut.clear_flags, 0)
        flags.update(cfg_after=ctx.get(dut.cfg_error), sat_after=ctx.get(dut.sat_count),
                     saturated_after=ctx.get(dut.saturated))

    run_testbenches(dut, bench)
    g1 = lif_array(x1, first)
    g2 = lif_array(x2, second, v0=g1.v)
    assert got == g1.spikes.ravel().tolist() + g2.spikes.ravel().tolist()
    assert flags["cfg_error"] == 1
    assert flags["sat_before"] == g1.sat_count + g2.sat_count > 0
    assert flags["cfg_after"] == flags["sat_after"] == flags["saturated_after"] == 0
