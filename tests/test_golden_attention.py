"""Golden spiking attention against naive loops written here, the exact reorder, STAtten's
reductions, integer-vs-float agreement, and bad input."""

import numpy as np
import pytest

from spikeforge.golden.attention import (attention_cost, cheaper_order,
                                         fold_scale_into_threshold, sdsa, sdsa_float, ssa,
                                         ssa_float, statten, statten_float)
from spikeforge.golden.lif import LIFParams, lif_array

LIF = LIFParams(theta=6, leak_shift=1, width=12)


def spikes(shape, sparsity, seed):
    return (np.random.default_rng(seed).random(shape) >= sparsity).astype(np.int64)


def qkv(shape=(2, 4, 6, 8), sparsity=0.5, seed=0):
    return tuple(spikes(shape, sparsity, seed + i) for i in range(3))


def naive_block_y(q, k, v, block):
    """Y[t, n, d] = Σ_{t' in block(t)} Σ_m (Σ_e q[t,n,e] k[t',m,e]) v[t',m,d], scalar loops."""
    T, N, D = q.shape
    y = np.zeros((T, N, D), dtype=np.int64)
    for t in range(T):
        start = t - t % block
        for n in range(N):
            for d in range(D):
                y[t, n, d] = sum(sum(q[t, n, e] * k[tt, m, e] for e in range(D)) * v[tt, m, d]
                                 for tt in range(start, start + block) for m in range(N))
    return y


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_both_evaluation_orders_agree_exactly(sparsity):
    q, k, v = qkv(sparsity=sparsity, seed=int(sparsity * 100))
    a, b = ssa(q, k, v, LIF, order="qk_v"), ssa(q, k, v, LIF, order="q_kv")
    assert np.array_equal(a.y, b.y) and np.array_equal(a.spikes, b.spikes)


@pytest.mark.parametrize("block", [1, 2, 4])
def test_statten_matches_naive_loops(block):
    q, k, v = qkv(shape=(4, 5, 6), seed=block)
    for order in ("qk_v", "q_kv"):
        r = statten(q, k, v, LIF, block=block, order=order)
        y = naive_block_y(q, k, v, block)
        assert np.array_equal(r.y, y)
        expect = lif_array(y.reshape(4, 30), LIF).spikes.reshape(4, 5, 6)
        assert np.array_equal(r.spikes, expect)


def test_statten_block_one_is_ssa():
    q, k, v = qkv(seed=3)
    assert np.array_equal(statten(q, k, v, LIF, block=1).spikes, ssa(q, k, v, LIF).spikes)
    assert not np.array_equal(statten(q, k, v, LIF, block=2).y, ssa(q, k, v, LIF).y)


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_sdsa_matches_naive_loops(variant):
    q, k, v = qkv(shape=(6, 5, 7), seed=11)
    lif = LIFParams(theta=2, leak_shift=2, width=8)
    r = sdsa(q, k, v, lif, variant=variant)
    a, b, gated = (k, v, q) if variant == "reference" else (q, k, v)
    c = np.array([[sum(a[t, n, d] & b[t, n, d] for n in range(5)) for d in range(7)]
                  for t in range(6)])
    mask = lif_array(c, lif).spikes
    expect = np.array([[[gated[t, n, d] & mask[t, d] for d in range(7)] for n in range(5)]
                       for t in range(6)])
    assert np.array_equal(r.y, c) and np.array_equal(r.spikes, expect)
    assert 0 < r.spikes.sum() < r.spikes.size


def test_integer_path_equals_float_path_when_the_folded_threshold_is_exact():
    """scale = 1/8, θ = 1.0: θ/scale = 8 is an integer, integer sums are exact in float64,
    no leak: the comparisons agree exactly."""
    q, k, v = qkv(shape=(3, 5, 6, 8), sparsity=0.6, seed=21)
    theta = fold_scale_into_threshold(1.0, 1 / 8)
    lif = LIFParams(theta=theta, leak_shift=None, width=16)
    for block in (1, 5):
        fi = statten(q, k, v, lif, block=block).spikes
        ff = statten_float(q, k, v, scale=1 / 8, beta=1.0, theta=1.0, block=block)
        assert np.array_equal(fi, ff) and fi.any()
    assert np.array_equal(ssa(q, k, v, lif).spikes,
                          ssa_float(q, k, v, scale=1 / 8, beta=1.0, theta=1.0))
    lif_sd = LIFParams(theta=fold_scale_into_threshold(0.5, 0.25), width=16)
    assert np.array_equal(sdsa(q, k, v, lif_sd).spikes,
                          sdsa_float(q, k, v, scale=0.25, beta=1.0, theta=0.5))


def test_costs_and_cheaper_order():
    assert attention_cost(8, 64, "qk_v") == 2 * 8 * 8 * 64
    assert attention_cost(8, 64, "q_kv") == 2 * 8 * 64 * 64
    assert cheaper_order(8, 64) == "qk_v" and cheaper_order(64, 8) == "q_kv"


def test_bad_input_is_refused():
    q, k, v = qkv(shape=(4, 3, 5))
    with pytest.raises(ValueError, match="binary"):
        ssa(q * 2, k, v, LIF)
    with pytest.raises(TypeError, match="integer"):
        ssa(q.astype(float), k, v, LIF)
    with pytest.raises(ValueError, match="one shape"):
        ssa(q, k[:, :2], v, LIF)
    with pytest.raises(ValueError, match="T=4 is not a multiple of block=3"):
        statten(q, k, v, LIF, block=3)
    with pytest.raises(ValueError, match="order"):
        ssa(q, k, v, LIF, order="kq_v")
    with pytest.raises(ValueError, match="variant"):
        sdsa(q, k, v, LIF, variant="other")
    with pytest.raises(ValueError, match="rounds to 0"):
        fold_scale_into_threshold(0.1, 1.0)


@pytest.mark.ref
@pytest.mark.parametrize("kind", ["ssa", "statten2", "sdsa_reference", "sdsa_paper"])
def test_golden_float_equals_a_pytorch_spikingjelly_reimplementation(kind):
    """An independent float implementation the way model code writes it: multi-step
    [T, B, N, D] tensors, torch matmuls, SpikingJelly LIFNode (decay_input=False, soft
    reset) stepping over T."""
    torch = pytest.importorskip("torch")
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    T, B, N, D, scale, tau, theta = 4, 3, 6, 8, 0.125, 2.0, 0.5
    q, k, v = (spikes((T, B, N, D), 0.6, 30 + i) for i in range(3))
    tq, tk, tv = (torch.tensor(x, dtype=torch.float64) for x in (q, k, v))
    lif = neuron.LIFNode(tau=tau, decay_input=False, v_threshold=theta, v_reset=None,
                         step_mode="m")
    with torch.no_grad():
        if kind in ("ssa", "statten2"):
            block = 1 if kind == "ssa" else 2
            kv = (tk.transpose(-2, -1) @ tv).reshape(T // block, block, B, D, D).sum(1)
            y = tq @ kv.repeat_interleave(block, dim=0)                      # [T, B, N, D]
            ref = lif(scale * y)
        else:
            a, b, gated = (tk, tv, tq) if kind == "sdsa_reference" else (tq, tk, tv)
            mask = lif(scale * (a * b).sum(dim=-2, keepdim=True))            # [T, B, 1, D]
            ref = gated * mask
    # golden takes [..., T, N, D]: batch first
    gq, gk, gv = (np.moveaxis(x, 0, 1) for x in (q, k, v))
    beta = 1 - 1 / tau
    if kind == "ssa":
        got = ssa_float(gq, gk, gv, scale=scale, beta=beta, theta=theta, order="q_kv")
    elif kind == "statten2":
        got = statten_float(gq, gk, gv, scale=scale, beta=beta, theta=theta, block=2)
    else:
        got = sdsa_float(gq, gk, gv, scale=scale, beta=beta, theta=theta,
                         variant=kind.removeprefix("sdsa_"))
    expect = np.moveaxis(ref.numpy(), 0, 1)
    assert 0 < expect.sum() < expect.size
    np.testing.assert_array_equal(got, expect)
