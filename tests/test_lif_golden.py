"""The integer golden LIF against a deliberately naive scalar re-implementation of the
design.md §3 equations, hand-computed cases, and its bad-input errors."""

import numpy as np
import pytest

from spikeforge.golden.lif import LIFParams, lif_array, spiking_linear


def naive_lif(currents, theta, k, width, reset, v_reset=0, signed=False, v0=None):
    """Python ints, one neuron and step at a time, explicit floor shift and saturation."""
    lo, hi = -2 ** (width - 1), 2 ** (width - 1) - 1
    T, n = len(currents), len(currents[0])
    v = list(v0) if v0 is not None else [0] * n
    spikes = [[0] * n for _ in range(T)]
    sats = 0
    for t in range(T):
        for i in range(n):
            leak = 0 if k is None else v[i] // 2 ** k  # floor division = arithmetic shift
            raw = v[i] - leak + int(currents[t][i])
            h = min(max(raw, lo), hi)
            sats += h != raw
            s = 1 if h >= theta else (-1 if signed and h <= -theta else 0)
            spikes[t][i] = s
            if s:
                v[i] = h - s * theta if reset == "subtract" else v_reset
            else:
                v[i] = h
    return spikes, v, sats


CASES = [dict(theta=t, leak_shift=k, width=w, reset=r, v_reset=vr, signed_spikes=sg)
         for t, k, w, r, vr, sg in [
             (1, None, 2, "subtract", 0, False), (1, 0, 2, "zero", -1, True),
             (50, 1, 8, "subtract", 0, False), (50, 4, 8, "zero", 7, False),
             (20, 7, 8, "subtract", 0, True), (900, 4, 16, "subtract", 0, True),
             (3000, None, 16, "zero", -100, False), (12, 3, 6, "subtract", 0, False)]]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_naive_scalar_model(case):
    p = LIFParams(**case)
    lo, hi = -2 ** (p.width - 1), 2 ** (p.width - 1) - 1
    rng = np.random.default_rng(abs(hash(str(case))) % 2**32)
    x = rng.integers(lo, hi + 1, size=(30, 9))
    x[rng.random(x.shape) < 0.2] = hi  # runs of extremes: saturation both ways
    x[rng.random(x.shape) < 0.2] = lo
    v0 = rng.integers(lo, hi + 1, size=9)
    r = lif_array(x, p, v0=v0)
    s, v, sats = naive_lif(x.tolist(), p.theta, p.leak_shift, p.width, p.reset, p.v_reset,
                           p.signed_spikes, v0.tolist())
    assert r.spikes.tolist() == s and r.v.tolist() == v and r.sat_count == sats
    if p.leak_shift != 0:  # k=0 empties the membrane: h = x always fits
        assert sats > 0


def test_batch_axis_is_independent_runs():
    p = LIFParams(theta=30, leak_shift=2, width=8)
    x = np.random.default_rng(4).integers(-128, 128, size=(3, 12, 5))
    r = lif_array(x, p)
    for b in range(3):
        one = lif_array(x[b], p)
        assert r.spikes[b].tolist() == one.spikes.tolist() and r.v[b].tolist() == one.v.tolist()


def test_hand_computed_leak_and_resets():
    # k=1: v=-1 -> -1 - floor(-1/2) = -1 - (-1) = 0 (floor, not truncation toward zero).
    r = lif_array(np.array([[-1], [0]]), LIFParams(theta=5, leak_shift=1), record_membranes=True)
    assert r.membranes[:, 0].tolist() == [-1, 0]
    # W=8, θ=100, k=1: 60; 60 - 30 + 100 = 130 saturates to 127, spike, v = 27; 27 - 13 = 14.
    r = lif_array(np.array([[60], [100], [0]]), LIFParams(theta=100, leak_shift=1, width=8),
                  record_membranes=True)
    assert r.membranes[:, 0].tolist() == [60, 27, 14] and r.spikes[:, 0].tolist() == [0, 1, 0]
    assert r.sat_count == 1
    # signed spike, subtract: h = -9 <= -θ=-8 -> -1, v = -1.
    r = lif_array(np.array([[-9]]), LIFParams(theta=8, signed_spikes=True))
    assert r.spikes[0, 0] == -1 and r.v[0] == -1


def test_spiking_linear_matches_naive_loop():
    rng = np.random.default_rng(5)
    s = rng.integers(0, 2, size=(7, 10))
    w = rng.integers(-128, 128, size=(4, 10))
    b = rng.integers(-50, 50, size=4)
    p = LIFParams(theta=200, leak_shift=2, width=16)
    cur = [[sum(int(w[j, i]) * int(s[t, i]) for i in range(10)) + int(b[j]) for j in range(4)]
           for t in range(7)]
    spikes, v, _ = naive_lif(cur, 200, 2, 16, "subtract")
    r = spiking_linear(s, w, p, bias=b)
    assert r.spikes.tolist() == spikes and r.v.tolist() == v


@pytest.mark.parametrize("kwargs,name", [
    (dict(theta=0), "theta"), (dict(theta=-3), "theta"), (dict(theta=128, width=8), "theta"),
    (dict(theta=5, leak_shift=16), "leak_shift"), (dict(theta=5, leak_shift=-1), "leak_shift"),
    (dict(theta=1, width=1), "width"), (dict(theta=5, reset="hard"), "reset"),
    (dict(theta=5, width=8, v_reset=200), "v_reset"), (dict(theta=2.5), "theta"),
    (dict(theta=5, current_width=1), "current_width"),
])
def test_invalid_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LIFParams(**kwargs)


def test_bad_inputs_are_refused_not_cast():
    p = LIFParams(theta=10, width=8)
    with pytest.raises(TypeError, match="integer"):
        lif_array(np.ones((3, 2)) * 1.5, p)
    with pytest.raises(TypeError, match="integer"):
        lif_array(np.ones((3, 2), dtype=bool), p)
    with pytest.raises(ValueError, match="dimensions"):
        lif_array(np.ones(3, dtype=int), p)
    with pytest.raises(ValueError, match="8-bit"):
        lif_array(np.full((2, 2), 300), p)
    with pytest.raises(ValueError, match="v0 must have shape"):
        lif_array(np.ones((3, 2), dtype=int), p, v0=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="spikes"):
        spiking_linear(np.full((2, 3), 2), np.zeros((1, 3), dtype=int), p)
    with pytest.raises(ValueError, match="does not match"):
        spiking_linear(np.ones((2, 3), dtype=int), np.zeros((1, 4), dtype=int), p)
    with pytest.raises(ValueError, match="8-bit"):
        spiking_linear(np.ones((2, 3), dtype=int), np.full((1, 3), 200), p)
