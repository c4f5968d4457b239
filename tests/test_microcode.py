"""MicroEngine (rtl/microcode.py) in the Amaranth simulator: every ALU op on random operands
against Python integer arithmetic, loads from a byte memory (widths, sign extension,
little-endian), scratch, branches, call / return, checks and the trap; assembler errors."""

import random

import pytest
from amaranth import Module, Signal
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from spikeforge.rtl.microcode import AsmError, Assembler, MicroEngine, R

MASK = 0xFFFFFFFF


def s32(x):
    x &= MASK
    return x - (1 << 32) if x >> 31 else x


PY_OPS = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "and": lambda a, b: a & b,
    "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
    "slt": lambda a, b: int(s32(a) < s32(b)), "sltu": lambda a, b: int((a & MASK) < (b & MASK)),
    "mul": lambda a, b: (a & 0xFFFF) * (b & 0xFFFF),
    "shl": lambda a, b: a << (b & 31), "shr": lambda a, b: (a & MASK) >> (b & 31),
    "sra": lambda a, b: s32(a) >> (b & 31),
}


def run_engine(asm, memory=(), cycles=20000, io_in=None, trap_at=None):
    """Run the assembled program; returns the OUT writes [(port, value)] and the final code."""
    rom, labels = asm.program()
    m = Module()
    m.submodules.eng = eng = MicroEngine(rom, fail_vector=labels["fail"],
                                         trap_vector=labels.get("trap", labels["fail"]),
                                         addr_width=16)
    m.submodules.pm = pm = Memory(shape=8, depth=max(16, len(memory)), init=list(memory))
    rd = pm.read_port()
    valid = Signal()
    m.d.sync += valid.eq(eng.rd_en)
    m.d.comb += [rd.addr.eq(eng.rd_addr), rd.en.eq(eng.rd_en), eng.rd_data.eq(rd.data),
                 eng.rd_valid.eq(valid)]
    outs, done = [], []

    async def bench(ctx):
        for cycle in range(cycles):
            ctx.set(eng.io_rdata, (io_in or {}).get(ctx.get(eng.io_addr), 0))
            ctx.set(eng.trap, cycle == trap_at)
            await ctx.tick()
            if ctx.get(eng.io_we):
                port, value = ctx.get(eng.io_addr), ctx.get(eng.io_wdata)
                if port == 63:
                    done.append(ctx.get(eng.code))
                    return
                outs.append((port, value))
        raise AssertionError("the program did not reach its end (OUT 63)")
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return outs, done[0]


def end(asm):
    asm.out(63, 0)
    asm.label("fail")
    asm.out(63, 0)


def test_alu_ops_match_python_integers():
    rng = random.Random(7)
    cases = []
    a = Assembler()
    for k, name in enumerate(sorted(PY_OPS) * 6):
        x = rng.choice([0, 1, MASK, 1 << 31, rng.getrandbits(32), rng.getrandbits(8)])
        y = rng.choice([0, 1, 5, MASK, rng.getrandbits(32), rng.getrandbits(5)])
        if name in ("shl", "shr", "sra"):
            y &= 31
        use_imm = k % 2 and -(1 << 17) <= s32(y) < 1 << 17
        a.li(1, x)
        if use_imm:
            getattr(a, name)(3, 1, s32(y))
        else:
            a.li(2, y)
            getattr(a, name)(3, 1, R(2))
        a.out(k % 60, 3)
        cases.append((k % 60, PY_OPS[name](x, y if not use_imm else s32(y)) & MASK, name, x, y))
    end(a)
    outs, _ = run_engine(a, cycles=40000)
    assert len(outs) == len(cases)
    for (port, value), (want_port, want, name, x, y) in zip(outs, cases):
        assert (port, value) == (want_port, want), f"{name}({x:#x}, {y:#x})"


def test_loads_are_little_endian_with_widths_and_sign():
    memory = [0x53, 0x46, 0x50, 0xF7, 0x80, 0x7F, 0xFF, 0x01]
    a = Assembler()
    a.li(1, 2)
    for k, (op, off) in enumerate([("ldw", -2), ("ldb", 1), ("ldbs", 1), ("ldh", 2),
                                   ("ldhs", 2), ("ldbs", 2), ("ldh", 3), ("ldhs", 4)]):
        getattr(a, op.rstrip("s"))(3, 1, off)
        if op.endswith("s"):
            a.sext(3, 3, 8 if op.startswith("ldb") else 16)
        a.out(k, 3)
    end(a)
    outs, _ = run_engine(a, memory)
    b = bytes(memory)

    def le(off, n, sign):
        return int.from_bytes(b[off:off + n], "little", signed=sign) & MASK
    assert [v for _, v in outs] == [le(0, 4, False), le(3, 1, False), le(3, 1, True),
                                    le(4, 2, False), le(4, 2, True), le(4, 1, True),
                                    le(5, 2, False), le(6, 2, True)]


def test_scratch_branches_calls_and_checks():
    a = Assembler()
    a.li(1, 0x12345678)
    a.li(2, 7)
    a.sts(1, 2, 3)                   # scratch[10] = r1
    a.lds(4, 0, 10)
    a.out(0, 4)
    a.li(5, 3)                       # a loop: out 1, 2, 3 as r5 counts down
    a.label("loop")
    a.out(1, 5)
    a.sub(5, 5, 1)
    a.bnz(5, "loop")
    a.jal(15, "sub")
    a.out(3, 6)
    a.li(7, 1)
    a.chk(7, 11)                     # passes
    a.chkz(7, 12)                    # fails: code 12
    a.out(4, 0)                      # never reached
    a.label("sub")
    a.li(6, 99)
    a.jr(15)
    end(a)
    outs, code = run_engine(a)
    assert outs == [(0, 0x12345678), (1, 3), (1, 2), (1, 1), (3, 99)]
    assert code == 12


def test_in_port_and_trap():
    a = Assembler()
    a.inp(1, 5)
    a.out(0, 1)
    a.label("spin")
    a.j("spin")
    a.label("trap")
    a.out(1, 1)
    end(a)
    outs, _ = run_engine(a, io_in={5: 0xCAFE}, trap_at=100)
    assert outs == [(0, 0xCAFE), (1, 0xCAFE)]


def test_assembler_refuses_bad_source():
    a = Assembler()
    a.j("nowhere")
    with pytest.raises(AsmError, match="unknown label 'nowhere'"):
        a.program()
    with pytest.raises(AsmError, match="register"):
        Assembler().add(16, 0, 1)
    a = Assembler()
    a.add(1, 0, 1 << 20)
    with pytest.raises(AsmError, match="does not fit"):
        a.program()
    a = Assembler()
    a.label("x")
    with pytest.raises(AsmError, match="placed twice"):
        a.label("x")
