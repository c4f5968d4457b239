"""Firmware of the compact accelerator (rtl/compact.py), for its MicroEngine
(rtl/microcode.py). `firmware(cfg)` assembles it for one build: the build's limits are
immediates. It answers the accelerator's three commands:

- LOAD: the checks of `golden.program_loader` in the golden order (`parse_image`,
  `Program.from_bytes` and `validate`, then `check_capability` for a compact build), each a
  CHK with the golden `Reason`, reading the image in place; on success the activation base
  of every buffer goes to scratch and the host-visible sizes are set.
- RUN: ENCODE, then per op and token (bias cache fill, v0 LOAD pass) and timestep: a scan of
  the source's words into an event bank (the next timestep scanned during this one's walk),
  the walk, the error checks; READOUT totals are range-checked and written to OUTPUT.
- RESET: clears the input memory and the output.
A failing check jumps to `fail` (LOAD: BAD_PROGRAM with the reason on the REASON port; RUN:
its host error code); an abort jumps to `abort` (the units finish, then ABORTED).
"""

from __future__ import annotations

import itertools

from ..golden.compile import HEADER, MAGIC, VERSION, BufKind, Op
from ..golden.host_link import Cmd, Error, State
from ..golden.lif import signed_range
from ..golden.program_loader import COMPACT_ACT_LANES, AcceleratorConfig, Reason
from .compact import MAX_LEFT_SHIFT, PortIn, PortOut, Status, WalkMode
from .host_link import REG_OFFSET
from .microcode import Assembler, R

OP_BYTES, BUF_BYTES = 48, 8
BLOB_START = HEADER.size
MODE_LOAD, MODE_RUN = 1, 2

# scratch words (LDS / STS addresses)
SC_MODE, SC_NB, SC_NO, SC_BLOB, SC_NBLOB = 0, 1, 2, 3, 4
SC_INF, SC_OPS, SC_SATS, SC_EVENTS, SC_SKIPPED = 5, 6, 7, 8, 9
SC_OP, SC_TOK, SC_SRC_TOK, SC_DST_TOK, SC_SRC_STEP, SC_DST_STEP = 10, 11, 12, 13, 14, 15
SC_WORDS, SC_CP, SC_MODEBITS, SC_BIAS, SC_ROWS, SC_V0 = 16, 17, 18, 19, 20, 21
SC_NEURONS, SC_OPKIND, SC_T, SC_READOUTS, SC_READOUT_OP, SC_OPBASE = 22, 23, 24, 25, 26, 27
SC_NOUT, SC_TOKENS, SC_DSTBITS = 28, 29, 30
SC_BASE = 32                      # + buffer id: activation base (buffer words)



def REG(name, word=0):
    """The OUT port of register-map word `word` of register `name` (host_link.REGISTERS)."""
    return PortOut.REG0 + REG_OFFSET[name] // 4 + word


class Firmware:
    """The assembler with the firmware's own helpers (unique labels, field loads, checks)."""

    def __init__(self, cfg: AcceleratorConfig):
        self.cfg = cfg
        self.a = Assembler()
        self._ids = itertools.count()

    def uniq(self, name):
        return f"{name}_{next(self._ids)}"

    def __getattr__(self, name):
        return getattr(self.a, name)

    # checks: `cond` computed into r12, then CHK / CHKZ
    def chk_ltu(self, x, y, reason):            # x < y (unsigned), y a register or an int
        self.a.sltu(12, x, y)
        self.a.chk(12, reason)

    def chk_geu(self, x, y, reason):            # x >= y (unsigned)
        self.a.sltu(12, x, y)
        self.a.chkz(12, reason)

    def chk_leu(self, x, y_reg, reason):        # x <= y (unsigned): not y < x
        self.a.sltu(12, y_reg, R(x))
        self.a.chkz(12, reason)

    def chk_eq(self, x, y, reason):
        self.a.xor(12, x, y)
        self.a.chkz(12, reason)

    def chk_le_const(self, x, limit, reason):   # x <= limit (unsigned constant)
        if limit + 1 < 1 << 17:                 # x < limit + 1, an immediate
            self.chk_ltu(x, limit + 1, reason)
            return
        self.a.li(12, limit)
        self.chk_leu(x, 12, reason)

    def loop(self, k, limit, body, before=None):
        """for r[k] = 0 .. limit - 1 (an int, or R(reg)): `before()` (code that may set up
        `limit`) and the compare at the top, then `body()`; uses r12."""
        top, done = self.uniq("loop"), self.uniq("loop_done")
        self.a.li(k, 0)
        self.a.label(top)
        if before is not None:
            before()
        self.a.sltu(12, k, limit)
        self.a.bz(12, done)
        body()
        self.a.add(k, k, 1)
        self.a.j(top)
        self.a.label(done)

    def step_done(self, busy, error):
        """Wait for the units of `busy`, then CHK that the `error` flag is clear (BAD_INPUT)."""
        self.wait(busy)
        self.a.inp(12, PortIn.STATUS)
        self.a.and_(12, 12, int(error))
        self.a.chkz(12, Error.BAD_INPUT)

    def wait(self, mask):
        """Until the STATUS bits of `mask` are clear."""
        loop = self.uniq("wait")
        self.a.label(loop)
        self.a.inp(12, PortIn.STATUS)
        self.a.and_(12, 12, int(mask))
        self.a.bnz(12, loop)

    def buf_field(self, rd, id_reg, offset, load="ldh"):
        """rd = field of buffer `id_reg` (its 8-byte entry after the header)."""
        self.buf_fields(id_reg, rd, [(rd, offset, load)])

    def buf_fields(self, id_reg, entry, fields):
        """Fields of buffer `id_reg`: r[entry] = its entry's offset, then each (rd, offset,
        load) of `fields` (only the last may overwrite `entry`)."""
        self.a.mul(entry, id_reg, BUF_BYTES)
        for rd, offset, load in fields:
            getattr(self.a, load)(rd, entry, HEADER.size + offset)

    def planes(self, rd, kind, bits):
        """rd = activation planes of a buffer kind: UINT its bits, else (kind + 1) & 3
        (SPIKES 1, SIGNED 2, INT 0). rd must not be `kind`."""
        assert rd != kind
        done = self.uniq("planes")
        self.a.xor(12, kind, BufKind.UINT)
        self.a.mov(rd, bits)
        self.a.bz(12, done)
        self.a.add(rd, kind, 1)
        self.a.and_(rd, rd, 3)
        self.a.label(done)

    def cgroups(self, rd, channels):
        self.a.add(rd, channels, COMPACT_ACT_LANES - 1)
        self.a.shr(rd, rd, 4)

    def lds(self, rd, addr):
        self.a.lds(rd, 0, addr)

    def sts(self, rs, addr):
        self.a.sts(rs, 0, addr)


def firmware(cfg: AcceleratorConfig) -> tuple[list, dict]:
    """The firmware of the compact build `cfg`: (ROM words, labels)."""
    fw = Firmware(cfg)
    _main(fw)
    _load(fw)
    _run(fw)
    _reset_and_faults(fw)
    _sub_planes(fw)
    return fw.a.program()


def _main(fw):
    a = fw.a
    a.label("main")
    a.inp(1, PortIn.CMD)
    a.and_(2, 1, 16)
    a.bz(2, "main")
    a.and_(1, 1, 15)
    for cmd, target in ((Cmd.LOAD, "cmd_load"), (Cmd.RUN, "cmd_run"), (Cmd.RESET, "cmd_reset")):
        a.xor(2, 1, int(cmd))
        a.bz(2, target)
    a.li(2, Error.UNKNOWN_CMD)
    a.out(PortOut.CMD_DONE, 2)
    a.j("main")


def _load(fw):
    """LOAD: golden parse_image -> from_bytes -> validate -> check_capability."""
    a, cfg = fw.a, fw.cfg
    a.label("cmd_load")
    a.li(1, MODE_LOAD)
    fw.sts(1, SC_MODE)
    a.out(PortOut.LOADED, 0)
    a.inp(1, PortIn.LOAD_SIZE)                           # r1 = image size
    a.li(2, cfg.program_bytes)
    fw.chk_leu(1, 2, Reason.TOO_LARGE)
    fw.chk_geu(1, HEADER.size, Reason.TOO_SHORT)
    a.ldw(2, 0, 0)
    a.li(3, int.from_bytes(MAGIC, "little"))
    fw.chk_eq(2, R(3), Reason.BAD_MAGIC)
    a.ldh(2, 0, 4)
    fw.chk_eq(2, VERSION, Reason.BAD_VERSION)
    a.ldh(4, 0, 8)                                       # r4 = buffers
    a.ldh(5, 0, 10)                                      # r5 = ops
    a.ldw(6, 0, 16)                                      # r6 = blob bytes
    a.mul(2, 4, BUF_BYTES)
    a.mul(3, 5, OP_BYTES)
    a.add(2, 2, R(3))
    a.add(2, 2, HEADER.size)                             # r2 = blob start
    fw.chk_geu(1, R(2), Reason.BAD_SIZE)
    a.sub(3, 1, R(2))
    fw.chk_eq(3, R(6), Reason.BAD_SIZE)
    for reg, sc in ((2, SC_BLOB), (6, SC_NBLOB), (4, SC_NB), (5, SC_NO)):
        fw.sts(reg, sc)
    a.out(PortOut.CRC_START, 1)
    fw.wait(Status.CRC_BUSY)
    a.inp(3, PortIn.CRC)
    a.ldw(7, 0, 20)
    fw.chk_eq(3, R(7), Reason.BAD_CRC)

    # from_bytes: every buffer's kind, then every op's decode (opcode, sources, modes, LIF)
    def kind(fw=fw):
        fw.buf_field(8, 7, 4, "ldb")
        fw.chk_ltu(8, 4, Reason.BUFFER_KIND)
    fw.loop(7, R(4), kind)
    _each_op(fw, _decode_op)
    _validate(fw)
    _capability(fw)


def _each_op(fw, body):
    """for op i in 0..n_ops-1: r13 = its descriptor's byte address, r11 = i; `body(fw)`
    may use r1..r10 and r12; r11 and r13 are kept."""
    def op(fw=fw):
        fw.lds(1, SC_NB)
        fw.a.mul(13, 1, BUF_BYTES)
        fw.a.mul(1, 11, OP_BYTES)
        fw.a.add(13, 13, R(1))
        fw.a.add(13, 13, HEADER.size)
        body(fw)
    fw.loop(11, R(1), op, before=lambda: fw.lds(1, SC_NO))


def _decode_op(fw):
    a = fw.a
    a.ldb(1, 13, 0)                                      # opcode
    a.sub(2, 1, 1)
    fw.chk_ltu(2, 4, Reason.OPCODE)
    a.ldb(2, 13, 1)
    fw.chk_ltu(2, 4, Reason.SOURCES)
    a.ldb(2, 13, 7)
    fw.chk_ltu(2, 3, Reason.ATTN_MODE)
    a.ldb(2, 13, 15)
    fw.chk_ltu(2, 2, Reason.ATTN_MODE)
    skip = fw.uniq("no_lif")
    a.xor(2, 1, int(Op.READOUT))
    a.bz(2, skip)
    a.xor(2, 1, int(Op.ADD))
    a.bz(2, skip)
    _lif_params(fw)
    a.label(skip)


def _signed_bounds(fw, width_reg, lo, hi, wide_label):
    """r[hi] = 2^(w-1) - 1, r[lo] = -2^(w-1) for w = r[width_reg] <= 32; jumps to
    `wide_label` when w > 32 (every 32-bit value fits)."""
    a = fw.a
    a.sltu(12, width_reg, 33)
    a.bz(12, wide_label)
    a.sub(hi, width_reg, 1)
    a.li(lo, 1)
    a.shl(lo, lo, R(hi))
    a.sub(hi, lo, 1)
    a.sub(lo, 0, R(lo))


def _lif_params(fw):
    """golden check_lif_params on the op at r13 (Reason.LIF)."""
    a = fw.a
    a.ldb(3, 13, 17)                                     # width
    fw.chk_geu(3, 2, Reason.LIF)
    a.ldb(4, 13, 16)                                     # leak
    no_leak = fw.uniq("no_leak")
    a.xor(12, 4, 255)
    a.bz(12, no_leak)
    fw.chk_ltu(4, R(3), Reason.LIF)
    a.label(no_leak)
    a.ldw(4, 13, 20)                                     # theta > 0
    a.slt(12, 0, R(4))
    a.chk(12, Reason.LIF)
    wide = fw.uniq("lif_wide")
    _signed_bounds(fw, 3, 5, 6, wide)
    a.slt(12, 6, R(4))                                   # theta <= hi
    a.chkz(12, Reason.LIF)
    a.ldw(4, 13, 24)                                     # lo <= v_reset <= hi
    a.slt(12, 4, R(5))
    a.chkz(12, Reason.LIF)
    a.slt(12, 6, R(4))
    a.chkz(12, Reason.LIF)
    a.label(wide)
    a.ldb(4, 13, 18)                                     # current width (when not width)
    same = fw.uniq("cur_same")
    a.xor(12, 4, R(3))
    a.bz(12, same)
    fw.chk_geu(4, 2, Reason.LIF)
    a.label(same)


def _validate(fw):
    """golden Program.validate."""
    a = fw.a
    a.ldh(1, 0, 6)
    a.chk(1, Reason.TIMESTEPS)                           # T >= 1
    fw.lds(4, SC_NB)
    for off in (12, 13):                                 # input, output buffer ids
        a.ldb(1, 0, off)
        fw.chk_ltu(1, R(4), Reason.BUFFER_ID)
    _each_op(fw, _validate_op)


def _arity(fw, rd, op):
    a = fw.a
    done = fw.uniq("arity")
    a.li(rd, 2)
    a.xor(12, op, int(Op.ADD))
    a.bz(12, done)
    a.li(rd, 3)
    a.xor(12, op, int(Op.ATTENTION))
    a.bz(12, done)
    a.li(rd, 1)
    a.label(done)


def _modulo_zero(fw, x, y, reason):
    """CHK x % y == 0 (y >= 1) by subtraction; uses r12 and r10."""
    a = fw.a
    loop, done = fw.uniq("mod"), fw.uniq("mod_done")
    a.mov(10, x)
    a.label(loop)
    a.sltu(12, 10, R(y))
    a.bnz(12, done)
    a.sub(10, 10, R(y))
    a.j(loop)
    a.label(done)
    a.chkz(10, reason)


def _each_source(fw, body):
    """for each source k < r2 of the op at r13: r3 = its buffer id; `body(fw)` may use r3,
    r4, r6, r7, r10, r12 (r14 holds k)."""
    def source(fw=fw):
        fw.a.add(3, 13, R(14))
        fw.a.ldb(3, 3, 2)
        body(fw)
    fw.loop(14, R(2), source)


def _validate_op(fw):
    a = fw.a
    fw.lds(9, SC_NB)
    a.ldb(1, 13, 0)                                      # r1 = opcode
    a.ldb(2, 13, 1)                                      # r2 = sources
    _arity(fw, 3, 1)
    fw.chk_eq(2, R(3), Reason.SOURCES)
    _each_source(fw, lambda fw: fw.chk_ltu(3, R(9), Reason.BUFFER_ID))   # sources, dst
    a.ldb(8, 13, 5)                                      # r8 = dst
    fw.chk_ltu(8, R(9), Reason.BUFFER_ID)
    fw.buf_field(9, 8, 0)                                # r9 = dst tokens
    done_tokens = fw.uniq("tokens_done")
    a.xor(12, 1, int(Op.READOUT))
    a.bz(12, done_tokens)
    def same_tokens(fw):
        fw.buf_field(3, 3, 0)
        fw.chk_eq(3, R(9), Reason.SHAPE)
    _each_source(fw, same_tokens)
    a.label(done_tokens)
    attention, add, end = (fw.uniq(n) for n in ("attention", "add", "end"))
    a.xor(12, 1, int(Op.ATTENTION))
    a.bz(12, attention)
    a.xor(12, 1, int(Op.ADD))
    a.bz(12, add)

    # LINEAR / READOUT
    a.ldh(4, 13, 8)                                      # r4 = n_in
    a.ldh(5, 13, 10)                                     # r5 = n_out
    a.li(6, 1)
    single = fw.uniq("single")
    a.xor(12, 1, int(Op.READOUT))
    a.bz(12, single)
    a.ldb(6, 13, 12)                                     # r6 = repeat (LINEAR)
    a.label(single)
    a.mul(6, 5, R(6))                                    # r6 = want
    a.ldb(3, 13, 2)
    fw.buf_field(3, 3, 2)                                # src channels
    fw.chk_eq(3, R(4), Reason.SHAPE)
    fw.buf_field(3, 8, 2)                                # dst channels
    fw.chk_eq(3, R(6), Reason.SHAPE)
    fw.lds(7, SC_NBLOB)
    a.ldw(3, 13, 32)                                     # weight address
    fw.chk_leu(3, 7, Reason.BLOB_RANGE)
    a.sub(3, 7, R(3))                                    # bytes left in the blob
    a.ldb(10, 13, 19)                                    # r10 = weight bits
    bytes1 = fw.uniq("bytes1")
    a.sltu(12, 10, 9)
    a.bnz(12, bytes1)
    a.shr(3, 3, 1)                                       # int16: elements left
    a.label(bytes1)
    a.mul(12, 4, R(5))
    fw.chk_leu(12, 3, Reason.BLOB_RANGE)
    a.ldb(2, 13, 6)                                      # flags
    no_bias = fw.uniq("no_bias")
    fw.a.and_(2, 2, 4)
    a.bz(2, no_bias)
    a.ldb(2, 13, 40)                                     # r2 = bias rows
    a.bz(2, no_bias)
    rows_ok = fw.uniq("rows_ok")
    a.xor(12, 2, 1)
    a.bz(12, rows_ok)
    fw.chk_eq(2, R(9), Reason.BIAS_ROWS)
    a.label(rows_ok)
    a.ldw(3, 13, 36)                                     # bias address
    fw.chk_leu(3, 7, Reason.BLOB_RANGE)
    a.sub(3, 7, R(3))
    a.shr(3, 3, 2)                                       # int32 elements left
    a.mul(12, 2, R(6))
    fw.chk_leu(12, 3, Reason.BLOB_RANGE)
    a.label(no_bias)
    a.mov(12, 10)
    a.chk(12, Reason.WEIGHT_BITS)                        # weight bits >= 1
    _weight_range(fw)
    a.j(end)

    a.label(attention)
    fw.buf_field(9, 8, 2)                                # r9 = dst channels
    for k in range(3):
        a.ldb(3, 13, 2 + k)
        fw.buf_field(3, 3, 2)
        fw.chk_eq(3, R(9), Reason.ATTN_SHAPE)
    a.ldb(4, 13, 13)                                     # heads >= 1, divide the channels
    a.mov(12, 4)
    a.chk(12, Reason.ATTN_SHAPE)
    _modulo_zero(fw, 9, 4, Reason.ATTN_SHAPE)
    a.ldb(4, 13, 14)                                     # block >= 1, divides T
    a.mov(12, 4)
    a.chk(12, Reason.ATTN_BLOCK)
    a.ldh(3, 0, 6)
    _modulo_zero(fw, 3, 4, Reason.ATTN_BLOCK)
    a.j(end)

    a.label(add)
    fw.buf_field(9, 8, 2)
    for k in range(2):
        a.ldb(3, 13, 2 + k)
        fw.buf_field(3, 3, 2)
        fw.chk_eq(3, R(9), Reason.SHAPE)
    a.label(end)


def _weight_range(fw):
    """Every weight within `weight bits` (r10): int8 storage below 8 bits, int16 from 9 to
    15 (wider fits any stored value). Weights at blob + r[13]+32, n_in (r4) x n_out (r5)."""
    a = fw.a
    done = fw.uniq("wr_done")
    a.sltu(12, 10, 8)
    narrow = fw.uniq("wr_int8")
    a.bnz(12, narrow)
    a.sltu(12, 10, 16)
    a.bz(12, done)
    a.xor(12, 10, 8)
    a.bz(12, done)
    _scan_range(fw, 2)
    a.j(done)
    a.label(narrow)
    _scan_range(fw, 1)
    a.label(done)


def _scan_range(fw, size):
    """The n_in x n_out (r4 x r5) elements of `size` bytes at the weight address must lie in
    the signed range of r10 bits (Reason.WEIGHT_RANGE). Uses r1..r3, r6, r7, r12."""
    a = fw.a
    a.sub(6, 10, 1)
    a.li(7, 1)
    a.shl(7, 7, R(6))
    a.sub(6, 7, 1)                                       # r6 = hi
    a.sub(7, 0, R(7))                                    # r7 = lo
    fw.lds(1, SC_BLOB)
    a.ldw(2, 13, 32)
    a.add(1, 1, R(2))                                    # r1 = first element
    a.mul(2, 4, R(5))
    if size == 2:
        a.add(2, 2, R(2))
    a.add(2, 1, R(2))                                    # r2 = end
    _range_loop(fw, 1, 2, 3, 7, 6, size, Reason.WEIGHT_RANGE, fw.uniq("range_done"))


def _range_loop(fw, ptr, end, value, lo, hi, size, reason, done):
    """CHK (`reason`) that every signed element of `size` bytes from byte address r[ptr] up
    to r[end] lies in [r[lo], r[hi]], into r[value]; then label `done`. Uses r12."""
    a = fw.a
    loop = fw.uniq("range")
    a.label(loop)
    a.sltu(12, ptr, R(end))
    a.bz(12, done)
    getattr(a, {1: "ldb", 2: "ldh", 4: "ldw"}[size])(value, ptr, 0)
    if size < 4:
        a.sext(value, value, 8 * size)
    a.slt(12, value, R(lo))
    a.chkz(12, reason)
    a.slt(12, hi, R(value))
    a.chkz(12, reason)
    a.add(ptr, ptr, size)
    a.j(loop)
    a.label(done)


def _buffer_planes(fw, rd, id_reg):
    """rd = planes of buffer `id_reg` (the `sub_planes` subroutine: r14, r12, r15)."""
    fw.a.mov(14, id_reg)
    fw.a.jal(15, "sub_planes")
    fw.a.mov(rd, 14)


def _sub_planes(fw):
    """r14 = planes of buffer r14 (a leaf subroutine: uses r12, returns through r15)."""
    a = fw.a
    a.label("sub_planes")
    a.mul(12, 14, BUF_BYTES)
    a.ldb(14, 12, HEADER.size + 5)                       # bits
    a.ldb(12, 12, HEADER.size + 4)                       # kind
    done = fw.uniq("sub_planes")
    a.xor(12, 12, int(BufKind.UINT))
    a.bz(12, done)
    a.xor(12, 12, int(BufKind.UINT))
    a.add(14, 12, 1)
    a.and_(14, 14, 3)
    a.label(done)
    a.jr(15)


def _capability(fw):
    """golden check_capability for a compact build."""
    a, cfg = fw.a, fw.cfg
    a.ldh(1, 0, 6)
    fw.chk_eq(1, cfg.timesteps, Reason.TIMESTEPS)
    fw.lds(4, SC_NB)
    fw.chk_le_const(4, cfg.max_buffers, Reason.TOO_MANY_BUFFERS)
    fw.lds(5, SC_NO)
    fw.chk_le_const(5, cfg.max_ops, Reason.TOO_MANY_OPS)
    # buffers: sizes; activation bases into scratch; written flags cleared
    loop, done = fw.uniq("bufs"), fw.uniq("bufs_done")
    a.li(7, 0)                                           # r7 = buffer
    a.li(9, 0)                                           # r9 = activation words so far
    a.label(loop)
    a.sltu(12, 7, R(4))
    a.bz(12, done)
    fw.buf_fields(7, 8, [(1, 0, "ldh"), (2, 2, "ldh"), (3, 4, "ldb"), (5, 5, "ldb")])
    fw.chk_le_const(1, cfg.max_tokens, Reason.BUFFER_SIZE)      # tokens
    fw.chk_le_const(2, cfg.max_channels, Reason.BUFFER_SIZE)    # channels
    not_uint, not_int, sized = fw.uniq("not_uint"), fw.uniq("not_int"), fw.uniq("sized")
    a.xor(12, 3, int(BufKind.UINT))
    a.bnz(12, not_uint)
    a.mov(12, 5)
    a.chk(12, Reason.BUFFER_SIZE)                        # UINT: bits >= 1
    a.label(not_uint)
    a.xor(12, 3, int(BufKind.INT))
    a.bnz(12, not_int)
    fw.chk_geu(5, 2, Reason.BUFFER_SIZE)                 # INT: 2 <= bits <= 32
    fw.chk_ltu(5, 33, Reason.BUFFER_SIZE)
    a.label(not_int)
    if cfg.max_input is not None:
        a.ldb(6, 0, 12)
        a.xor(12, 6, R(7))
        a.bnz(12, sized)
        a.mul(6, 1, R(2))
        fw.chk_le_const(6, cfg.max_input, Reason.BUFFER_SIZE)
    a.label(sized)
    a.sts(9, 7, SC_BASE)                                 # base (INT: words 0 below)
    fw.planes(6, 3, 5)
    fw.cgroups(2, 2)
    a.mul(1, 1, R(2))
    a.mul(1, 1, R(6))
    a.add(9, 9, R(1))
    a.sts(0, 7, SC_BASE + cfg.max_buffers)               # not written
    a.add(7, 7, 1)
    a.j(loop)
    a.label(done)
    fw.chk_le_const(9, cfg.act_words, Reason.ACT_MEMORY)
    a.ldb(1, 0, 12)                                      # input buffer: not INT, written
    fw.buf_field(2, 1, 4, "ldb")
    fw.chk_ltu(2, int(BufKind.INT), Reason.INPUT_KIND)
    a.li(2, 1)
    a.sts(2, 1, SC_BASE + cfg.max_buffers)
    a.li(1, 0)
    fw.sts(1, SC_READOUTS)
    _each_op(fw, _capability_op)
    # exactly one READOUT, writing the INT output buffer
    fw.lds(1, SC_READOUTS)
    fw.chk_eq(1, 1, Reason.OUTPUT)
    a.ldb(2, 0, 13)
    fw.buf_field(3, 2, 4, "ldb")
    fw.chk_eq(3, int(BufKind.INT), Reason.OUTPUT)
    fw.lds(3, SC_READOUT_OP)
    fw.chk_eq(3, R(2), Reason.OUTPUT)
    _loaded(fw)


def _capability_op(fw):
    a, cfg = fw.a, fw.cfg
    W = cfg.max_buffers
    a.ldb(1, 13, 0)                                      # r1 = opcode
    a.ldb(2, 13, 1)                                      # r2 = sources
    def readable(fw):
        fw.buf_field(4, 3, 4, "ldb")
        fw.chk_ltu(4, int(BufKind.INT), Reason.INT_READ)
        fw.a.lds(4, 3, SC_BASE + W)
        fw.a.chk(4, Reason.UNWRITTEN)
    _each_source(fw, readable)
    a.ldb(8, 13, 5)                                      # r8 = dst
    fw.buf_field(3, 8, 4, "ldb")
    a.xor(3, 3, int(BufKind.INT))                        # 0: dst is INT
    a.xor(4, 1, int(Op.READOUT))                         # 0: READOUT
    a.sltu(3, 0, R(3))
    a.sltu(4, 0, R(4))
    fw.chk_eq(3, R(4), Reason.INT_WRITE)
    other, written = fw.uniq("cap_other"), fw.uniq("written")
    a.xor(12, 1, int(Op.ADD))
    a.bz(12, other)
    a.xor(12, 1, int(Op.ATTENTION))
    a.bz(12, other)
    a.ldb(3, 13, 2)
    _buffer_planes(fw, 4, 3)
    fw.chk_le_const(4, cfg.max_planes, Reason.PLANES)
    if cfg.max_events is not None:
        fw.buf_field(3, 3, 2)                            # channels x planes <= the events
        a.mul(4, 4, R(3))
        fw.chk_le_const(4, cfg.max_events, Reason.PLANES)
    a.li(6, 1)                                           # r6 = repeat (READOUT 1)
    readout = fw.uniq("cap_readout")
    a.xor(12, 1, int(Op.READOUT))
    a.bz(12, readout)
    a.ldb(3, 13, 17)                                     # LIF of the build
    fw.chk_eq(3, cfg.width, Reason.LIF_BUILD)
    a.ldb(3, 13, 6)
    fw.a.and_(4, 3, 2)                                    # reset to v_reset ("zero")
    a.sltu(4, 0, R(4))
    fw.chk_eq(4, int(cfg.reset == "zero"), Reason.LIF_BUILD)
    fw.a.and_(4, 3, 1)
    fw.chk_eq(4, int(cfg.signed_spikes), Reason.LIF_BUILD)
    fw.a.and_(4, 3, 2)                                   # reset to v_reset: only to 0 here
    no_vreset = fw.uniq("no_vreset")
    a.bz(4, no_vreset)
    a.ldw(4, 13, 24)
    a.chkz(4, Reason.LIF_BUILD)
    a.label(no_vreset)
    a.ldb(3, 13, 18)
    fw.chk_le_const(3, cfg.current_width, Reason.LIF_BUILD)
    lo, hi = signed_range(cfg.width)
    a.ldw(3, 13, 28)                                     # v0
    a.li(4, lo)
    a.slt(12, 3, R(4))
    a.chkz(12, Reason.V0)
    a.li(4, hi)
    a.slt(12, 4, R(3))
    a.chkz(12, Reason.V0)
    a.ldb(6, 13, 12)                                     # repeat >= 1 (one lane)
    a.mov(12, 6)
    a.chk(12, Reason.REPEAT)
    a.label(readout)
    a.ldh(3, 13, 8)
    fw.chk_le_const(3, cfg.max_in, Reason.SIZE_LIMIT)
    a.ldh(5, 13, 10)
    a.mul(5, 5, R(6))                                    # r5 = neurons
    limit_done = fw.uniq("limit")
    a.li(4, cfg.max_readout)
    a.xor(12, 1, int(Op.READOUT))
    a.bz(12, limit_done)
    a.li(4, cfg.max_neurons)
    a.label(limit_done)
    fw.chk_leu(5, 4, Reason.SIZE_LIMIT)
    a.ldb(3, 13, 19)
    fw.chk_le_const(3, cfg.weight_width, Reason.WEIGHT_BITS)
    _bias_range(fw)
    readout2 = fw.uniq("readout2")
    a.xor(12, 1, int(Op.READOUT))
    a.bz(12, readout2)
    fw.buf_field(3, 8, 4, "ldb")                         # a LINEAR writes spikes, not UINT
    fw.chk_ltu(3, int(BufKind.UINT), Reason.OP_BUILD)
    a.j(written)
    a.label(readout2)
    fw.lds(3, SC_READOUTS)
    a.add(3, 3, 1)
    fw.sts(3, SC_READOUTS)
    fw.sts(8, SC_READOUT_OP)
    a.j(written)
    a.label(other)
    a.li(12, 0)
    a.xor(3, 1, int(Op.ADD))
    a.bz(3, "fail_op_build")
    a.chk(12, Reason.NO_ATTENTION)                       # ATTENTION: no attention core
    a.label(written)
    a.li(3, 1)
    a.sts(3, 8, SC_BASE + W)


def _bias_range(fw):
    """Every bias of the op at r13 within the build's bias width (r5 = neurons a row)."""
    a, cfg = fw.a, fw.cfg
    done = fw.uniq("bias_done")
    a.ldb(2, 13, 6)
    fw.a.and_(2, 2, 4)
    a.bz(2, done)
    a.ldb(2, 13, 40)                                     # rows
    a.mul(2, 2, R(5))                                    # values
    fw.lds(3, SC_BLOB)
    a.ldw(4, 13, 36)
    a.add(3, 3, R(4))                                    # r3 = first value
    a.add(2, 2, R(2))
    a.add(2, 2, R(2))
    a.add(2, 3, R(2))                                    # r2 = end
    lo, hi = signed_range(cfg.bias_width)
    a.li(6, lo)
    a.li(7, hi)
    _range_loop(fw, 3, 2, 4, 6, 7, 4, Reason.BIAS_RANGE, done)


def _answer(fw, state):
    """Set the device state, ACK the command, back to the command loop."""
    fw.a.li(1, state)
    fw.a.out(PortOut.STATE, 1)
    fw.a.out(PortOut.CMD_DONE, 0)
    fw.a.j("main")


def _count(fw, sc, value, name):
    """scratch[sc] += r[value] (or an int) and the register-map word `name` <- the total."""
    fw.lds(2, sc)
    fw.a.add(2, 2, value)
    fw.sts(2, sc)
    fw.a.out(REG(name), 2)


def _loaded(fw):
    """A LOAD passed: the LOAD reply, sizes, READY."""
    a = fw.a
    # the LOAD reply: T, input tokens, channels, output tokens, channels (u16 each)
    a.ldb(1, 0, 12)                                      # input buffer
    a.ldh(2, 0, 6)
    fw.buf_field(3, 1, 0)
    a.shl(5, 3, 16)
    a.or_(5, 5, R(2))
    a.out(REG("load_info"), 5)                           # T | tokens << 16
    fw.buf_field(4, 1, 2)
    a.mul(3, 3, R(4))
    a.mul(3, 3, R(2))
    a.add(3, 3, R(3))
    a.out(PortOut.INPUT_SIZE, 3)                         # 2·T·tokens·channels
    a.ldb(1, 0, 13)
    fw.buf_field(3, 1, 0)
    a.shl(3, 3, 16)
    a.or_(3, 3, R(4))
    a.out(REG("load_info", 1), 3)                        # channels | output tokens << 16
    fw.buf_field(3, 1, 2)
    a.out(REG("load_info", 2), 3)                        # output channels
    fw.lds(1, SC_NO)
    a.shl(1, 1, 2)
    a.out(PortOut.LAYERS_SIZE, 1)
    a.out(PortOut.OUTPUT_SIZE, 0)
    a.out(PortOut.RAN, 0)
    a.out(PortOut.REASON, 0)
    a.out(PortOut.CLEAR_INPUT, 0)                        # the input reads 0 after a LOAD
    fw.wait(Status.CLEAR_BUSY)
    a.li(1, 1)
    a.out(PortOut.LOADED, 1)
    _answer(fw, State.READY)


def _run(fw):
    a = fw.a
    a.label("cmd_run")
    a.inp(1, PortIn.STATUS)
    fw.a.and_(1, 1, int(Status.LOADED))
    ok = fw.uniq("run_ok")
    a.bnz(1, ok)
    a.li(2, Error.NO_PROGRAM)
    a.j("answer_error")
    a.label(ok)
    a.li(1, MODE_RUN)
    fw.sts(1, SC_MODE)
    a.li(1, 1)
    a.out(PortOut.RUN, 1)
    a.out(PortOut.LIF_CLEAR, 1)
    fw.sts(0, SC_EVENTS)
    fw.sts(0, SC_SKIPPED)
    _encode(fw)
    _each_op(fw, _run_op)
    # finish: counters, output size, DONE
    a.out(PortOut.RUN, 0)
    a.inp(1, PortIn.CYCLES)
    a.out(REG("perf_cycles"), 1)
    a.inp(1, PortIn.SATS)
    a.out(REG("run_sats"), 1)
    _count(fw, SC_SATS, R(1), "sats_total")
    _count(fw, SC_INF, 1, "inferences")
    fw.lds(1, SC_NO)
    a.out(REG("run_ops"), 1)
    _count(fw, SC_OPS, R(1), "ops_total")
    fw.lds(1, SC_EVENTS)
    a.out(REG("perf_events"), 1)
    fw.lds(1, SC_SKIPPED)
    a.out(REG("perf_skipped"), 1)
    a.ldb(1, 0, 13)
    fw.buf_field(1, 1, 2)
    a.shl(1, 1, 2)
    a.out(PortOut.OUTPUT_SIZE, 1)
    a.li(1, 1)
    a.out(PortOut.RAN, 1)
    _answer(fw, State.DONE)


def _encode(fw):
    """ENCODE: per (token, t) the input elements' planes into the input buffer's words."""
    a, cfg = fw.a, fw.cfg
    T = cfg.timesteps
    a.ldb(1, 0, 12)                                      # r1 = input buffer: r2 tokens,
    fw.buf_fields(1, 13, [(2, 0, "ldh"), (3, 2, "ldh"),  # r3 channels, r4 kind, r5 bits
                          (4, 4, "ldb"), (5, 5, "ldb")])
    fw.planes(6, 4, 5)                                   # r6 = planes
    # the destination's largest value: 1 (spikes) or 2^bits - 1 (int16 inputs: <= 32767)
    hi_done = fw.uniq("hi")
    a.li(7, 1)
    a.xor(12, 4, int(BufKind.UINT))
    a.bnz(12, hi_done)
    a.li(7, 32767)
    a.sltu(12, 5, 15)
    a.bz(12, hi_done)
    a.li(7, 1)
    a.shl(7, 7, R(5))
    a.sub(7, 7, 1)
    a.label(hi_done)
    a.out(PortOut.E_HI, 7)
    a.mov(7, 6)
    a.shl(7, 7, 16)
    a.or_(7, 7, R(3))
    a.shl(4, 4, 24)
    a.or_(7, 7, R(4))                               # r7 = E_GO word
    a.lds(8, 1, SC_BASE)
    a.mul(8, 8, T)                                       # r8 = T · base (token 0, t 0)
    fw.cgroups(9, 3)
    a.mul(9, 9, R(6))
    a.mul(9, 9, T)                                       # r9 = a token's words · T
    def step(fw=fw):                                     # token r10, t r11
        a.mul(13, 11, R(2))                                  # (t·tokens + token)·channels
        a.add(13, 13, R(10))
        a.mul(13, 13, R(3))
        a.out(PortOut.E_IN, 13)
        a.add(13, 8, R(11))
        a.out(PortOut.COL_ADDR, 13)
        a.out(PortOut.E_GO, 7)
        fw.step_done(Status.ENC_BUSY, Status.ENC_ERROR)

    def token(fw=fw):
        fw.loop(11, T, step)
        a.add(8, 8, R(9))
    fw.loop(10, R(2), token)


def _run_op(fw):
    """One LINEAR / READOUT op (r13: its descriptor, r11: its index)."""
    a, cfg = fw.a, fw.cfg
    T = cfg.timesteps
    a.out(PortOut.OP_START, 0)
    fw.sts(11, SC_OP)
    fw.sts(13, SC_OPBASE)
    a.ldb(1, 13, 0)
    fw.sts(1, SC_OPKIND)
    # the source: words a step, its tokens' stride, channel-planes (skipped counts)
    a.ldb(2, 13, 2)
    fw.buf_fields(2, 9, [(3, 0, "ldh"), (4, 2, "ldh")])  # r3 tokens, r4 channels
    fw.sts(3, SC_TOKENS)
    _buffer_planes(fw, 5, 2)                             # r5 = src planes
    a.mul(6, 4, R(5))
    fw.sts(6, SC_CP)
    fw.cgroups(6, 4)
    a.mul(6, 6, R(5))
    a.shl(7, 5, 16)
    a.or_(7, 7, R(6))
    fw.sts(7, SC_WORDS)                                  # SCAN_GO: words | planes << 16
    a.mul(6, 6, T)
    fw.sts(6, SC_SRC_STEP)
    a.lds(6, 2, SC_BASE)
    a.mul(6, 6, T)
    fw.sts(6, SC_SRC_TOK)
    # the mode: the source's kind (WalkMode's low bits), READOUT, bias, destination planes
    fw.buf_field(9, 2, 4, "ldb")
    a.ldb(6, 13, 6)                                      # bias: the flag and rows != 0
    fw.a.and_(6, 6, 4)
    no_bias = fw.uniq("nobias")
    a.bz(6, no_bias)
    a.ldb(6, 13, 40)
    a.bz(6, no_bias)
    a.or_(9, 9, int(WalkMode.BIAS))
    a.label(no_bias)
    a.ldb(6, 13, 40)
    fw.sts(6, SC_ROWS)
    fw.lds(6, SC_BLOB)
    a.ldw(8, 13, 36)
    a.add(8, 8, R(6))
    fw.sts(8, SC_BIAS)
    a.ldw(8, 13, 32)
    a.add(8, 8, R(6))
    a.out(PortOut.W_ROW, 8)
    a.ldh(8, 13, 8)
    a.out(PortOut.W_NIN, 8)
    a.ldh(8, 13, 10)                                     # r8 = n_out
    fw.sts(8, SC_NOUT)
    a.li(10, 1)                                          # r10 = repeat
    a.li(3, 0)
    fw.sts(3, SC_V0)
    linear, setup_done = fw.uniq("linear"), fw.uniq("setup_done")
    a.xor(12, 1, int(Op.READOUT))
    a.bnz(12, linear)
    # READOUT: no shift, no LIF, one bias row (golden adds bias[0] for every token)
    a.or_(9, 9, int(WalkMode.READOUT))
    a.li(3, 1)
    fw.sts(3, SC_ROWS)
    a.out(PortOut.W_SHIFT, 0)
    a.li(3, 2)
    a.out(PortOut.W_PERIOD, 3)
    a.ldb(3, 13, 5)
    fw.buf_field(3, 3, 5, "ldb")
    fw.sts(3, SC_DSTBITS)
    a.j(setup_done)
    a.label(linear)
    a.ldb(10, 13, 12)
    a.ldb(3, 13, 41)                                     # acc_shift in [-31, 7]
    a.sext(3, 3, 8)
    a.add(4, 3, 31)
    fw.chk_ltu(4, MAX_LEFT_SHIFT + 32, Error.BAD_INPUT)
    a.out(PortOut.W_SHIFT, 3)
    positive = fw.uniq("abs")
    a.slt(12, 3, 0)
    a.bz(12, positive)
    a.sub(3, 0, R(3))
    a.label(positive)
    longer = fw.uniq("period")                           # max(|s|, repeat) + 1
    a.sltu(12, 3, R(10))
    a.bz(12, longer)
    a.mov(3, 10)
    a.label(longer)
    a.add(3, 3, 1)
    a.out(PortOut.W_PERIOD, 3)
    a.ldb(3, 13, 18)                                     # current width -> mask
    a.sub(3, 3, 1)
    a.li(4, -1)
    a.shl(4, 4, R(3))
    a.out(PortOut.W_MASK, 4)
    a.ldb(3, 13, 16)                                     # leak (255: none)
    leak_done = fw.uniq("leak")
    a.xor(12, 3, 255)
    a.bz(12, leak_done)
    a.or_(3, 3, 256)
    a.label(leak_done)
    a.out(PortOut.LIF_LEAK, 3)
    a.ldw(3, 13, 20)
    a.out(PortOut.LIF_THETA, 3)
    a.ldw(3, 13, 28)
    fw.sts(3, SC_V0)
    # the destination: words a token, its planes, its base
    a.ldb(2, 13, 5)
    fw.buf_field(3, 2, 4, "ldb")
    spikes1 = fw.uniq("spikes1")
    a.xor(12, 3, int(BufKind.SIGNED_SPIKES))
    a.bnz(12, spikes1)
    a.or_(9, 9, int(WalkMode.SPIKES2))
    a.label(spikes1)
    _buffer_planes(fw, 5, 2)
    fw.buf_field(4, 2, 2)
    fw.cgroups(4, 4)
    a.mul(4, 4, R(5))
    a.mul(4, 4, T)
    fw.sts(4, SC_DST_STEP)
    a.lds(4, 2, SC_BASE)
    a.mul(4, 4, T)
    fw.sts(4, SC_DST_TOK)
    a.label(setup_done)
    fw.sts(9, SC_MODEBITS)
    a.shl(3, 10, 16)
    a.or_(3, 3, R(8))
    a.out(PortOut.W_UNITS, 3)
    a.mul(3, 8, R(10))                                   # neurons
    fw.sts(3, SC_NEURONS)
    a.out(PortOut.W_NEURONS, 3)

    # tokens
    a.li(1, 0)
    fw.sts(1, SC_TOK)
    tok_loop, tok_done = fw.uniq("tok"), fw.uniq("tok_done")
    a.label(tok_loop)
    fw.lds(1, SC_TOK)
    fw.lds(2, SC_TOKENS)
    a.sltu(12, 1, R(2))
    a.bz(12, tok_done)
    # the bias row: once (one row) or per token
    fw.lds(9, SC_MODEBITS)
    fw.a.and_(3, 9, int(WalkMode.BIAS))
    fill_done = fw.uniq("fill")
    a.bz(3, fill_done)
    fw.lds(3, SC_ROWS)
    a.xor(12, 3, 1)
    per_token = fw.uniq("per_token")
    a.bnz(12, per_token)
    a.bnz(1, fill_done)                                  # one row: filled at token 0
    a.label(per_token)
    a.xor(12, 3, 1)
    a.li(4, 0)
    one_row = fw.uniq("one_row")
    a.bz(12, one_row)
    a.mov(4, 1)                                          # row = token
    a.label(one_row)
    fw.lds(5, SC_NEURONS)
    a.mul(4, 4, R(5))
    a.shl(4, 4, 2)
    fw.lds(5, SC_BIAS)
    a.add(4, 4, R(5))
    a.out(PortOut.W_BIAS, 4)
    fw.wait(Status.FILL_BUSY)
    a.label(fill_done)
    fw.lds(3, SC_V0)
    no_load = fw.uniq("no_load")
    a.bz(3, no_load)
    a.out(PortOut.W_LOAD, 3)
    fw.wait(Status.WALK_BUSY)
    a.label(no_load)
    # the first step's scan
    fw.lds(4, SC_SRC_TOK)
    a.out(PortOut.SCAN_ADDR, 4)
    _scan_go(fw, 0)
    fw.wait(Status.SCAN_BUSY)
    def step(fw=fw):                                     # t: r11
        a.inp(1, PortIn.SCAN_COUNT)                          # events of step t
        fw.lds(2, SC_EVENTS)
        a.add(2, 2, R(1))
        fw.sts(2, SC_EVENTS)
        fw.lds(2, SC_CP)
        a.sub(2, 2, R(1))
        fw.lds(3, SC_SKIPPED)
        a.add(3, 3, R(2))
        fw.sts(3, SC_SKIPPED)
        last = fw.uniq("last_step")
        a.add(2, 11, 1)
        a.sltu(12, 2, T)
        a.bz(12, last)
        fw.lds(4, SC_SRC_TOK)                                # scan step t + 1 (other bank)
        a.add(4, 4, R(2))
        a.out(PortOut.SCAN_ADDR, 4)
        fw.a.and_(6, 2, 1)
        _scan_go(fw, 6)
        a.label(last)
        fw.lds(4, SC_DST_TOK)
        a.add(4, 4, R(11))
        a.out(PortOut.COL_ADDR, 4)
        fw.lds(9, SC_MODEBITS)
        first_done = fw.uniq("first")
        a.bnz(11, first_done)                                # t = 0: FIRST unless v0; sums start
        fw.lds(3, SC_V0)
        a.bnz(3, first_done)
        a.or_(9, 9, int(WalkMode.FIRST))
        a.label(first_done)
        sums_done = fw.uniq("sums")
        a.bnz(11, sums_done)
        fw.lds(3, SC_TOK)
        a.bnz(3, sums_done)
        a.or_(9, 9, int(WalkMode.SUM_INIT))
        a.label(sums_done)
        a.out(PortOut.W_MODE, 9)
        fw.a.and_(6, 11, 1)
        a.out(PortOut.W_GO, 6)
        fw.step_done(Status.WALK_BUSY | Status.SCAN_BUSY, Status.WALK_ERROR)
    fw.loop(11, T, step)
    for step, tok in ((SC_SRC_STEP, SC_SRC_TOK), (SC_DST_STEP, SC_DST_TOK)):
        fw.lds(1, tok)
        fw.lds(2, step)
        a.add(1, 1, R(2))
        fw.sts(1, tok)
    fw.lds(1, SC_TOK)
    a.add(1, 1, 1)
    fw.sts(1, SC_TOK)
    a.j(tok_loop)
    a.label(tok_done)
    # READOUT: range-check every total, then write them as int32 (a refused run leaves the
    # output as it was); a source without tokens sums to 0
    fw.lds(1, SC_OPKIND)
    written = fw.uniq("readout_written")
    a.xor(12, 1, int(Op.READOUT))
    a.bnz(12, written)
    fw.lds(2, SC_NOUT)
    fw.lds(5, SC_DSTBITS)
    a.sub(5, 5, 1)
    fw.lds(7, SC_TOKENS)

    def total(fw=fw):                                    # r3, r4 = total j (r1); 0: no tokens
        a.out(PortOut.SUM_ADDR, 1)
        a.inp(3, PortIn.SUM_LO)
        a.inp(4, PortIn.SUM_HI)
        some = fw.uniq("tokens")
        a.bnz(7, some)
        a.li(3, 0)
        a.li(4, 0)
        a.label(some)

    def check(fw=fw):
        total()
        a.sra(6, 3, 31)                                  # the high word: the low's sign only
        fw.chk_eq(4, R(6), Error.BAD_INPUT)
        a.sra(6, 3, R(5))                                # and within the INT's bits
        a.add(6, 6, 1)
        fw.chk_ltu(6, 2, Error.BAD_INPUT)

    def write(fw=fw):
        total()
        a.shl(4, 1, 2)
        a.out(PortOut.OUT_ADDR, 4)
        for k in range(4):
            a.out(PortOut.OUT_BYTE, 3)
            if k < 3:
                a.shr(3, 3, 8)
    fw.loop(1, R(2), check)
    fw.loop(1, R(2), write)
    a.label(written)
    fw.lds(11, SC_OP)
    fw.lds(13, SC_OPBASE)
    a.out(PortOut.LAYERS_WR, 11)


def _scan_go(fw, bank_reg):
    """SCAN_GO: the op's words and planes (scratch), bank r[bank_reg]."""
    a = fw.a
    fw.lds(7, SC_WORDS)
    a.shl(10, bank_reg, 24)
    a.or_(7, 7, R(10))
    a.out(PortOut.SCAN_GO, 7)


def _reset_and_faults(fw):
    a = fw.a
    a.label("cmd_reset")
    a.out(PortOut.CLEAR_INPUT, 0)
    fw.wait(Status.CLEAR_BUSY)
    a.out(PortOut.OUTPUT_SIZE, 0)
    a.inp(1, PortIn.STATUS)
    fw.a.and_(1, 1, int(Status.LOADED))
    a.sltu(1, 0, R(1))                                   # READY (1) if loaded, else IDLE (0)
    a.out(PortOut.STATE, 1)
    a.out(PortOut.CMD_DONE, 0)
    a.j("main")

    a.label("fail_op_build")
    a.li(12, 0)
    a.chk(12, Reason.OP_BUILD)

    # a failing check: LOAD refuses the image, RUN stops with the check's error code
    a.label("fail")
    fw.lds(1, SC_MODE)
    a.inp(2, PortIn.CODE)
    a.xor(12, 1, MODE_RUN)
    run_fail = fw.uniq("run_fail")
    a.bz(12, run_fail)
    a.out(PortOut.REASON, 2)
    a.li(2, Error.BAD_PROGRAM)
    a.j("answer_error")
    a.label(run_fail)
    a.jal(14, "stop_run")
    a.label("answer_error")
    a.li(1, State.ERROR)
    a.out(PortOut.STATE, 1)
    a.out(PortOut.CMD_DONE, 2)
    fw.sts(0, SC_MODE)
    a.j("main")

    # abort (a RESET frame during a RUN, or the abort port): the units finish, then ABORTED
    a.label("abort")
    a.jal(14, "stop_run")
    a.li(2, Error.ABORTED)
    a.j("answer_error")

    # a stopped run: the units finish their step, the LIF is reset, PERF has the cycles so
    # far (called through r14; uses r1, r12)
    a.label("stop_run")
    fw.wait(Status.SCAN_BUSY | Status.WALK_BUSY | Status.ENC_BUSY | Status.FILL_BUSY)
    a.out(PortOut.SOFT_RESET, 0)
    a.out(PortOut.RUN, 0)
    a.inp(1, PortIn.CYCLES)
    a.out(REG("perf_cycles"), 1)
    a.jr(14)
