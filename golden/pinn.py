"""Spiking PINN (design.md §7): a float tanh MLP PINN converted to signed IF neurons.

Problem: -u''(x) = f(x) on [0, 1], u(0) = u(1) = 0 (`PROBLEMS`). The float network
(1 -> 32 -> 32 -> 1, tanh; trained by `golden/train_pinn.py`, shipped as
`golden/data/pinn_<problem>.npz`) is converted to a spiking network:

* every hidden tanh unit j becomes a **population of K signed IF neurons** (design.md §3,
  signed-spike variant, no leak, subtract reset, initial membrane θ/2). Sub-neuron k gets
  the unit's current plus its own offset, so it spikes at a rate that is a clipped ramp of
  the unit's pre-activation over the k-th of K segments of the unit's calibration range;
  the next layer sums the K ramps with its own weights: a piecewise-linear tanh. (A single
  signed IF neuron per unit is a hard clip, not a tanh: that is the naive conversion,
  `calibrate=False`: its error stays at 0.2-1 whatever T.)
* the input x enters as a constant current every timestep (direct coding);
* the output layer does not spike: it integrates its input current, and the prediction is
  its membrane after T steps divided by T (the time average of its input).

Calibration, layer by layer on `N_CAL` = 400 collocation points (midpoints of [0, 1],
disjoint from the 256-point evaluation grid), with the SNN at the target T in the loop:
  1. thresholds from activation statistics: each unit's pre-activation range (min..max)
     on the calibration points, +5 % margin, is split into K segments; a segment's
     half-width is the sub-neuron threshold (each unit's currents are rescaled so that all
     neurons of the network share one threshold θ);
  2. weight calibration: the layer's weights and biases are fitted by least squares so the
     time-averaged current reproduces the ANN pre-activation given the *spiking* outputs of
     the layer below (features = spike counts / T), with a ridge 1/(12 T²) per weight -- the
     variance of a rate quantized to 1/T -- so the fit does not amplify rate noise;
  3. integer model only: power-of-two 8-bit weights rounded with error feedback
     (`quant.round_with_error_feedback`) on the same features;
  4. bias correction: after quantization, each unit's bias is set to the mean (over the
     calibration points and T) of the ANN-minus-SNN current, and the output bias to the
     mean ANN-minus-SNN prediction (in the float model the least-squares bias term of
     step 2 is exactly this mean);
  5. initial membrane v0 = θ/2 (rounds the spike count instead of truncating it).

Integer contract (`IntSNN`, what the RTL must reproduce bit for bit; all int64, exact):
  input   xq = round(x · 2^px), x in [0, 1]                           (float op #1)
  layer 0 c[j] = shift(A0[j] · xq, r0);  I[t, j·K+k] = c[j] + B0[j, k]  for every t
  layer l c[t, j] = shift(Σ_n Al[j, n] · s_{l-1}[t, n], rl);  I[t, j·K+k] = c[t, j] + Bl[j, k]
          s_l = lif_array(I, LIFParams(theta=2^tb, leak_shift=None, width=W, reset="subtract",
                          signed_spikes=True, current_width=CW), v0 = 2^(tb-1))
          (defaults: px = 14, tb = 8 so θ = 256, W = 16, CW = 18, K = 8, 8-bit A)
  output  V = Σ_t (Σ_n Aout[n] · s_L[t, n] + Bout)        (non-spiking integrator, wide)
          u = V · 2^-sout / T                                          (float op #2)
where shift(a, r) = a << r for r >= 0 and a >> -r (arithmetic, floor) for r < 0, A are
signed 8-bit, B fit the current width, V fits `out_width` (32) bits. `IntSNN.check_widths`
proves the widths for every input and spike pattern. Membranes of sub-neurons driven far
past their threshold do saturate at W bits (lif_array counts it); such a neuron fires
every step either way, and tests/test_golden_pinn.py checks that a 32-bit membrane gives
the same output bit for bit. Layer l >= 1 is the spiking linear of design.md §4
with each unit's weight row shared by its K sub-neurons (equivalently: rows repeated K
times, biases per sub-neuron).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .lif import LIFParams, lif_array, signed_range
from .quant import quantize_pow2, quantize_to_shift, round_with_error_feedback, shift_int

DATA_DIR = Path(__file__).resolve().parent / "data"
WEIGHTS_VERSION = 1
WEIGHTS_KEYS = ("version", "problem", "activation", "n_layers", "meta")  # + w{i}, b{i}
N_CAL = 400
N_EVAL = 256
DEFAULT_TS = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class Problem:
    name: str
    u: Callable
    f: Callable
    doc: str


_PI = np.pi
PROBLEMS = {
    "sin": Problem("sin", lambda x: np.sin(_PI * x), lambda x: _PI ** 2 * np.sin(_PI * x),
                   "u = sin(πx), f = π² sin(πx)"),
    "multi": Problem(
        "multi",
        lambda x: np.sin(_PI * x) + 0.25 * np.sin(4 * _PI * x) + 0.1 * np.sin(8 * _PI * x),
        lambda x: _PI ** 2 * (np.sin(_PI * x) + 4.0 * np.sin(4 * _PI * x)
                              + 6.4 * np.sin(8 * _PI * x)),
        "u = sin(πx) + 0.25 sin(4πx) + 0.1 sin(8πx), f = π²(sin πx + 4 sin 4πx + 6.4 sin 8πx)"),
}


def rel_l2(pred, exact) -> float:
    """‖pred − exact‖₂ / ‖exact‖₂ over the sample points."""
    pred = np.asarray(pred, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    if pred.shape != exact.shape:
        raise ValueError(f"pred shape {pred.shape} != exact shape {exact.shape}")
    return float(np.linalg.norm(pred - exact) / np.linalg.norm(exact))


def calibration_points(n: int = N_CAL) -> np.ndarray:
    """Midpoints (i + 1/2)/n: never on the evaluation grid (an odd multiple of 1/(2n))."""
    return (np.arange(n) + 0.5) / n


def eval_grid(n: int = N_EVAL) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


def _check_x(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all() or (x.size and (x.min() < 0.0 or x.max() > 1.0)):
        raise ValueError("x must be finite points of the domain [0, 1]")
    return x


# --------------------------------------------------------------------------- float weights

class PinnWeightsError(ValueError):
    """A PINN weight file that is missing keys, of another version, or inconsistent."""


def save_weights(path, params: dict) -> None:
    """Write float weights: keys `version`, `problem`, `activation` ("tanh"), `n_layers`,
    `meta` (JSON: training settings and error), and `w{i}` [n_out, n_in], `b{i}` [n_out]
    (float64) for i < n_layers; x enters raw (any input normalisation is folded in)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"version": np.int64(WEIGHTS_VERSION), "problem": np.str_(params["problem"]),
              "activation": np.str_(params.get("activation", "tanh")),
              "n_layers": np.int64(len(params["weights"])),
              "meta": np.str_(json.dumps(params.get("meta", {})))}
    for i, (w, b) in enumerate(zip(params["weights"], params["biases"])):
        arrays[f"w{i}"] = np.asarray(w, np.float64)
        arrays[f"b{i}"] = np.asarray(b, np.float64)
    np.savez_compressed(path, **arrays)


def weights_path(problem: str) -> Path:
    if problem not in PROBLEMS:
        raise ValueError(f"unknown PINN problem {problem!r}; known: {sorted(PROBLEMS)}")
    return DATA_DIR / f"pinn_{problem}.npz"


def load_weights(source) -> dict:
    """Load and validate float PINN weights from a problem name ("sin", "multi") or a path.

    Returns {"problem", "activation", "weights": [w0, ...], "biases": [b0, ...], "meta"}.
    Raises PinnWeightsError naming the file and what is wrong (unreadable, version, missing
    key, unknown problem or activation, shapes that do not chain 1 -> ... -> 1, NaN).
    """
    path = weights_path(source) if str(source) in PROBLEMS else Path(source)
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise PinnWeightsError(f"{path}: no such PINN weight file") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise PinnWeightsError(f"{path}: not a readable .npz PINN weight file ({e})") from None
    for key in WEIGHTS_KEYS:
        if key not in files:
            raise PinnWeightsError(f"{path}: missing key {key!r}")
    try:
        version = int(files["version"])
    except (TypeError, ValueError):
        raise PinnWeightsError(f"{path}: 'version' is not an integer") from None
    if version != WEIGHTS_VERSION:
        raise PinnWeightsError(f"{path}: PINN weight file version {version}, this spikeforge "
                               f"reads version {WEIGHTS_VERSION}")
    problem = str(files["problem"])
    if problem not in PROBLEMS:
        raise PinnWeightsError(f"{path}: unknown problem {problem!r} (known: {sorted(PROBLEMS)})")
    activation = str(files["activation"])
    if activation != "tanh":
        raise PinnWeightsError(f"{path}: activation {activation!r} is not supported (tanh)")
    n_layers = int(files["n_layers"])
    if n_layers < 2:
        raise PinnWeightsError(f"{path}: n_layers={n_layers}, need at least one hidden layer")
    weights, biases = [], []
    n_in = 1
    for i in range(n_layers):
        for key in (f"w{i}", f"b{i}"):
            if key not in files:
                raise PinnWeightsError(f"{path}: missing key {key!r} (n_layers={n_layers})")
        w, b = files[f"w{i}"], files[f"b{i}"]
        if not (np.issubdtype(w.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)):
            raise PinnWeightsError(f"{path}: w{i}/b{i} must be float arrays")
        n_out = 1 if i == n_layers - 1 else (w.shape[0] if w.ndim == 2 else -1)
        if w.ndim != 2 or w.shape != (n_out, n_in) or n_out < 1:
            raise PinnWeightsError(f"{path}: w{i} has shape {w.shape}, expected "
                                   f"({'1' if i == n_layers - 1 else 'n_out'}, {n_in})")
        if b.shape != (n_out,):
            raise PinnWeightsError(f"{path}: b{i} has shape {b.shape}, expected ({n_out},)")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise PinnWeightsError(f"{path}: w{i}/b{i} contain NaN or infinity")
        weights.append(w.astype(np.float64))
        biases.append(b.astype(np.float64))
        n_in = n_out
    try:
        meta = json.loads(str(files["meta"]))
    except json.JSONDecodeError:
        raise PinnWeightsError(f"{path}: 'meta' is not JSON") from None
    return {"problem": problem, "activation": activation, "weights": weights,
            "biases": biases, "meta": meta}


def float_forward(params: dict, x, return_hidden: bool = False):
    """The float network: u(x). With return_hidden, also [(z_l, tanh(z_l)) per hidden layer]."""
    h = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    hidden = []
    for w, b in zip(params["weights"][:-1], params["biases"][:-1]):
        z = h @ w.T + b
        h = np.tanh(z)
        hidden.append((z, h))
    out = (h @ params["weights"][-1].T + params["biases"][-1])[:, 0]
    return (out, hidden) if return_hidden else out


# --------------------------------------------------------------------------- SNN models

@dataclass
class FloatSNN:
    """Float spiking network, currents in units of the threshold (θ = 1).

    Layer l: weight [N_l, F_in] (layer 0: per unit of x; else per input spike), bias
    [N_l, K] (per sub-neuron; sub-neuron index n = j·K + k). Output: out_weight [F_L],
    out_bias. `v0` is the initial membrane as a fraction of θ."""
    weights: list
    biases: list
    out_weight: np.ndarray
    out_bias: float
    T: int
    K: int
    v0: float
    calibrated: bool
    problem: str = ""


@dataclass
class IntSNN:
    """Integer golden spiking PINN: the contract in the module docstring."""
    weights: list            # [N_l, F_in] int64, signed `weight_bits`
    acc_shifts: list         # r_l: current = shift(acc, r_l)
    biases: list             # [N_l, K] int64 (current width)
    lif: LIFParams           # shared by all hidden layers (signed IF, subtract reset)
    v0: int
    out_weight: np.ndarray   # [F_L] int64, signed `weight_bits`
    out_bias: int
    out_shift: int           # u = V · 2^-out_shift / T
    input_bits: int          # px: xq = round(x · 2^px)
    T: int
    K: int
    weight_bits: int
    out_width: int
    calibrated: bool
    problem: str = ""

    def check_widths(self) -> None:
        """Worst case over *every* input and spike pattern: currents fit the current width,
        the output integrator fits `out_width`. Raises ValueError naming the layer."""
        lo, hi = signed_range(self.lif.in_width)
        xmax = 1 << self.input_bits
        for l, (a, r, b) in enumerate(zip(self.weights, self.acc_shifts, self.biases)):
            if l == 0:
                ends = shift_int(np.stack([np.zeros_like(a[:, 0]), a[:, 0] * xmax]), r)
                cmin, cmax = ends.min(0), ends.max(0)
            else:
                cmax = shift_int(np.abs(a).sum(1), r)
                cmin = -cmax
            top = (cmax[:, None] + b).max()
            bot = (cmin[:, None] + b).min()
            if bot < lo or top > hi:
                raise ValueError(f"layer {l}: currents reach [{bot}, {top}], beyond the "
                                 f"signed {self.lif.in_width}-bit current width")
        vmax = self.T * (int(np.abs(self.out_weight).sum()) + abs(int(self.out_bias)))
        if vmax > signed_range(self.out_width)[1]:
            raise ValueError(f"output integrator needs |V| <= {vmax}: more than "
                             f"{self.out_width} bits")


# --------------------------------------------------------------------------- simulation

def _if_float(currents, v0: float):
    """Signed IF (θ = 1, subtract reset, no leak) in float64; currents [B, T, N]."""
    v = np.full(currents.shape[:1] + currents.shape[2:], v0, dtype=np.float64)
    spikes = np.zeros(currents.shape, dtype=np.int8)
    for t in range(currents.shape[1]):
        v = v + currents[:, t]
        s = (v >= 1.0).astype(np.int8) - (v <= -1.0).astype(np.int8)
        v = v - s
        spikes[:, t] = s
    return spikes


def _layer_currents_float(snn: FloatSNN, l: int, inp) -> np.ndarray:
    """Currents [B, T, N·K] of hidden layer l; inp = x [B] (l = 0) or spikes [B, T, F]."""
    w, b = snn.weights[l], snn.biases[l]
    if l == 0:
        c = (inp[:, None] * w[None, :, 0])[:, None, :]                    # [B, 1, N]
        c = np.broadcast_to(c, (inp.shape[0], snn.T, w.shape[0]))
    else:
        c = inp.astype(np.float64) @ w.T                                   # [B, T, N]
    return np.repeat(c, snn.K, axis=2) + b.reshape(-1)


def _int_matmul(s, a) -> np.ndarray:
    """Exact integer s @ a.T. Computed through float64 BLAS for speed: exact because every
    partial sum is an integer below 2^53 (checked), so the result equals the int64 product."""
    a = np.asarray(a, dtype=np.int64)
    if a.size and int(np.abs(a).sum(axis=-1).max()) * max(1, int(np.abs(s).max(initial=0))) \
            >= 1 << 52:
        return s.astype(np.int64) @ a.T
    return np.rint(s.astype(np.float64) @ a.T.astype(np.float64)).astype(np.int64)


def _unit_currents_int(snn: IntSNN, l: int, inp) -> np.ndarray:
    """Per-unit currents before the sub-neuron biases: c = shift(acc, r_l); [B, 1, N] for
    layer 0 (constant over t), [B, T, N] for spiking layers."""
    a, r = snn.weights[l], snn.acc_shifts[l]
    if l == 0:
        return shift_int(inp[:, None] * a[None, :, 0], r)[:, None, :]
    return shift_int(_int_matmul(inp, a), r)


def _layer_currents_int(snn: IntSNN, l: int, inp) -> np.ndarray:
    """Integer currents [B, T, N·K] of hidden layer l; inp = xq [B] or spikes [B, T, F]."""
    c = _unit_currents_int(snn, l, inp)
    c = np.broadcast_to(c, (c.shape[0], snn.T, c.shape[2]))
    return np.repeat(c, snn.K, axis=2) + snn.biases[l].reshape(-1)


def quantize_input(x, input_bits: int) -> np.ndarray:
    """Float op #1 of the integer contract: xq = round(x · 2^px) for x in [0, 1]."""
    return np.rint(_check_x(x) * 2.0 ** input_bits).astype(np.int64)


def _run_float(snn: FloatSNN, x):
    s = x
    for l in range(len(snn.weights)):
        s = _if_float(_layer_currents_float(snn, l, s), snn.v0)
    return s


def _int_layer(snn: IntSNN, l: int, inp):
    cur = _layer_currents_int(snn, l, inp)
    return lif_array(cur, snn.lif, v0=np.full(cur.shape[:1] + cur.shape[2:], snn.v0,
                                              dtype=np.int64))


def _run_int(snn: IntSNN, xq, stats: dict | None = None):
    s = xq
    for l in range(len(snn.weights)):
        res = _int_layer(snn, l, s)
        s = res.spikes
        if stats is not None:
            stats.setdefault("sat_count", [0] * len(snn.weights))[l] += res.sat_count
            stats.setdefault("spikes", [0] * len(snn.weights))[l] += int(np.abs(s).sum())
            ops = np.abs(s).sum() * (snn.weights[l + 1].shape[0] if l + 1 < len(snn.weights)
                                     else 1)
            stats.setdefault("synaptic_ops", [0] * len(snn.weights))[l] += int(ops)
    return s


def _chunks(n: int, size: int = 64):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def snn_predict_float(snn: FloatSNN, x) -> np.ndarray:
    """Prediction of the float SNN: (1/T) Σ_t (out_weight · s_L[t]) + out_bias."""
    x = _check_x(x)
    out = np.empty(x.shape[0])
    for sl in _chunks(x.shape[0]):
        s = _run_float(snn, x[sl])
        out[sl] = s.sum(1).astype(np.float64) @ snn.out_weight / snn.T + snn.out_bias
    return out


def snn_output_int(snn: IntSNN, x, stats: dict | None = None) -> np.ndarray:
    """The integer output membrane V after T steps (int64), before the readout scaling."""
    xq = quantize_input(x, snn.input_bits)
    out = np.empty(xq.shape[0], dtype=np.int64)
    for sl in _chunks(xq.shape[0]):
        s = _run_int(snn, xq[sl], stats=stats)
        out[sl] = _int_matmul(s.astype(np.int64).sum(1), snn.out_weight[None, :])[:, 0] \
            + snn.T * snn.out_bias
    return out


def snn_predict_int(snn: IntSNN, x, stats: dict | None = None) -> np.ndarray:
    """Prediction of the integer golden SNN: u = V · 2^-out_shift / T (float op #2).
    Pass a dict as `stats` to collect per-layer spikes, saturations and synaptic ops."""
    return snn_output_int(snn, x, stats) * 2.0 ** -snn.out_shift / snn.T


# --------------------------------------------------------------------------- conversion

def _segments(z, K: int, margin: float):
    """Per-unit calibration range split into K segments: (half-width h [N], mid m [N, K])."""
    lo, hi = z.min(0), z.max(0)
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - margin * span, hi + margin * span
    h = (hi - lo) / (2 * K)
    m = lo[:, None] + h[:, None] * (2 * np.arange(K) + 1)[None, :]
    return h, m


def _lstsq(features, target, ridge):
    """min ‖[F 1] P − Y‖² + ridge·n·‖W‖² (bias not penalised): returns (W [N, F], b [N])."""
    n = features.shape[0]
    fx = np.hstack([features, np.ones((n, 1))])
    reg = np.full(fx.shape[1], ridge * n)
    reg[-1] = 0.0
    p = np.linalg.solve(fx.T @ fx + np.diag(reg) + 1e-12 * np.eye(fx.shape[1]), fx.T @ target)
    return p[:-1].T, p[-1]


def _naive_float(params, T: int, x_cal, percentile: float) -> FloatSNN:
    """Uncalibrated conversion: one signed IF neuron per tanh unit, a layer threshold at the
    `percentile` of |activation| on the calibration points, v0 = 0, weights unchanged."""
    _, hidden = float_forward(params, x_cal, return_hidden=True)
    thetas = [float(np.percentile(np.abs(a), percentile)) for _, a in hidden]
    ws, bs, prev = [], [], 1.0
    for l, (w, b) in enumerate(zip(params["weights"][:-1], params["biases"][:-1])):
        ws.append(w * prev / thetas[l])
        bs.append((b / thetas[l])[:, None])
        prev = thetas[l]
    return FloatSNN(ws, bs, params["weights"][-1][0] * prev, float(params["biases"][-1][0]),
                    T, 1, 0.0, False, params["problem"])


def convert(params, T: int, calibrate: bool = True, *, integer: bool = False, K: int = 8,
            n_cal: int = N_CAL, margin: float = 0.05, weight_bits: int = 8,
            threshold_bits: int = 8, input_bits: int = 14, width: int = 16,
            current_width: int = 18, out_width: int = 32, percentile: float = 99.9,
            rounding: str = "feedback", v0: float = 0.5):
    """ANN -> SNN conversion for T timesteps: a `FloatSNN`, or an `IntSNN` if `integer`.

    `params` is a dict from `load_weights` (or a problem name). calibrate=False gives the
    naive conversion (one IF neuron per unit, so K is ignored; layer threshold at the
    `percentile` of |activation|; v0 = 0; weights unchanged; integer: plain rounding).
    The integer model is calibrated with the *integer* SNN in the loop, so it absorbs its
    own quantization error; θ = 2^threshold_bits, membranes `width` bits, currents
    `current_width` bits (checked for the worst case over every input), output integrator
    `out_width` bits. Ablation knobs: `rounding` = "feedback" (error-feedback rounding of
    the weights) or "plain" (round to nearest); `v0` = initial membrane as a fraction of θ.
    """
    if rounding not in ("feedback", "plain"):
        raise ValueError(f"rounding must be 'feedback' or 'plain', got {rounding!r}")
    if not isinstance(params, dict):
        params = load_weights(params)
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T must be a positive integer, got {T!r}")
    if not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"K (neurons per tanh unit) must be a positive integer, got {K!r}")
    x_cal = calibration_points(n_cal)
    if not calibrate:
        fsnn = _naive_float(params, T, x_cal, percentile)
        return _quantize_plain(fsnn, weight_bits, threshold_bits, input_bits, width,
                               current_width, out_width) if integer else fsnn

    u_ann, hidden = float_forward(params, x_cal, return_hidden=True)
    ridge = 1.0 / (12.0 * T * T)
    n_hidden = len(hidden)
    if integer:
        theta = 1 << threshold_bits
        lif = LIFParams(theta=theta, leak_shift=None, width=width, reset="subtract",
                        signed_spikes=True, current_width=current_width)
        snn = IntSNN([], [], [], lif, int(round(v0 * theta)), np.zeros(0, np.int64), 0, 0,
                     input_bits, T, K, weight_bits, out_width, True, params["problem"])
        inp = quantize_input(x_cal, input_bits)
    else:
        snn = FloatSNN([], [], np.zeros(0), 0.0, T, K, float(v0), True, params["problem"])
        inp = x_cal
    feats = x_cal[:, None]                 # layer-0 features: x itself
    for l in range(n_hidden + 1):
        last = l == n_hidden
        target = u_ann[:, None] if last else hidden[l][0]
        w, b = _lstsq(feats, target, ridge if l else 0.0)    # per-unit weights, z units
        if not last:
            h, m = _segments(hidden[l][0], K, margin)
            w, b = w / h[:, None], b / h                       # -> threshold units
            target = target / h
            offsets = -m / h[:, None]
        if not integer:
            if last:
                snn.out_weight, snn.out_bias = w[0], float(b[0])
                break
            snn.weights.append(w)
            snn.biases.append(b[:, None] + offsets)
            spikes = _if_float(_layer_currents_float(snn, l, inp), snn.v0)
            inp, feats = spikes, spikes.mean(1)
            continue
        # integer: 8-bit power-of-two weights, rounded with error feedback on the features
        if l == 0:
            f_int = inp[:, None].astype(np.float64)            # features in xq units
            w_x = w / 2.0 ** input_bits
        else:
            f_int, w_x = feats, w
        q, s_w = quantize_pow2(w_x, weight_bits)
        if rounding == "feedback":
            q, _ = round_with_error_feedback(w_x * 2.0 ** s_w, f_int, weight_bits,
                                             ridge=None if l == 0 else ridge * len(x_cal))
        if last:
            # bias correction: the mean ANN-minus-SNN output on the calibration points
            snn.out_weight, snn.out_shift = q[0], s_w
            mean_acc = _int_matmul(inp.astype(np.int64).sum(1), q)[:, 0] / T
            beta = np.mean(target[:, 0] * 2.0 ** s_w - mean_acc)
            snn.out_bias = int(quantize_to_shift(beta, 0, out_width, "output bias"))
            break
        r = threshold_bits - s_w
        snn.weights.append(q)
        snn.acc_shifts.append(r)
        # bias correction: each unit's bias is the mean ANN-minus-SNN current (θ units · θ)
        # given the quantized weights; the sub-neuron offsets are added on top.
        c = _unit_currents_int(snn, l, inp)                        # [n_cal, T or 1, N]
        beta = np.mean(target * theta - c.mean(1), axis=0)
        snn.biases.append(quantize_to_shift(beta[:, None] + offsets * theta, 0,
                                            snn.lif.in_width, f"layer {l} bias"))
        snn.check_widths()
        spikes = _int_layer(snn, l, inp).spikes
        inp, feats = spikes, spikes.mean(1)
    if integer:
        snn.check_widths()
    return snn


def _quantize_plain(fsnn: FloatSNN, weight_bits, threshold_bits, input_bits, width,
                    current_width, out_width) -> IntSNN:
    """Integer version of a float SNN by plain power-of-two rounding (no calibration)."""
    theta = 1 << threshold_bits
    lif = LIFParams(theta=theta, leak_shift=None, width=width, reset="subtract",
                    signed_spikes=True, current_width=current_width)
    ws, rs, bs = [], [], []
    for l, (w, b) in enumerate(zip(fsnn.weights, fsnn.biases)):
        w_x = w / 2.0 ** input_bits if l == 0 else w
        q, s_w = quantize_pow2(w_x, weight_bits)
        ws.append(q)
        rs.append(threshold_bits - s_w)
        bs.append(quantize_to_shift(b, threshold_bits, lif.in_width, f"layer {l} bias"))
    q, s_out = quantize_pow2(fsnn.out_weight, weight_bits)
    snn = IntSNN(ws, rs, bs, lif, int(round(fsnn.v0 * theta)), q,
                 int(quantize_to_shift(fsnn.out_bias, s_out, out_width, "output bias")),
                 s_out, input_bits, fsnn.T, fsnn.K, weight_bits, out_width, False,
                 fsnn.problem)
    snn.check_widths()
    return snn


# --------------------------------------------------------------------------- report

def pinn_report(problem: str, Ts=DEFAULT_TS, K: int = 8, n_eval: int = N_EVAL,
                stats: bool = False, predictions: bool = False) -> dict:
    """Relative L2 errors vs the analytic solution on `eval_grid(n_eval)`:
    float_rel_l2 (float ANN); per T: snn_rel_l2 (integer golden SNN, calibrated),
    snn_float_rel_l2 (float SNN, calibrated), snn_rel_l2_uncalibrated (integer, naive),
    snn_float_rel_l2_uncalibrated, and snn_rel_l2_vs_ann (integer SNN vs the float ANN).
    With stats, also per-T integer spike / saturation / synaptic-op counts per inference.
    With predictions, "predictions" holds NumPy arrays x, exact, ann and int[T] (for plots;
    not JSON)."""
    params = load_weights(problem)
    x = eval_grid(n_eval)
    exact = PROBLEMS[params["problem"]].u(x)
    u_ann = float_forward(params, x)
    rep = {"problem": params["problem"], "solution": PROBLEMS[params["problem"]].doc,
           "K": K, "n_eval": n_eval, "n_cal": N_CAL,
           "float_rel_l2": rel_l2(u_ann, exact), "snn_rel_l2": {}, "snn_float_rel_l2": {},
           "snn_rel_l2_uncalibrated": {}, "snn_float_rel_l2_uncalibrated": {},
           "snn_rel_l2_vs_ann": {}}
    if stats:
        rep["int_stats"] = {}
    if predictions:
        rep["predictions"] = {"x": x, "exact": exact, "ann": u_ann, "int": {}}
    for T in Ts:
        isnn = convert(params, T, integer=True, K=K)
        st = {} if stats else None
        u_int = snn_predict_int(isnn, x, st)
        rep["snn_rel_l2"][T] = rel_l2(u_int, exact)
        rep["snn_rel_l2_vs_ann"][T] = rel_l2(u_int, u_ann)
        if predictions:
            rep["predictions"]["int"][T] = u_int
        rep["snn_float_rel_l2"][T] = rel_l2(snn_predict_float(convert(params, T, K=K), x), exact)
        rep["snn_rel_l2_uncalibrated"][T] = rel_l2(
            snn_predict_int(convert(params, T, False, integer=True), x), exact)
        rep["snn_float_rel_l2_uncalibrated"][T] = rel_l2(
            snn_predict_float(convert(params, T, False), x), exact)
        if stats:
            rep["int_stats"][T] = {k: [v / n_eval for v in vals] for k, vals in st.items()}
    return rep
