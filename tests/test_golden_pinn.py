"""Spiking PINN (design.md §7, issue 4 item 5): targets from the shipped weights, the integer
contract re-implemented independently, and bad input. NumPy only (no torch)."""

import json

import numpy as np
import pytest

from spikeforge.golden import pinn
from spikeforge.golden.pinn import (PROBLEMS, PinnWeightsError, convert, eval_grid,
                                    float_forward, load_weights, rel_l2, snn_output_int,
                                    snn_predict_float, snn_predict_int)
from spikeforge.golden.quant import (quantize_pow2, quantize_to_shift,
                                     round_with_error_feedback, shift_int)

TS = (8, 16, 32, 64, 128)


@pytest.fixture(scope="module")
def sin():
    params = load_weights("sin")
    x = eval_grid()
    return params, x, PROBLEMS["sin"].u(x)


@pytest.fixture(scope="module")
def sin_int(sin):
    """Calibrated integer golden SNNs for every T (the expensive part, built once)."""
    params, _, _ = sin
    return {T: convert(params, T, integer=True) for T in TS}


@pytest.fixture(scope="module")
def sin_int_err(sin, sin_int):
    _, x, exact = sin
    return {T: rel_l2(snn_predict_int(sin_int[T], x), exact) for T in TS}


# --------------------------------------------------------------------------- targets

def test_float_network_error(sin):
    params, x, exact = sin
    assert rel_l2(float_forward(params, x), exact) <= 1e-4
    multi = load_weights("multi")
    assert rel_l2(float_forward(multi, x), PROBLEMS["multi"].u(x)) <= 2e-4


def test_integer_snn_targets(sin_int_err):
    assert sin_int_err[64] <= 5e-3
    assert sin_int_err[16] <= 1e-2


def test_calibrated_error_falls_with_T(sin_int_err):
    """Asserted: strictly decreasing over T = 8, 16, 32, 64, 128, and >= 8x lower at 128."""
    errs = [sin_int_err[T] for T in TS]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] * 8 <= errs[0], errs


def test_uncalibrated_conversion_is_much_worse(sin, sin_int_err):
    params, x, exact = sin
    naive64 = rel_l2(snn_predict_int(convert(params, 64, calibrate=False, integer=True), x), exact)
    assert naive64 >= 5 * sin_int_err[64]
    naive_float = rel_l2(snn_predict_float(convert(params, 128, calibrate=False), x), exact)
    assert naive_float >= 0.1, "a hard clip is not a tanh: more timesteps do not help"


def test_float_snn_tracks_integer_snn(sin, sin_int_err):
    params, x, exact = sin
    err = rel_l2(snn_predict_float(convert(params, 64), x), exact)
    assert err <= 5e-3
    assert 0.5 <= err / sin_int_err[64] <= 2.0


def test_conversion_is_deterministic(sin, sin_int):
    params, _, _ = sin
    again = convert(params, 16, integer=True)
    ref = sin_int[16]
    for a, b in zip(again.weights + again.biases, ref.weights + ref.biases):
        assert np.array_equal(a, b)
    assert np.array_equal(again.out_weight, ref.out_weight)
    assert (again.out_bias, again.out_shift) == (ref.out_bias, ref.out_shift)


# --------------------------------------------------------------------------- integer contract

def _reference_int(snn, x):
    """The contract of pinn.py's docstring, written out step by step with Python ints:
    xq, shifted accumulations, sub-neuron biases, signed IF with saturation, integrator."""
    lo, hi = -(1 << (snn.lif.width - 1)), (1 << (snn.lif.width - 1)) - 1
    theta, K = snn.lif.theta, snn.K
    out = []
    for xv in x:
        xq = int(round(xv * 2 ** snn.input_bits))
        prev = None
        for l, (a, r, b) in enumerate(zip(snn.weights, snn.acc_shifts, snn.biases)):
            n_units = a.shape[0]
            v = [snn.v0] * (n_units * K)
            spikes = []
            for t in range(snn.T):
                s_t = []
                for j in range(n_units):
                    if l == 0:
                        acc = int(a[j, 0]) * xq
                    else:
                        acc = sum(int(w) * s for w, s in zip(a[j], prev[t]) if s)
                    c = acc << r if r >= 0 else acc >> -r
                    for k in range(K):
                        n = j * K + k
                        h = min(hi, max(lo, v[n] + c + int(b[j, k])))
                        s = 1 if h >= theta else (-1 if h <= -theta else 0)
                        v[n] = h - s * theta
                        s_t.append(s)
                spikes.append(s_t)
            prev = spikes
        V = sum(sum(int(w) * s for w, s in zip(snn.out_weight, prev[t])) + snn.out_bias
                for t in range(snn.T))
        out.append(V)
    return out


@pytest.mark.parametrize("T", [8])
def test_integer_contract_matches_an_independent_implementation(sin, sin_int, T):
    _, x, _ = sin
    snn = sin_int[T]
    pts = x[::37]
    V = snn_output_int(snn, pts)
    assert V.dtype == np.int64
    assert V.tolist() == _reference_int(snn, pts)
    # the only float op after the integers: u = V * 2^-out_shift / T
    assert np.array_equal(snn_predict_int(snn, pts), V * 2.0 ** -snn.out_shift / T)


def test_widths_hold_and_saturation_is_harmless(sin, sin_int):
    """Currents fit their width for every input (worst case); membranes of sub-neurons driven
    far past threshold saturate at 16 bits, and a 32-bit membrane gives the same output."""
    import dataclasses
    _, x, _ = sin
    snn = sin_int[64]
    snn.check_widths()
    wide = dataclasses.replace(snn, lif=dataclasses.replace(snn.lif, width=32, current_width=32))
    stats = {}
    assert np.array_equal(snn_output_int(snn, x, stats), snn_output_int(wide, x))
    assert sum(stats["sat_count"]) > 0
    for w in snn.weights + [snn.out_weight]:
        assert np.abs(w).max() <= 127


# --------------------------------------------------------------------------- quantizer helpers

def test_quant_helpers():
    assert shift_int(np.array([-5, 5]), -1).tolist() == [-3, 2]  # floor toward -inf
    assert shift_int(np.array([-5, 5]), 2).tolist() == [-20, 20]
    assert quantize_to_shift(np.array([0.5, -1.25]), 2, 8).tolist() == [2, -5]
    with pytest.raises(ValueError, match="bias does not fit a signed 8-bit"):
        quantize_to_shift(np.array([40.0]), 2, 8)
    with pytest.raises(ValueError, match="bits must be an integer >= 2"):
        quantize_pow2(np.ones(3), 1)
    rng = np.random.default_rng(0)
    f = rng.choice([-1.0, 0.0, 1.0], size=(300, 40)).cumsum(0) / 30
    w = rng.normal(0, 1, (5, 40))
    q_plain, s = quantize_pow2(w, 4)
    q_fb, db = round_with_error_feedback(w * 2.0 ** s, f, 4)
    assert np.abs(q_fb).max() <= 7
    ref = f @ (w * 2.0 ** s).T
    plain_err = f @ q_plain.T - ref
    fb_err = f @ q_fb.T + db - ref
    assert np.linalg.norm(fb_err) < 0.5 * np.linalg.norm(plain_err - plain_err.mean(0))


# --------------------------------------------------------------------------- bad input

def _write(path, files):
    np.savez(path, **files)
    return path


@pytest.fixture
def files():
    with np.load(pinn.weights_path("sin")) as npz:
        return {k: npz[k] for k in npz.files}


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(PinnWeightsError, match="not a readable .npz"):
        load_weights(bad)
    with pytest.raises(PinnWeightsError, match="no such PINN weight file"):
        load_weights(tmp_path / "missing.npz")


@pytest.mark.parametrize("edit,match", [
    (lambda f: f.update(version=np.int64(99)), "version 99"),
    (lambda f: f.pop("w1"), "missing key 'w1'"),
    (lambda f: f.pop("version"), "missing key 'version'"),
    (lambda f: f.update(w1=f["w1"][:, :5]), r"w1 has shape \(32, 5\), expected"),
    (lambda f: f.update(b2=np.zeros(3)), r"b2 has shape \(3,\), expected \(1,\)"),
    (lambda f: f.update(w0=f["w0"] * np.nan), "NaN"),
    (lambda f: f.update(problem=np.str_("heat")), "unknown problem 'heat'"),
    (lambda f: f.update(activation=np.str_("relu")), "activation 'relu'"),
    (lambda f: f.update(meta=np.str_("{oops")), "not JSON"),
])
def test_invalid_weight_files(tmp_path, files, edit, match):
    edit(files)
    with pytest.raises(PinnWeightsError, match=match):
        load_weights(_write(tmp_path / "w.npz", files))


def test_roundtrip_and_unknown_problem(tmp_path, files):
    params = load_weights(_write(tmp_path / "ok.npz", files))
    assert json.dumps(params["meta"])
    pinn.save_weights(tmp_path / "again.npz", params)
    again = load_weights(tmp_path / "again.npz")
    assert all(np.array_equal(a, b) for a, b in zip(params["weights"], again["weights"]))
    with pytest.raises(ValueError, match="unknown PINN problem"):
        pinn.weights_path("wave")


def test_bad_conversion_arguments(sin):
    params, _, _ = sin
    with pytest.raises(ValueError, match="T must be a positive integer"):
        convert(params, 0)
    with pytest.raises(ValueError, match="K .* must be a positive integer"):
        convert(params, 8, K=0)
    with pytest.raises(ValueError, match="bits must be an integer >= 2"):
        convert(params, 8, integer=True, weight_bits=1)
    with pytest.raises(ValueError, match="layer 0 bias does not fit a signed 12-bit"):
        convert(params, 8, integer=True, current_width=12)
    with pytest.raises(ValueError, match="layer 1: currents reach .* signed 14-bit current"):
        convert(params, 8, integer=True, current_width=14)
    with pytest.raises(ValueError, match="more than 16 bits"):
        convert(params, 8, integer=True, out_width=16)
    with pytest.raises(ValueError, match="domain"):
        snn_predict_float(convert(params, 8), [0.5, 1.5])
