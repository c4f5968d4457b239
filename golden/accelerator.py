"""Golden view of the RTL `Accelerator` (rtl/accelerator.py) beyond its outputs (those are
`compile.run_program`): the ideal cycle bound of one inference, per op.

`accelerator_cycles(program, x, cfg)` counts the work the architecture cannot avoid, with
every unit busy at one beat a cycle and no stall, from the golden interpreter's buffers:
  ENCODE     the int16 input is read from a 16-bit-wide memory: an element a cycle.
  LINEAR /   three units, each one beat a cycle, over the n tokens:
  READOUT    - the engine accumulates every event of token k (a live (channel, plane) pair:
               its T-bit word is not 0) over the op's engine groups G = ceil(n_out / E),
               E = cfg.eng_lanes, one weight word a cycle (A_k = events_k · G), then drains
               the token; its two accumulator banks let token k + 1 accumulate while token
               k drains (a drained beat of E lanes is split into E / P lane groups);
             - the reader reads each token's source planes (R = cgroups · planes · T words);
             - the LIF side takes W = T beats per LIF group (ngroups = neurons / P; READOUT:
               n_out / P) per token, each written as the destination's planes (signed spikes: 2).
             The LIF side of token k overlaps the engine's token k + 1 (the drained beats
             wait in a FIFO), so the bound is the longest of: every accumulation, then the
             LIF side of the last token (which takes its drain), Σ A_k + W; the first drain,
             max(A_0, R), then every token's LIF side, n · W; all reads, n · R.
             A v0 LOAD pass overlaps the accumulation. Plus PIPELINE_FILL per op.
  ATTENTION  per head: the AttentionCore's own bound (`attention_core_cycles`), and at least
             the 3 · T · N · (D / P) row reads that feed it.
  ADD        per (token, group, t): the source planes are read and the destination planes
             written through one read and one write port: max(p0 + p1, p_dst).
The RTL's per-op counters (host LAYERS space) and its total cycles are benched against these
sums (target: measured <= 1.15 x ideal); the bound holds for any input (tested).

A compact build (`cfg.compact`, rtl/compact.py) has one port per memory and one neuron a
cycle; its bound (`compact_cycles`) counts, per op, the busiest of those ports:
  ENCODE     an input element a cycle (16-bit input memory).
  LINEAR     per token: the biases once (2 reads of the 16-bit program memory per int32 bias
             of a row), a v0 LOAD pass (a LIF beat per neuron); per (token, t): the program
             memory, one weight byte a cycle for every (event, unit) pair (an event: a live
             (channel, plane) at t); the LIF, a beat per neuron; the activation memory, a
             read per source word: the longest of the three.
  READOUT    per (token, t): max(events x n_out weight reads, source words); the biases once.
"""

from __future__ import annotations

import numpy as np

from .attention_core import attention_core_cycles
from .compile import BufKind, Op, Program, run_program
from .program_loader import AcceleratorConfig, buffer_planes

PIPELINE_FILL = 8    # per LINEAR / READOUT: reader -> emitter -> engine -> post -> LIF


def _ceil(a, b):
    return -(-a // b)


def _plane_bits(values, kind, bits):
    """[planes, ...] bits of activation `values` of a buffer kind (the RTL's bit planes)."""
    if kind == BufKind.SPIKES:
        return (values == 1)[None]
    if kind == BufKind.SIGNED_SPIKES:
        return np.stack([values == 1, values == -1])
    return np.stack([(values >> p) & 1 for p in range(bits)]).astype(bool)


def linear_events(values, kind, bits) -> np.ndarray:
    """Engine events per token of a LINEAR / READOUT source [T, tokens, channels]: the
    (channel, plane) pairs whose T-bit word is not 0."""
    planes = _plane_bits(np.asarray(values), kind, bits)      # [planes, T, tokens, C]
    return planes.any(axis=1).sum(axis=(0, 2))


def step_events(values, kind, bits) -> np.ndarray:
    """Events of a compact build per (t, token) of a LINEAR / READOUT source [T, tokens,
    channels]: the (channel, plane) bits that are set at that timestep."""
    return _plane_bits(np.asarray(values), kind, bits).sum(axis=(0, 3))


def compact_cycles(program: Program, bufs: dict, cfg: AcceleratorConfig) -> dict:
    """`accelerator_cycles` of a compact build (module docs), from the interpreter's buffers
    `bufs` (buffer id -> [T, tokens, channels])."""
    T, A = program.timesteps, cfg.act_lanes
    ib = program.buffers[program.input_buffer]
    ops = []
    for op in program.ops:
        if op.op not in (Op.LINEAR, Op.READOUT):
            raise ValueError(f"a compact build has no cycle model for {op.op.name}")
        src, dst = program.buffers[op.src[0]], program.buffers[op.dst]
        words = _ceil(src.channels, A) * buffer_planes(src.kind, src.bits)
        events = step_events(bufs[op.src[0]], src.kind, src.bits)        # [T, tokens]
        neurons = op.n_out * (op.repeat if op.op == Op.LINEAR else 1)
        lif = neurons if op.op == Op.LINEAR else 0
        per_step = np.maximum(np.maximum(events * op.n_out, lif), words)
        bias_reads = 2 * neurons if op.bias_rows else 0
        per_token = (bias_reads if op.bias_rows > 1 else 0) + (lif if op.v0 else 0)
        ops.append(int(per_step.sum()) + src.tokens * per_token
                   + (bias_reads if op.bias_rows == 1 else 0))
    encode = T * ib.tokens * ib.channels
    return {"encode": encode, "ops": ops, "total": encode + sum(ops)}


def accelerator_cycles(program: Program, x, cfg: AcceleratorConfig) -> dict:
    """Ideal cycles of one inference of `program` on input `x` [T, tokens, channels] for the
    build `cfg`: {"encode": n, "ops": [n per op], "total": n}."""
    x = np.asarray(x)
    run = run_program(program, x[None])
    bufs = {k: v[0] for k, v in run.buffers.items()}
    if cfg.compact:
        return compact_cycles(program, bufs, cfg)
    T, P = program.timesteps, cfg.lanes
    ib = program.buffers[program.input_buffer]
    encode = T * ib.tokens * ib.channels
    ops = []
    for op in program.ops:
        srcs = [program.buffers[s] for s in op.src]
        dst = program.buffers[op.dst]
        if op.op in (Op.LINEAR, Op.READOUT):
            src = srcs[0]
            planes = buffer_planes(src.kind, src.bits)
            reads = _ceil(src.channels, P) * planes * T
            G = _ceil(op.n_out, cfg.eng_lanes)
            events = linear_events(bufs[op.src[0]], src.kind, src.bits)
            if op.op == Op.LINEAR:
                lif = T * _ceil(op.n_out * op.repeat, P) * buffer_planes(dst.kind, dst.bits)
            else:
                lif = T * _ceil(op.n_out, P)
            accumulate = [int(e) * G for e in events]
            n = len(events)
            engine = sum(accumulate) + lif
            ops.append(max(engine, max(accumulate[0], reads) + n * lif, n * reads)
                       + PIPELINE_FILL)
        elif op.op == Op.ATTENTION:
            d = dst.channels // op.heads
            total = 0
            for h in range(op.heads):
                q, k, v = (bufs[s][:, :, h * d:(h + 1) * d] for s in op.src)
                core = attention_core_cycles(q, k, v, mode=op.mode, block=op.block,
                                             variant=op.variant, lanes=P)
                total += max(core, 3 * T * dst.tokens * _ceil(d, P))
            ops.append(int(total))
        elif op.op == Op.ADD:
            p0, p1 = (buffer_planes(s.kind, s.bits) for s in srcs)
            pd = buffer_planes(dst.kind, dst.bits)
            ops.append(dst.tokens * _ceil(dst.channels, P) * T * max(p0 + p1, pd))
        else:
            raise ValueError(f"op {op.op!r} has no cycle model")
    return {"encode": encode, "ops": ops, "total": encode + sum(ops)}
