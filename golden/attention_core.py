"""Golden view of the RTL `AttentionCore` (rtl/attention_core.py): the output beats it must
produce (from `golden.attention`, the arithmetic spec) and its ideal cycle count.

`attention_core_inputs` lists the `i` beats of one inference ({q, k, v} words, bit d =
channel d, timestep-major). `attention_core_outputs` lists the `o` beats in order: per timestep t,
SSA/STAtten: (ATTN, token·G + g, spikes, membranes) for every token and lane group g
(G = D / lanes); SDSA: first the mask neurons' (MASK, g, ...) beats, then (GATED, token·G + g,
spikes, zeros). Kinds are the strings "attn", "mask", "gated".

`attention_core_cycles` is the ideal bound the benches compare the busy-cycle counter with
(no input gaps, no backpressure). Per block: loading (one token row a cycle), then the
accumulate ops the chosen order needs on the *stored* key rows only (c = key rows that are
not silent, at least one op when c = 0):
  qk_v : B·N rows × c ops
  q_kv : D·c (the KV matrix) + B·N rows × D ops
  sdsa : c (column sums) -> G mask beats -> the LIF's latency -> N one-op gated rows
while every finished row needs G = D / lanes serializer beats. Two clocks advance block by
block, the op issue and the serializer; the next block loads once this block's last row
sits in the serializer. Plus fixed pipeline fill: PIPE cycles per phase barrier and
LIF_LATENCY from the last beat to its output, OUT_FIFO from there to `o`, and START per loop. It is a lower bound of the RTL's busy cycles
(tested); the rest is LIF hazard bubbles and phase transitions.
"""

from __future__ import annotations

import numpy as np

from .attention import _check_block, _spike_tensors, cheaper_order, sdsa, statten
from .lif import LIFParams

PIPE = 4          # op issue -> accumulator -> serializer
START = 1         # a loop's start is decided a cycle before its first op issues
LIF_LATENCY = 7   # serializer beat -> LIF (skid, A, B, S, C, D) -> its output (the mask)
OUT_FIFO = 3      # output FIFO: write register, block RAM write, read, output register -> o
QUEUE_ROWS = 1    # finished rows the serializer holds (the one it emits)


def _useful_rows(q, k, v, mode, variant):
    if mode == "sdsa":
        prod = (k & v) if variant == "reference" else (q & k)
        return prod.any(axis=-1)
    return k.any(axis=-1) & v.any(axis=-1)


def _one_inference(q, k, v):
    """Validated int64 Q, K, V of one inference, [T, N, D] each."""
    q, k, v = _spike_tensors(q, k, v)
    if q.ndim != 3:
        raise ValueError(f"q, k, v must be [T, N, D] for one inference, got {q.shape}")
    return q, k, v


def _golden(q, k, v, lif, mode, block, variant):
    """The golden attention the core computes in `mode` (its LIF is the core's LIF)."""
    if mode == "sdsa":
        return sdsa(q, k, v, lif, variant=variant, record_membranes=True)
    if mode not in ("ssa", "statten"):
        raise ValueError(f"mode must be 'ssa', 'statten' or 'sdsa', got {mode!r}")
    return statten(q, k, v, lif, block=block if mode == "statten" else 1,
                   record_membranes=True)


def attention_core_inputs(q, k, v) -> list[dict]:
    """The `i` beats of one inference: {"q", "k", "v"} words per token row, timestep-major."""
    q, k, v = _one_inference(q, k, v)
    weights = 1 << np.arange(q.shape[-1], dtype=object)     # exact for any D
    words = [(x.astype(object) * weights).sum(axis=-1) for x in (q, k, v)]
    return [{"q": int(wq), "k": int(wk), "v": int(wv)}
            for wq, wk, wv in zip(*(w.reshape(-1) for w in words))]


def attention_core_sat_count(q, k, v, lif: LIFParams, *, mode: str = "ssa", block: int = 1,
                             variant: str = "reference") -> int:
    """Saturated lane-updates of the core's LIF (the mask neurons for SDSA)."""
    return int(_golden(*_one_inference(q, k, v), lif, mode, block, variant).lif.sat_count)


def attention_core_outputs(q, k, v, lif: LIFParams, *, mode: str = "ssa", block: int = 1,
                           variant: str = "reference", lanes: int | None = None):
    """The `o` beats of one inference: [(kind, index, spikes[lanes], membranes[lanes])]."""
    q, k, v = _one_inference(q, k, v)
    T, N, D = q.shape
    P = D if lanes is None else lanes
    if P < 1 or D % P:
        raise ValueError(f"lanes={lanes!r} must divide D={D}")
    G = D // P
    beats = []
    res = _golden(q, k, v, lif, mode, block, variant)
    if mode == "sdsa":
        for t in range(T):
            mask, vm = res.lif.spikes[t], res.lif.membranes[t]
            beats += [("mask", g, mask[g * P:(g + 1) * P].tolist(),
                       vm[g * P:(g + 1) * P].tolist()) for g in range(G)]
            beats += [("gated", i * G + g, res.spikes[t, i, g * P:(g + 1) * P].tolist(),
                       [0] * P) for i in range(N) for g in range(G)]
        return beats
    for t in range(T):
        beats += [("attn", i * G + g, res.spikes[t, i, g * P:(g + 1) * P].tolist(),
                   res.lif.membranes[t, i, g * P:(g + 1) * P].tolist())
                  for i in range(N) for g in range(G)]
    return beats


def _schedule(q, k, v, mode, block, variant, order):
    """(N, D, B, order, useful [T, N], stored key rows per block, at least 1)."""
    q, k, v = _one_inference(q, k, v)
    T, N, D = q.shape
    B = block if mode == "statten" else 1
    _check_block(B, T)
    if order is None:
        order = cheaper_order(N, D, B)
    useful = _useful_rows(q, k, v, mode, variant)
    stored = [max(int(useful[t0:t0 + B].sum()), 1) for t0 in range(0, T, B)]
    return N, D, B, order, useful, stored


def attention_core_cycles(q, k, v, *, mode: str = "ssa", block: int = 1,
                          variant: str = "reference", order: str | None = None,
                          lanes: int | None = None) -> int:
    """Ideal cycles of one inference (first row in to last beat out), see the docstring.
    Two clocks advance block by block: `issue` (loads and ops, one a cycle) and `serial`
    (the serializer, G beats a row); a block's loading starts when its predecessor's last
    row is queued, i.e. at most QUEUE_ROWS rows before the serializer is done."""
    N, D, B, order, _, stored = _schedule(q, k, v, mode, block, variant, order)
    G = D // (D if lanes is None else lanes)
    rows = B * N
    issue = serial = 0
    for c in stored:
        loaded = issue + rows
        if mode == "sdsa":   # column sums -> G mask beats -> LIF -> one-op gated rows
            mask_back = max(loaded + START + c + PIPE, serial) + G + LIF_LATENCY
            serial = mask_back + START + PIPE + N * G
            ops_done = mask_back + START + N + PIPE
        else:
            if order == "qk_v":
                start = loaded + START
                first_row, ops_done = start + c + PIPE, start + rows * c + PIPE
            else:                                              # KV matrix, then D ops a row
                kv = loaded + START + D * c + PIPE
                first_row, ops_done = kv + START + D + PIPE, kv + START + rows * D + PIPE
            serial = max(max(serial, first_row) + rows * G, ops_done)
        issue = max(ops_done, serial - QUEUE_ROWS * G)
    # the last beat out: through the LIF, except SDSA's gated rows (serializer -> FIFO)
    return int(serial + (1 if mode == "sdsa" else LIF_LATENCY) + OUT_FIFO)


def attention_core_ops(q, k, v, *, mode: str = "ssa", block: int = 1,
                       variant: str = "reference", order: str | None = None) -> dict:
    """Accumulate ops the core issues (its `ops` counter) and the key rows it stores
    (`events`) and drops (`skipped`) for one inference."""
    N, D, B, order, useful, stored = _schedule(q, k, v, mode, block, variant, order)
    ops = sum(c + N if mode == "sdsa" else B * N * c if order == "qk_v"
              else D * c + B * N * D for c in stored)
    return {"ops": ops, "events": int(useful.sum()), "skipped": int((~useful).sum())}
