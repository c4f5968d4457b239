"""Quantizer and model file: power-of-two scales, folding, width errors, file validation."""

import json

import numpy as np
import pytest

from spikeforge.golden.lif import lif_array, lif_float
from spikeforge.golden.quant import (MODEL_VERSION, ModelFileError, current_bound,
                                     leak_shift_for_tau, load_model, quantize_layer,
                                     quantize_pow2, save_model)


@pytest.mark.parametrize("bits", [4, 8])
def test_pow2_quantization_fits_and_is_close(bits):
    w = np.random.default_rng(0).normal(0, 0.3, size=(16, 12))
    q, shift = quantize_pow2(w, bits)
    hi = 2 ** (bits - 1) - 1
    assert np.abs(q).max() <= hi
    assert np.abs(q).max() > hi // 2, "the largest shift that fits is used"
    assert np.abs(q * 2.0 ** -shift - w).max() <= 2.0 ** -shift / 2 + 1e-12


def test_pow2_rounding_overflow_is_avoided():
    q, shift = quantize_pow2(np.array([0.99609375]), 8)  # 0.996 * 128 rounds to 128
    assert q[0] <= 127


def test_integer_layer_tracks_the_float_layer():
    """With τ = 2^k and everything on the grid, the quantized layer reproduces the float
    layer's spikes on a random input (up to the leak's floor rounding, tolerance 2 %)."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.5, size=(32, 24))
    layer = quantize_layer("fc", w, theta=1.0, tau=4.0, weight_bits=8, width=16)
    assert layer.lif.leak_shift == 2 and layer.lif.theta == 2 ** layer.shift
    s_in = rng.integers(0, 2, size=(20, 24))
    s_int = lif_array(s_in @ layer.weights.T, layer.lif).spikes
    s_float, _ = lif_float(s_in @ (layer.weights.T * 2.0 ** -layer.shift), beta=0.75,
                           theta=1.0, compare=">=")
    assert s_int.any() and np.mean(s_int != s_float) < 0.02


def test_decay_input_is_folded_into_the_weights():
    w = np.full((2, 3), 0.5)
    a = quantize_layer("a", w, theta=1.0, tau=2.0, decay_input=True)
    b = quantize_layer("b", w / 2.0, theta=1.0, tau=2.0)
    assert np.array_equal(a.weights, b.weights) and a.shift == b.shift


def test_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="weight bits"):
        quantize_pow2(np.ones(3), 1)
    with pytest.raises(ValueError, match="power of two"):
        leak_shift_for_tau(3.0)
    with pytest.raises(ValueError, match="theta.*more than 8 bits"):
        quantize_layer("fc", np.full((2, 2), 0.01), theta=5.0, width=8)
    with pytest.raises(ValueError, match="bias"):
        quantize_layer("fc", np.ones((2, 2)), bias=np.ones(3), theta=1.0)
    with pytest.raises(ValueError, match="NaN"):
        quantize_pow2(np.array([1.0, np.nan]))


def test_fit_width_lowers_the_scale_until_threshold_and_bias_fit():
    w = np.full((2, 2), 0.01)                      # alone it would take shift 13
    with pytest.raises(ValueError, match="theta"):
        quantize_layer("fc", w, theta=5.0, width=8)
    layer = quantize_layer("fc", w, bias=[0.5, -3.0], theta=5.0, width=8, fit_width=True)
    assert layer.lif.theta <= 127 and np.abs(layer.bias).max() <= 128
    assert layer.lif.theta == round(5.0 * 2 ** layer.shift) and layer.shift == 4


def test_input_shift_scales_threshold_bias_and_current_width():
    """Inputs in units of 2^-4 (4-bit pixels up to 16): the membrane scale gains 4 bits,
    and the current width grows when Σ|w|·input_max + |b| exceeds the membrane."""
    w = np.array([[0.5, -0.5, 0.5]])
    layer = quantize_layer("emb", w, bias=[[0.25], [0.5]], theta=1.0, input_shift=4,
                           input_max=16, width=13)
    assert layer.membrane_shift == layer.shift + 4
    assert layer.lif.theta == 2 ** layer.membrane_shift
    assert layer.bias.tolist() == [[2 ** layer.membrane_shift // 4], [2 ** layer.membrane_shift // 2]]
    bound = current_bound(layer.weights, layer.bias, 16)
    assert bound == np.abs(layer.weights).sum() * 16 + np.abs(layer.bias).max()
    assert layer.lif.in_width == bound.bit_length() + 1 > 13


def test_readout_layer_has_no_lif_and_round_trips(tmp_path):
    head = quantize_layer("head", np.eye(3) * 0.3, bias=np.ones(3), theta=None, width=32,
                          kind="readout")
    emb = quantize_layer("emb", np.ones((3, 2)), bias=np.ones((4, 3)), theta=1.0, input_shift=2)
    assert head.lif is None
    save_model(tmp_path / "m.npz", [emb, head])
    (e2, h2), _ = load_model(tmp_path / "m.npz")
    assert h2.lif is None and h2.kind == "readout" and e2.input_shift == 2
    assert np.array_equal(e2.bias, emb.bias) and e2.bias.shape == (4, 3)


def test_model_file_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    layers = [quantize_layer("fc1", rng.normal(size=(8, 4)), rng.normal(size=8) * 0.1,
                             theta=1.0, tau=2.0, bias_bits=12),
              quantize_layer("fc2", rng.normal(size=(3, 8)), theta=0.5, weight_bits=4)]
    save_model(tmp_path / "m.npz", layers, task="test")
    loaded, meta = load_model(tmp_path / "m.npz")
    assert meta == {"task": "test"}
    for a, b in zip(layers, loaded):
        assert a.name == b.name and a.lif == b.lif and a.shift == b.shift
        assert np.array_equal(a.weights, b.weights)
        assert (a.bias is None and b.bias is None) or np.array_equal(a.bias, b.bias)


def test_bad_model_files_are_refused(tmp_path):
    layers = [quantize_layer("fc", np.ones((2, 2)), theta=1.0)]
    good = tmp_path / "good.npz"
    save_model(good, layers)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="not a readable"):
        load_model(corrupt)
    files = dict(np.load(good))
    for change, message in [({"version": np.array(MODEL_VERSION + 1)}, "version"),
                            ({"format": np.array("other")}, "not a spikeforge model"),
                            ({"fc.weights": np.full((2, 2), 100, dtype=np.int16),
                              "fc.meta": np.array(json.dumps({**json.loads(
                                  files["fc.meta"].item()), "weight_bits": 4}))}, "4 bits"),
                            ({"fc.weights": np.ones(4, dtype=np.int8)}, "2-D")]:
        bad = tmp_path / "bad.npz"
        np.savez(bad, **{**files, **change})
        with pytest.raises(ModelFileError, match=message):
            load_model(bad)
    del files["fc.meta"]
    np.savez(tmp_path / "bad.npz", **files)
    with pytest.raises(ModelFileError, match="fc.meta"):
        load_model(tmp_path / "bad.npz")
