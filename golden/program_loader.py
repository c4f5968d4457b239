"""Golden program loader (design.md §8): what the accelerator's LOAD does with a program image
(golden/compile.py, docs/program-image.md) — the spec of `rtl/program_loader.py`.

`program_loader(image, cfg)` checks the image against one accelerator build
(`AcceleratorConfig`) and returns the decoded tables the executor runs from:

- `header`: timesteps, n_buffers, n_ops, input/output buffer ids and `info`, the LOAD reply
  (T, input tokens, input channels, output tokens, output channels);
- one `BufferEntry` per buffer with its activation-memory placement. Activation word
  `base + (token·cgroups + g)·planes + p` holds, at bit `lane·T + t`, plane p of channel
  `g·lanes + lane` at timestep t (SPIKES: 1 plane; SIGNED_SPIKES: plane 0 = +1, plane 1 = −1;
  UINT: plane p = bit p; INT buffers live in the output memory: no planes, base 0);
- one `OpEntry` per op (fields an op does not use are 0) with its weight words
  (`wbase + i·egroups + g`, lane l = W[g·E + l, i], E = `eng_lanes`) and bias words
  (`bbase + row·ngroups + h`, lane l = bias[row, h·lanes + l]), zero padded;
- `weight_words` / `bias_words`: the engine memories' contents, a list of lane lists.

It refuses (compile.ProgramError with a `LoadError.code` from `Reason`, the RTL's `reason`
output) everything `Program.from_bytes` refuses plus what this build cannot run.
`loader_cycles` is the RTL loader's cycle count from `start` to `done`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, fields

import numpy as np

from .compile import (HEADER, FLAG_BIAS, FLAG_RESET_ZERO, FLAG_SIGNED, NO_LEAK, ATTN_MODES,
                      SDSA_VARIANTS, BufKind, Op, Program, ProgramError)
from .lif import RESET_MODES, signed_range

COMPACT_ACT_LANES = 16     # channels per activation word of a compact build (a block-RAM word)
COMPACT_MAX_PLANES = 15    # a plane p scales a weight by 2^p: a 16-bit signed multiplier input


class Reason(enum.IntEnum):
    """Refusal codes of the loader (the RTL `reason` output; 0 = loaded)."""
    OK = 0
    TOO_SHORT = 1          # size below the 24-byte header
    TOO_LARGE = 2          # size above the program memory
    BAD_MAGIC = 3
    BAD_VERSION = 4
    BAD_SIZE = 5           # size differs from the header's
    BAD_CRC = 6
    TIMESTEPS = 7          # T is not the build's
    TOO_MANY_BUFFERS = 8
    TOO_MANY_OPS = 9
    BUFFER_ID = 10         # a buffer id out of range
    BUFFER_KIND = 11       # unknown buffer kind
    BUFFER_SIZE = 12       # tokens / channels / bits over the build
    ACT_MEMORY = 13        # activation words over the build
    INPUT_KIND = 14        # input buffer is INT
    OUTPUT = 15            # output not INT, or not the dst of the single READOUT
    OPCODE = 16
    SOURCES = 17           # number of sources
    ATTN_MODE = 18         # unknown attention mode / SDSA variant
    LIF = 19               # invalid LIF parameters
    LIF_BUILD = 20         # LIF width / reset / signed / current width not the build's
    SHAPE = 21             # tokens or channels do not match
    BLOB_RANGE = 22        # weights or biases outside the blob
    BIAS_ROWS = 23
    WEIGHT_RANGE = 24      # a weight outside weight_bits
    WEIGHT_BITS = 25       # weight_bits 0 or over the build
    BIAS_RANGE = 26        # a bias outside bias_width
    V0 = 27                # v0 outside the W-bit membrane
    REPEAT = 28            # repeat not 1 and not a positive multiple of lanes
    SIZE_LIMIT = 29        # n_in / neurons / readout outputs over the build
    WEIGHT_MEMORY = 30
    BIAS_MEMORY = 31
    NO_ATTENTION = 32      # ATTENTION op on a build without an attention core
    ATTN_SHAPE = 33        # tokens / channels per head not the core's
    ATTN_BLOCK = 34        # block 0, over the core's, or not dividing T
    INT_READ = 35          # an op reads an INT buffer
    UNWRITTEN = 36         # an op reads a buffer nothing wrote before it
    INT_WRITE = 37         # an op other than READOUT writes an INT buffer (or READOUT not INT)
    PLANES = 38            # a LINEAR / READOUT source with more bit planes than the engine
                           # shifts (compact: more channel-planes than its event list holds)
    OP_BUILD = 39          # an op this build does not execute (compact builds: no ADD, no
                           # LINEAR into a UINT buffer)


class LoadError(ProgramError):
    """A refused LOAD: `code` is the RTL's reason code (`Reason`)."""

    def __init__(self, code: Reason, message: str):
        super().__init__(message)
        self.code = Reason(code)


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True)
class AcceleratorConfig:
    """The parameters of one accelerator build (every field checked, ValueError naming it)."""
    timesteps: int
    lanes: int = 4
    width: int = 16
    current_width: int = 18
    reset: str = "zero"
    signed_spikes: bool = False
    weight_width: int = 8
    bias_width: int = 24
    max_in: int = 64
    max_neurons: int = 64
    max_tokens: int = 8
    max_readout: int = 16
    max_planes: int = 8         # bit planes of a LINEAR / READOUT source (UINT bits; signed: 2)
    weight_words: int = 4096
    bias_words: int = 512
    act_words: int = 8192
    max_buffers: int = 16
    max_ops: int = 16
    program_bytes: int = 65536
    attn_tokens: int | None = 8
    attn_dim: int = 16
    attn_max_block: int = 4
    attn_reset: str = "zero"
    engine_lanes: int | None = None  # the engine's accumulate width (None: lanes)
    # The compact build (rtl/compact.py, docs/compact.md): one neuron a cycle, weights and
    # biases read in place from the program image, LINEAR / READOUT / ENCODE only, for small
    # FPGAs (the iCE40UP5K). Its activation words hold COMPACT_ACT_LANES channels.
    compact: bool = False
    max_input: int | None = None     # input elements per timestep (None: max_tokens·max_channels)
    max_events: int | None = None    # compact: the event list, channels x planes of a source

    def __post_init__(self):
        def need(name, ok, what):
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"AcceleratorConfig.{name} must be {what}, got {value!r}")
        pos = lambda v: _is_int(v) and v >= 1          # noqa: E731
        need("timesteps", lambda v: pos(v) and v < 1 << 16, "an integer in [1, 65535]")
        need("lanes", lambda v: pos(v) and v & (v - 1) == 0, "a power of two")
        need("width", lambda v: _is_int(v) and 2 <= v <= 32, "an integer in [2, 32]")
        need("current_width", lambda v: _is_int(v) and 2 <= v <= 32, "an integer in [2, 32]")
        need("reset", lambda v: v in RESET_MODES, f"one of {RESET_MODES}")
        need("signed_spikes", lambda v: isinstance(v, bool), "a bool")
        need("weight_width", lambda v: _is_int(v) and 2 <= v <= 16, "an integer in [2, 16]")
        need("bias_width", lambda v: _is_int(v) and 2 <= v <= 32, "an integer in [2, 32]")
        need("max_planes", lambda v: _is_int(v) and 1 <= v <= 16, "an integer in [1, 16]")
        for name in ("max_in", "max_tokens", "max_readout", "weight_words", "bias_words",
                     "act_words", "max_ops"):
            need(name, lambda v: pos(v) and v < 1 << 16 if name.startswith("max") else pos(v),
                 "a positive integer" + (" < 65536" if name.startswith("max") else ""))
        need("max_neurons", lambda v: pos(v) and v % self.lanes == 0 and v < 1 << 16,
             f"a positive multiple of lanes={self.lanes} below 65536")
        need("max_buffers", lambda v: pos(v) and v <= 256, "an integer in [1, 256] (u8 ids)")
        need("program_bytes", lambda v: _is_int(v) and HEADER.size <= v <= 1 << 32,
             f"an integer in [{HEADER.size}, 2^32]")
        need("attn_tokens", lambda v: v is None or pos(v), "None or a positive integer")
        need("attn_dim", pos, "a positive integer")
        need("attn_max_block", lambda v: pos(v) and v <= self.timesteps,
             f"an integer in [1, timesteps={self.timesteps}]")
        need("attn_reset", lambda v: v in RESET_MODES, f"one of {RESET_MODES}")
        need("engine_lanes", lambda v: v is None or (pos(v) and v & (v - 1) == 0 and
                                                     v >= self.lanes),
             f"None or a power of two >= lanes={self.lanes}")
        need("compact", lambda v: isinstance(v, bool), "a bool")
        need("max_input", lambda v: v is None or (pos(v) and v < 1 << 24),
             "None or a positive integer below 2^24")
        need("max_events", lambda v: v is None or (pos(v) and v < 1 << 16),
             "None or a positive integer below 65536")
        if self.compact:
            # what the compact datapath is built for (rtl/compact.py)
            need("lanes", lambda v: v == 1, "1 in a compact build (one neuron a cycle)")
            need("engine_lanes", lambda v: v is None, "None in a compact build")
            need("attn_tokens", lambda v: v is None, "None in a compact build (no attention)")
            need("weight_width", lambda v: v <= 8, "at most 8 in a compact build (int8 weights)")
            need("max_planes", lambda v: v <= COMPACT_MAX_PLANES,
                 f"at most {COMPACT_MAX_PLANES} in a compact build")
            # the firmware keeps two words a buffer in its 240-word scratch memory, an op's
            # cycles in two of its host block RAM's 16-bit words (from word 32 of 256), and
            # multiplies 16-bit operands (the input's and the activation memory's sizes)
            need("max_buffers", lambda v: v <= 64, "at most 64 in a compact build")
            need("max_ops", lambda v: v <= 64, "at most 64 in a compact build")
            need("act_words", lambda v: v * self.timesteps < 1 << 16,
                 f"below 65536 / T = {(1 << 16) // self.timesteps} in a compact build")
            need("max_tokens", lambda v: v * self.max_channels * self.timesteps < 1 << 16,
                 "such that T x max_tokens x max_channels < 65536 in a compact build")

    @property
    def eng_lanes(self) -> int:
        """Lanes of the engine's weight words and accumulators: a multiple of `lanes`, so an
        event adds `eng_lanes` weights a cycle; its drained beats are split into lane groups."""
        return self.lanes if self.engine_lanes is None else self.engine_lanes

    @property
    def act_lanes(self) -> int:
        """Channels of one activation word: `lanes`, or COMPACT_ACT_LANES in a compact build."""
        return COMPACT_ACT_LANES if self.compact else self.lanes

    @property
    def events(self) -> int:
        """Entries of a compact build's event list: the (channel, plane) pairs of one step."""
        return self.max_in * self.max_planes if self.max_events is None else self.max_events

    @property
    def input_elements(self) -> int:
        """Elements the input memory holds: T x the input buffer's tokens x channels."""
        per_step = (self.max_tokens * self.max_channels if self.max_input is None
                    else self.max_input)
        return self.timesteps * per_step

    @property
    def max_channels(self) -> int:
        """Widest buffer the build holds (inputs of a linear or outputs of one)."""
        return max(self.max_in, self.max_neurons, self.max_readout)

    @classmethod
    def for_programs(cls, *programs: Program, lanes: int = 4, pow2_depths: bool = True,
                     compact: bool = False, **overrides) -> "AcceleratorConfig":
        """The smallest build that runs every given program (memory depths and table sizes
        rounded up to powers of two); `overrides` replace computed fields. With
        `pow2_depths=False` the memory depths (weight / bias / activation words, program
        bytes) are the programs' exact needs: fewer block RAMs, no room for larger programs.
        `compact=True`: the compact build (one lane, the input memory sized to the largest
        input buffer); its programs may hold LINEAR and READOUT ops only."""
        if not programs:
            raise ValueError("for_programs needs at least one Program")
        if not isinstance(pow2_depths, bool):
            raise ValueError(f"pow2_depths must be a bool, got {pow2_depths!r}")
        if not isinstance(compact, bool):
            raise ValueError(f"compact must be a bool, got {compact!r}")
        if compact:
            pow2_depths = False      # a compact build is sized to its programs exactly
            other = sorted({op.op.name for p in programs for op in p.ops
                            if op.op not in (Op.LINEAR, Op.READOUT)})
            if other:
                raise ValueError(f"a compact build runs LINEAR and READOUT ops only; the "
                                 f"programs hold {', '.join(other)}")
            lanes = 1
        depth = _pow2 if pow2_depths else int
        Ts = {p.timesteps for p in programs}
        if len(Ts) != 1 and "timesteps" not in overrides:
            raise ValueError(f"programs have different timesteps {sorted(Ts)}: one build runs "
                             "one T")
        T = overrides.get("timesteps", Ts.pop())

        def one(values, what, default):
            values = set(values)
            if len(values) > 1:
                raise ValueError(f"programs need different {what} {sorted(map(str, values))}: "
                                 "one build has one")
            return values.pop() if values else default

        lin = [op for p in programs for op in p.ops if op.op == Op.LINEAR]
        att = [(p, op) for p in programs for op in p.ops if op.op == Op.ATTENTION]
        mat = [(p, op) for p in programs for op in p.ops if op.op in (Op.LINEAR, Op.READOUT)]
        width = one([op.lif.width for op in lin] + [op.lif.width for _, op in att],
                    "LIF widths", 16)
        kw = dict(timesteps=T, lanes=lanes, width=width,
                  reset=one([op.lif.reset for op in lin], "LINEAR resets", "zero"),
                  signed_spikes=one([op.lif.signed_spikes for op in lin], "signed spikes",
                                    False))
        kw["current_width"] = max([op.lif.in_width for op in lin], default=width)
        kw["weight_width"] = max([2] + [op.weight_bits for _, op in mat])
        bias_bits = [2]
        for p, op in mat:
            b = p.bias(op)
            if b is not None and b.size:
                bias_bits.append(max(int(b.max()).bit_length(), int(~b.min()).bit_length()) + 1)
        kw["bias_width"] = max(bias_bits)
        kw["max_in"] = max([1] + [op.n_in for _, op in mat])
        neurons = max([lanes] + [op.n_out * op.repeat for op in lin])
        kw["max_neurons"] = -(-neurons // lanes) * lanes
        kw["max_tokens"] = max(b.tokens for p in programs for b in p.buffers)
        kw["max_readout"] = max([1] + [op.n_out for _, op in mat if op.op == Op.READOUT])
        kw["max_planes"] = max([1] + [buffer_planes(p.buffers[op.src[0]].kind,
                                                    p.buffers[op.src[0]].bits)
                                      for p, op in mat])
        kw["max_buffers"] = min(256, _pow2(max(len(p.buffers) for p in programs)))
        kw["max_ops"] = _pow2(max(len(p.ops) for p in programs))
        kw["program_bytes"] = depth(max(len(p.to_bytes()) for p in programs))
        if att:
            kw["attn_tokens"] = one([p.buffers[op.dst].tokens for p, op in att],
                                    "attention tokens", 8)
            kw["attn_dim"] = one([p.buffers[op.dst].channels // max(1, op.heads)
                                  for p, op in att], "attention head dims", 16)
            kw["attn_max_block"] = max(op.block for _, op in att)
            kw["attn_reset"] = one([op.lif.reset for _, op in att], "attention resets", "zero")
        else:
            kw["attn_tokens"], kw["attn_max_block"] = None, min(4, T)
        if compact:
            kw["compact"] = True
            kw["max_input"] = max([1] + [p.buffers[p.input_buffer].tokens
                                         * p.buffers[p.input_buffer].channels
                                         for p in programs])
            kw["max_events"] = max([1] + [p.buffers[op.src[0]].channels
                                          * buffer_planes(p.buffers[op.src[0]].kind,
                                                          p.buffers[op.src[0]].bits)
                                          for p, op in mat])
        kw.update(overrides)
        # Memory depths from the layouts of this (possibly overridden) shape.
        probe = cls(**{**kw, "weight_words": 1, "bias_words": 1, "act_words": 1})
        words = [_layout_sizes(p, probe) for p in programs]
        for i, name in enumerate(("weight_words", "bias_words", "act_words")):
            if name not in overrides:
                kw[name] = depth(max(max(w[i] for w in words), 1))
        return cls(**kw)


# ------------------------------------------------------------------------------- tables

@dataclass(frozen=True)
class Header:
    timesteps: int
    n_buffers: int
    n_ops: int
    input_buffer: int
    output_buffer: int
    info: tuple     # LOAD reply: T, input tokens, input channels, output tokens, output channels


@dataclass(frozen=True)
class BufferEntry:
    tokens: int
    channels: int
    kind: int       # BufKind value
    bits: int
    planes: int
    cgroups: int
    base: int


@dataclass(frozen=True)
class OpEntry:
    op: int
    n_src: int
    src0: int
    src1: int
    src2: int
    dst: int
    flags: int
    mode: int
    variant: int
    block: int
    n_in: int
    n_out: int
    repeat: int
    heads: int
    leak: int
    theta: int
    v_reset: int
    v0: int
    acc_shift: int
    cur_width: int      # LINEAR / ATTENTION: the LIF's input current width
    bias_rows: int
    weight_bits: int
    groups: int         # lane groups of n_out (the drained beats the post unit takes)
    ngroups: int
    egroups: int        # engine groups of n_out (weight words per input channel)
    wbase: int
    bbase: int


HEADER_FIELDS = tuple(f.name for f in fields(Header))
BUFFER_FIELDS = tuple(f.name for f in fields(BufferEntry))
OP_FIELDS = tuple(f.name for f in fields(OpEntry))


@dataclass
class LoadedProgram:
    header: Header
    buffers: list           # BufferEntry per buffer id
    ops: list               # OpEntry per op
    weight_words: list      # engine weight memory: a list of `lanes` ints per address
    bias_words: list        # bias memory: a list of `lanes` ints per address
    program: Program = field(repr=False, default=None)


# ------------------------------------------------------------------------------- layouts

def buffer_planes(kind: int, bits: int) -> int:
    """Activation planes of a buffer kind (INT: 0, it lives in the output memory)."""
    return {BufKind.SPIKES: 1, BufKind.SIGNED_SPIKES: 2, BufKind.UINT: bits,
            BufKind.INT: 0}[BufKind(kind)]


def _ceil(a, b):
    return -(-a // b)


def buffer_words(buf, cfg: AcceleratorConfig) -> int:
    """Activation words of one buffer (a compile.Buffer or BufferEntry)."""
    return buf.tokens * _ceil(buf.channels, cfg.act_lanes) * buffer_planes(buf.kind, buf.bits)


def pack_activation(values, entry: BufferEntry, cfg: AcceleratorConfig) -> list:
    """[T, tokens, channels] values of a buffer -> its activation words (from `entry.base`,
    relative addresses 0..), each an int of lanes·T bits."""
    x = np.asarray(values, dtype=np.int64)
    T, P = cfg.timesteps, cfg.act_lanes
    if x.shape != (T, entry.tokens, entry.channels):
        raise ValueError(f"values must be [{T}, {entry.tokens}, {entry.channels}], got {x.shape}")
    kind = BufKind(entry.kind)
    if kind == BufKind.INT:
        raise ValueError("INT buffers have no activation words (they live in the output memory)")
    pad = np.zeros((T, entry.tokens, entry.cgroups * P), dtype=np.int64)
    pad[..., :entry.channels] = x
    if kind == BufKind.SIGNED_SPIKES:
        planes = [pad == 1, pad == -1]
    else:
        planes = [(pad >> p) & 1 for p in range(entry.planes)]
    words = []
    for n in range(entry.tokens):
        for g in range(entry.cgroups):
            for plane in planes:
                word = 0
                for lane in range(P):
                    for t in range(T):
                        word |= int(plane[t, n, g * P + lane]) << (lane * T + t)
                words.append(word)
    return words


def unpack_activation(words, entry: BufferEntry, cfg: AcceleratorConfig) -> np.ndarray:
    """Inverse of `pack_activation`: relative activation words -> [T, tokens, channels]."""
    T, P = cfg.timesteps, cfg.act_lanes
    kind = BufKind(entry.kind)
    out = np.zeros((T, entry.tokens, entry.cgroups * P), dtype=np.int64)
    for n in range(entry.tokens):
        for g in range(entry.cgroups):
            for p in range(entry.planes):
                word = int(words[(n * entry.cgroups + g) * entry.planes + p])
                for lane in range(P):
                    for t in range(T):
                        bit = word >> (lane * T + t) & 1
                        if kind == BufKind.SIGNED_SPIKES:
                            out[t, n, g * P + lane] += bit if p == 0 else -bit
                        else:
                            out[t, n, g * P + lane] |= bit << p
    return out[..., :entry.channels]


def pack_weights(w, cfg: AcceleratorConfig) -> list:
    """W[n_out, n_in] -> engine words (relative address i·egroups + g, lane l = W[g·E+l, i],
    E = cfg.eng_lanes)."""
    w = np.asarray(w, dtype=np.int64)
    P = cfg.eng_lanes
    groups = _ceil(w.shape[0], P)
    pad = np.zeros((groups * P, w.shape[1]), dtype=np.int64)
    pad[:w.shape[0]] = w
    return [[int(pad[g * P + l, i]) for l in range(P)]
            for i in range(w.shape[1]) for g in range(groups)]


def pack_bias(b, cfg: AcceleratorConfig) -> list:
    """bias[rows, neurons] -> bias words (relative address row·ngroups + h, lane l =
    bias[row, h·P + l])."""
    b = np.asarray(b, dtype=np.int64)
    P = cfg.lanes
    ngroups = _ceil(b.shape[1], P)
    pad = np.zeros((b.shape[0], ngroups * P), dtype=np.int64)
    pad[:, :b.shape[1]] = b
    return [[int(pad[r, h * P + l]) for l in range(P)]
            for r in range(b.shape[0]) for h in range(ngroups)]


def _layout_sizes(prog: Program, cfg: AcceleratorConfig) -> tuple[int, int, int]:
    """(weight words, bias words, activation words) the program needs on this build."""
    P = cfg.lanes
    wwords = bwords = 0
    for op in prog.ops:
        if op.op in (Op.LINEAR, Op.READOUT):
            wwords += op.n_in * _ceil(op.n_out, cfg.eng_lanes)
            neurons = op.n_out * (op.repeat if op.op == Op.LINEAR else 1)
            bwords += op.bias_rows * _ceil(neurons, P)
    awords = sum(buffer_words(b, cfg) for b in prog.buffers)
    return wwords, bwords, awords


# ------------------------------------------------------------------------------- loader

# Program.from_bytes's refusals, by message, to the loader's reason codes.
_FROM_BYTES_REASONS = [
    (r"too short", Reason.TOO_SHORT), (r"bad magic", Reason.BAD_MAGIC),
    (r"program version", Reason.BAD_VERSION), (r"its header says", Reason.BAD_SIZE),
    (r"CRC mismatch", Reason.BAD_CRC), (r"unknown kind", Reason.BUFFER_KIND),
    (r"unknown opcode", Reason.OPCODE), (r"sources \(at most|sources, needs", Reason.SOURCES),
    (r"unknown attention mode", Reason.ATTN_MODE), (r"invalid LIF", Reason.LIF),
    (r"timesteps must be", Reason.TIMESTEPS), (r"out of range", Reason.BUFFER_ID),
    (r"token counts differ|do not match the descriptor|equal shapes", Reason.SHAPE),
    (r"weight blob", Reason.BLOB_RANGE), (r"bias_rows", Reason.BIAS_ROWS),
    (r"weights exceed", Reason.WEIGHT_RANGE), (r"weight_bits must be", Reason.WEIGHT_BITS),
    (r"divisible by heads", Reason.ATTN_SHAPE),
    (r"multiple of block|block must be", Reason.ATTN_BLOCK),
]


def _classify(message: str) -> Reason:
    for pattern, code in _FROM_BYTES_REASONS:
        if re.search(pattern, message):
            return code
    raise AssertionError(f"unclassified Program.from_bytes refusal: {message}")


def parse_image(image: bytes, cfg: AcceleratorConfig) -> Program:
    """Program.from_bytes with the loader's size limit first and reason codes attached."""
    image = bytes(image)
    if len(image) > cfg.program_bytes:
        raise LoadError(Reason.TOO_LARGE, f"program image of {len(image)} bytes exceeds the "
                                          f"{cfg.program_bytes}-byte program memory")
    try:
        return Program.from_bytes(image)
    except LoadError:
        raise
    except ProgramError as e:
        raise LoadError(_classify(str(e)), str(e)) from None


def check_capability(prog: Program, cfg: AcceleratorConfig) -> None:
    """The build-capability checks (after Program.validate): raises LoadError."""
    def fail(code, msg):
        raise LoadError(code, msg)

    T, P = prog.timesteps, cfg.lanes
    if T != cfg.timesteps:
        fail(Reason.TIMESTEPS, f"program has T={T}, this accelerator runs T={cfg.timesteps}")
    if len(prog.buffers) > cfg.max_buffers:
        fail(Reason.TOO_MANY_BUFFERS, f"program has {len(prog.buffers)} buffers, this "
                                      f"accelerator holds {cfg.max_buffers}")
    if len(prog.ops) > cfg.max_ops:
        fail(Reason.TOO_MANY_OPS, f"program has {len(prog.ops)} ops, this accelerator holds "
                                  f"{cfg.max_ops}")
    for i, b in enumerate(prog.buffers):
        if b.tokens > cfg.max_tokens or b.channels > cfg.max_channels:
            fail(Reason.BUFFER_SIZE, f"buffer {i}: {b.tokens} tokens x {b.channels} channels "
                                     f"exceeds the build's {cfg.max_tokens} x "
                                     f"{cfg.max_channels}")
        if b.kind == BufKind.UINT and b.bits < 1:
            fail(Reason.BUFFER_SIZE, f"buffer {i}: a UINT buffer needs bits >= 1")
        if b.kind == BufKind.INT and not 2 <= b.bits <= 32:
            fail(Reason.BUFFER_SIZE, f"buffer {i}: INT bits {b.bits} outside [2, 32] (the "
                                     "output memory holds 32-bit sums)")
        if i == prog.input_buffer and cfg.max_input is not None and \
                b.tokens * b.channels > cfg.max_input:
            fail(Reason.BUFFER_SIZE, f"input buffer {i}: {b.tokens} tokens x {b.channels} "
                                     f"channels exceeds the build's input memory "
                                     f"({cfg.max_input} elements a timestep)")
    awords = sum(buffer_words(b, cfg) for b in prog.buffers)
    if awords > cfg.act_words:
        fail(Reason.ACT_MEMORY, f"buffers need {awords} activation words, this accelerator "
                                f"has {cfg.act_words}")
    if prog.buffers[prog.input_buffer].kind == BufKind.INT:
        fail(Reason.INPUT_KIND, f"input buffer {prog.input_buffer} is INT: inputs must be "
                                "spikes or unsigned integers")
    wwords = bwords = 0
    written = {prog.input_buffer}
    readouts = []
    for i, op in enumerate(prog.ops):
        where = f"op {i} ({op.op.name})"
        dst = prog.buffers[op.dst]
        for s in op.src:
            if prog.buffers[s].kind == BufKind.INT:
                fail(Reason.INT_READ, f"{where} reads INT buffer {s}: readout sums are not "
                                      "an op input")
            if s not in written:
                fail(Reason.UNWRITTEN, f"{where} reads buffer {s} before any op wrote it")
        if (dst.kind == BufKind.INT) != (op.op == Op.READOUT):
            fail(Reason.INT_WRITE, f"{where} writes buffer {op.dst} of kind {dst.kind.name}: "
                                   "only READOUT writes, and writes only, INT buffers")
        if op.op in (Op.LINEAR, Op.READOUT):
            lif = op.lif
            sb = prog.buffers[op.src[0]]
            if buffer_planes(sb.kind, sb.bits) > cfg.max_planes:
                fail(Reason.PLANES, f"{where}: its source has {buffer_planes(sb.kind, sb.bits)} "
                                    f"bit planes, the build's engine takes {cfg.max_planes}")
            if cfg.max_events is not None and \
                    sb.channels * buffer_planes(sb.kind, sb.bits) > cfg.max_events:
                fail(Reason.PLANES, f"{where}: its source has {sb.channels} channels x "
                                    f"{buffer_planes(sb.kind, sb.bits)} planes, the build's "
                                    f"event list holds {cfg.max_events}")
            if op.op == Op.LINEAR:
                if lif.width != cfg.width or lif.reset != cfg.reset or \
                        lif.signed_spikes != cfg.signed_spikes:
                    fail(Reason.LIF_BUILD, f"{where}: LIF width {lif.width}, reset {lif.reset}"
                                           f", signed {lif.signed_spikes}; this accelerator "
                                           f"has {cfg.width}, {cfg.reset}, {cfg.signed_spikes}")
                if lif.reset == "zero" and lif.v_reset != 0:
                    fail(Reason.LIF_BUILD, f"{where}: v_reset {lif.v_reset}; this "
                                           "accelerator's LIF resets to 0")
                if lif.in_width > cfg.current_width:
                    fail(Reason.LIF_BUILD, f"{where}: current width {lif.in_width} exceeds "
                                           f"the build's {cfg.current_width}")
                lo, hi = signed_range(cfg.width)
                if not lo <= op.v0 <= hi:
                    fail(Reason.V0, f"{where}: v0={op.v0} outside the {cfg.width}-bit membrane")
                if op.repeat != 1 and (op.repeat < 1 or op.repeat % P):
                    fail(Reason.REPEAT, f"{where}: repeat {op.repeat} must be 1 or a positive "
                                        f"multiple of lanes={P}")
            neurons = op.n_out * (op.repeat if op.op == Op.LINEAR else 1)
            if op.n_in > cfg.max_in:
                fail(Reason.SIZE_LIMIT, f"{where}: {op.n_in} inputs, the build takes "
                                        f"{cfg.max_in}")
            limit = cfg.max_neurons if op.op == Op.LINEAR else cfg.max_readout
            if neurons > limit:
                fail(Reason.SIZE_LIMIT, f"{where}: {neurons} outputs, the build has {limit}")
            if not 1 <= op.weight_bits <= cfg.weight_width:
                fail(Reason.WEIGHT_BITS, f"{where}: weight_bits {op.weight_bits} outside "
                                         f"[1, {cfg.weight_width}]")
            bias = prog.bias(op)
            lo, hi = signed_range(cfg.bias_width)
            if bias is not None and bias.size and (bias.min() < lo or bias.max() > hi):
                fail(Reason.BIAS_RANGE, f"{where}: biases outside signed {cfg.bias_width} bits")
            if cfg.compact:        # weights and biases are read in place from the image
                if op.op == Op.LINEAR and dst.kind == BufKind.UINT:
                    fail(Reason.OP_BUILD, f"{where}: a compact build writes a LINEAR's spikes "
                                          "to SPIKES or SIGNED_SPIKES buffers only")
            else:
                wwords += op.n_in * _ceil(op.n_out, cfg.eng_lanes)
                if wwords > cfg.weight_words:
                    fail(Reason.WEIGHT_MEMORY, f"{where}: weights need {wwords} words, the "
                                               f"build has {cfg.weight_words}")
                bwords += op.bias_rows * _ceil(neurons, P)
                if bwords > cfg.bias_words:
                    fail(Reason.BIAS_MEMORY, f"{where}: biases need {bwords} words, the build "
                                             f"has {cfg.bias_words}")
            if op.op == Op.READOUT:
                readouts.append(i)
        elif op.op == Op.ADD and cfg.compact:
            fail(Reason.OP_BUILD, f"{where}: a compact build runs LINEAR and READOUT only")
        elif op.op == Op.ATTENTION:
            lif = op.lif
            if cfg.attn_tokens is None:
                fail(Reason.NO_ATTENTION, f"{where}: this accelerator has no attention core")
            if dst.tokens != cfg.attn_tokens or dst.channels != op.heads * cfg.attn_dim:
                fail(Reason.ATTN_SHAPE, f"{where}: {dst.tokens} tokens x "
                                        f"{dst.channels // op.heads} channels per head, the "
                                        f"core takes {cfg.attn_tokens} x {cfg.attn_dim}")
            if op.block > cfg.attn_max_block:
                fail(Reason.ATTN_BLOCK, f"{where}: block {op.block} exceeds the core's "
                                        f"{cfg.attn_max_block}")
            if lif.width != cfg.width or lif.reset != cfg.attn_reset or lif.signed_spikes or \
                    (lif.reset == "zero" and lif.v_reset != 0):
                fail(Reason.LIF_BUILD, f"{where}: LIF width {lif.width}, reset {lif.reset}, "
                                       f"signed {lif.signed_spikes}, v_reset {lif.v_reset}; "
                                       f"the attention core has {cfg.width}, "
                                       f"{cfg.attn_reset}, unsigned, 0")
        written.add(op.dst)
    out = prog.buffers[prog.output_buffer]
    if len(readouts) != 1 or out.kind != BufKind.INT or \
            prog.ops[readouts[0]].dst != prog.output_buffer:
        fail(Reason.OUTPUT, f"output buffer {prog.output_buffer} must be INT and written by "
                            f"the program's single READOUT ({len(readouts)} READOUT ops)")


def _op_entry(op, cfg, wbase, bbase) -> OpEntry:
    P = cfg.lanes
    src = tuple(op.src) + (0,) * (3 - len(op.src))
    e = dict.fromkeys(OP_FIELDS, 0)
    e.update(op=int(op.op), n_src=len(op.src), src0=src[0], src1=src[1], src2=src[2],
             dst=op.dst, leak=NO_LEAK)
    if op.lif is not None:      # LINEAR, ATTENTION
        lif = op.lif
        e.update(flags=FLAG_SIGNED * lif.signed_spikes | FLAG_RESET_ZERO * (lif.reset == "zero"),
                 leak=NO_LEAK if lif.leak_shift is None else lif.leak_shift,
                 theta=lif.theta, v_reset=lif.v_reset, cur_width=lif.in_width)
    if op.op == Op.ATTENTION:
        e.update(mode=ATTN_MODES[op.mode], variant=SDSA_VARIANTS[op.variant], block=op.block,
                 heads=op.heads)
    if op.op in (Op.LINEAR, Op.READOUT):
        neurons = op.n_out * (op.repeat if op.op == Op.LINEAR else 1)
        e.update(n_in=op.n_in, n_out=op.n_out, bias_rows=op.bias_rows,
                 weight_bits=op.weight_bits, groups=_ceil(op.n_out, P),
                 ngroups=_ceil(neurons, P), egroups=_ceil(op.n_out, cfg.eng_lanes),
                 wbase=wbase, bbase=bbase if op.bias_rows else 0)
        e["flags"] |= FLAG_BIAS * bool(op.bias_rows)
        if op.op == Op.LINEAR:
            e.update(repeat=op.repeat, v0=op.v0, acc_shift=op.acc_shift)
    return OpEntry(**e)


def program_loader(image: bytes, cfg: AcceleratorConfig) -> LoadedProgram:
    """LOAD: check `image` for this build and decode it (raises LoadError, a ProgramError)."""
    prog = parse_image(image, cfg)
    check_capability(prog, cfg)
    P = cfg.act_lanes
    buffers, base = [], 0
    for b in prog.buffers:
        planes = buffer_planes(b.kind, b.bits)
        entry = BufferEntry(b.tokens, b.channels, int(b.kind), b.bits, planes,
                            _ceil(b.channels, P), 0 if b.kind == BufKind.INT else base)
        buffers.append(entry)
        base += buffer_words(b, cfg)
    ops, wwords, bwords = [], [], []
    for op in prog.ops:
        ops.append(_op_entry(op, cfg, len(wwords), len(bwords)))
        if op.op in (Op.LINEAR, Op.READOUT):
            wwords += pack_weights(prog.weights(op), cfg)
            if op.bias_rows:
                bwords += pack_bias(prog.bias(op), cfg)
    ib, ob = prog.buffers[prog.input_buffer], prog.buffers[prog.output_buffer]
    header = Header(prog.timesteps, len(prog.buffers), len(prog.ops), prog.input_buffer,
                    prog.output_buffer, (prog.timesteps, ib.tokens, ib.channels, ob.tokens,
                                         ob.channels))
    return LoadedProgram(header, buffers, ops, wwords, bwords, prog)


def loader_cycles(loaded, cfg: AcceleratorConfig) -> int:
    """Cycles of the RTL ProgramLoader from `start` to `done` on an accepted image
    (`loaded`: a LoadedProgram or the image bytes)."""
    if not isinstance(loaded, LoadedProgram):
        loaded = program_loader(loaded, cfg)
    return _rtl_cycles(loaded, cfg)


# RTL ProgramLoader timing (rtl/program_loader.py): one byte issued a cycle through registered
# prog_addr/prog_en and used three cycles later (the address register, the synchronous read
# port, then the `byte_q` register), so a fetch (CRC pass, buffer entry, op descriptor) uses
# its last byte 3 cycles after issuing it. Every check is a registered flag; a check chain
# (header, op part A, op part B) is loaded with its flags, then checks one a cycle. The header
# waits 3 cycles for its flags, a buffer 2 for its activation sum and its flag, an op 2 (in
# O_READ) for its info flags. A copy's walker emits a slot a cycle into an issue stage; an
# element is assembled into a register, range-checked into a flag a cycle later and
# lane-packed (or refused) a cycle after that; a copy ends (leaves COPY, for the next op or
# the bias copy's setup) 7 cycles after its last slot.
HEADER_CHECKS, OP_FETCH, OP_CHECKS, OP_MUL, OP_READ = 8, 51, 25, 8, 7
HEADER_WAIT = 3             # H_WAIT0, H_WAIT1, H_LOAD
BUF_FETCH = 11              # 8 bytes issued, the last used 3 cycles later
BUF_SUM = 2                 # act_sum, then its ACT_MEMORY flag, settle
FETCH_DRAIN = 3             # CRC pass: cycles after the last issue until the last byte is used
COPY_DRAIN = 7              # a copy: cycles after its last slot until it ends
BIAS_SETUP = 1              # the bias copy is set up in a state of its own


def _copy_cycles(columns, real, bytes_per, slots) -> int:
    """One copy (weights or biases): `columns` of `slots` slots, `real` of them elements of
    `bytes_per` bytes, one issue a cycle (a byte or a padding slot), then the drain."""
    if not (slots and columns):
        return 1
    return columns * (real * bytes_per + slots - real) + COPY_DRAIN


def _rtl_cycles(loaded: LoadedProgram, cfg: AcceleratorConfig) -> int:
    size = len(loaded.program.to_bytes())
    cycles = (1 + (size + 1 + FETCH_DRAIN) + HEADER_WAIT + HEADER_CHECKS
              + 1)                                  # size, CRC pass, header, setup
    per_buffer = (BUF_FETCH + 2 + cfg.max_tokens.bit_length() + 1 + 8 + BUF_SUM
                  + 1)      # fetch, checks, muls, sum, write
    cycles += len(loaded.buffers) * per_buffer + 1
    for op, e in zip(loaded.program.ops, loaded.ops):
        cycles += OP_FETCH + OP_CHECKS + OP_MUL + OP_READ + 1
        if op.op in (Op.LINEAR, Op.READOUT):
            bpw = 1 if op.weight_bits <= 8 else 2
            cycles += _copy_cycles(op.n_in, op.n_out, bpw, e.egroups * cfg.eng_lanes)
            if op.bias_rows:
                neurons = op.n_out * (op.repeat if op.op == Op.LINEAR else 1)
                cycles += BIAS_SETUP + _copy_cycles(op.bias_rows, neurons, 4,
                                                    e.ngroups * cfg.lanes)
    return cycles + 1 + 1 + 1                           # end of ops, output checks, done
