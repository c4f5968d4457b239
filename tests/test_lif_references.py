"""The float64 reference LIF (`lif_float`) against snnTorch `Leaky` and SpikingJelly
`LIFNode`, and the integer LIF against the float one where no rounding happens
(design.md §3). Needs the `ref` extra (`make test` installs it)."""

import numpy as np
import pytest

from spikeforge.golden.lif import LIFParams, lif_array, lif_float

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.ref

T, N = 40, 64


def random_inputs(seed, scale=0.6):
    return np.random.default_rng(seed).normal(0.3, scale, size=(T, N))


def snntorch_run(x, beta, theta, reset):
    snn = pytest.importorskip("snntorch")
    # β as a float64 tensor: a Python float becomes a float32 parameter inside snnTorch.
    lif = snn.Leaky(beta=torch.tensor(beta, dtype=torch.float64), threshold=theta,
                    reset_mechanism=reset, reset_delay=False)
    mem = lif.init_leaky()
    spikes, mems = [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            spk, mem = lif(torch.tensor(x[t], dtype=torch.float64), mem)
            spikes.append(spk.numpy().copy())
            mems.append(mem.numpy().copy())
    return np.array(spikes), np.array(mems)


def spikingjelly_run(x, tau, theta, v_reset):
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    lif = neuron.LIFNode(tau=tau, decay_input=False, v_threshold=theta, v_reset=v_reset,
                         step_mode="m", store_v_seq=True)
    with torch.no_grad():
        spikes = lif(torch.tensor(x, dtype=torch.float64)).numpy()
    return spikes, lif.v_seq.numpy()


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("beta", [0.5, 0.9, 1.0])
def test_snntorch_leaky_matches_float_reference(beta, reset):
    x = random_inputs(1)
    if reset == "subtract":
        # Equal while the membrane left after a subtract-reset stays <= θ: keep inputs below θ.
        x = np.clip(x, -1.0, 0.95)
    theta = 1.0
    s_ref, v_ref = snntorch_run(x, beta, theta, reset)
    s, v = lif_float(x, beta=beta, theta=theta, reset=reset, compare=">")
    assert s.sum() > 0.05 * s.size, "stimulus should make neurons fire"
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_allclose(v, v_ref, rtol=0, atol=1e-12)


def test_snntorch_subtract_differs_when_residual_stays_above_threshold():
    """snnTorch computes its reset term from the previous membrane: when a step leaves the
    membrane above θ even after subtracting θ, the next step subtracts θ before deciding the
    spike, and its "avoid double reset" term adds θ back when no spike results. The
    membrane then sits above θ without firing. Ours fires again. Pinned down here."""
    x = np.array([[2.5], [0.0], [0.0]])  # β = 1, θ = 1
    s_ref, v_ref = snntorch_run(x, 1.0, 1.0, "subtract")
    s, v = lif_float(x, beta=1.0, theta=1.0, reset="subtract", compare=">")
    # ours: h = 2.5 -> spike, v = 1.5; h = 1.5 -> spike, v = 0.5; h = 0.5 -> no spike.
    assert s[:, 0].tolist() == [1, 1, 0] and v[:, 0].tolist() == [1.5, 0.5, 0.5]
    # snnTorch: 2.5 -> spike, 1.5; then 1.5 - 1 = 0.5 is not above θ: no spike, and
    # do_reset = 0 - 1 adds θ back: 1.5 again, for every later step.
    assert s_ref[:, 0].tolist() == [1, 0, 0] and v_ref[:, 0].tolist() == [1.5, 1.5, 1.5]


@pytest.mark.parametrize("v_reset", [None, 0.0])
@pytest.mark.parametrize("tau", [2.0, 4.0, 10.0])
def test_spikingjelly_lifnode_matches_float_reference(tau, v_reset):
    x = random_inputs(2, scale=1.0)
    theta = 1.0
    s_ref, v_ref = spikingjelly_run(x, tau, theta, v_reset)
    reset = "subtract" if v_reset is None else "zero"
    s, v = lif_float(x, beta=1 - 1 / tau, theta=theta, reset=reset, compare=">=")
    assert s.sum() > 0.05 * s.size
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_allclose(v, v_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_integer_lif_equals_float_lif_when_nothing_rounds(reset):
    """With no leak (IF) and no saturation, the integer model is the float model on integers."""
    x = np.random.default_rng(3).integers(-40, 90, size=(T, N))
    r = lif_array(x, LIFParams(theta=100, leak_shift=None, width=16, reset=reset),
                  record_membranes=True)
    s, v = lif_float(x.astype(float), beta=1.0, theta=100.0, reset=reset, compare=">=")
    assert r.sat_count == 0 and r.spikes.any()
    np.testing.assert_array_equal(r.spikes, s)
    np.testing.assert_array_equal(r.membranes, v)
