"""SynapseEngine in Amaranth's simulator against the golden `synapse_engine`."""

import numpy as np
import pytest

from spikeforge.sim.amaranth_runs import (event_beats, run_synapse_engine, run_testbenches,
                                          stream_get)
from spikeforge.golden.synapse import (pack_spikes, spike_events, synapse_engine,
                                       synapse_engine_cycles, unpack_spikes)
from spikeforge.rtl.synapse_engine import LoadTarget, SynapseEngine


@pytest.mark.parametrize("n_in,n_out,lanes,T,bias_width", [
    (16, 8, 1, 4, None), (16, 8, 4, 4, 10), (10, 4, 4, 3, 8), (5, 6, 2, 8, None),
    (7, 1, 1, 2, 6),
])
@pytest.mark.parametrize("sparsity", [0.0, 0.6, 0.95])
@pytest.mark.parametrize("acc_banks", [1, 2])
def test_matches_golden(n_in, n_out, lanes, T, bias_width, sparsity, acc_banks):
    rng = np.random.default_rng(n_in * 100 + n_out + lanes + int(sparsity * 10))
    w = rng.integers(-128, 128, size=(n_out, n_in))
    w[rng.random(w.shape) < 0.05] = -128
    bias = rng.integers(-(1 << (bias_width - 1)), 1 << (bias_width - 1), size=n_out) \
        if bias_width else None
    dut = SynapseEngine(n_in=n_in, n_out=n_out, lanes=lanes, timesteps=T, weights=w,
                        bias_width=bias_width, bias=bias, acc_banks=acc_banks)
    inputs = [(rng.random((T, n_in)) >= sparsity).astype(np.int64) for _ in range(3)]
    beats = [event_beats(s) for s in inputs]
    got, counters = run_synapse_engine(dut, beats, gap=0.3, stall=0.3, seed=n_in)
    for s, cur in zip(inputs, got):
        expect = synapse_engine(spike_events(s), w, T, bias=bias, bias_width=bias_width)
        assert cur.tolist() == expect.tolist()
    assert counters["events"] == sum(len(spike_events(s)) for s in inputs)
    assert counters["skipped"] == sum(len(b) for b in beats) - counters["events"]


def test_runtime_weight_load_and_out_of_range_index():
    n_in, n_out, lanes, T = 6, 4, 2, 4
    rng = np.random.default_rng(7)
    w = rng.integers(-128, 128, size=(n_out, n_in))
    dut = SynapseEngine(n_in=n_in, n_out=n_out, lanes=lanes, timesteps=T)
    G = n_out // lanes
    loads = [(i * G + g, LoadTarget.WEIGHT,
              sum((int(w[g * lanes + l, i]) & 0xFF) << (8 * l) for l in range(lanes)))
             for i in range(n_in) for g in range(G)]
    spikes = rng.integers(0, 2, size=(T, n_in))
    beats = spike_events(spikes)
    # index 6 and 7 are out of range for 6 inputs: dropped, flagged, nothing corrupted
    beats = beats[:1] + [(7, 0b1111), (6, 0b0101)] + beats[1:] + [(n_in - 1, 0)]
    got, counters = run_synapse_engine(dut, [beats], loads=loads)
    assert got[0].tolist() == synapse_engine(spike_events(spikes), w, T).tolist()
    assert counters["index_error"] == 1


def test_event_driven_cycles_follow_the_spikes():
    """Dense input costs one cycle per event and group; 90 % silent input ~10x less."""
    n_in, n_out, lanes, T = 64, 16, 4, 4
    w = np.random.default_rng(3).integers(-128, 128, size=(n_out, n_in))
    dut = SynapseEngine(n_in=n_in, n_out=n_out, lanes=lanes, timesteps=T, weights=w)
    busy = {}
    for sparsity in (0.0, 0.9):
        spikes = np.zeros((T, n_in), dtype=np.int64)
        active = np.random.default_rng(4).permutation(n_in)[:round(n_in * (1 - sparsity))]
        spikes[0, active] = 1
        beats = event_beats(spikes)
        got, counters = run_synapse_engine(SynapseEngine(n_in=n_in, n_out=n_out, lanes=lanes,
                                                 timesteps=T, weights=w), [beats])
        ideal = synapse_engine_cycles(len(spike_events(spikes)), n_out, lanes, T)
        assert counters["busy_cycles"] <= 1.15 * ideal + len(beats), (sparsity, counters, ideal)
        busy[sparsity] = counters["busy_cycles"]
    assert busy[0.0] >= 5 * busy[0.9]


def test_packing_roundtrip():
    s = np.random.default_rng(5).integers(0, 2, size=(6, 9))
    assert unpack_spikes(pack_spikes(s), 6).tolist() == s.tolist()
    with pytest.raises(ValueError, match="binary"):
        pack_spikes(s * 2)


def test_constructor_rejects_bad_parameters():
    with pytest.raises(ValueError, match="lanes"):
        SynapseEngine(n_in=4, n_out=6, lanes=4)
    with pytest.raises(ValueError, match="weights"):
        SynapseEngine(n_in=4, n_out=4, weights=np.full((4, 4), 200))
    with pytest.raises(ValueError, match="bias_width"):
        SynapseEngine(n_in=4, n_out=4, bias=np.zeros(4, dtype=int))


def test_silent_beats_are_dropped_on_arrival():
    """A full event stream (every input neuron, mostly silent words): silent beats cost at
    most one input cycle each and no dispatch."""
    n_in, n_out, lanes, T = 64, 16, 4, 4
    rng = np.random.default_rng(6)
    w = rng.integers(-128, 128, size=(n_out, n_in))
    spikes = (rng.random((T, n_in)) >= 0.97).astype(np.int64)
    words = pack_spikes(spikes)
    beats = [(i, int(words[i])) for i in range(n_in)]
    dut = SynapseEngine(n_in=n_in, n_out=n_out, lanes=lanes, timesteps=T, weights=w)
    got, counters = run_synapse_engine(dut, [beats])
    assert got[0].tolist() == synapse_engine(spike_events(spikes), w, T).tolist()
    events = len(spike_events(spikes))
    silent = n_in - events
    assert counters["events"] == events and counters["skipped"] == silent
    ideal = synapse_engine_cycles(events, n_out, lanes, T)
    assert counters["busy_cycles"] <= 1.15 * ideal + silent


@pytest.mark.parametrize("lanes,active,T", [(4, 2, 4), (2, 3, 4), (1, 1, 2), (4, 4, 3)])
def test_row_addressing_planes_and_signed_events(lanes, active, T):
    """Accelerator mode: events carry their weight row; `active_groups` of the built groups
    are used; shifted (bit-plane) and negated (signed-spike) events against the golden engine."""
    n_in, n_out_max, depth = 12, 4 * lanes, 96
    rng = np.random.default_rng(lanes * 10 + active + T)
    n_out = active * lanes
    w = rng.integers(-128, 128, size=(n_out, n_in))
    dut = SynapseEngine(n_in=n_in, n_out=n_out_max, lanes=lanes, timesteps=T,
                        row_addressing=True, weight_depth=depth, max_shift=5,
                        signed_events=True)
    base = 7  # the layer's weights start at word 7, `active` groups per input row
    loads = [(base + i * active + g, LoadTarget.WEIGHT,
              sum((int(w[g * lanes + l, i]) & 0xFF) << (8 * l) for l in range(lanes)))
             for i in range(n_in) for g in range(active)]
    events = [(int(i), int(rng.integers(0, 1 << T)), int(rng.integers(0, 6)),
               int(rng.integers(0, 2))) for i in rng.integers(0, n_in, size=20)]
    beats = [{"index": i, "spikes": word, "row": base + i * active, "shift": sh, "negate": neg}
             for i, word, sh, neg in events]
    got, counters = run_synapse_engine(dut, [beats], loads=loads, active_groups=active,
                                       gap=0.3, stall=0.3, seed=lanes)
    want = synapse_engine(events, w, T)
    assert got[0][:, :n_out].tolist() == want.tolist()
    assert counters["events"] == sum(1 for e in events if e[1])


def test_acc_banks_must_be_one_or_two():
    for banks in (0, 3, True, 1.0):
        with pytest.raises(ValueError, match="acc_banks"):
            SynapseEngine(n_in=4, n_out=4, acc_banks=banks)


def test_row_addressing_refuses_initial_weights():
    with pytest.raises(ValueError, match="row_addressing"):
        SynapseEngine(n_in=4, n_out=4, weights=np.zeros((4, 4), dtype=int), row_addressing=True)


@pytest.mark.parametrize("acc_banks", [1, 2])
def test_next_token_accumulates_while_the_previous_drains(acc_banks):
    """Two accumulator banks: with the output held (nothing drains), the events of the next
    token are still taken; the token after that waits until a bank is free (one bank: the
    next token waits at once). Every token's currents equal the golden engine's, so the banks
    neither mix nor keep stale sums."""
    n_in, n_out, lanes, T = 8, 8, 2, 4
    rng = np.random.default_rng(11)
    w = rng.integers(-128, 128, size=(n_out, n_in))
    dut = SynapseEngine(n_in=n_in, n_out=n_out, lanes=lanes, timesteps=T, weights=w,
                        acc_banks=acc_banks)
    tokens = [rng.integers(0, 2, size=(T, n_in)) for _ in range(4)]
    beats = [event_beats(s) for s in tokens]
    taken = [0] * len(tokens)        # beats of each token accepted
    got = []

    async def source(ctx):
        for k, token in enumerate(beats):
            for n, (i, word) in enumerate(token):
                ctx.set(dut.i.payload, {"index": i, "spikes": word, "last": n == len(token) - 1})
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                taken[k] += 1
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        await ctx.tick().repeat(200)         # o.ready held low: no drain completes
        waiting = acc_banks   # the first token waiting to be taken
        assert taken[:waiting] == [len(b) for b in beats[:waiting]], \
            "with two banks the second token must accumulate while the first waits to drain"
        assert taken[waiting] <= 1, "the next token must wait for a free bank"
        for _ in tokens:
            cur = np.zeros((T, n_out), dtype=np.int64)
            for beat in range(T * dut.groups):
                payload, _ = await stream_get(ctx, dut.o)
                t, g = divmod(beat, dut.groups)
                cur[t, g * lanes:(g + 1) * lanes] = [int(c) for c in payload.current]
            got.append(cur)

    run_testbenches(dut, source, sink)
    for s, cur in zip(tokens, got):
        assert cur.tolist() == synapse_engine(spike_events(s), w, T).tolist()
