"""Golden spiking self-attention (design.md §5): SSA, SDSA, STAtten, integer and float.

Inputs are binary spike tensors Q, K, V of shape [..., T, N, D] (leading axes: batch,
heads). Integer versions are exact int64 products (AND + popcount in hardware, no
multipliers) followed by the integer LIF of design.md §3, whose state runs over T for each
of the [N, D] outputs (SDSA: for each of the [D] mask channels). The float model's attention
scale is folded into the LIF threshold (`fold_scale_into_threshold`): `scale*Y >= θ` is
`Y >= θ/scale`; rounding θ/scale to an integer is where the integer model may differ from
the float one.

- `ssa`: Y = (Q Kᵀ) V, or exactly the same Q (Kᵀ V) (`order`), then LIF.
- `statten`: Y_t = Q_t Σ_{t' in block(t)} K_t'ᵀ V_t' over blocks of `block` timesteps; block=1
  is SSA; T must be a multiple of block.
- `sdsa`: "reference" (the spike-driven transformer's code): Y = Q AND LIF(colsum_N(K AND V));
  "paper": Y = LIF(colsum_N(Q AND K)) AND V. The output is binary: the mask LIF is the only
  neuron, there is no output LIF.
The `*_float` versions compute the same in float64 with the scale as a multiplier and
`lif_float`; they are what the trained float model runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lif import LIFParams, LIFResult, as_int_array, lif_array, lif_float

ORDERS = ("qk_v", "q_kv")
SDSA_VARIANTS = ("reference", "paper")


def _spike_tensors(q, k, v):
    arrays = []
    for name, x in (("q", q), ("k", k), ("v", v)):
        a = as_int_array(name, x, tuple(range(3, 8)))
        if a.size and not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name} must be binary spikes (0/1)")
        arrays.append(a)
    q, k, v = arrays
    if q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"q, k, v must have one shape [..., T, N, D]; got {q.shape}, "
                         f"{k.shape}, {v.shape}")
    return q, k, v


def _float_spikes(q, k, v):
    q, k, v = _spike_tensors(q, k, v)
    return q.astype(np.float64), k.astype(np.float64), v.astype(np.float64)


def attention_cost(n: int, d: int, order: str) -> int:
    """Multiply-accumulates (AND + add in hardware) per timestep and head: (QKᵀ)V costs
    N·N·D + N·N·D, Q(KᵀV) costs N·D·D + N·D·D."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    return 2 * n * n * d if order == "qk_v" else 2 * n * d * d


def cheaper_order(n: int, d: int) -> str:
    return "qk_v" if attention_cost(n, d, "qk_v") <= attention_cost(n, d, "q_kv") else "q_kv"


def fold_scale_into_threshold(theta_float: float, scale: float) -> int:
    """Integer threshold for Y such that scale*Y >= θ  <=>  Y >= θ/scale (rounded)."""
    if not scale > 0 or not theta_float > 0:
        raise ValueError(f"theta and scale must be > 0, got theta={theta_float}, scale={scale}")
    theta = int(round(theta_float / scale))
    if theta < 1:
        raise ValueError(f"theta/scale = {theta_float / scale} rounds to {theta}: "
                         "the threshold must be a positive integer")
    return theta


def _lif_over_t(y: np.ndarray, run):
    """Run a LIF (`run` takes [B, T, M]) over axis -3 (T) of y [..., T, N, D] or over axis
    -2 of y [..., T, D]; returns results reshaped back."""
    lead, t_and_rest = y.shape[:-3], y.shape[-3:]
    flat = y.reshape((-1, t_and_rest[0], t_and_rest[1] * t_and_rest[2]))
    return run(flat), lead + t_and_rest


def _integer_lif(y, lif: LIFParams):
    res, shape = _lif_over_t(y, lambda flat: lif_array(flat, lif))
    spikes = res.spikes.reshape(shape)
    return spikes, LIFResult(spikes=spikes, v=res.v.reshape(shape[:-3] + shape[-2:]),
                             sat_count=res.sat_count)


@dataclass
class AttentionResult:
    spikes: np.ndarray        # [..., T, N, D] output spikes
    y: np.ndarray             # [..., T, N, D] pre-LIF integer attention (SDSA: the mask input)
    lif: LIFResult | None     # the LIF's state (SDSA: the mask LIF)


def _check_block(T, block):
    if not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    if T % block:
        raise ValueError(f"T={T} is not a multiple of block={block}")


def _block_kv(k, v, block):
    """Σ_{t' in block} K_t'ᵀ V_t' for every timestep's block: [..., T, D, D]."""
    T = k.shape[-3]
    kv = np.swapaxes(k, -1, -2) @ v                                  # [..., T, D, D]
    kv = kv.reshape(kv.shape[:-3] + (T // block, block) + kv.shape[-2:]).sum(axis=-3)
    return np.repeat(kv, block, axis=-3)


def _block_attention(q, k, v, block, order):
    """Y_t = Q_t Σ_{t' in block(t)} K_t'ᵀ V_t', in either order, exact integers."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    T = q.shape[-3]
    _check_block(T, block)
    if order == "q_kv":
        return q @ _block_kv(k, v, block)
    y = np.zeros_like(q)
    for start in range(0, T, block):
        kb, vb = k[..., start:start + block, :, :], v[..., start:start + block, :, :]
        for t in range(start, start + block):
            scores = q[..., t:t + 1, :, :] @ np.swapaxes(kb, -1, -2)  # [..., B, N, N]
            y[..., t, :, :] = (scores @ vb).sum(axis=-3)
    return y


def statten(q, k, v, lif: LIFParams, block: int, order: str = "q_kv") -> AttentionResult:
    q, k, v = _spike_tensors(q, k, v)
    y = _block_attention(q, k, v, block, order)
    spikes, state = _integer_lif(y, lif)
    return AttentionResult(spikes=spikes, y=y, lif=state)


def ssa(q, k, v, lif: LIFParams, order: str = "qk_v") -> AttentionResult:
    return statten(q, k, v, lif, block=1, order=order)


def _sdsa_mask_input(q, k, v, variant):
    if variant not in SDSA_VARIANTS:
        raise ValueError(f"variant must be one of {SDSA_VARIANTS}, got {variant!r}")
    a, b = (k, v) if variant == "reference" else (q, k)
    return (a * b).sum(axis=-2)  # [..., T, D]; a * b is AND on spikes


def sdsa(q, k, v, lif: LIFParams, variant: str = "reference") -> AttentionResult:
    q, k, v = _spike_tensors(q, k, v)
    c = _sdsa_mask_input(q, k, v, variant)                              # [..., T, D]
    res = lif_array(c.reshape((-1,) + c.shape[-2:]), lif)
    mask = res.spikes.reshape(c.shape).astype(np.int64)
    gated = q if variant == "reference" else v
    spikes = (gated & mask[..., None, :]).astype(np.int8)
    return AttentionResult(spikes=spikes, y=c, lif=LIFResult(
        spikes=mask.astype(np.int8), v=res.v.reshape(c.shape[:-2] + c.shape[-1:]),
        sat_count=res.sat_count))


def _float_lif(y, beta, theta, reset, compare):
    (s, _), shape = _lif_over_t(y, lambda flat: lif_float(flat, beta=beta, theta=theta,
                                                          reset=reset, compare=compare))
    return s.reshape(shape)


def statten_float(q, k, v, *, scale, beta, theta, block, reset="subtract", compare=">=",
                  order="q_kv"):
    q, k, v = _float_spikes(q, k, v)
    return _float_lif(scale * _block_attention(q, k, v, block, order), beta, theta, reset,
                      compare)


def ssa_float(q, k, v, *, scale, beta, theta, reset="subtract", compare=">=", order="qk_v"):
    return statten_float(q, k, v, scale=scale, beta=beta, theta=theta, block=1, reset=reset,
                         compare=compare, order=order)


def sdsa_float(q, k, v, *, scale, beta, theta, reset="subtract", compare=">=",
               variant="reference"):
    q, k, v = _float_spikes(q, k, v)
    c = scale * _sdsa_mask_input(q, k, v, variant)
    mask, _ = lif_float(c.reshape((-1,) + c.shape[-2:]), beta=beta, theta=theta, reset=reset,
                        compare=compare)
    mask = mask.reshape(c.shape)
    return (q if variant == "reference" else v) * mask[..., None, :]
