"""Golden spiking attention (design.md §5) against naive loops written here, the exact
reorder at many sparsities, STAtten's reductions, integer-vs-float agreement (and where it
ends), an independent PyTorch/SpikingJelly float re-implementation, sizes and bad input."""

import numpy as np
import pytest

from spikeforge.golden.attention import (attention_cost, attention_y, attention_y_max,
                                         cheaper_order, fold_scale_into_threshold, sdsa,
                                         sdsa_colsum, sdsa_float, ssa, ssa_float, statten,
                                         statten_float)
from spikeforge.golden.lif import LIFParams, lif_array, lif_float

LIF = LIFParams(theta=6, leak_shift=1, width=12)


def spikes(shape, sparsity, seed):
    return (np.random.default_rng(seed).random(shape) >= sparsity).astype(np.int64)


def qkv(shape=(2, 4, 6, 8), sparsity=0.5, seed=0):
    return tuple(spikes(shape, sparsity, seed + i) for i in range(3))


def naive_y(q, k, v, block):
    """Y[t, n, d] = Σ_{t' in block(t)} Σ_m (Σ_e q[t,n,e] k[t',m,e]) v[t',m,d] on [T, N, D]."""
    T, N, D = q.shape
    y = np.zeros((T, N, D), dtype=np.int64)
    for t in range(T):
        first = t - t % block
        for n in range(N):
            for d in range(D):
                y[t, n, d] = sum(sum(int(q[t, n, e] * k[tt, m, e]) for e in range(D))
                                 * int(v[tt, m, d])
                                 for tt in range(first, first + block) for m in range(N))
    return y


def lif_each_element(x, lif):
    """The LIF run separately on every element's own time series: x is [T, ...]."""
    spikes_out = np.zeros(x.shape, dtype=np.int8)
    membranes = np.zeros(x.shape, dtype=np.int64)
    for idx in np.ndindex(x.shape[1:]):
        res = lif_array(x[(slice(None),) + idx][:, None], lif, record_membranes=True)
        spikes_out[(slice(None),) + idx] = res.spikes[:, 0]
        membranes[(slice(None),) + idx] = res.membranes[:, 0]
    return spikes_out, membranes


# ------------------------------------------------------------------ exact reorder

@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99])
def test_both_orders_agree_exactly_at_every_sparsity(sparsity):
    rng = np.random.default_rng(int(sparsity * 1000))
    for case in range(12):
        lead = tuple(rng.integers(1, 4, size=rng.integers(0, 3)))     # (), (B,), (B, H)
        T, N, D = (int(x) for x in rng.integers(1, 13, size=3))
        T = min(T, 6)
        q, k, v = qkv(lead + (T, N, D), sparsity, seed=1000 * case + int(sparsity * 100))
        lif = LIFParams(theta=int(rng.integers(1, 2 * N * D + 1)), leak_shift=2, width=16)
        for block in (b for b in range(1, T + 1) if T % b == 0):
            a = statten(q, k, v, lif, block=block, order="qk_v", record_membranes=True)
            b = statten(q, k, v, lif, block=block, order="q_kv", record_membranes=True)
            assert (a.order, b.order) == ("qk_v", "q_kv")
            assert a.y.dtype == np.int64 and a.y.shape == q.shape
            assert np.array_equal(a.y, b.y)
            assert np.array_equal(a.spikes, b.spikes)
            assert np.array_equal(a.lif.membranes, b.lif.membranes)
        # and the common value is the right one (one slice against scalar loops)
        s0 = (0,) * len(lead)
        assert np.array_equal(ssa(q, k, v, lif).y[s0], naive_y(q[s0], k[s0], v[s0], 1))
    if sparsity == 0.0:
        assert a.y.min() == T * N * D  # all ones: every entry is block·N·D with block = T


# ------------------------------------------------------------------ STAtten and SSA

@pytest.mark.parametrize("block", [1, 2, 4])  # 4 = T: one block, K and V shared by all t
def test_statten_matches_naive_loops_over_batch_and_heads(block):
    B, H, T, N, D = 2, 3, 4, 5, 6
    q, k, v = qkv(shape=(B, H, T, N, D), sparsity=0.6, seed=10 + block)
    for order in ("qk_v", "q_kv"):
        r = statten(q, k, v, LIF, block=block, order=order, record_membranes=True)
        for b in range(B):
            for h in range(H):
                y = naive_y(q[b, h], k[b, h], v[b, h], block)
                s, mem = lif_each_element(y, LIF)
                assert np.array_equal(r.y[b, h], y)
                assert np.array_equal(r.spikes[b, h], s)
                assert np.array_equal(r.lif.membranes[b, h], mem)
                assert np.array_equal(r.lif.v[b, h], mem[-1])
        assert 0 < r.spikes.sum() < r.spikes.size


def test_statten_block_one_is_ssa():
    q, k, v = qkv(shape=(2, 2, 6, 7, 5), seed=3)
    for order in ("qk_v", "q_kv"):
        s = ssa(q, k, v, LIF, order=order, record_membranes=True)
        st = statten(q, k, v, LIF, block=1, order=order, record_membranes=True)
        assert np.array_equal(s.y, st.y) and np.array_equal(s.spikes, st.spikes)
        assert np.array_equal(s.lif.membranes, st.lif.membranes)
    # not vacuous: sharing K, V over 2 timesteps changes the result
    assert not np.array_equal(statten(q, k, v, LIF, block=2).y, ssa(q, k, v, LIF).y)


def test_statten_block_T_sums_kv_over_all_timesteps():
    """B = T: one K V product summed over every timestep, used by every query timestep."""
    q, k, v = qkv(shape=(4, 3, 5), seed=5)
    kv = np.zeros((5, 5), dtype=np.int64)
    for t in range(4):
        for m in range(3):
            kv += np.outer(k[t, m], v[t, m])
    expect = np.stack([q[t] @ kv for t in range(4)])
    assert np.array_equal(attention_y(q, k, v, block=4), expect)
    assert np.array_equal(attention_y(q, k, v, block=4, order="qk_v"), expect)


# ------------------------------------------------------------------ SDSA

@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_sdsa_matches_naive_loops(variant):
    B, T, N, D = 2, 6, 5, 7
    q, k, v = qkv(shape=(B, T, N, D), sparsity=0.4, seed=11)
    lif = LIFParams(theta=2, leak_shift=2, width=8)
    r = sdsa(q, k, v, lif, variant=variant, record_membranes=True)
    assert r.order is None
    for b in range(B):
        a, c, gated = (k[b], v[b], q[b]) if variant == "reference" else (q[b], k[b], v[b])
        colsum = np.array([[sum(a[t, n, d] & c[t, n, d] for n in range(N)) for d in range(D)]
                           for t in range(T)])
        mask, mem = lif_each_element(colsum, lif)
        expect = np.array([[[gated[t, n, d] & mask[t, d] for d in range(D)] for n in range(N)]
                           for t in range(T)])
        assert np.array_equal(r.y[b], colsum)
        assert np.array_equal(r.lif.spikes[b], mask)
        assert np.array_equal(r.lif.membranes[b], mem)
        assert np.array_equal(r.spikes[b], expect)
    assert np.array_equal(sdsa_colsum(q, k, v, variant), r.y)
    assert 0 < r.lif.spikes.sum() < r.lif.spikes.size
    assert r.spikes.dtype == np.int8 and set(np.unique(r.spikes)) <= {0, 1}


def test_sdsa_variants_differ():
    q, k, v = qkv(shape=(4, 6, 8), sparsity=0.5, seed=12)
    lif = LIFParams(theta=2, width=8)
    assert not np.array_equal(sdsa(q, k, v, lif, "reference").spikes,
                              sdsa(q, k, v, lif, "paper").spikes)


# ------------------------------------------------------------------ integer vs float

@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("theta_float", [1.0, 0.75])
def test_integer_path_equals_float_path_where_exact(theta_float, reset):
    """Exact when: scale = 1/8 is a power of two (scale·Y and every float membrane are exact
    multiples of 1/8 in float64), θ/scale is an integer (8 or 6, so rounding the fold loses
    nothing), no leak (integer leak floors v >> k, float multiplies by β: they differ), and
    the 16-bit membrane never saturates (checked). Then scale·h_int = h_float at every step,
    so `h_int >= θ_int` and `h_float >= θ` agree and both resets stay in step."""
    scale = 1 / 8
    q, k, v = qkv(shape=(3, 2, 6, 5, 8), sparsity=0.6, seed=21)
    lif = LIFParams(theta=fold_scale_into_threshold(theta_float, scale), reset=reset, width=16)
    kw = dict(scale=scale, beta=1.0, theta=theta_float, reset=reset)
    for block in (1, 2, 3, 6):
        r = statten(q, k, v, lif, block=block)
        assert r.lif.sat_count == 0 and 0 < r.spikes.sum() < r.spikes.size
        assert np.array_equal(r.spikes, statten_float(q, k, v, block=block, **kw))
    assert np.array_equal(ssa(q, k, v, lif).spikes, ssa_float(q, k, v, **kw))
    sd_lif = LIFParams(theta=fold_scale_into_threshold(theta_float / 2, scale), reset=reset)
    for variant in ("reference", "paper"):
        r = sdsa(q, k, v, sd_lif, variant=variant)
        assert 0 < r.lif.spikes.sum() < r.lif.spikes.size
        assert np.array_equal(r.spikes, sdsa_float(q, k, v, variant=variant,
                                                   **{**kw, "theta": theta_float / 2}))


def test_integer_and_float_differ_where_the_fold_rounds_or_the_neuron_leaks():
    """The two conditions above are needed: hand-built cases where they fail."""
    ones = np.ones((1, 4, 1), dtype=np.int64)        # T=1, N=4, D=1: Y = 4 for every token
    theta_int = fold_scale_into_threshold(0.55, 1 / 8)   # 4.4 rounds to 4
    assert theta_int == 4
    assert ssa(ones, ones, ones, LIFParams(theta=theta_int)).spikes.all()         # 4 >= 4
    assert not ssa_float(ones, ones, ones, scale=1 / 8, beta=1.0, theta=0.55).any()  # .5<.55

    ones = np.ones((2, 3, 1), dtype=np.int64)        # T=2, Y = 3 at both steps
    lif = LIFParams(theta=5, leak_shift=1)           # int: 3, then 3 - (3 >> 1) + 3 = 5
    assert ssa(ones, ones, ones, lif).spikes[:, 0, 0].tolist() == [0, 1]
    # float: 3/8, then 0.5 * 3/8 + 3/8 = 4.5/8 < 5/8
    assert ssa_float(ones, ones, ones, scale=1 / 8, beta=0.5, theta=5 / 8)[:, 0, 0].tolist() \
        == [0, 0]


def test_float_path_takes_float_and_bool_spikes():
    """The float model feeds lif_float's float64 spikes straight in."""
    q, k, v = qkv(shape=(2, 4, 5, 6), seed=31)
    kw = dict(scale=0.25, beta=0.5, theta=1.0)
    expect = ssa_float(q, k, v, **kw)
    assert np.array_equal(ssa_float(q.astype(float), k.astype(bool), v.astype(np.float32),
                                    **kw), expect)
    assert expect.dtype == np.float64 and 0 < expect.sum() < expect.size


# ------------------------------------------------------------------ sizes

def test_attention_y_max_is_reached_by_all_ones():
    for T, N, D, block in ((4, 3, 5, 1), (4, 3, 5, 2), (6, 2, 7, 3)):
        ones = np.ones((T, N, D), dtype=np.int64)
        mode = "ssa" if block == 1 else "statten"
        assert attention_y(ones, ones, ones, block=block).max() \
            == attention_y_max(N, D, mode, block) == block * N * D
        assert sdsa_colsum(ones, ones, ones).max() == attention_y_max(N, D, "sdsa") == N


def test_costs_and_cheaper_order():
    assert attention_cost(8, 64, "qk_v") == 2 * 8 * 8 * 64          # Q Kᵀ then (·) V
    assert attention_cost(8, 64, "q_kv") == 2 * 8 * 64 * 64         # Kᵀ V then Q (·)
    assert attention_cost(8, 64, "qk_v", block=4) == 4 * 2 * 8 * 8 * 64
    assert attention_cost(8, 64, "q_kv", block=4) == 2 * 8 * 64 * 64
    assert cheaper_order(8, 64) == "qk_v" and cheaper_order(64, 8) == "q_kv"
    assert cheaper_order(16, 16) == "qk_v"                         # tie
    assert cheaper_order(8, 64, block=8) == "qk_v"                 # 8·8·8·64 == 8·64·64: tie
    assert cheaper_order(8, 64, block=16) == "q_kv"                # shared K V pays off
    q, k, v = qkv(shape=(4, 3, 9))
    assert ssa(q, k, v, LIF).order == "qk_v"
    assert statten(q, k, v, LIF, block=4).order == "q_kv"          # 4·3·3·9 > 3·9·9


# ------------------------------------------------------------------ bad input

Q, K, V = qkv(shape=(4, 3, 5))
BAD = [
    ("non-binary q", lambda: ssa(Q * 2, K, V, LIF), ValueError,
     r"q must be binary spikes \(0/1\), found value 2"),
    ("negative v", lambda: statten(Q, K, -V, LIF, block=2), ValueError, "v must be binary"),
    ("float q", lambda: ssa(Q.astype(float), K, V, LIF), TypeError,
     "q must be an integer array.*float64"),
    ("bool k", lambda: sdsa(Q, K.astype(bool), V, LIF), TypeError, "k must be an integer"),
    ("shape mismatch", lambda: ssa(Q, K[:, :2], V, LIF), ValueError,
     r"one shape .*k \(4, 2, 5\)"),
    ("too few dims", lambda: ssa(Q[0], K[0], V[0], LIF), ValueError,
     r"at least 3 dimensions\), got shape \(3, 5\)"),
    ("T % B", lambda: statten(Q, K, V, LIF, block=3), ValueError,
     "T=4 is not a multiple of block=3"),
    ("T % B float", lambda: statten_float(Q, K, V, scale=1, beta=1, theta=1, block=3),
     ValueError, "T=4 is not a multiple of block=3"),
    ("block 0", lambda: statten(Q, K, V, LIF, block=0), ValueError, "block must be a positive"),
    ("block bool", lambda: statten(Q, K, V, LIF, block=True), ValueError, "block must be"),
    ("order", lambda: ssa(Q, K, V, LIF, order="kq_v"), ValueError, "order must be one of"),
    ("variant", lambda: sdsa(Q, K, V, LIF, variant="other"), ValueError,
     "variant must be one of"),
    ("signed LIF", lambda: ssa(Q, K, V, LIFParams(theta=2, signed_spikes=True)), ValueError,
     "signed_spikes=False"),
    ("lif type", lambda: ssa(Q, K, V, 6), TypeError, "lif must be a LIFParams"),
    ("current too wide", lambda: ssa(Q * 0 + 1, K * 0 + 1, V * 0 + 1,
                                     LIFParams(theta=2, current_width=4)), ValueError,
     "currents must fit a signed 4-bit"),
    ("float non-binary", lambda: ssa_float(Q * 0.5, K, V, scale=1, beta=1, theta=1),
     ValueError, "q must be binary spikes"),
    ("float strings", lambda: sdsa_float(Q.astype(str), K, V, scale=1, beta=1, theta=1),
     TypeError, "q must be a real or boolean array"),
    ("fold rounds to 0", lambda: fold_scale_into_threshold(0.1, 1.0), ValueError,
     "rounds to 0"),
    ("fold scale 0", lambda: fold_scale_into_threshold(1.0, 0.0), ValueError,
     "scale must be a positive finite"),
    ("fold theta nan", lambda: fold_scale_into_threshold(float("nan"), 0.5), ValueError,
     "theta_float must be a positive finite"),
    ("cost order", lambda: attention_cost(8, 8, "qkv"), ValueError, "order must be one of"),
    ("cost n", lambda: cheaper_order(0, 8), ValueError, "n must be a positive integer"),
    ("y_max mode", lambda: attention_y_max(8, 8, "softmax"), ValueError, "mode must be one of"),
]


@pytest.mark.parametrize("call, exc, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_a_clear_message(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def test_fold_scale_into_threshold():
    assert fold_scale_into_threshold(1.0, 1 / 8) == 8
    assert fold_scale_into_threshold(0.5, 0.125) == 4
    assert fold_scale_into_threshold(0.55, 0.125) == 4     # 4.4
    assert fold_scale_into_threshold(0.6, 0.125) == 5      # 4.8
    assert fold_scale_into_threshold(3, 1) == 3
    assert type(fold_scale_into_threshold(1.0, 1 / 8)) is int


# ------------------------------------------------------------------ PyTorch / SpikingJelly

def torch_reference(kind, q, k, v, *, scale, tau, theta):
    """Float attention the way SpikingJelly model code writes it, on [T, B, H, N, D]."""
    import torch
    from spikingjelly.activation_based import neuron

    def lif(x):  # multi-step over dim 0 (T), fresh state
        node = neuron.LIFNode(tau=tau, decay_input=False, v_threshold=theta, v_reset=None,
                              step_mode="m")
        return node(x)

    tq, tk, tv = (torch.tensor(x, dtype=torch.float64) for x in (q, k, v))
    with torch.no_grad():
        if kind == "ssa":                     # Spikformer: attn = q @ kᵀ * scale; x = attn @ v
            return lif((tq @ tk.transpose(-2, -1)) * scale @ tv).numpy()
        if kind == "statten2":                # STAtten: a block's timesteps become tokens
            T, B, H, N, D = tq.shape

            def tokens(x):                    # [T, B, H, N, D] -> [T/2, B, H, 2N, D]
                return x.reshape(T // 2, 2, B, H, N, D).permute(0, 2, 3, 1, 4, 5) \
                    .reshape(T // 2, B, H, 2 * N, D)
            y = (tokens(tq) @ tokens(tk).transpose(-2, -1)) * scale @ tokens(tv)
            y = y.reshape(T // 2, B, H, 2, N, D).permute(0, 3, 1, 2, 4, 5).reshape(T, B, H, N, D)
            return lif(y).numpy()
        if kind == "sdsa_reference":          # spike-driven transformer: q * LIF(Σ_N k * v)
            return (tq * lif((tk * tv).sum(dim=-2, keepdim=True) * scale)).numpy()
        if kind == "sdsa_paper":
            return (lif((tq * tk).sum(dim=-2, keepdim=True) * scale) * tv).numpy()
    raise AssertionError(kind)


@pytest.mark.ref
@pytest.mark.parametrize("tau", [2.0, 4.0])
@pytest.mark.parametrize("kind", ["ssa", "statten2", "sdsa_reference", "sdsa_paper"])
def test_golden_float_equals_a_pytorch_spikingjelly_reimplementation(kind, tau):
    """Independent float path: torch matmuls on multi-step [T, B, H, N, D] tensors and
    SpikingJelly's LIFNode (decay_input=False, soft reset v_reset=None, fires on v >= θ).
    Equal bit for bit because scale = 1/8 and 1/τ are powers of two: Spikformer's
    (Q Kᵀ·scale) V and golden's scale·(Q Kᵀ V) are then both exact, and SpikingJelly's
    v - v/τ + x rounds like golden's β·v + x."""
    pytest.importorskip("torch")
    pytest.importorskip("spikingjelly.activation_based.neuron")
    T, B, H, N, D, scale, theta = 4, 2, 3, 6, 8, 0.125, 0.5
    q, k, v = (spikes((T, B, H, N, D), 0.6, 30 + i) for i in range(3))
    expect = np.moveaxis(torch_reference(kind, q, k, v, scale=scale, tau=tau, theta=theta),
                         0, -3)                                      # -> [B, H, T, N, D]
    gq, gk, gv = (np.moveaxis(x, 0, -3) for x in (q, k, v))
    kw = dict(scale=scale, beta=1 - 1 / tau, theta=theta)
    if kind.startswith("sdsa"):
        got = [sdsa_float(gq, gk, gv, variant=kind.removeprefix("sdsa_"), **kw)]
    else:
        block = 1 if kind == "ssa" else 2
        got = [statten_float(gq, gk, gv, block=block, order=o, **kw) for o in ("qk_v", "q_kv")]
    assert 0 < expect.sum() < expect.size
    for g in got:
        np.testing.assert_array_equal(g, expect)


def test_lif_float_spikes_feed_the_float_attention():
    """The float model's Q, K, V come out of lif_float as float64: they go straight in."""
    rng = np.random.default_rng(40)
    x = rng.normal(0.4, 0.6, size=(3, 2, 4, 5 * 6))                  # [3 (q,k,v), B, T, N·D]
    q, k, v = (lif_float(xi, beta=0.5, theta=0.5)[0].reshape(2, 4, 5, 6) for xi in x)
    got = ssa_float(q, k, v, scale=0.125, beta=0.5, theta=0.5)
    ints = [a.astype(np.int64) for a in (q, k, v)]
    assert np.array_equal(got, ssa_float(*ints, scale=0.125, beta=0.5, theta=0.5))
