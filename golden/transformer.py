"""Golden spiking transformer classifier (design.md §6), float and integer.

One Spikformer-style block on row tokens (an 8×8 digit is 8 tokens of 8 pixels):

    s0 = LIF(emb(x_t) + pos)                 token embedding, per-token position bias
    q, k, v = LIF(W_q s0), LIF(W_k s0), LIF(W_v s0)     (H heads of D/H channels)
    a  = attention(q, k, v)                  SSA | SDSA | STAtten(B)   (golden/attention.py)
    x1 = s0 + LIF(W_proj a)                  residual "spike": spikes are added, so the
    x2 = x1 + LIF(W_fc2 LIF(W_fc1 x1))       residual stream holds 0..3 (Spikformer)
    logits = W_head Σ_{t,n} x2 + T·N·b_head  non-spiking readout summed over T and tokens

Every LIF is design.md §3 with β = 1 − 2^-k (float) / `v − (v >> k)` (integer). The
residual choice is named in the model file (`residual="spike"`); the membrane shortcut of
the spike-driven transformer is not implemented. Inputs are integer pixels 0..2^input_bits
(digits: 0..16) coded per timestep (`encode_input`):
- "direct": the pixel value every timestep; the embedding takes it as an analog current
  (float x = pixel / 2^input_bits; integer: the layer's membrane scale gains input_bits),
- "rate": a spike with probability pixel / 2^input_bits (seeded, the same spikes for the
  float and integer models),
- "temporal": time to first spike, one spike at t = floor((1 − p)·T) (p = pixel / max),
  none for a zero pixel.

`FloatTransformer` runs the trained float weights (BatchNorm folded); `quantize` makes the
`IntTransformer` (golden/quant.py: per-layer power-of-two scales) and `IntTransformer.run`
is the bit-exact integer specification. Both vectorise over the batch.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import attention as attn
from .lif import LIFParams, as_int_array, lif_array, lif_float
from .quant import (IntLayer, ModelFileError, current_bound, load_model, quantize_layer,
                    save_model)

CODINGS = ("direct", "rate", "temporal")
RESIDUALS = ("spike",)
LINEARS = ("emb", "q", "k", "v", "proj", "fc1", "fc2")   # spiking linears, in order
LAYERS = LINEARS + ("head",)
FLOAT_FORMAT = "spikeforge-float-transformer"
FLOAT_VERSION = 1
DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class TransformerConfig:
    attention: str = "ssa"            # ssa | sdsa | statten
    block: int = 1                    # STAtten block B (ssa: 1)
    sdsa_variant: str = "reference"
    tokens: int = 8
    in_features: int = 8
    dim: int = 64
    heads: int = 4
    mlp_hidden: int = 64
    classes: int = 10
    timesteps: int = 4
    coding: str = "direct"
    input_bits: int = 4               # pixels 0..2^input_bits
    residual: str = "spike"
    leak_shift: int | None = 1        # β = 1 − 2^-k; None = IF
    theta: float = 1.0
    reset: str = "zero"
    attn_scale: float = 0.125         # power of two: folded into the attention threshold
    attn_theta: float = 0.5

    def __post_init__(self):
        if self.attention not in attn.MODES:
            raise ValueError(f"attention must be one of {attn.MODES}, got {self.attention!r}")
        if self.coding not in CODINGS:
            raise ValueError(f"coding must be one of {CODINGS}, got {self.coding!r}")
        if self.residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got {self.residual!r}")
        if self.sdsa_variant not in attn.SDSA_VARIANTS:
            raise ValueError(f"sdsa_variant must be one of {attn.SDSA_VARIANTS}")
        for name in ("tokens", "in_features", "dim", "heads", "mlp_hidden", "classes",
                     "timesteps", "block", "input_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"heads={self.heads} must divide dim={self.dim}")
        if self.attention != "statten" and self.block != 1:
            raise ValueError(f"block={self.block} is for attention='statten' only")
        if self.timesteps % self.block:
            raise ValueError(f"timesteps={self.timesteps} is not a multiple of "
                             f"block={self.block}")
        scale_log = math.log2(self.attn_scale) if self.attn_scale > 0 else 0.5
        if scale_log != int(scale_log):
            raise ValueError(f"attn_scale must be a power of two, got {self.attn_scale}")

    @property
    def beta(self) -> float:
        return 1.0 if self.leak_shift is None else 1.0 - 2.0 ** -self.leak_shift

    @property
    def tau(self):
        return None if self.leak_shift is None else 2 ** self.leak_shift

    @property
    def input_max(self) -> int:
        return 1 << self.input_bits

    @property
    def input_shift(self) -> int:
        """The embedding's inputs are in units of 2^-input_shift (direct: pixel levels)."""
        return self.input_bits if self.coding == "direct" else 0

    def shapes(self) -> dict:
        D, F, H, C = self.dim, self.in_features, self.mlp_hidden, self.classes
        return {"emb": (D, F), "q": (D, D), "k": (D, D), "v": (D, D), "proj": (D, D),
                "fc1": (H, D), "fc2": (D, H), "head": (C, D)}

    def bias_shape(self, layer: str) -> tuple:
        rows = self.shapes()[layer][0]
        return (self.tokens, rows) if layer == "emb" else (rows,)


# ---------------------------------------------------------------------------- input coding

def images_to_tokens(images, cfg: TransformerConfig) -> np.ndarray:
    """[B, tokens·in_features] (or [B, tokens, in_features]) integer pixels in
    0..2^input_bits -> [B, tokens, in_features] int64 (row tokens)."""
    x = np.asarray(images)
    if x.dtype == object or not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"images must be an integer array of pixels (got dtype {x.dtype})")
    flat = cfg.tokens * cfg.in_features
    if x.ndim == 2 and x.shape[1] == flat:
        x = x.reshape(len(x), cfg.tokens, cfg.in_features)
    if x.ndim != 3 or x.shape[1:] != (cfg.tokens, cfg.in_features):
        raise ValueError(f"images must have shape [B, {flat}] or [B, {cfg.tokens}, "
                         f"{cfg.in_features}], got {np.asarray(images).shape}")
    if x.size and (x.min() < 0 or x.max() > cfg.input_max):
        raise ValueError(f"pixels must be in [0, {cfg.input_max}] (input_bits="
                         f"{cfg.input_bits}), got range [{x.min()}, {x.max()}]")
    return x.astype(np.int64)


def encode_input(images, cfg: TransformerConfig, seed: int = 0) -> np.ndarray:
    """[B, T, tokens, in_features] int64: pixel values ("direct") or spikes."""
    x = images_to_tokens(images, cfg)
    T = cfg.timesteps
    if cfg.coding == "direct":
        return np.repeat(x[:, None], T, axis=1)
    p = x / cfg.input_max
    if cfg.coding == "rate":
        u = np.random.default_rng(seed).random((len(x), T) + x.shape[1:])
        return (u < p[:, None]).astype(np.int64)
    first = np.minimum(np.floor((1.0 - p) * T), T - 1).astype(np.int64)
    t = np.arange(T).reshape(1, T, 1, 1)
    return ((t == first[:, None]) & (x[:, None] > 0)).astype(np.int64)


# ---------------------------------------------------------------------------- shared pieces

def _per_element(currents):
    """[B, T, N, D] -> [B, T, N·D]: every (token, channel) is one LIF neuron over T."""
    B, T, N, D = currents.shape
    return currents.reshape(B, T, N * D)


def _split_heads(x, heads):
    B, T, N, D = x.shape
    return x.reshape(B, T, N, heads, D // heads).transpose(0, 3, 1, 2, 4)   # [B, H, T, N, d]


def _merge_heads(x):
    B, H, T, N, d = x.shape
    return x.transpose(0, 2, 3, 1, 4).reshape(B, T, N, H * d)


@dataclass
class Trace:
    """What one batch did: every layer's spikes/values [B, T, N, ·] and the logits."""
    values: dict = field(default_factory=dict)
    logits: np.ndarray | None = None
    sat_count: int = 0

    def predictions(self) -> np.ndarray:
        return np.argmax(self.logits, axis=-1)


# ---------------------------------------------------------------------------- float model

class FloatTransformer:
    """The trained float model (BatchNorm folded into weights and biases)."""

    def __init__(self, cfg: TransformerConfig, params: dict):
        self.cfg = cfg
        self.params = {}
        shapes = cfg.shapes()
        for layer in LAYERS:
            for part, shape in ((".w", shapes[layer]), (".b", cfg.bias_shape(layer))):
                key = layer + part
                if key not in params:
                    raise ValueError(f"float parameters lack {key!r}")
                value = np.asarray(params[key], dtype=np.float64)
                if value.shape != shape:
                    raise ValueError(f"{key} must have shape {shape}, got {value.shape}")
                if not np.isfinite(value).all():
                    raise ValueError(f"{key} contains NaN or infinity")
                self.params[key] = value

    def _linear(self, layer, x):
        c = self.cfg
        cur = x @ self.params[layer + ".w"].T + self.params[layer + ".b"]
        spikes, _ = lif_float(_per_element(cur), beta=c.beta, theta=c.theta, reset=c.reset)
        return spikes.reshape(cur.shape)

    def _attention(self, q, k, v):
        c = self.cfg
        q, k, v = (_split_heads(t, c.heads) for t in (q, k, v))
        common = dict(scale=c.attn_scale, beta=c.beta, theta=c.attn_theta, reset=c.reset)
        if c.attention == "sdsa":
            y = attn.sdsa_float(q, k, v, variant=c.sdsa_variant, **common)
        else:
            y = attn.statten_float(q, k, v, block=c.block, **common)
        return _merge_heads(y)

    def run(self, encoded) -> Trace:
        c = self.cfg
        x = as_int_array("encoded input", encoded, (4,)) / 2.0 ** c.input_shift
        tr = Trace()
        v = tr.values
        v["input"] = encoded
        v["emb"] = self._linear("emb", x)
        for name in ("q", "k", "v"):
            v[name] = self._linear(name, v["emb"])
        v["attn"] = self._attention(v["q"], v["k"], v["v"])
        v["proj"] = self._linear("proj", v["attn"])
        v["x1"] = v["emb"] + v["proj"]
        v["fc1"] = self._linear("fc1", v["x1"])
        v["fc2"] = self._linear("fc2", v["fc1"])
        v["x2"] = v["x1"] + v["fc2"]
        pooled = v["x2"].mean(axis=(1, 2))
        tr.logits = pooled @ self.params["head.w"].T + self.params["head.b"]
        return tr


def save_float(path, model: FloatTransformer, **meta) -> None:
    arrays = {"format": np.array(FLOAT_FORMAT), "version": np.array(FLOAT_VERSION),
              "config": np.array(json.dumps(asdict(model.cfg))),
              "meta": np.array(json.dumps(meta))}
    arrays.update({k: v.astype(np.float32) for k, v in model.params.items()})
    np.savez_compressed(path, **arrays)


def load_float(path) -> tuple[FloatTransformer, dict]:
    """Load and validate a float transformer file (ModelFileError says what is wrong)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ModelFileError(f"{path}: not a readable .npz file ({e})") from None
    if files.get("format", np.array("")).item() != FLOAT_FORMAT:
        raise ModelFileError(f"{path}: not a spikeforge float transformer (format)")
    version = int(files["version"]) if "version" in files else None
    if version != FLOAT_VERSION:
        raise ModelFileError(f"{path}: file version {version}, this spikeforge reads "
                             f"version {FLOAT_VERSION}")
    try:
        cfg = TransformerConfig(**json.loads(files["config"].item()))
        meta = json.loads(files["meta"].item()) if "meta" in files else {}
        return FloatTransformer(cfg, files), meta
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: invalid float transformer: {e}") from None


# ---------------------------------------------------------------------------- integer model

class IntTransformer:
    """The integer golden model: what the accelerator computes, bit for bit."""

    def __init__(self, cfg: TransformerConfig, layers: dict, attn_lif: LIFParams):
        self.cfg, self.layers, self.attn_lif = cfg, layers, attn_lif
        shapes = cfg.shapes()
        for name in LAYERS:
            if name not in layers:
                raise ValueError(f"integer model lacks layer {name!r}")
            layer = layers[name]
            if layer.weights.shape != shapes[name]:
                raise ValueError(f"{name}.weights must have shape {shapes[name]}, "
                                 f"got {layer.weights.shape}")
            if layer.bias is not None and layer.bias.shape != cfg.bias_shape(name):
                raise ValueError(f"{name}.bias must have shape {cfg.bias_shape(name)}, "
                                 f"got {layer.bias.shape}")
            if (layer.lif is None) != (name == "head"):
                raise ValueError(f"layer {name!r}: only the head is a non-spiking readout")
        attn._check_lif(attn_lif)

    def _linear(self, name, x, tr: Trace):
        layer = self.layers[name]
        cur = x @ layer.weights.T
        if layer.bias is not None:
            cur = cur + layer.bias
        res = lif_array(_per_element(cur), layer.lif)
        tr.sat_count += res.sat_count
        return res.spikes.reshape(cur.shape).astype(np.int64)

    def _attention(self, q, k, v, tr: Trace):
        c = self.cfg
        q, k, v = (_split_heads(t, c.heads) for t in (q, k, v))
        if c.attention == "sdsa":
            res = attn.sdsa(q, k, v, self.attn_lif, variant=c.sdsa_variant)
        else:
            res = attn.statten(q, k, v, self.attn_lif, block=c.block)
        tr.sat_count += res.lif.sat_count
        return _merge_heads(res.spikes.astype(np.int64))

    def run(self, encoded) -> Trace:
        c = self.cfg
        x = as_int_array("encoded input", encoded, (4,))
        expect = (c.timesteps, c.tokens, c.in_features)
        if x.shape[1:] != expect:
            raise ValueError(f"encoded input must be [B, {', '.join(map(str, expect))}], "
                             f"got {x.shape}")
        hi = c.input_max if c.coding == "direct" else 1
        if x.size and (x.min() < 0 or x.max() > hi):
            raise ValueError(f"encoded input must be in [0, {hi}] for coding {c.coding!r}")
        tr = Trace()
        v = tr.values
        v["input"] = x
        v["emb"] = self._linear("emb", x, tr)
        for name in ("q", "k", "v"):
            v[name] = self._linear(name, v["emb"], tr)
        v["attn"] = self._attention(v["q"], v["k"], v["v"], tr)
        v["proj"] = self._linear("proj", v["attn"], tr)
        v["x1"] = v["emb"] + v["proj"]
        v["fc1"] = self._linear("fc1", v["x1"], tr)
        v["fc2"] = self._linear("fc2", v["fc1"], tr)
        v["x2"] = v["x1"] + v["fc2"]
        head = self.layers["head"]
        summed = v["x2"].sum(axis=(1, 2))                      # [B, D], 0..3·T·N
        tr.logits = summed @ head.weights.T + c.timesteps * c.tokens * head.bias
        return tr

    def save(self, path, **meta) -> None:
        save_model(path, [self.layers[n] for n in LAYERS], config=asdict(self.cfg),
                   attention_lif=asdict(self.attn_lif), **meta)


def load_int(path) -> tuple[IntTransformer, dict]:
    layers, meta = load_model(path)
    try:
        cfg = TransformerConfig(**meta.pop("config"))
        attn_lif = LIFParams(**meta.pop("attention_lif"))
        return IntTransformer(cfg, {layer.name: layer for layer in layers}, attn_lif), meta
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: not a valid integer transformer: {e}") from None


# Largest value each layer's input can take (residual stream x1 holds 0..2).
def _input_max(cfg: TransformerConfig, name: str) -> int:
    if name == "emb":
        return cfg.input_max if cfg.coding == "direct" else 1
    return {"fc1": 2, "head": 3 * cfg.timesteps * cfg.tokens}.get(name, 1)


def quantize(model: FloatTransformer, weight_bits: int = 8, width: int = 16,
             bias_bits: int | None = None) -> IntTransformer:
    """Float -> integer transformer: per-layer power-of-two scales shared by weights and
    membrane (golden/quant.py), thresholds and position bias at that scale, attention scale
    folded into its threshold. Narrow membranes (`width` down to 8) lower a layer's scale
    until its threshold and biases fit (`fit_width`)."""
    c = model.cfg
    layers = {}
    for name in LAYERS:
        spiking = name != "head"
        layers[name] = quantize_layer(
            name, model.params[name + ".w"], model.params[name + ".b"],
            theta=c.theta if spiking else None, tau=c.tau, reset=c.reset,
            weight_bits=weight_bits, width=width if spiking else 32,
            bias_bits=bias_bits, kind="linear" if spiking else "readout",
            input_shift=c.input_shift if name == "emb" else 0,
            input_max=_input_max(c, name), fit_width=spiking)
    theta = attn.fold_scale_into_threshold(c.attn_theta, c.attn_scale)
    mode, block = c.attention, c.block
    y_max = attn.attention_y_max(c.tokens, c.dim // c.heads, mode, block)
    attn_lif = LIFParams(theta=theta, leak_shift=c.leak_shift, width=width, reset=c.reset,
                         current_width=max(width, y_max.bit_length() + 1))
    return IntTransformer(c, layers, attn_lif)


# ---------------------------------------------------------------------------- statistics

def layer_stats(model: FloatTransformer | IntTransformer, tr: Trace) -> dict:
    """Per layer: firing rate (fraction of (t, token, channel) that spike / are non-zero),
    and synaptic operations per inference: accumulates of the layer's input events into
    its fan-out (a residual value of 2 counts as two events; the embedding under direct
    coding counts one multiply-accumulate per non-zero pixel and output), attention
    AND-accumulates by `attention_cost` of the order the hardware picks."""
    c = model.cfg
    v = tr.values
    B = len(tr.logits)
    fanout = {name: shape[0] for name, shape in c.shapes().items()}
    inputs = {"q": "emb", "k": "emb", "v": "emb", "proj": "attn", "fc1": "x1", "fc2": "fc1",
              "head": "x2"}
    stats = {}
    for name in ("emb", "q", "k", "v", "attn", "proj", "fc1", "fc2"):
        stats[name] = {"rate": float(np.mean(v[name] != 0))}
    synops = {"emb": float(np.count_nonzero(v["input"]) * fanout["emb"] / B)}
    for name, src in inputs.items():
        synops[name] = float(np.abs(v[src]).sum() * fanout[name] / B)
    d = c.dim // c.heads
    if c.attention == "sdsa":
        attn_ops = 2 * c.tokens * d           # one AND-accumulate column sum + one AND gate
    else:
        attn_ops = attn.attention_cost(c.tokens, d, attn.cheaper_order(c.tokens, d, c.block),
                                       c.block)
    synops["attention"] = float(attn_ops * c.heads * c.timesteps)
    for name in synops:
        stats.setdefault(name, {})["synops"] = synops[name]
    return stats


# ---------------------------------------------------------------------------- shipped models

def model_paths(attention: str) -> tuple[Path, Path]:
    """(float, integer) shipped model files for an attention type."""
    if attention not in attn.MODES:
        raise ValueError(f"attention must be one of {attn.MODES}, got {attention!r}")
    return DATA / f"digits_{attention}_float.npz", DATA / f"digits_{attention}_int.npz"


def digits_test_set() -> tuple[np.ndarray, np.ndarray]:
    """The held-out fifth of scikit-learn's digits (fixed split, shipped by `make train`)."""
    with np.load(DATA / "digits_test.npz", allow_pickle=False) as f:
        return f["images"].astype(np.int64), f["labels"].astype(np.int64)


def accuracy(model, images, labels, seed: int = 0, batch: int = 512) -> float:
    hits = 0
    for lo in range(0, len(images), batch):
        tr = model.run(encode_input(images[lo:lo + batch], model.cfg, seed=seed + lo))
        hits += int((tr.predictions() == labels[lo:lo + batch]).sum())
    return hits / len(images)


def with_coding(model, coding: str):
    """The same weights under another input coding (a float model; re-quantize for int)."""
    return FloatTransformer(replace(model.cfg, coding=coding), model.params)


__all__ = ["TransformerConfig", "FloatTransformer", "IntTransformer", "Trace", "encode_input",
           "images_to_tokens", "quantize", "save_float", "load_float", "load_int",
           "layer_stats", "model_paths", "digits_test_set", "accuracy", "with_coding",
           "current_bound", "IntLayer"]
