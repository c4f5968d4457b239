"""SpikingLinear (SynapseEngine -> LIFArray) in Amaranth's simulator against golden
`spiking_linear`: every output spike and membrane, at several sparsities."""

import random

import numpy as np
import pytest

from spikeforge.sim.amaranth_runs import event_beats, run_testbenches, stream_get, stream_put
from spikeforge.golden.lif import LIFParams, lif_array, spiking_linear
from spikeforge.rtl.spiking_linear import SpikingLinear


@pytest.mark.parametrize("n_in,n_out,lanes,T,sparsity", [
    (16, 8, 1, 4, 0.0), (16, 8, 4, 4, 0.5), (12, 6, 2, 6, 0.9), (9, 4, 4, 3, 0.3),
])
def test_matches_golden_spiking_linear(n_in, n_out, lanes, T, sparsity):
    rng = np.random.default_rng(n_in + n_out + lanes + T)
    w = rng.integers(-128, 128, size=(n_out, n_in))
    bias = rng.integers(-32, 32, size=n_out)
    spikes_in = (rng.random((T, n_in)) >= sparsity).astype(np.int64)
    dut = SpikingLinear(n_in=n_in, n_out=n_out, lanes=lanes, timesteps=T, weights=w,
                        bias_width=7, bias=bias, width=12, leak_shift=2, theta=60)
    params = LIFParams(theta=60, leak_shift=2, width=12, current_width=dut.engine.current_width)
    gold = spiking_linear(spikes_in, w, params, bias=bias)
    gold_trace = lif_array(
        spikes_in @ w.T + bias, params, record_membranes=True)
    events = event_beats(spikes_in)
    pyrng = random.Random(1)
    G = n_out // lanes
    got_spikes = np.zeros((T, n_out), dtype=np.int64)
    got_v = np.zeros((T, n_out), dtype=np.int64)

    async def source(ctx):
        for k, (index, word) in enumerate(events):
            await stream_put(ctx, dut.i, {"index": index, "spikes": word,
                                          "last": k == len(events) - 1}, pyrng, gap=0.3)

    async def sink(ctx):
        for beat in range(T * G):
            payload, _ = await stream_get(ctx, dut.o, pyrng, stall=0.3)
            t, g = divmod(beat, G)
            assert payload.index == g
            got_spikes[t, g * lanes:(g + 1) * lanes] = [int(s) for s in payload.spikes]
            got_v[t, g * lanes:(g + 1) * lanes] = [int(v) for v in payload.membrane]

    run_testbenches(dut, source, sink)
    if sparsity < 0.9:
        assert gold.spikes.any(), "stimulus should make neurons fire"
    assert got_spikes.tolist() == gold.spikes.tolist()
    assert got_v.tolist() == gold_trace.membranes.tolist()
    assert got_v[-1].tolist() == gold.v.tolist()
