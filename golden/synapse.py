"""Golden event-driven synapse engine (design.md §2, §4): the spec of RTL `SynapseEngine`.

Input spikes `[T, N_in]` are packed per input neuron into a T-bit word (bit t = spike at
timestep t, LoAS temporal packing); only neurons with a non-zero word become events.
Each event (i, word) adds weight column `w[:, i]` into the accumulator of every timestep
whose bit is set: `acc[t, j] += w[j, i] * s[t, i]`. Accumulation is exact (no wrap); the
accumulators plus bias are the currents fed to the LIF (`spiking_linear` = this + LIF).
"""

from __future__ import annotations

import numpy as np

from .lif import as_int_array, signed_range


def pack_spikes(spikes) -> np.ndarray:
    """[T, N] binary spikes -> [N] words, bit t = spike at timestep t."""
    s = as_int_array("spikes", spikes, (2,))
    if s.size and not np.isin(s, (0, 1)).all():
        raise ValueError("spikes must be binary (0/1) to be packed into temporal words")
    if s.shape[0] > 62:
        raise ValueError(f"T={s.shape[0]} does not fit a packed int64 word (T <= 62)")
    return (s << np.arange(s.shape[0])[:, None]).sum(axis=0).astype(np.int64)


def unpack_spikes(words, timesteps: int) -> np.ndarray:
    w = as_int_array("words", words, (1,))
    return ((w[None, :] >> np.arange(timesteps)[:, None]) & 1).astype(np.int8)


def spike_events(spikes) -> list[tuple[int, int]]:
    """Event list (index, word) of the non-silent input neurons, in index order."""
    words = pack_spikes(spikes)
    return [(int(i), int(words[i])) for i in np.flatnonzero(words)]


def accumulator_width(n_in: int, weight_width: int, bias_width: int | None = None) -> int:
    """Smallest signed width that holds any sum of n_in weights (+ a bias) exactly."""
    lo, hi = signed_range(weight_width)
    worst = n_in * -lo
    if bias_width is not None:
        worst += -signed_range(bias_width)[0]
    return int(worst).bit_length() + 1


def plane_sum_width(n_in: int, weight_width: int, planes: int,
                    bias_width: int | None = None) -> int:
    """Smallest signed width that holds any sum of n_in weights over `planes` bit planes of
    an unsigned input (plane p adds its weights << p: up to n_in·2^(w-1)·(2^planes - 1)),
    plus a bias of `bias_width` bits."""
    worst = n_in * -signed_range(weight_width)[0] * ((1 << planes) - 1)
    if bias_width is not None:
        worst += -signed_range(bias_width)[0]
    return int(worst).bit_length() + 1


def synapse_engine(events, weights, timesteps: int, bias=None, weight_width: int = 8,
                   bias_width: int | None = None) -> np.ndarray:
    """Currents [T, N_out] for an event list [(index, word)] and weights [N_out, N_in].
    An event may be `(index, word, shift, negate)`: the weight column is added `<< shift`
    (one bit plane of a multi-bit input), subtracted if `negate` (the −1 plane of signed
    spikes): the RTL's `max_shift` / `signed_events` fields."""
    w = as_int_array("weights", weights, (2,))
    lo, hi = signed_range(weight_width)
    if w.size and (w.min() < lo or w.max() > hi):
        raise ValueError(f"weights must fit signed {weight_width}-bit [{lo}, {hi}]")
    n_out, n_in = w.shape
    acc = np.zeros((timesteps, n_out), dtype=np.int64)
    for index, word, *plane in events:
        shift, negate = (tuple(plane) + (0, 0))[:2]
        if not 0 <= index < n_in:
            raise ValueError(f"event index {index} out of range for {n_in} input neurons")
        if not 0 <= word < (1 << timesteps):
            raise ValueError(f"event word {word:#x} has bits beyond T={timesteps}")
        bits = (word >> np.arange(timesteps)) & 1
        if not (isinstance(shift, (int, np.integer)) and shift >= 0):
            raise ValueError(f"event shift must be a non-negative integer, got {shift!r}")
        column = (w[:, index] << int(shift)) * (-1 if negate else 1)
        acc += bits[:, None] * column[None, :]
    if bias is not None:
        b = as_int_array("bias", bias, (1,))
        if b.shape != (n_out,):
            raise ValueError(f"bias must have shape ({n_out},), got {b.shape}")
        if bias_width is not None:
            blo, bhi = signed_range(bias_width)
            if b.size and (b.min() < blo or b.max() > bhi):
                raise ValueError(f"bias must fit signed {bias_width}-bit [{blo}, {bhi}]")
        acc += b[None, :]
    return acc


def synapse_engine_cycles(n_events: int, n_out: int, lanes: int, timesteps: int,
                          pipeline_depth: int = 5) -> int:
    """Ideal cycle bound: each event costs its fan-out / lanes; the drain streams T x
    fan-out / lanes currents to the LIF; plus pipeline fill (RTL SynapseEngine: 2 cycles
    from the last dispatch to the last accumulator write, 3 from the first drain read to
    the output register). Silent inputs cost nothing."""
    groups = -(-n_out // lanes)
    return n_events * groups + timesteps * groups + pipeline_depth
