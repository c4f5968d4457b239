"""Golden spiking self-attention (design.md §5): SSA, STAtten, SDSA, integer and float.

Q, K, V are binary spike tensors [..., T, N, D] (leading axes: batch, heads; T timesteps,
N tokens, D channels). The integer functions are the bit-exact spec of the RTL
`AttentionCore`: exact int64 products (AND + popcount in hardware, no multipliers), then
the shared integer LIF of design.md §3 (`lif_array`), whose state starts at 0 and is carried
over T for every output element ([N, D]; SDSA: every mask channel [D]). They return an
`AttentionResult`: spikes, the pre-LIF integer input `y`, the `LIFResult` (final membrane,
saturation count, and with `record_membranes=True` the membrane after every step, for
bit-exact benches) and the evaluation order used.

- `attention_y`: Y_t = Q_t (Σ_{t' in blk(t)} K_t'ᵀ V_t'), blocks of `block` timesteps,
  in either order "qk_v" ((Q Kᵀ) V) or "q_kv" (Q (Kᵀ V)); equal exactly in integers
  because there is no softmax. `ssa` = LIF(attention_y, block=1); `statten` = LIF(attention_y,
  block=B); T % B != 0 is a ValueError. `order=None` takes `cheaper_order(N, D, block)`,
  the choice the hardware makes; the result never depends on the order.
- `sdsa_colsum` / `sdsa`: "reference" (the spike-driven transformer's code):
  Y = Q AND LIF(colsum_N(K AND V)); "paper": Y = LIF(colsum_N(Q AND K)) AND V. The mask
  LIF (threshold θ_attn) runs over T on the [..., T, D] column sums and is the only neuron:
  the output is the gated binary tensor, there is no output LIF.
- `*_float`: the same in float64 with the attention scale as a multiplier (`scale * Y`) and
  `lif_float`; this is what the trained float model runs. They also accept float or bool
  0/1 arrays (what `lif_float` emits); the integer functions accept integer dtypes only.

Conventions and decisions:
- Threshold folding: the float model fires on `scale*Y >= θ`; the integer model on
  `Y >= θ_int` with `θ_int = fold_scale_into_threshold(θ, scale) = round(θ / scale)`
  (Python `round`, half to even, as in golden/quant.py). The two paths are then equal
  exactly when θ/scale is an integer, the LIF has no leak (integer leak floors `v >> k`,
  float multiplies by β), nothing saturates, and `scale` is a power of two (so scale*Y and
  the float membrane are exact in float64). Otherwise the integer model is the
  approximation (tests show each case).
- Float scale placement: golden float computes `scale * Y` once (one rounding); code that
  scales Q Kᵀ before multiplying by V gives the same bits for power-of-two scales only.
- The attention LIF must be unsigned (`signed_spikes=False`): attention spikes and the SDSA
  mask are binary. Y >= 0 always; its largest value is `attention_y_max`, which the RTL
  current width must hold (lif_array refuses currents beyond `current_width`).
- `attention_cost` counts AND-accumulates per timestep and head of both products, so
  (Q Kᵀ) V costs 2·B·N²·D (each query timestep sees B key timesteps) and Q (Kᵀ V) costs
  2·N·D² (the block sum of Kᵀ V is formed once per block; its additions are not counted).
  Ties go to "qk_v".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .lif import LIFParams, LIFResult, lif_array, lif_float

ORDERS = ("qk_v", "q_kv")
SDSA_VARIANTS = ("reference", "paper")
MODES = ("ssa", "statten", "sdsa")


# ---------------------------------------------------------------------------- validation

def _spikes(name: str, x, integer: bool) -> np.ndarray:
    arr = np.asarray(x)
    if integer:
        ok = arr.dtype != object and np.issubdtype(arr.dtype, np.integer)
        kind = "an integer array"
    else:
        ok = arr.dtype == np.bool_ or (arr.dtype != object and
                                       np.issubdtype(arr.dtype, np.number) and
                                       not np.issubdtype(arr.dtype, np.complexfloating))
        kind = "a real or boolean array"
    if not ok:
        raise TypeError(f"{name} must be {kind} of spikes (got dtype {arr.dtype})"
                        + ("; the integer golden model never casts silently" if integer else ""))
    if arr.ndim < 3:
        raise ValueError(f"{name} must have shape [..., T, N, D] (at least 3 dimensions), "
                         f"got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))][0].item()
        raise ValueError(f"{name} must be binary spikes (0/1), found value {bad!r}")
    return arr.astype(np.int64 if integer else np.float64)


def _spike_tensors(q, k, v, integer: bool = True):
    q, k, v = (_spikes(n, x, integer) for n, x in (("q", q), ("k", k), ("v", v)))
    if not q.shape == k.shape == v.shape:
        raise ValueError(f"q, k, v must have one shape [..., T, N, D]; got q {q.shape}, "
                         f"k {k.shape}, v {v.shape}")
    return q, k, v


def _check_order(order):
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS} or None, got {order!r}")


def _check_block(block, T=None):
    if isinstance(block, (bool, np.bool_)) or not isinstance(block, (int, np.integer)) \
            or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    if T is not None and T % block:
        raise ValueError(f"T={T} is not a multiple of block={block}")


def _check_lif(lif):
    if not isinstance(lif, LIFParams):
        raise TypeError(f"lif must be a LIFParams, got {type(lif).__name__}")
    if lif.signed_spikes:
        raise ValueError("the attention LIF must have signed_spikes=False: attention spikes "
                         "and the SDSA mask are binary")


# ---------------------------------------------------------------------------- sizes

def attention_cost(n: int, d: int, order: str, block: int = 1) -> int:
    """AND-accumulate operations per timestep and head for one evaluation order:
    "qk_v" 2·block·n²·d, "q_kv" 2·n·d² (see the module docstring)."""
    _check_order(order)
    _check_block(block)
    for name, x in (("n", n), ("d", d)):
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
            raise ValueError(f"{name} must be a positive integer, got {x!r}")
    return int(2 * block * n * n * d if order == "qk_v" else 2 * n * d * d)


def cheaper_order(n: int, d: int, block: int = 1) -> str:
    """The order the hardware evaluates: the cheaper one by `attention_cost`, "qk_v" on a tie."""
    qk_v, q_kv = (attention_cost(n, d, o, block) for o in ORDERS)
    return "qk_v" if qk_v <= q_kv else "q_kv"


def attention_y_max(n: int, d: int, mode: str = "ssa", block: int = 1) -> int:
    """Largest pre-LIF value: ssa n·d, statten block·n·d, sdsa (column sum) n."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check_block(block)
    if mode == "sdsa":
        return int(n)
    return int((block if mode == "statten" else 1) * n * d)


def fold_scale_into_threshold(theta_float: float, scale: float) -> int:
    """θ_int = round(θ / scale): `scale*Y >= θ` becomes `Y >= θ_int` (exact iff θ/scale is
    an integer). Raises ValueError if θ or scale is not a positive finite number or θ_int
    would be 0."""
    for name, x in (("theta_float", theta_float), ("scale", scale)):
        if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) \
                or not math.isfinite(x) or not x > 0:
            raise ValueError(f"{name} must be a positive finite number, got {x!r}")
    ratio = theta_float / scale
    if not math.isfinite(ratio):
        raise ValueError(f"theta_float / scale = {theta_float} / {scale} overflows")
    theta = int(round(ratio))
    if theta < 1:
        raise ValueError(f"theta_float / scale = {theta_float} / {scale} = {ratio} rounds to "
                         f"{theta}: the integer threshold must be positive (raise theta or "
                         "scale)")
    return theta


# ---------------------------------------------------------------------------- products

def _block_attention(q, k, v, block, order):
    """Y_t = Q_t Σ_{t' in blk(t)} K_t'ᵀ V_t' on validated arrays (int64 or float64)."""
    *lead, T, N, D = q.shape
    _check_block(block, T)
    if order is None:
        order = cheaper_order(N, D, block)
    _check_order(order)
    nb = T // block
    blk = tuple(lead) + (nb, block * N, D)  # a block's timesteps side by side as tokens
    if order == "q_kv":
        kv = np.swapaxes(k.reshape(blk), -1, -2) @ v.reshape(blk)      # [..., nb, D, D]
        y = q.reshape(blk) @ kv                                         # [..., nb, bN, D]
    else:
        qb = q.reshape(blk)
        scores = qb @ np.swapaxes(k.reshape(blk), -1, -2)               # [..., nb, bN, bN]
        y = scores @ v.reshape(blk)                                     # [..., nb, bN, D]
    return y.reshape(q.shape), order


def attention_y(q, k, v, block: int = 1, order: str | None = None) -> np.ndarray:
    """Exact int64 pre-LIF attention [..., T, N, D] of binary integer Q, K, V."""
    q, k, v = _spike_tensors(q, k, v)
    return _block_attention(q, k, v, block, order)[0]


def _sdsa_colsum(q, k, v, variant):
    if variant not in SDSA_VARIANTS:
        raise ValueError(f"variant must be one of {SDSA_VARIANTS}, got {variant!r}")
    a, b = (k, v) if variant == "reference" else (q, k)
    return (a * b).sum(axis=-2)            # [..., T, D]; a * b is AND on spikes


def sdsa_colsum(q, k, v, variant: str = "reference") -> np.ndarray:
    """int64 [..., T, D]: colsum_N(K AND V) ("reference") or colsum_N(Q AND K) ("paper")."""
    q, k, v = _spike_tensors(q, k, v)
    return _sdsa_colsum(q, k, v, variant)


# ---------------------------------------------------------------------------- LIF over T

def _over_t(y, ndim_item, run):
    """Apply `run` ([B, T, M] -> [B, T, M] arrays) along T = axis -(ndim_item+1) of y."""
    lead, T, item = y.shape[:-ndim_item - 1], y.shape[-ndim_item - 1], y.shape[-ndim_item:]
    flat = y.reshape((math.prod(lead), T, math.prod(item)))
    return run(flat), lead, T, item


def _integer_lif(y, lif, ndim_item, record_membranes):
    res, lead, T, item = _over_t(y, ndim_item,
                                 lambda f: lif_array(f, lif, record_membranes=record_membranes))
    membranes = None if res.membranes is None else res.membranes.reshape(y.shape)
    state = LIFResult(spikes=res.spikes.reshape(y.shape), v=res.v.reshape(lead + item),
                      sat_count=res.sat_count, membranes=membranes)
    return state


def _float_lif(y, ndim_item, beta, theta, reset, v_reset, compare):
    (spikes, _), *_ = _over_t(y, ndim_item, lambda f: lif_float(
        f, beta=beta, theta=theta, reset=reset, v_reset=v_reset, compare=compare))
    return spikes.reshape(y.shape)


# ---------------------------------------------------------------------------- integer

@dataclass
class AttentionResult:
    spikes: np.ndarray      # [..., T, N, D] int8 output spikes
    y: np.ndarray           # int64 pre-LIF input: [..., T, N, D] (SDSA: column sums [..., T, D])
    lif: LIFResult          # the LIF's result (SDSA: the mask LIF; lif.spikes is the mask)
    order: str | None       # evaluation order used (None for SDSA)


def statten(q, k, v, lif: LIFParams, block: int, order: str | None = None,
            record_membranes: bool = False) -> AttentionResult:
    """STAtten: S = LIF_T(Y), Y_t = Q_t Σ_{t' in blk(t)} K_t'ᵀ V_t' (blocks of `block`)."""
    _check_lif(lif)
    q, k, v = _spike_tensors(q, k, v)
    y, order = _block_attention(q, k, v, block, order)
    state = _integer_lif(y, lif, 2, record_membranes)
    return AttentionResult(spikes=state.spikes, y=y, lif=state, order=order)


def ssa(q, k, v, lif: LIFParams, order: str | None = None,
        record_membranes: bool = False) -> AttentionResult:
    """SSA (Spikformer): S = LIF_T((Q Kᵀ) V) = LIF_T(Q (Kᵀ V)); the scale is in lif.theta."""
    return statten(q, k, v, lif, block=1, order=order, record_membranes=record_membranes)


def sdsa(q, k, v, lif: LIFParams, variant: str = "reference",
         record_membranes: bool = False) -> AttentionResult:
    """SDSA: mask = LIF_T(column sum); "reference": Q AND mask, "paper": mask AND V."""
    _check_lif(lif)
    q, k, v = _spike_tensors(q, k, v)
    c = _sdsa_colsum(q, k, v, variant)                                  # [..., T, D]
    state = _integer_lif(c, lif, 1, record_membranes)
    gated = q if variant == "reference" else v
    spikes = (gated & state.spikes[..., None, :].astype(np.int64)).astype(np.int8)
    return AttentionResult(spikes=spikes, y=c, lif=state, order=None)


# ---------------------------------------------------------------------------- float

def statten_float(q, k, v, *, scale: float, beta: float, theta: float, block: int,
                  reset: str = "subtract", v_reset: float = 0.0, compare: str = ">=",
                  order: str | None = None) -> np.ndarray:
    """Float64 STAtten: spikes of lif_float(scale * Y) over T, [..., T, N, D]."""
    q, k, v = _spike_tensors(q, k, v, integer=False)
    y, _ = _block_attention(q, k, v, block, order)
    return _float_lif(scale * y, 2, beta, theta, reset, v_reset, compare)


def ssa_float(q, k, v, *, scale: float, beta: float, theta: float, reset: str = "subtract",
              v_reset: float = 0.0, compare: str = ">=", order: str | None = None) -> np.ndarray:
    """Float64 SSA: spikes of lif_float(scale * (Q Kᵀ) V) over T, [..., T, N, D]."""
    return statten_float(q, k, v, scale=scale, beta=beta, theta=theta, block=1, reset=reset,
                         v_reset=v_reset, compare=compare, order=order)


def sdsa_float(q, k, v, *, scale: float, beta: float, theta: float, reset: str = "subtract",
               v_reset: float = 0.0, compare: str = ">=",
               variant: str = "reference") -> np.ndarray:
    """Float64 SDSA: mask = lif_float(scale * column sum) over T, gating Q or V."""
    q, k, v = _spike_tensors(q, k, v, integer=False)
    mask = _float_lif(scale * _sdsa_colsum(q, k, v, variant), 1, beta, theta, reset, v_reset,
                      compare)
    return (q if variant == "reference" else v) * mask[..., None, :]
