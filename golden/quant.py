"""Quantizer and model file (design.md §3, §4): float spiking layers -> integer layers.

Convention (no multipliers anywhere in the integer model):
- Weights of a layer get one power-of-two scale: w ≈ w_int · 2^-shift, with the largest
  shift such that every |w_int| fits a signed `weight_bits` integer.
- The layer's currents are then in units of 2^-shift, so the membrane uses the same scale:
  θ_int = round(θ · 2^shift), bias_int = round(b · 2^shift), v_reset likewise ("MINT-style":
  membrane and weights share one scale). Each must fit the membrane width W or the bias width.
- SpikingJelly's `decay_input=True` computes H = V + (X − (V − V_reset))/τ: the 1/τ on the
  input is folded into the weights and bias before quantizing. The leak β = 1 − 1/τ must be
  1 − 2^-k (τ a power of two, k = log2 τ) to be the integer shift of design.md §3; τ = None
  (or infinite) means no leak (IF).

Model file: a `.npz` with `format` = "spikeforge-model", `version` = MODEL_VERSION, a
`layers` name list, and per layer `<name>.weights` (int8/int16), `<name>.bias` (optional),
and `<name>.meta` (JSON: shift, theta, leak_shift, width, reset, weight_bits, bias_bits, kind).
`load_model` validates all of it and says what is wrong.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .lif import LIFParams, signed_range

MODEL_FORMAT = "spikeforge-model"
MODEL_VERSION = 1


def quantize_pow2(w, bits: int = 8, max_shift: int | None = None) -> tuple[np.ndarray, int]:
    """(w_int, shift) with w ≈ w_int · 2^-shift and |w_int| <= 2^(bits-1) - 1.

    `max_shift` caps the shift (fewer effective weight bits) when something sharing the
    scale, a threshold or bias, would otherwise not fit the membrane width."""
    if not isinstance(bits, int) or bits < 2:
        raise ValueError(f"weight bits must be an integer >= 2, got {bits!r}")
    w = np.asarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise ValueError("weights contain NaN or infinity")
    hi = (1 << (bits - 1)) - 1
    peak = float(np.abs(w).max()) if w.size else 0.0
    if peak == 0.0:
        return np.zeros(w.shape, dtype=np.int64), 0 if max_shift is None else min(0, max_shift)
    shift = math.floor(math.log2(hi / peak))
    if max_shift is not None:
        shift = min(shift, max_shift)
    while np.abs(np.rint(w * 2.0 ** shift)).max() > hi:  # rounding can push the peak over
        shift -= 1
    return np.rint(w * 2.0 ** shift).astype(np.int64), shift


def fitting_shift(values, width: int) -> int:
    """The largest shift s with every round(values · 2^s) inside a signed `width`-bit range:
    the cap on a layer's scale that keeps its threshold and biases representable."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    peak = float(v.max()) if v.size else 0.0
    if peak == 0.0:
        return 64
    hi = signed_range(width)[1]
    shift = math.floor(math.log2(hi / peak))
    while np.rint(peak * 2.0 ** shift) > hi:
        shift -= 1
    return shift


def _to_scale(name: str, value: float, shift: int, width: int) -> int:
    q = int(round(value * 2.0 ** shift))
    lo, hi = signed_range(width)
    if not lo <= q <= hi:
        raise ValueError(f"{name}={value} is {q} at the weight scale 2^-{shift}: it needs more "
                         f"than {width} bits; widen the membrane/bias or use fewer weight bits")
    return q


def leak_shift_for_tau(tau) -> int | None:
    """k with β = 1 − 2^-k = 1 − 1/τ; None for no leak. τ must be a power of two >= 1."""
    if tau is None or tau == math.inf:
        return None
    k = math.log2(tau) if tau >= 1 else -1
    if tau < 1 or k != int(k):
        raise ValueError(f"tau={tau} is not a power of two >= 1: β = 1 - 1/τ has no shift form")
    return int(k)


@dataclass
class IntLayer:
    """One integer layer: currents = weights @ inputs + bias, then the LIF (None: a
    non-spiking readout whose currents are summed, kind "readout")."""
    name: str
    weights: np.ndarray            # [n_out, n_in] int
    bias: np.ndarray | None        # [n_out] int, [tokens, n_out] (per-token) or None
    lif: LIFParams | None
    shift: int                     # weights in units of 2^-shift
    weight_bits: int
    bias_bits: int | None = None
    kind: str = "linear"
    extra: dict = field(default_factory=dict)
    input_shift: int = 0           # inputs in units of 2^-input_shift (e.g. 4-bit pixels)

    @property
    def membrane_shift(self) -> int:
        """Currents, bias, threshold and membrane are in units of 2^-membrane_shift."""
        return self.shift + self.input_shift


def current_bound(weights, bias=None, input_max: int = 1) -> int:
    """Largest |current| of `weights @ x + bias` over inputs 0 <= x <= input_max."""
    w = np.abs(np.asarray(weights, dtype=np.int64))
    bound = w.sum(axis=1) * int(input_max)
    if bias is not None:
        bound = bound + np.abs(np.asarray(bias, dtype=np.int64)).reshape(-1, w.shape[0]).max(0)
    return int(bound.max()) if bound.size else 0


def quantize_layer(name: str, weight, bias=None, *, theta: float | None, tau=None,
                   reset="subtract", v_reset: float = 0.0, decay_input: bool = False,
                   weight_bits: int = 8, width: int = 16, bias_bits: int | None = None,
                   kind: str = "linear", signed_spikes: bool = False, input_shift: int = 0,
                   input_max: int = 1, fit_width: bool = False) -> IntLayer:
    """Quantize one float layer (see the module docstring).

    `theta=None` makes a non-spiking readout (no LIF). `bias` may be per output [n_out] or
    per token and output [tokens, n_out] (a position term). Inputs are integers in units of
    2^-input_shift, at most `input_max`: the LIF's `current_width` is widened beyond the
    membrane `width` when Σ|w|·input_max + |b| needs it (the accumulator the hardware
    must provide). `fit_width=True` lowers the scale (fewer effective weight bits) until
    threshold and biases fit `width` instead of raising."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"{name}: weight must be [n_out, n_in], got shape {w.shape}")
    b = None if bias is None else np.asarray(bias, dtype=np.float64)
    if b is not None and (b.ndim not in (1, 2) or b.shape[-1] != w.shape[0]):
        raise ValueError(f"{name}: bias must have shape ({w.shape[0]},) or (tokens, "
                         f"{w.shape[0]}), got {b.shape}")
    if decay_input:  # SpikingJelly: the input is divided by τ; fold it into w and b
        if tau is None:
            raise ValueError(f"{name}: decay_input needs tau")
        w, b = w / tau, None if b is None else b / tau
    bb = bias_bits or width
    max_shift = None
    if fit_width:
        fits = [fitting_shift([theta or 0.0, v_reset], width)]
        if b is not None:
            fits.append(fitting_shift(b, bb))
        max_shift = min(fits) - input_shift
    w_int, shift = quantize_pow2(w, weight_bits, max_shift)
    m_shift = shift + input_shift
    b_int = None if b is None else quantize_to_shift(b, m_shift, bb, name=f"{name}: bias")
    lif = None
    if theta is not None:
        cur = current_bound(w_int, b_int, input_max).bit_length() + 1
        lif = LIFParams(theta=_to_scale(f"{name}: theta", theta, m_shift, width),
                        leak_shift=leak_shift_for_tau(tau), width=width, reset=reset,
                        v_reset=_to_scale(f"{name}: v_reset", v_reset, m_shift, width),
                        signed_spikes=signed_spikes,
                        current_width=cur if cur > width else None)
    return IntLayer(name, w_int, b_int, lif, shift, weight_bits, bias_bits, kind,
                    input_shift=input_shift)


def save_model(path, layers: list[IntLayer], **meta) -> None:
    arrays = {"format": np.array(MODEL_FORMAT), "version": np.array(MODEL_VERSION),
              "layers": np.array([layer.name for layer in layers]),
              "meta": np.array(json.dumps(meta))}
    for layer in layers:
        dtype = np.int8 if layer.weight_bits <= 8 else np.int16
        arrays[f"{layer.name}.weights"] = layer.weights.astype(dtype)
        if layer.bias is not None:
            arrays[f"{layer.name}.bias"] = layer.bias.astype(np.int32)
        arrays[f"{layer.name}.meta"] = np.array(json.dumps({
            "shift": layer.shift, "input_shift": layer.input_shift,
            "lif": None if layer.lif is None else asdict(layer.lif),
            "weight_bits": layer.weight_bits, "bias_bits": layer.bias_bits,
            "kind": layer.kind, "extra": layer.extra}))
    np.savez_compressed(path, **arrays)


class ModelFileError(ValueError):
    """A model file that is not ours, of another version, or inconsistent."""


def load_model(path) -> tuple[list[IntLayer], dict]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ModelFileError(f"{path}: not a readable .npz model file ({e})") from None
    if files.get("format", np.array("")).item() != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not a spikeforge model (missing or wrong 'format')")
    version = int(files["version"]) if "version" in files else None
    if version != MODEL_VERSION:
        raise ModelFileError(f"{path}: model file version {version}, this spikeforge reads "
                             f"version {MODEL_VERSION}")
    layers = []
    for name in files["layers"].tolist() if "layers" in files else []:
        for key in (f"{name}.weights", f"{name}.meta"):
            if key not in files:
                raise ModelFileError(f"{path}: layer {name!r} has no {key!r}")
        meta = _json_field(path, files, f"{name}.meta")
        missing = [k for k in ("shift", "lif", "weight_bits") if k not in meta]
        if missing:
            raise ModelFileError(f"{path}: {name}.meta lacks {', '.join(missing)}")
        w = files[f"{name}.weights"].astype(np.int64)
        if w.ndim != 2:
            raise ModelFileError(f"{path}: {name}.weights must be 2-D, got shape {w.shape}")
        lo, hi = signed_range(meta["weight_bits"])
        if w.size and (w.min() < lo or w.max() > hi):
            raise ModelFileError(f"{path}: {name}.weights exceed {meta['weight_bits']} bits")
        bias = files.get(f"{name}.bias")
        if bias is not None:
            bias = bias.astype(np.int64)
            if bias.ndim not in (1, 2) or bias.shape[-1] != w.shape[0]:
                raise ModelFileError(f"{path}: {name}.bias has shape {bias.shape}, "
                                     f"expected ({w.shape[0]},) or (tokens, {w.shape[0]})")
        try:
            lif = None if meta["lif"] is None else LIFParams(**meta["lif"])
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"{path}: layer {name!r} has invalid LIF parameters: {e}") \
                from None
        layers.append(IntLayer(name, w, bias, lif, meta["shift"], meta["weight_bits"],
                               meta.get("bias_bits"), meta.get("kind", "linear"),
                               meta.get("extra", {}), meta.get("input_shift", 0)))
    if not layers:
        raise ModelFileError(f"{path}: the model has no layers")
    return layers, _json_field(path, files, "meta") if "meta" in files else {}


def _json_field(path, files, key) -> dict:
    try:
        value = json.loads(files[key].item())
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{path}: {key} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: {key} must be a JSON object")
    return value


# --- Array helpers and calibrated rounding (used by the spiking PINN, golden/pinn.py) ---------

def quantize_to_shift(values, shift: int, width: int = 16, name: str = "bias") -> np.ndarray:
    """Array version of the bias/threshold rule above: round(values · 2^shift) as int64,
    checked against a signed `width`-bit range (ValueError naming `name` otherwise).
    Biases, offsets and initial membranes share the accumulator's scale this way."""
    if not isinstance(width, int) or width < 2:
        raise ValueError(f"{name}: width must be an integer >= 2, got {width!r}")
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or infinity")
    q = np.rint(v * 2.0 ** shift)
    lo, hi = signed_range(width)
    if q.size and (q.min() < lo or q.max() > hi):
        raise ValueError(f"{name} does not fit a signed {width}-bit range [{lo}, {hi}] at "
                         f"the scale 2^-{shift}: got [{q.min():.0f}, {q.max():.0f}]")
    return q.astype(np.int64)


def shift_int(x, s: int) -> np.ndarray:
    """x · 2^s on integers: left shift for s >= 0, arithmetic right shift (floor toward −∞,
    the same `>>` as the LIF leak) for s < 0. This is how one power-of-two scale is moved
    to another in the integer model."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"shift_int needs an integer array, got dtype {x.dtype}")
    x = x.astype(np.int64)
    return x << s if s >= 0 else x >> (-s)


def round_with_error_feedback(w_scaled, features, bits: int = 8, damp: float = 0.01,
                              ridge=None) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated rounding of one linear layer (GPTQ / OBQ style), in integer units.

    `w_scaled` [n_out, n_in]: float weights already multiplied by 2^shift (plain rounding
    would be `rint(w_scaled)`); `features` [n_cal, n_in]: the layer's inputs on calibration
    data. Columns are rounded one at a time and each rounding error is pushed onto the
    columns not yet rounded (and finally onto a bias column appended internally), so that
    features @ q.T + bias_delta ≈ features @ w_scaled.T on the calibration set.
    Returns (q [n_out, n_in] int64 within ±(2^(bits−1) − 1), bias_delta [n_out] float in
    the same units: add it to the bias before that is rounded). `ridge` (scalar or
    [n_in + 1] diagonal) and `damp` (a fraction of the mean diagonal) regularize the
    Hessian featuresᵀfeatures.
    """
    if not isinstance(bits, int) or bits < 2:
        raise ValueError(f"weight bits must be an integer >= 2, got {bits!r}")
    w = np.asarray(w_scaled, dtype=np.float64)
    f = np.asarray(features, dtype=np.float64)
    if w.ndim != 2 or f.ndim != 2 or f.shape[1] != w.shape[1]:
        raise ValueError(f"w_scaled [n_out, n_in] and features [n_cal, n_in] do not match: "
                         f"{w.shape} vs {f.shape}")
    fx = np.hstack([f, np.ones((f.shape[0], 1))])
    h = fx.T @ fx
    if ridge is not None:
        h = h + np.diag(np.broadcast_to(np.asarray(ridge, np.float64), (h.shape[0],)))
    h = h + damp * float(np.mean(np.diag(h))) * np.eye(h.shape[0])
    u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper factor: H⁻¹ = Uᵀ U
    work = np.hstack([w, np.zeros((w.shape[0], 1))])
    top = (1 << (bits - 1)) - 1
    q = np.zeros(w.shape, dtype=np.int64)
    for i in range(w.shape[1]):
        qi = np.clip(np.rint(work[:, i]), -top, top)
        err = (work[:, i] - qi) / u[i, i]
        work[:, i + 1:] -= err[:, None] * u[i, i + 1:][None, :]
        q[:, i] = qi.astype(np.int64)
    return q, work[:, -1]
