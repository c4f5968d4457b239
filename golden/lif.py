"""Golden integer LIF (design.md §3) and its float64 reference.

`lif_array` is the bit-exact specification of the RTL `LIFArray`: same parameter names
(`width`, `leak_shift`, `theta`, `reset`, `v_reset`, `signed_spikes`, `current_width`).
Per neuron and timestep:

    h    = sat_W(v - (v >> k) + x[t])          # arithmetic shift (floor), no leak if k is None
    s[t] = 1 if h >= theta  (signed: -1 if h <= -theta)
    v    = (h - s*theta if reset == "subtract" else v_reset) if s[t] else h

Vectorised over neurons and an optional batch axis; the loop runs over T only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESET_MODES = ("subtract", "zero")


def signed_range(width: int) -> tuple[int, int]:
    """Inclusive range of a two's-complement `width`-bit integer."""
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


@dataclass(frozen=True)
class LIFParams:
    """Integer LIF parameters. Invalid combinations raise ValueError naming the parameter."""

    theta: int
    leak_shift: int | None = None
    width: int = 16
    reset: str = "subtract"
    v_reset: int = 0
    signed_spikes: bool = False
    current_width: int | None = None  # input current width; None = `width`

    def __post_init__(self):
        check_lif_params(
            width=self.width, leak_shift=self.leak_shift, theta=self.theta, reset=self.reset,
            v_reset=self.v_reset, current_width=self.current_width,
        )

    @property
    def in_width(self) -> int:
        return self.width if self.current_width is None else self.current_width


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_lif_params(*, width, leak_shift, theta, reset, v_reset=0, current_width=None):
    """Shared by golden and RTL constructors: one place defines what is a valid LIF."""
    if not _is_int(width) or width < 2:
        raise ValueError(f"width (W) must be an integer >= 2, got {width!r}")
    lo, hi = signed_range(width)
    if leak_shift is not None and (not _is_int(leak_shift) or not 0 <= leak_shift < width):
        raise ValueError(f"leak_shift (k) must be None or an integer in [0, width={width}), "
                         f"got {leak_shift!r}")
    if not _is_int(theta) or theta <= 0:
        raise ValueError(f"theta must be a positive integer, got {theta!r}")
    if theta > hi:
        raise ValueError(f"theta={theta} does not fit a signed {width}-bit membrane (max {hi})")
    if reset not in RESET_MODES:
        raise ValueError(f"reset must be one of {RESET_MODES}, got {reset!r}")
    if not _is_int(v_reset) or not lo <= v_reset <= hi:
        raise ValueError(f"v_reset must be an integer in [{lo}, {hi}], got {v_reset!r}")
    if current_width is not None and (not _is_int(current_width) or current_width < 2):
        raise ValueError(f"current_width must be None or an integer >= 2, got {current_width!r}")


def as_int_array(name: str, value, ndim_options: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array (got dtype {arr.dtype}); "
                        "the integer golden model never casts or rounds silently")
    if arr.ndim not in ndim_options:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim_options))} dimensions, "
                         f"got shape {arr.shape}")
    return arr.astype(np.int64)


@dataclass
class LIFResult:
    spikes: np.ndarray      # [..., T, N] int8 in {0, 1} (or {-1, 0, 1} when signed)
    v: np.ndarray           # [..., N] int64: final membrane
    sat_count: int          # number of (neuron, timestep) updates that saturated
    membranes: np.ndarray | None = None  # [..., T, N] membrane after each step, if asked


def lif_step(v: np.ndarray, x: np.ndarray, p: LIFParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One timestep for any array shape: returns (spikes, new_v, saturated_mask)."""
    lo, hi = signed_range(p.width)
    leaked = v if p.leak_shift is None else v - (v >> p.leak_shift)
    raw = leaked + x
    h = np.clip(raw, lo, hi)
    saturated = raw != h
    spikes = (h >= p.theta).astype(np.int8)
    if p.signed_spikes:
        spikes -= (h <= -p.theta).astype(np.int8)
    if p.reset == "subtract":
        new_v = h - spikes.astype(np.int64) * p.theta
    else:
        new_v = np.where(spikes != 0, p.v_reset, h)
    return spikes, new_v, saturated


def lif_array(currents, params: LIFParams, v0=None, record_membranes: bool = False) -> LIFResult:
    """Run the integer LIF over `currents` of shape [T, N] or [B, T, N]."""
    x = as_int_array("currents", currents, (2, 3))
    lo_in, hi_in = signed_range(params.in_width)
    if x.size and (x.min() < lo_in or x.max() > hi_in):
        raise ValueError(f"currents must fit a signed {params.in_width}-bit input "
                         f"[{lo_in}, {hi_in}], got range [{x.min()}, {x.max()}]")
    state_shape = x.shape[:-2] + x.shape[-1:]
    if v0 is None:
        v = np.zeros(state_shape, dtype=np.int64)
    else:
        v = as_int_array("v0", v0, (len(state_shape),))
        lo, hi = signed_range(params.width)
        if v.shape != state_shape:
            raise ValueError(f"v0 must have shape {state_shape}, got {v.shape}")
        if v.size and (v.min() < lo or v.max() > hi):
            raise ValueError(f"v0 must fit a signed {params.width}-bit membrane")
    T = x.shape[-2]
    spikes = np.zeros(x.shape, dtype=np.int8)
    trace = np.zeros(x.shape, dtype=np.int64) if record_membranes else None
    sat_count = 0
    for t in range(T):
        s, v, sat = lif_step(v, x[..., t, :], params)
        spikes[..., t, :] = s
        sat_count += int(sat.sum())
        if trace is not None:
            trace[..., t, :] = v
    return LIFResult(spikes=spikes, v=v, sat_count=sat_count, membranes=trace)


def lif_float(currents, *, beta: float, theta: float, reset: str = "subtract",
              v_reset: float = 0.0, compare: str = ">=", v0=None):
    """Float64 reference LIF: h = beta*v + x; spike on h >= theta (or h > theta).

    Returns (spikes [..., T, N] float64, membranes after reset [..., T, N]).
    Matches SpikingJelly `LIFNode(decay_input=False)` with compare ">=" and snnTorch `Leaky`
    (reset_delay=False) with compare ">" (see tests/test_reference_frameworks.py).
    """
    if reset not in RESET_MODES:
        raise ValueError(f"reset must be one of {RESET_MODES}, got {reset!r}")
    if compare not in (">", ">="):
        raise ValueError(f"compare must be '>' or '>=', got {compare!r}")
    if not theta > 0:
        raise ValueError(f"theta must be > 0, got {theta!r}")
    x = np.asarray(currents, dtype=np.float64)
    if x.ndim not in (2, 3):
        raise ValueError(f"currents must be [T, N] or [B, T, N], got shape {x.shape}")
    v = np.zeros(x.shape[:-2] + x.shape[-1:]) if v0 is None else np.asarray(v0, np.float64).copy()
    spikes = np.zeros_like(x)
    membranes = np.zeros_like(x)
    for t in range(x.shape[-2]):
        h = beta * v + x[..., t, :]
        s = (h >= theta) if compare == ">=" else (h > theta)
        v = np.where(s, h - theta if reset == "subtract" else v_reset, h)
        spikes[..., t, :] = s
        membranes[..., t, :] = v
    return spikes, membranes


def spiking_linear(spikes_in, weights, params: LIFParams, bias=None, weight_width: int = 8,
                   v0=None) -> LIFResult:
    """Dense spiking linear (design.md §4): x[t, j] = sum_i w[j, i] * s[t, i] (+ b[j]) -> LIF.

    `spikes_in` is [T, N_in] or [B, T, N_in] with values in {0, 1} (or {-1, 0, 1});
    `weights` is [N_out, N_in] signed `weight_width`-bit. Accumulation is exact (int64).
    """
    s = as_int_array("spikes_in", spikes_in, (2, 3))
    if s.size and not np.isin(s, (-1, 0, 1)).all():
        raise ValueError("spikes_in must be spikes: values in {0, 1} (or {-1, 0, 1} for signed)")
    w = as_int_array("weights", weights, (2,))
    if w.shape[1] != s.shape[-1]:
        raise ValueError(f"weights shape {w.shape} does not match {s.shape[-1]} input neurons")
    lo, hi = signed_range(weight_width)
    if w.size and (w.min() < lo or w.max() > hi):
        raise ValueError(f"weights must fit signed {weight_width}-bit [{lo}, {hi}]")
    currents = s @ w.T
    if bias is not None:
        b = as_int_array("bias", bias, (1,))
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},), got {b.shape}")
        currents = currents + b
    return lif_array(currents, params, v0=v0)
