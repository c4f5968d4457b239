"""Compiler and program image (design.md §1, §8): an integer network -> a binary program
the accelerator sequencer executes, and the golden interpreter of that program.

The image (all little-endian) is what the host loads into the accelerator:

    header   24 B  magic "SFPG", version, timesteps T, #buffers, #ops, input buffer id,
                   output buffer id, weight-blob bytes, CRC-32 (zlib) of the whole image
                   computed with this field zero
    buffers   8 B each: tokens u16, channels u16, kind u8, bits u8, reserved u16
    ops      48 B each (OP_STRUCT below; unused fields 0)
    weights  the blob: weights int8 (weight_bits <= 8) or int16, biases int32,
             addressed by byte offsets from the start of the blob

A buffer holds one activation tensor [T, tokens, channels] per inference: binary spikes,
signed spikes (−1/0/+1), or small non-negative integers (pixels, residual sums); the
readout buffer holds signed 32-bit sums. Ops (each mirrors a golden function):

- LINEAR (§4 + §3): cur[t,n,u] = shift(Σ_i W[u,i]·src[t,n,i], acc_shift) then every unit u
  feeds `repeat` neurons u·repeat+r with their own bias (bias rows: 1, or one per token
  for a position term), then `lif_array` with the op's LIF (membrane start v0).
- ATTENTION (§5): q, k, v = src0..2 split into `heads` contiguous channel groups;
  SSA / STAtten(block) / SDSA(variant) with the op's LIF (`golden/attention.py`).
- ADD: dst = src0 + src1 (the spike residual).
- READOUT: dst[j] = Σ_t Σ_n Σ_i W[j,i]·src[t,n,i] + T·tokens·b[j] (non-spiking, summed over
  T and tokens: the classifier logits / the PINN output membrane).

`compile_transformer` and `compile_pinn` build programs from the integer golden models;
`run_program` is the interpreter; tests prove it equals the golden networks bit for bit,
so the format is specified by the golden model.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import attention as attn
from .lif import LIFParams, as_int_array, lif_array, signed_range
from .quant import shift_int

MAGIC = b"SFPG"
VERSION = 1
HEADER = struct.Struct("<4sHHHHBBHII")
BUFFER = struct.Struct("<HHBBH")
OP_STRUCT = struct.Struct("<8B HH4B 4B iii II H 6x")
NO_LEAK = 0xFF


class Op(enum.IntEnum):
    LINEAR = 1
    ATTENTION = 2
    ADD = 3
    READOUT = 4


class BufKind(enum.IntEnum):
    SPIKES = 0          # {0, 1}
    SIGNED_SPIKES = 1   # {-1, 0, 1}
    UINT = 2            # 0 .. 2^bits - 1
    INT = 3             # signed `bits`-bit (readout sums)


ATTN_MODES = {"ssa": 0, "statten": 1, "sdsa": 2}
SDSA_VARIANTS = {"reference": 0, "paper": 1}
FLAG_SIGNED, FLAG_RESET_ZERO, FLAG_BIAS = 1, 2, 4


class ProgramError(ValueError):
    """A program image that is corrupt, of another version, or inconsistent."""


@dataclass(frozen=True)
class Buffer:
    tokens: int
    channels: int
    kind: BufKind
    bits: int

    def check(self, values: np.ndarray, what: str) -> None:
        lo, hi = {BufKind.SPIKES: (0, 1), BufKind.SIGNED_SPIKES: (-1, 1),
                  BufKind.UINT: (0, (1 << self.bits) - 1),
                  BufKind.INT: signed_range(self.bits)}[self.kind]
        if values.size and (values.min() < lo or values.max() > hi):
            raise ValueError(f"{what}: values must be in [{lo}, {hi}] ({self.kind.name}, "
                             f"{self.bits} bits), got [{values.min()}, {values.max()}]")


@dataclass
class OpDesc:
    op: Op
    dst: int
    src: tuple = ()
    n_in: int = 0
    n_out: int = 0              # units (LINEAR), outputs (READOUT)
    repeat: int = 1
    heads: int = 1
    mode: str = "ssa"
    block: int = 1
    variant: str = "reference"
    lif: LIFParams | None = None
    v0: int = 0
    weight_bits: int = 8
    acc_shift: int = 0
    weight_addr: int = 0
    bias_addr: int = 0
    bias_rows: int = 0          # 0: no bias


@dataclass
class Program:
    timesteps: int
    buffers: list
    ops: list
    blob: bytes
    input_buffer: int = 0
    output_buffer: int = 0
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ weights
    def weights(self, op: OpDesc) -> np.ndarray:
        dtype = np.int8 if op.weight_bits <= 8 else np.int16
        n = op.n_out * op.n_in
        return _blob_array(self.blob, op.weight_addr, dtype, n).reshape(op.n_out, op.n_in)

    def bias(self, op: OpDesc) -> np.ndarray | None:
        if not op.bias_rows:
            return None
        n_out = op.n_out * op.repeat if op.op == Op.LINEAR else op.n_out
        return _blob_array(self.blob, op.bias_addr, np.int32,
                           op.bias_rows * n_out).reshape(op.bias_rows, n_out)

    # ------------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        body = b"".join(BUFFER.pack(b.tokens, b.channels, b.kind, b.bits, 0)
                        for b in self.buffers)
        body += b"".join(_pack_op(op) for op in self.ops)
        body += self.blob
        head = HEADER.pack(MAGIC, VERSION, self.timesteps, len(self.buffers), len(self.ops),
                           self.input_buffer, self.output_buffer, 0, len(self.blob), 0)
        crc = zlib.crc32(head + body)
        return head[:-4] + struct.pack("<I", crc) + body

    @classmethod
    def from_bytes(cls, image: bytes) -> "Program":
        image = bytes(image)
        if len(image) < HEADER.size:
            raise ProgramError(f"program image too short ({len(image)} bytes)")
        magic, version, T, nb, no, inp, out, _, nblob, crc = HEADER.unpack_from(image)
        if magic != MAGIC:
            raise ProgramError(f"bad magic {magic!r}: not a spikeforge program image")
        if version != VERSION:
            raise ProgramError(f"program version {version}, this spikeforge reads {VERSION}")
        size = HEADER.size + nb * BUFFER.size + no * OP_STRUCT.size + nblob
        if len(image) != size:
            raise ProgramError(f"program image is {len(image)} bytes, its header says {size}")
        if zlib.crc32(image[:HEADER.size - 4] + b"\0" * 4 + image[HEADER.size:]) != crc:
            raise ProgramError("program image CRC mismatch: corrupted")
        off = HEADER.size
        buffers = []
        for i in range(nb):
            tokens, channels, kind, bits, _ = BUFFER.unpack_from(image, off + i * BUFFER.size)
            try:
                buffers.append(Buffer(tokens, channels, BufKind(kind), bits))
            except ValueError:
                raise ProgramError(f"buffer {i}: unknown kind {kind}") from None
        off += nb * BUFFER.size
        ops = [_unpack_op(image, off + i * OP_STRUCT.size, i) for i in range(no)]
        off += no * OP_STRUCT.size
        prog = cls(T, buffers, ops, image[off:], inp, out)
        prog.validate()
        return prog

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Everything the device's loader checks too: ids, shapes, blob ranges, widths."""
        nb = len(self.buffers)
        if not self.timesteps >= 1:
            raise ProgramError("timesteps must be >= 1")
        for name, b in (("input", self.input_buffer), ("output", self.output_buffer)):
            if not 0 <= b < nb:
                raise ProgramError(f"{name} buffer {b} out of range (0..{nb - 1})")
        arity = {Op.LINEAR: 1, Op.READOUT: 1, Op.ADD: 2, Op.ATTENTION: 3}
        for i, op in enumerate(self.ops):
            where = f"op {i} ({op.op.name})"
            if len(op.src) != arity[op.op]:
                raise ProgramError(f"{where}: {len(op.src)} sources, needs {arity[op.op]}")
            for b in (*op.src, op.dst):
                if not 0 <= b < nb:
                    raise ProgramError(f"{where}: buffer id {b} out of range (0..{nb - 1})")
            src, dst = [self.buffers[b] for b in op.src], self.buffers[op.dst]
            if op.op != Op.READOUT and any(s.tokens != dst.tokens for s in src):
                raise ProgramError(f"{where}: token counts differ between sources and "
                                   "destination")
            if op.op in (Op.LINEAR, Op.READOUT):
                want = op.n_out * (op.repeat if op.op == Op.LINEAR else 1)
                if src[0].channels != op.n_in or dst.channels != want:
                    raise ProgramError(f"{where}: shapes {src[0].channels}->{dst.channels} do "
                                       f"not match the descriptor {op.n_in}->{want}")
                nbytes = (1 if op.weight_bits <= 8 else 2) * op.n_in * op.n_out
                _check_range(self.blob, op.weight_addr, nbytes, f"{where}: weights")
                if op.bias_rows:
                    if op.bias_rows not in (1, dst.tokens):
                        raise ProgramError(f"{where}: bias_rows {op.bias_rows} must be 1 or "
                                           f"the token count {dst.tokens}")
                    _check_range(self.blob, op.bias_addr, 4 * op.bias_rows * want,
                                 f"{where}: bias")
                if op.weight_bits < 1:
                    raise ProgramError(f"{where}: weight_bits must be >= 1")
                w = self.weights(op)
                lo, hi = signed_range(op.weight_bits)
                if w.size and (w.min() < lo or w.max() > hi):
                    raise ProgramError(f"{where}: weights exceed {op.weight_bits} bits")
            elif op.op == Op.ATTENTION:
                if len({s.channels for s in src} | {dst.channels}) != 1 or \
                        op.heads < 1 or dst.channels % op.heads:
                    raise ProgramError(f"{where}: q, k, v, output channels must be equal and "
                                       f"divisible by heads (heads {op.heads} >= 1)")
                if op.block < 1:
                    raise ProgramError(f"{where}: block must be >= 1")
                if self.timesteps % op.block:
                    raise ProgramError(f"{where}: T={self.timesteps} not a multiple of "
                                       f"block {op.block}")
            elif op.op == Op.ADD and len({s.channels for s in src} | {dst.channels}) != 1:
                raise ProgramError(f"{where}: ADD operands must have equal shapes")


def _blob_array(blob, addr, dtype, n):
    return np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<"), count=n,
                         offset=addr).astype(np.int64)


def _check_range(blob, addr, nbytes, what):
    if addr < 0 or addr + nbytes > len(blob):
        raise ProgramError(f"{what} [{addr}, {addr + nbytes}) outside the {len(blob)}-byte "
                           "weight blob")


def _pack_op(op: OpDesc) -> bytes:
    lif = op.lif
    flags = 0
    if lif is not None:
        flags |= FLAG_SIGNED * lif.signed_spikes | FLAG_RESET_ZERO * (lif.reset == "zero")
    flags |= FLAG_BIAS * bool(op.bias_rows)
    src = tuple(op.src) + (0,) * (3 - len(op.src))
    leak = NO_LEAK if lif is None or lif.leak_shift is None else lif.leak_shift
    return OP_STRUCT.pack(
        op.op, len(op.src), *src, op.dst, flags, ATTN_MODES[op.mode],
        op.n_in, op.n_out, op.repeat, op.heads, op.block, SDSA_VARIANTS[op.variant],
        leak, 0 if lif is None else lif.width, 0 if lif is None else lif.in_width,
        op.weight_bits, 0 if lif is None else lif.theta, 0 if lif is None else lif.v_reset,
        op.v0, op.weight_addr, op.bias_addr, op.bias_rows | (op.acc_shift & 0xFF) << 8)


def _unpack_op(image, off, i) -> OpDesc:
    (code, nsrc, s0, s1, s2, dst, flags, mode, n_in, n_out, repeat, heads, block, variant,
     leak, width, cur_width, wbits, theta, v_reset, v0, waddr, baddr, packed) = \
        OP_STRUCT.unpack_from(image, off)
    try:
        op = Op(code)
    except ValueError:
        raise ProgramError(f"op {i}: unknown opcode {code}") from None
    if nsrc > 3:
        raise ProgramError(f"op {i}: {nsrc} sources (at most 3)")
    modes = {v: k for k, v in ATTN_MODES.items()}
    variants = {v: k for k, v in SDSA_VARIANTS.items()}
    if mode not in modes or variant not in variants:
        raise ProgramError(f"op {i}: unknown attention mode {mode} / variant {variant}")
    lif = None
    if op in (Op.LINEAR, Op.ATTENTION):
        try:
            lif = LIFParams(theta=theta, leak_shift=None if leak == NO_LEAK else leak,
                            width=width, reset="zero" if flags & FLAG_RESET_ZERO else "subtract",
                            v_reset=v_reset, signed_spikes=bool(flags & FLAG_SIGNED),
                            current_width=cur_width if cur_width != width else None)
        except ValueError as e:
            raise ProgramError(f"op {i}: invalid LIF parameters: {e}") from None
    bias_rows = packed & 0xFF if flags & FLAG_BIAS else 0
    acc_shift = (packed >> 8) - 256 if packed >> 8 >= 128 else packed >> 8
    return OpDesc(op, dst, (s0, s1, s2)[:nsrc], n_in, n_out, repeat, heads, modes[mode],
                  block, variants[variant], lif, v0, wbits, acc_shift, waddr, baddr, bias_rows)


# ---------------------------------------------------------------------------- builder

class _Builder:
    def __init__(self, timesteps):
        self.T, self.buffers, self.ops, self.blob = timesteps, [], [], bytearray()

    def buffer(self, tokens, channels, kind, bits=1) -> int:
        self.buffers.append(Buffer(tokens, channels, BufKind(kind), bits))
        return len(self.buffers) - 1

    def data(self, array, dtype) -> int:
        addr = len(self.blob)
        self.blob += np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
        return addr

    def matrix_op(self, op, src, dst, weights, bias, weight_bits, **kw) -> None:
        w = np.asarray(weights, dtype=np.int64)
        desc = OpDesc(op, dst, (src,), n_in=w.shape[1], n_out=w.shape[0],
                      weight_bits=weight_bits, **kw)
        desc.weight_addr = self.data(w, np.int8 if weight_bits <= 8 else np.int16)
        if bias is not None:
            b = np.asarray(bias, dtype=np.int64)
            b = b.reshape(-1, b.shape[-1])
            desc.bias_rows, desc.bias_addr = b.shape[0], self.data(b, np.int32)
        self.ops.append(desc)

    def program(self, input_buffer, output_buffer, **meta) -> Program:
        prog = Program(self.T, self.buffers, self.ops, bytes(self.blob), input_buffer,
                       output_buffer, meta)
        prog.validate()
        return prog


def compile_transformer(model) -> Program:
    """IntTransformer (golden/transformer.py) -> Program; input buffer = encoded input."""
    from .transformer import LINEARS

    c = model.cfg
    b = _Builder(c.timesteps)
    N = c.tokens
    in_kind, in_bits = ((BufKind.UINT, c.input_bits + 1) if c.coding == "direct"
                        else (BufKind.SPIKES, 1))
    bufs = {"input": b.buffer(N, c.in_features, in_kind, in_bits)}
    for name in LINEARS:
        bufs[name] = b.buffer(N, c.shapes()[name][0], BufKind.SPIKES)
    bufs["attn"] = b.buffer(N, c.dim, BufKind.SPIKES)
    bufs["x1"] = b.buffer(N, c.dim, BufKind.UINT, 2)
    bufs["x2"] = b.buffer(N, c.dim, BufKind.UINT, 2)
    bufs["logits"] = b.buffer(1, c.classes, BufKind.INT, 32)

    def linear(name, src):
        layer = model.layers[name]
        b.matrix_op(Op.LINEAR, bufs[src], bufs[name], layer.weights, layer.bias,
                    layer.weight_bits, lif=layer.lif)

    linear("emb", "input")
    for name in ("q", "k", "v"):
        linear(name, "emb")
    b.ops.append(OpDesc(Op.ATTENTION, bufs["attn"], (bufs["q"], bufs["k"], bufs["v"]),
                        heads=c.heads, mode=c.attention, block=c.block,
                        variant=c.sdsa_variant, lif=model.attn_lif))
    linear("proj", "attn")
    b.ops.append(OpDesc(Op.ADD, bufs["x1"], (bufs["emb"], bufs["proj"])))
    linear("fc1", "x1")
    linear("fc2", "fc1")
    b.ops.append(OpDesc(Op.ADD, bufs["x2"], (bufs["x1"], bufs["fc2"])))
    head = model.layers["head"]
    b.matrix_op(Op.READOUT, bufs["x2"], bufs["logits"], head.weights, head.bias,
                head.weight_bits)
    return b.program(bufs["input"], bufs["logits"], network="transformer",
                     attention=c.attention)


def compile_pinn(snn) -> Program:
    """IntSNN (golden/pinn.py) -> Program; input buffer = xq (`pinn_input`)."""
    b = _Builder(snn.T)
    kind = BufKind.SIGNED_SPIKES if snn.lif.signed_spikes else BufKind.SPIKES
    src = b.buffer(1, 1, BufKind.UINT, snn.input_bits + 1)
    first = src
    for l, (w, r, bias) in enumerate(zip(snn.weights, snn.acc_shifts, snn.biases)):
        dst = b.buffer(1, w.shape[0] * snn.K, kind)
        b.matrix_op(Op.LINEAR, src, dst, w, np.asarray(bias).reshape(1, -1), snn.weight_bits,
                    lif=snn.lif, v0=snn.v0, acc_shift=r, repeat=snn.K)
        src = dst
    out = b.buffer(1, 1, BufKind.INT, snn.out_width)
    b.matrix_op(Op.READOUT, src, out, np.asarray(snn.out_weight).reshape(1, -1),
                np.array([snn.out_bias]), snn.weight_bits)
    return b.program(first, out, network="pinn")


def pinn_input(snn, x) -> np.ndarray:
    """Encoded PINN input [B, T, 1, 1]: xq = round(x · 2^input_bits) every timestep."""
    from .pinn import quantize_input
    xq = quantize_input(x, snn.input_bits)
    return np.broadcast_to(xq[:, None, None, None], (len(xq), snn.T, 1, 1)).copy()


# ---------------------------------------------------------------------------- interpreter

@dataclass
class ProgramRun:
    buffers: dict            # buffer id -> [B, T, tokens, channels] (READOUT: [B, 1, 1, n])
    sat_counts: list         # per op
    output: np.ndarray       # the output buffer


def _lif(currents, lif, v0):
    B, T, N, C = currents.shape
    init = None if not v0 else np.full((B, N * C), v0, dtype=np.int64)
    res = lif_array(currents.reshape(B, T, N * C), lif, v0=init)
    return res.spikes.reshape(B, T, N, C).astype(np.int64), res.sat_count


def _exec(prog: Program, op: OpDesc, bufs: dict) -> tuple[np.ndarray, int]:
    src = [bufs[s] for s in op.src]
    if op.op == Op.ADD:
        return src[0] + src[1], 0
    w, bias = prog.weights(op), prog.bias(op)
    if op.op == Op.READOUT:
        total = src[0].sum(axis=(1, 2)) @ w.T
        if bias is not None:
            total = total + prog.timesteps * src[0].shape[2] * bias[0]
        return total[:, None, None, :], 0
    if op.op == Op.LINEAR:
        cur = shift_int(src[0] @ w.T, op.acc_shift)
        cur = np.repeat(cur, op.repeat, axis=-1)
        if bias is not None:
            cur = cur + bias
        return _lif(cur, op.lif, op.v0)
    # ATTENTION
    B, T, N, D = src[0].shape
    q, k, v = (s.reshape(B, T, N, op.heads, D // op.heads).transpose(0, 3, 1, 2, 4)
               for s in src)
    if op.mode == "sdsa":
        res = attn.sdsa(q, k, v, op.lif, variant=op.variant)
    else:
        res = attn.statten(q, k, v, op.lif, block=op.block)
    out = res.spikes.astype(np.int64).transpose(0, 2, 3, 1, 4).reshape(B, T, N, D)
    return out, res.lif.sat_count


def run_program(prog: Program, inputs) -> ProgramRun:
    """Execute `prog` on encoded inputs [B, T, tokens, channels] of the input buffer."""
    x = as_int_array("inputs", inputs, (4,))
    ib = prog.buffers[prog.input_buffer]
    if x.shape[1:] != (prog.timesteps, ib.tokens, ib.channels):
        raise ValueError(f"inputs must be [B, {prog.timesteps}, {ib.tokens}, {ib.channels}], "
                         f"got {x.shape}")
    ib.check(x, "inputs")
    bufs, sats = {prog.input_buffer: x}, []
    for i, op in enumerate(prog.ops):
        missing = [s for s in op.src if s not in bufs]
        if missing:
            raise ProgramError(f"op {i} ({op.op.name}) reads buffer {missing[0]} before any "
                               "op wrote it")
        out, sat = _exec(prog, op, bufs)
        prog.buffers[op.dst].check(out, f"op {i} ({op.op.name}) output")
        bufs[op.dst] = out
        sats.append(sat)
    return ProgramRun(bufs, sats, bufs[prog.output_buffer])
