"""MicroEngine: a small 32-bit microcoded controller, and its assembler.

The compact accelerator (rtl/compact.py) runs its control (LOAD checks, op sequencing) as
firmware on this engine instead of wide finite-state machines: the firmware lives in block
RAM and the datapath is one ALU, so the control costs a few hundred logic cells on an
iCE40 instead of thousands.

Registers: 16 x 32 bits (r0 reads 0: the firmware never writes it) in a block RAM whose
words 16.. are scratch memory (LDS / STS). An instruction takes two cycles (D: its
registers are read; X: it executes and the next one is fetched); LD*, MUL, shifts and LDS
take more. Instruction word (32 bits):

    [31:27] op   [26:23] rd   [22:19] rs   [18] I   [17:0] imm (signed) | [3:0] rt

The second operand `b` is `imm` when I is set, else register rt. Ops (`Op`): ALU
(ADD SUB AND OR XOR SLT SLTU: rd = rs op b; MUL: rd = rs[15:0] x b[15:0]; SHL SHR SRA: a
bit a cycle; LUI: rd = imm << 14), loads from the byte-addressed program memory (LDB LDH
LDW: little-endian, zero-extended, a byte a request, at rs + imm), scratch (LDS rd, [rs + imm];
STS [rs + imm] <- rd), IO (IN rd, port imm; OUT port imm <- rs), control (BZ / BNZ rs,
target; JAL rd, target; JR rs) and checks (CHK rs, code: fails when rs == 0; CHKZ rs, code:
fails when rs != 0; codes are 8 bits). A failing check sets `code` and jumps to
`fail_vector`; a `trap` pulse
(taken between instructions) jumps to `trap_vector`.

`Assembler` builds the ROM: methods named after the ops, labels, `li` for any 32-bit
constant, and `program()` -> (words, labels).
"""

from __future__ import annotations

import enum

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2


class Op(enum.IntEnum):
    ADD = 0
    SUB = 1
    AND = 2
    OR = 3
    XOR = 4
    SLT = 5
    SLTU = 6
    MUL = 7
    SHL = 8
    SHR = 9
    SRA = 10
    LUI = 11
    LDB = 12
    LDH = 13
    LDW = 14
    LDS = 15
    STS = 16
    IN = 17
    OUT = 18
    BZ = 19
    BNZ = 20
    JAL = 21
    JR = 22
    CHK = 23
    CHKZ = 24


ALU_OPS = (Op.ADD, Op.SUB, Op.AND, Op.OR, Op.XOR, Op.SLT, Op.SLTU, Op.MUL, Op.SHL, Op.SHR,
           Op.SRA)
LOADS = (Op.LDB, Op.LDH, Op.LDW)
CODE_BITS = 8
IMM_BITS = 18
N_REGS = 16
LUI_SHIFT = 14


class AsmError(ValueError):
    """Bad firmware source: unknown label, register or an immediate that does not fit."""


def _code(code) -> int:
    if not isinstance(code, int) or not 0 <= code < 1 << CODE_BITS:
        raise AsmError(f"a check code must be 0..{(1 << CODE_BITS) - 1}, got {code!r}")
    return int(code)


def _reg(r) -> int:
    if not isinstance(r, int) or not 0 <= r < N_REGS:
        raise AsmError(f"register must be 0..{N_REGS - 1}, got {r!r}")
    return r


class Assembler:
    """Firmware builder: `a.add(rd, rs, b)` with b a register (`R(k)`) or an int immediate;
    `a.label(name)` places a label; branch / jump / check targets are label names."""

    def __init__(self):
        self.words: list = []        # (op, rd, rs, b, is_reg) before label resolution
        self.labels: dict = {}

    def label(self, name: str) -> None:
        if name in self.labels:
            raise AsmError(f"label {name!r} placed twice")
        self.labels[name] = len(self.words)

    def _emit(self, op, rd=0, rs=0, b=0):
        is_reg = isinstance(b, R)
        self.words.append((Op(op), _reg(rd), _reg(rs), b.n if is_reg else b, is_reg))

    # ALU ops and loads, rd = rs op b (`and_`, `or_`: the Python keywords)
    def __getattr__(self, name):
        key = name.rstrip("_").upper()
        op = Op[key] if key in Op.__members__ else None
        if op is None:
            raise AttributeError(name)
        if op in ALU_OPS or op in LOADS or op == Op.LDS:
            return lambda rd, rs, b=0: self._emit(op, rd, rs, b)
        raise AttributeError(name)

    def lui(self, rd, value):
        self._emit(Op.LUI, rd, 0, value)

    def sts(self, rd, rs, offset=0):
        """scratch[rs + offset] <- rd"""
        self._emit(Op.STS, rd, rs, offset)

    def inp(self, rd, port):
        self._emit(Op.IN, rd, 0, int(port))

    def out(self, port, rs):
        self._emit(Op.OUT, 0, rs, int(port))

    def bz(self, rs, target):
        self._emit(Op.BZ, 0, rs, target)

    def bnz(self, rs, target):
        self._emit(Op.BNZ, 0, rs, target)

    def jal(self, rd, target):
        self._emit(Op.JAL, rd, 0, target)

    def j(self, target):
        self._emit(Op.BZ, 0, 0, target)          # r0 is 0: always taken

    def jr(self, rs):
        self._emit(Op.JR, 0, rs, 0)

    def chk(self, rs, code):
        self._emit(Op.CHK, 0, rs, _code(code))

    def chkz(self, rs, code):
        self._emit(Op.CHKZ, 0, rs, _code(code))

    def sext(self, rd, rs, bits):
        """rd = rs sign-extended from `bits` (rs < 2^bits): (x ^ m) - m, m = 2^(bits-1)."""
        self._emit(Op.XOR, rd, rs, 1 << (bits - 1))
        self._emit(Op.SUB, rd, rd, 1 << (bits - 1))

    def li(self, rd, value: int):
        """rd = value (any 32-bit constant: one or two instructions)."""
        value &= 0xFFFFFFFF
        low = value if value < 1 << 31 else value - (1 << 32)
        if -(1 << (IMM_BITS - 1)) <= low < 1 << (IMM_BITS - 1):
            self._emit(Op.ADD, rd, 0, low)
            return
        high, rest = value >> LUI_SHIFT, value & ((1 << LUI_SHIFT) - 1)
        self.lui(rd, high if high < 1 << (IMM_BITS - 1) else high - (1 << IMM_BITS))
        if rest:
            self._emit(Op.OR, rd, rd, rest)

    def mov(self, rd, rs):
        self._emit(Op.ADD, rd, rs, 0)

    def program(self) -> tuple[list, dict]:
        words = []
        for k, (op, rd, rs, b, is_reg) in enumerate(self.words):
            if isinstance(b, str):
                if b not in self.labels:
                    raise AsmError(f"instruction {k} ({op.name}): unknown label {b!r}")
                b = self.labels[b]
            if is_reg:
                field = _reg(b)
            else:
                # (sign-extended from IMM_BITS: 2^17 and above would turn negative)
                if not isinstance(b, int) or not -(1 << (IMM_BITS - 1)) <= b < 1 << (IMM_BITS - 1):
                    raise AsmError(f"instruction {k} ({op.name}): immediate {b!r} does not "
                                   f"fit {IMM_BITS} bits")
                field = (b & ((1 << IMM_BITS) - 1)) | 1 << IMM_BITS
            words.append(op << 27 | rd << 23 | rs << 19 | field)
        return words, dict(self.labels)


class R:
    """A register as the second operand: `a.add(1, 2, R(3))` is r1 = r2 + r3."""

    def __init__(self, n: int):
        self.n = _reg(n)


class MicroEngine(wiring.Component):
    """Runs `rom` (a list of instruction words) from address 0. Ports:

    - program memory, byte reads: `rd_addr` / `rd_en` (a request); `rd_data` valid when
      `rd_valid` (the caller's latency; one request outstanding at a time);
    - IO: `io_addr` (the port number of an IN / OUT), `io_we` (OUT strobe) with `io_wdata`;
      `io_rdata` is read combinationally in the IN's execute cycle;
    - `code`: the code of the last failing check; `trap`: jump to `trap_vector` (taken between
      instructions, held until then); `pc` for debugging.
    """

    def __init__(self, rom, *, fail_vector: int, trap_vector: int, addr_width: int = 32,
                 io_ports: int = 64, scratch: int = 240):
        if not rom:
            raise ValueError("rom must hold at least one instruction")
        if not 0 <= fail_vector < len(rom) or not 0 <= trap_vector < len(rom):
            raise ValueError("fail_vector and trap_vector must be addresses in the rom")
        self.rom, self.fail_vector, self.trap_vector = list(rom), fail_vector, trap_vector
        self.scratch = scratch
        self.pc_width = max(1, ceil_log2(len(rom)))
        super().__init__({
            "rd_addr": Out(addr_width), "rd_en": Out(1), "rd_data": In(8), "rd_valid": In(1),
            "io_addr": Out(range(io_ports)), "io_we": Out(1), "io_wdata": Out(32),
            "io_rdata": In(32),
            "code": Out(CODE_BITS), "trap": In(1), "pc": Out(self.pc_width),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rom = rom = Memory(shape=32, depth=len(self.rom), init=self.rom)
        rf_depth = 1 << ceil_log2(N_REGS + self.scratch)
        # written only at the end of X, read in D and by LDS: never in the same cycle
        m.submodules.rf = rf = Memory(shape=32, depth=rf_depth, init=[],
                                      attrs={"no_rw_check": 1})
        rom_rd = rom.read_port()
        rf_a, rf_b, rf_w = rf.read_port(), rf.read_port(), rf.write_port()

        ir = rom_rd.data                         # held while D and X run (read port disabled)
        op, rd, rs = ir[27:32], ir[23:27], ir[19:23]
        is_imm = ir[IMM_BITS]
        imm = ir[:IMM_BITS].as_signed()
        a = rf_a.data
        b = Mux(is_imm, Cat(imm, imm[-1].replicate(32 - IMM_BITS)), rf_b.data)

        pc = Signal(self.pc_width)
        m.d.comb += self.pc.eq(pc)
        phase = Signal(2)                        # 0: fetch (after reset), 1: D, 2: X
        step = Signal(6)                         # cycles spent in X (multi-cycle ops)
        work = Signal(32)                        # product / shifted value / loaded bytes
        trap_pending = Signal()
        with m.If(self.trap):
            m.d.sync += trap_pending.eq(1)

        # One adder for ADD, SUB, the compares and every address: a + b, or a - b as
        # a + ~b + 1 (its carry out is "no borrow").
        sub = (op == Op.SUB) | (op == Op.SLT) | (op == Op.SLTU)
        total = Signal(33)
        m.d.comb += total.eq(Cat(a, Const(0, 1)) + Cat(b ^ sub.replicate(32), Const(0, 1)) + sub)
        borrow = ~total[32]
        slt = Mux(a[31] ^ b[31], a[31], borrow)
        logic = Mux(op == Op.AND, a & b, Mux(op == Op.OR, a | b, a ^ b))
        got = Signal(3)                          # load: bytes received
        wait = Signal()                          # load: a byte requested, not yet received
        nbytes = Mux(op == Op.LDB, 1, Mux(op == Op.LDH, 2, 4))
        # loaded bytes enter at the top: n bytes sit in work[32 - 8n:]
        loaded = Mux(op == Op.LDB, work[24:], Mux(op == Op.LDH, work[16:], work))

        pc1 = (pc + 1)[:self.pc_width]
        result = Signal(32)
        with m.Switch(op):
            with m.Case(Op.ADD, Op.SUB):
                m.d.comb += result.eq(total[:32])
            with m.Case(Op.AND, Op.OR, Op.XOR):
                m.d.comb += result.eq(logic)
            with m.Case(Op.SLT):
                m.d.comb += result.eq(slt)
            with m.Case(Op.SLTU):
                m.d.comb += result.eq(borrow)
            with m.Case(Op.LUI):
                m.d.comb += result.eq(b << LUI_SHIFT)
            with m.Case(Op.LDB, Op.LDH, Op.LDW):
                m.d.comb += result.eq(loaded)
            with m.Case(Op.LDS):
                m.d.comb += result.eq(rf_a.data)
            with m.Case(Op.IN):
                m.d.comb += result.eq(self.io_rdata)
            with m.Case(Op.JAL):
                m.d.comb += result.eq(pc1)
            with m.Default():                    # MUL, shifts
                m.d.comb += result.eq(work)

        # the next instruction: one target for every op (taken branches, calls, returns,
        # failing checks), then the trap over it
        zero = a == 0
        taken = Signal()
        with m.Switch(op):
            with m.Case(Op.BZ):
                m.d.comb += taken.eq(zero)
            with m.Case(Op.BNZ):
                m.d.comb += taken.eq(~zero)
            with m.Case(Op.JAL):
                m.d.comb += taken.eq(1)
        bad = Signal()
        m.d.comb += bad.eq(((op == Op.CHK) & zero) | ((op == Op.CHKZ) & ~zero))
        target = Mux(bad, self.fail_vector, Mux(op == Op.JR, a[:self.pc_width],
                                                 Mux(taken, imm[:self.pc_width], pc1)))
        go = Mux(trap_pending | self.trap, self.trap_vector, target)

        def finish(write=False):
            """The end of X: write rd (never r0) and fetch the next instruction."""
            if write:
                m.d.comb += [rf_w.addr.eq(rd), rf_w.data.eq(result), rf_w.en.eq(rd != 0)]
            m.d.comb += [rom_rd.addr.eq(go), rom_rd.en.eq(1)]
            m.d.sync += [pc.eq(go), phase.eq(1), step.eq(0), trap_pending.eq(0)]

        # read ports are enabled only where they read: they hold their data otherwise
        m.d.comb += [rom_rd.en.eq(0), rf_a.en.eq(0), rf_b.en.eq(0),
                     rf_a.addr.eq(rs), rf_b.addr.eq(Mux(op == Op.STS, rd, ir[:4]))]
        with m.Switch(phase):
            with m.Case(0):
                m.d.comb += [rom_rd.addr.eq(pc), rom_rd.en.eq(1)]
                m.d.sync += phase.eq(1)
            with m.Case(1):
                m.d.comb += [rf_a.en.eq(1), rf_b.en.eq(1)]
                m.d.sync += [phase.eq(2), step.eq(0)]
            with m.Case(2):
                m.d.sync += step.eq(step + 1)
                with m.Switch(op):
                    with m.Case(Op.ADD, Op.SUB, Op.AND, Op.OR, Op.XOR, Op.SLT, Op.SLTU,
                                Op.LUI, Op.IN, Op.JAL):
                        with m.If(op == Op.IN):
                            m.d.comb += self.io_addr.eq(imm)
                        finish(write=True)
                    with m.Case(Op.MUL):
                        # registered product (a DSP on iCE40 UltraPlus / ECP5), written a
                        # cycle later
                        with m.If(step == 0):
                            m.d.sync += work.eq(a[:16] * b[:16])
                        with m.Else():
                            finish(write=True)
                    with m.Case(Op.SHL, Op.SHR, Op.SRA):
                        # a bit a cycle: step 0 loads, steps 1..b[:5] shift
                        with m.If(step == 0):
                            m.d.sync += work.eq(a)
                        with m.Elif(step - 1 == b[:5]):
                            finish(write=True)
                        with m.Elif(op == Op.SHL):
                            m.d.sync += work.eq(work << 1)
                        with m.Else():
                            m.d.sync += work.eq(Cat(work[1:], (op == Op.SRA) & work[31]))
                    with m.Case(Op.LDB, Op.LDH, Op.LDW):
                        # byte k of [a + b] requested when byte k - 1 is in
                        with m.If(step == 0):
                            m.d.sync += [got.eq(0), wait.eq(0)]
                        with m.Elif(got == nbytes):
                            finish(write=True)
                        with m.Elif(~wait):
                            m.d.comb += [self.rd_addr.eq(total[:len(self.rd_addr)] + got),
                                         self.rd_en.eq(1)]
                            m.d.sync += wait.eq(1)
                        with m.If(wait & self.rd_valid):
                            m.d.sync += [work.eq(Cat(work[8:], self.rd_data)),
                                         got.eq(got + 1), wait.eq(0)]
                    with m.Case(Op.LDS):
                        with m.If(step == 0):
                            m.d.comb += [rf_a.addr.eq(total[:8] + N_REGS), rf_a.en.eq(1)]
                        with m.Else():
                            finish(write=True)
                    with m.Case(Op.STS):
                        m.d.comb += [rf_w.addr.eq(total[:8] + N_REGS), rf_w.data.eq(rf_b.data),
                                     rf_w.en.eq(1)]
                        finish()
                    with m.Case(Op.OUT):
                        m.d.comb += [self.io_addr.eq(imm), self.io_we.eq(1),
                                     self.io_wdata.eq(a)]
                        finish()
                    with m.Case(Op.BZ, Op.BNZ, Op.JR):
                        finish()
                    with m.Case(Op.CHK, Op.CHKZ):
                        with m.If(bad):
                            m.d.sync += self.code.eq(imm)
                        finish()
                    with m.Default():                    # unused opcodes: no operation
                        finish()
        return m
