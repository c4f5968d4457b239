"""AttentionCore in Amaranth's simulator against the golden attention (golden/attention.py)
through the core's output order (golden/attention_core.py)."""

import numpy as np
import pytest

from spikeforge.golden.attention import cheaper_order
from spikeforge.golden.attention_core import (attention_core_cycles, attention_core_ops,
                                              attention_core_outputs)
from spikeforge.golden.lif import LIFParams, lif_array
from spikeforge.rtl.attention_core import (MODE_OF, ORDER_OF, VARIANT_OF, AttentionCore)
from spikeforge.sim.amaranth_runs import run_attention_core


def cfg_of(mode, block=1, variant="reference", order=None):
    return dict(mode=MODE_OF[mode], block=block, variant=VARIANT_OF[variant],
                order=ORDER_OF[order])


def qkv(rng, T, N, D, sparsity):
    return tuple((rng.random((T, N, D)) >= sparsity).astype(np.int64) for _ in range(3))


def lif_of(dut, theta, **kw):
    return LIFParams(theta=theta, width=dut.width, current_width=dut.acc_width + 1, **kw)


SETTINGS = [  # (mode, block, variant, order): every mode, both orders, both SDSA forms
    ("ssa", 1, "reference", None), ("ssa", 1, "reference", "qk_v"),
    ("ssa", 1, "reference", "q_kv"), ("statten", 2, "reference", None),
    ("statten", 4, "reference", "qk_v"), ("statten", 2, "reference", "q_kv"),
    ("sdsa", 1, "reference", None), ("sdsa", 1, "paper", None),
]


@pytest.mark.parametrize("n,d,T,lanes", [(4, 8, 4, 8), (5, 6, 4, 3), (8, 16, 4, 4),
                                         (3, 4, 2, 1)])
def test_matches_golden_in_every_mode(n, d, T, lanes):
    """All settings back to back in one simulation, switched at run time, with random gaps
    and backpressure: every output beat (spikes and membranes) and the counters."""
    rng = np.random.default_rng(n * 100 + d * 10 + lanes)
    theta = max(1, n * d // 6)
    dut = AttentionCore(n=n, d=d, timesteps=T, lanes=lanes, theta=theta, width=12)
    settings = [s for s in SETTINGS if T % s[1] == 0]
    inputs = [qkv(rng, T, n, d, rng.choice([0.0, 0.5, 0.8, 0.97])) for _ in settings]
    got, counters = run_attention_core(dut, inputs, configs=[cfg_of(*s) for s in settings],
                                       gap=0.2, stall=0.3, seed=n + d)
    lif = lif_of(dut, theta)
    events = skipped = ops = 0
    for (mode, block, variant, order), (q, k, v), beats in zip(settings, inputs, got):
        expect = attention_core_outputs(q, k, v, lif, mode=mode, block=block, variant=variant,
                                        lanes=lanes)
        assert beats == expect, (mode, block, variant, order)
        counts = attention_core_ops(q, k, v, mode=mode, block=block, variant=variant,
                                    order=order)
        events, skipped, ops = (events + counts["events"], skipped + counts["skipped"],
                                ops + counts["ops"])
    assert (counters["events"], counters["skipped"], counters["ops"]) == (events, skipped, ops)
    assert counters["busy"] == 0 and counters["cfg_error"] == 0


def test_outputs_are_not_trivial():
    """The random cases above must exercise firing and silence (the spike sums are neither
    all zero nor all one)."""
    rng = np.random.default_rng(1)
    dut = AttentionCore(n=8, d=16, timesteps=4, lanes=4, theta=20)
    q, k, v = qkv(rng, 4, 8, 16, 0.5)
    expect = attention_core_outputs(q, k, v, lif_of(dut, 20), lanes=4)
    got, _ = run_attention_core(dut, [(q, k, v)])
    assert got[0] == expect
    fired = sum(sum(s) for _, _, s, _ in expect)
    assert 0 < fired < len(expect) * 4


@pytest.mark.parametrize("n,d,block,expected", [(8, 16, 1, "qk_v"), (8, 16, 2, "qk_v"),
                                                (8, 16, 4, "q_kv"), (16, 8, 1, "q_kv")])
def test_auto_order_is_the_cheaper_one(n, d, block, expected):
    """The `ops` counter tells which order ran: it must be golden `cheaper_order`'s."""
    assert cheaper_order(n, d, block) == expected
    rng = np.random.default_rng(block)
    dut = AttentionCore(n=n, d=d, timesteps=4, lanes=d // 4, theta=10)
    q, k, v = qkv(rng, 4, n, d, 0.3)
    k[:, ::3] = 0                     # silent key rows: the two orders' op counts differ
    mode = "statten" if block > 1 else "ssa"
    _, counters = run_attention_core(dut, [(q, k, v)], configs=[cfg_of(mode, block)])
    ops = {o: attention_core_ops(q, k, v, mode=mode, block=block, order=o)["ops"]
           for o in ("qk_v", "q_kv")}
    assert ops["qk_v"] != ops["q_kv"]
    assert counters["ops"] == ops[expected]


@pytest.mark.parametrize("setting", SETTINGS)
def test_cycles_within_bound_of_ideal(setting):
    """No gaps, no backpressure: ideal <= busy cycles <= 1.15 x ideal."""
    mode, block, variant, order = setting
    dut = AttentionCore(n=8, d=16, timesteps=4, lanes=4, theta=10)
    rng = np.random.default_rng(5)
    inputs = [qkv(rng, 4, 8, 16, s) for s in (0.0, 0.9)]
    for q, k, v in inputs:
        _, counters = run_attention_core(dut, [(q, k, v)], configs=[cfg_of(*setting)])
        ideal = attention_core_cycles(q, k, v, mode=mode, block=block, variant=variant,
                                      order=order, lanes=4)
        assert ideal <= counters["busy_cycles"] <= 1.15 * ideal


@pytest.mark.parametrize("lanes", [4, 1])
def test_heavy_backpressure_loses_no_beat(lanes):
    """`o` ready on one cycle in ten: the LIF never stalls, so the serializer must stop on
    its credits before the output FIFO overflows (SSA through the LIF, SDSA's gated rows
    straight into the FIFO); every beat and counter still matches."""
    dut = AttentionCore(n=8, d=16, timesteps=4, lanes=lanes, theta=10)
    rng = np.random.default_rng(11)
    settings = [("ssa", 1, "reference", None), ("sdsa", 1, "paper", None),
                ("statten", 2, "reference", "q_kv")]
    inputs = [qkv(rng, 4, 8, 16, 0.5) for _ in settings]
    got, counters = run_attention_core(dut, inputs, configs=[cfg_of(*s) for s in settings],
                                       stall=0.9, seed=lanes)
    lif = lif_of(dut, 10)
    for (mode, block, variant, order), (q, k, v), beats in zip(settings, inputs, got):
        assert beats == attention_core_outputs(q, k, v, lif, mode=mode, block=block,
                                               variant=variant, lanes=lanes), mode
    assert counters["busy"] == 0 and counters["cfg_error"] == 0


def test_silent_key_rows_cost_no_compute():
    """Event-driven: with 90 % of the key rows silent, qk_v needs several times fewer cycles."""
    dut = AttentionCore(n=16, d=16, timesteps=4, lanes=16, theta=10)
    rng = np.random.default_rng(2)
    q, k, v = qkv(rng, 4, 16, 16, 0.5)
    sparse_k = k.copy()
    sparse_k[rng.random((4, 16)) < 0.9] = 0
    busy = {}
    for name, keys in (("dense", k), ("sparse", sparse_k)):
        _, counters = run_attention_core(dut, [(q, keys, v)])
        busy[name] = counters["busy_cycles"]
    assert busy["dense"] >= 4 * busy["sparse"]


def test_runtime_threshold_leak_and_saturation():
    """θ and the leak written through lif_cfg at run time; an 8-bit membrane saturates and
    the count equals the golden LIF's."""
    n, d, T = 6, 8, 4
    dut = AttentionCore(n=n, d=d, timesteps=T, lanes=4, theta=100, width=8)
    rng = np.random.default_rng(9)
    q, k, v = qkv(rng, T, n, d, 0.0)           # dense: Y = n·d = 48 everywhere
    got, counters = run_attention_core(
        dut, [(q, k, v)], configs=[{**cfg_of("ssa"), "theta": 127, "leak_en": 1,
                                    "leak_shift": 2}])
    lif = LIFParams(theta=127, leak_shift=2, width=8, current_width=dut.acc_width + 1)
    assert got[0] == attention_core_outputs(q, k, v, lif, lanes=4)
    from spikeforge.golden.attention import attention_y
    y = attention_y(q, k, v)
    golden_sat = lif_array(y.reshape(T, -1), lif).sat_count
    assert golden_sat > 0 and counters["sat_count"] == golden_sat


def test_bad_configuration_is_refused_and_ignored():
    """A block that does not divide T, a block above max_block or an unknown mode sets
    cfg_error and leaves the previous configuration in force."""
    n, d, T = 4, 8, 4
    dut = AttentionCore(n=n, d=d, timesteps=T, lanes=8, max_block=2, theta=6)
    rng = np.random.default_rng(4)
    inputs = [qkv(rng, T, n, d, 0.4) for _ in range(3)]
    bad = [cfg_of("statten", 3), cfg_of("statten", 4), {**cfg_of("ssa"), "mode": 3}]
    for bad_cfg in bad:
        got, counters = run_attention_core(dut, inputs[:2],
                                           configs=[cfg_of("statten", 2), bad_cfg])
        assert counters["cfg_error"] == 1
        lif = lif_of(dut, 6)
        for (q, k, v), beats in zip(inputs[:2], got):   # both ran as STAtten B = 2
            assert beats == attention_core_outputs(q, k, v, lif, mode="statten",
                                                              block=2)


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=0, d=8), "n must be"), (dict(n=4, d=8, lanes=3), "lanes"),
    (dict(n=4, d=8, max_block=5), "max_block"), (dict(n=4, d=8, mode="full"), "mode"),
    (dict(n=4, d=8, mode="statten", block=3), "block"), (dict(n=4, d=8, order="kq"), "order"),
    (dict(n=4, d=8, variant="x"), "variant"), (dict(n=4, d=8, theta=0), "theta"),
])
def test_constructor_rejects_impossible_parameters(kwargs, match):
    kwargs.setdefault("theta", 4)
    with pytest.raises(ValueError, match=match):
        AttentionCore(timesteps=4, **kwargs)
