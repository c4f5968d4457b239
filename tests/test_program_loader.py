"""Program loader: golden tables of the shipped programs agree with `Program` (weights,
biases, activation layout round trip), every refusal reason of the golden loader is hit,
and the RTL ProgramLoader writes the golden tables / refuses with the golden reason code
(Amaranth simulator, the caller's memories modelled as `lib.memory` in a harness)."""

import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from spikeforge.golden import transformer as tf
from spikeforge.golden.compile import (HEADER, BUFFER, OP_STRUCT, BufKind, Op, OpDesc,
                                       ProgramError, _Builder, compile_pinn,
                                       compile_transformer)
from spikeforge.golden.lif import LIFParams
from spikeforge.golden.pinn import convert, load_weights
from spikeforge.golden.program_loader import (AcceleratorConfig, LoadError, Reason,
                                              loader_cycles, pack_activation,
                                              program_loader, unpack_activation)
from spikeforge.rtl.program_loader import ProgramLoader


@pytest.fixture(scope="module")
def digits():
    return {a: compile_transformer(tf.load_int(tf.model_paths(a)[1])[0])
            for a in ("ssa", "statten", "sdsa")}


@pytest.fixture(scope="module")
def pinn():
    return compile_pinn(convert(load_weights("sin"), 16, integer=True))


def _recrc(img) -> bytes:
    img = bytearray(img)
    img[HEADER.size - 4:HEADER.size] = b"\0" * 4
    img[HEADER.size - 4:HEADER.size] = struct.pack("<I", zlib.crc32(bytes(img)))
    return bytes(img)


def _op_off(prog, i):
    return HEADER.size + len(prog.buffers) * BUFFER.size + i * OP_STRUCT.size


def _buf_off(i):
    return HEADER.size + i * BUFFER.size


def small_program(T=4, signed=False, reset="zero", attention=True, n_in=6, n_out=10):
    """A reduced transformer-like program (builder): LINEAR (with a per-token bias),
    ATTENTION, ADD, READOUT; small enough for the RTL simulation of every fault."""
    rng = np.random.default_rng(1)
    b = _Builder(T)
    inp = b.buffer(4, n_in, BufKind.UINT, 3)
    lif = LIFParams(theta=20, leak_shift=1, width=16, reset=reset, signed_spikes=signed)
    kind = BufKind.SIGNED_SPIKES if signed else BufKind.SPIKES
    h = [b.buffer(4, 8, kind) for _ in range(3)]
    for dst in h:
        b.matrix_op(Op.LINEAR, inp, dst, rng.integers(-128, 128, (8, n_in)),
                    rng.integers(-500, 500, (4, 8)), 8, lif=lif)
    src = h[0]
    if attention:
        att = b.buffer(4, 8, BufKind.SPIKES)
        b.ops.append(OpDesc(Op.ATTENTION, att, tuple(h), heads=2, mode="statten", block=2,
                            lif=LIFParams(theta=2, leak_shift=1, width=16, reset=reset)))
        src = att
    s = b.buffer(4, 8, BufKind.UINT, 2)
    b.ops.append(OpDesc(Op.ADD, s, (src, h[1])))
    out = b.buffer(1, n_out, BufKind.INT, 32)
    b.matrix_op(Op.READOUT, s, out, rng.integers(-128, 128, (n_out, 8)),
                rng.integers(-1000, 1000, (1, n_out)), 8)
    b.buffer(4, 8, BufKind.INT, 32)     # spare INT buffer (last id) for the INT faults
    return b.program(inp, out)


@pytest.fixture(scope="module")
def small():
    prog = small_program()
    return prog, AcceleratorConfig.for_programs(prog)


# ------------------------------------------------------------------------------ golden

def _check_tables(prog, loaded, cfg):
    P, E = cfg.lanes, cfg.eng_lanes
    for op, e in zip(prog.ops, loaded.ops):
        assert e.op == op.op and e.dst == op.dst and e.n_src == len(op.src)
        if op.op not in (Op.LINEAR, Op.READOUT):
            assert e.wbase == e.bbase == e.groups == e.egroups == 0
            continue
        assert (e.groups, e.egroups) == (-(-op.n_out // P), -(-op.n_out // E))
        w = prog.weights(op)
        # weight words are E lanes wide: word wbase + i * egroups + g, lane l = W[g * E + l, i]
        rec = np.zeros((e.egroups * E, op.n_in), dtype=np.int64)
        for i in range(op.n_in):
            for g in range(e.egroups):
                word = loaded.weight_words[e.wbase + i * e.egroups + g]
                assert len(word) == E
                rec[g * E:(g + 1) * E, i] = word
        assert np.array_equal(rec[:op.n_out], w) and not rec[op.n_out:].any()
        bias = prog.bias(op)
        if bias is not None:
            rows = [sum((loaded.bias_words[e.bbase + r * e.ngroups + h]
                         for h in range(e.ngroups)), []) for r in range(op.bias_rows)]
            rows = np.array(rows)
            assert np.array_equal(rows[:, :bias.shape[1]], bias)
            assert not rows[:, bias.shape[1]:].any()
    # activation bases: consecutive, INT buffers skipped
    base = 0
    for b, e in zip(prog.buffers, loaded.buffers):
        assert e.cgroups == -(-b.channels // P)
        if b.kind == BufKind.INT:
            assert e.planes == 0 and e.base == 0
            continue
        assert e.base == base
        base += b.tokens * e.cgroups * e.planes
    assert base <= cfg.act_words


def test_shipped_program_tables(digits, pinn):
    cfg = AcceleratorConfig.for_programs(*digits.values())
    for name, prog in digits.items():
        loaded = program_loader(prog.to_bytes(), cfg)
        _check_tables(prog, loaded, cfg)
        ib = prog.buffers[prog.input_buffer]
        assert loaded.header.info == (4, ib.tokens, ib.channels, 1, 10)
        att = loaded.ops[4]
        assert att.op == Op.ATTENTION and att.heads == 4 and \
            att.mode == {"ssa": 0, "statten": 1, "sdsa": 2}[name]
    wide = AcceleratorConfig.for_programs(*digits.values(), lanes=4, engine_lanes=16)
    for prog in digits.values():
        _check_tables(prog, program_loader(prog.to_bytes(), wide), wide)
    pcfg = AcceleratorConfig.for_programs(pinn)
    loaded = program_loader(pinn.to_bytes(), pcfg)
    _check_tables(pinn, loaded, pcfg)
    assert [e.ngroups for e in loaded.ops[:2]] == [64, 64] and loaded.ops[0].acc_shift == -9
    assert loaded.header.info == (16, 1, 1, 1, 1)


@pytest.mark.parametrize("kind,bits,lo,hi", [(BufKind.SPIKES, 1, 0, 1),
                                             (BufKind.SIGNED_SPIKES, 1, -1, 1),
                                             (BufKind.UINT, 5, 0, 31)])
def test_activation_round_trip(kind, bits, lo, hi, pinn):
    cfg = AcceleratorConfig(timesteps=4, lanes=4)
    from spikeforge.golden.program_loader import BufferEntry, buffer_planes
    planes = buffer_planes(kind, bits)
    e = BufferEntry(3, 10, int(kind), bits, planes, 3, 0)
    x = np.random.default_rng(0).integers(lo, hi + 1, (4, 3, 10))
    words = pack_activation(x, e, cfg)
    assert len(words) == 3 * 3 * planes and all(0 <= w < 1 << 16 for w in words)
    assert np.array_equal(unpack_activation(words, e, cfg), x)
    # the documented bit: word (token*cgroups + g)*planes + p, bit lane*T + t
    t, n, c = 2, 1, 6
    p = 0 if kind != BufKind.SIGNED_SPIKES or x[t, n, c] >= 0 else 1
    bit = words[(n * 3 + c // 4) * planes + p] >> ((c % 4) * 4 + t) & 1
    assert bit == (abs(x[t, n, c]) & 1 if kind != BufKind.SIGNED_SPIKES
                   else int(x[t, n, c] != 0))


def test_config_validation_and_for_programs(digits, pinn):
    with pytest.raises(ValueError, match="lanes"):
        AcceleratorConfig(timesteps=4, lanes=3)
    with pytest.raises(ValueError, match="max_neurons"):
        AcceleratorConfig(timesteps=4, max_neurons=62)
    with pytest.raises(ValueError, match="reset"):
        AcceleratorConfig(timesteps=4, reset="none")
    for bad in (2, 12, 0, 8.0):
        with pytest.raises(ValueError, match="engine_lanes"):
            AcceleratorConfig(timesteps=4, lanes=4, engine_lanes=bad)
    assert AcceleratorConfig(timesteps=4, lanes=4).eng_lanes == 4
    assert AcceleratorConfig(timesteps=4, lanes=4, engine_lanes=8).eng_lanes == 8
    with pytest.raises(ValueError, match="timesteps"):
        AcceleratorConfig.for_programs(digits["ssa"], pinn)
    cfg = AcceleratorConfig.for_programs(pinn)
    assert cfg.attn_tokens is None and cfg.max_neurons == 256 and cfg.signed_spikes
    assert cfg.weight_words & (cfg.weight_words - 1) == 0
    # smallest: one power of two less weight memory refuses the program
    with pytest.raises(LoadError) as e:
        program_loader(pinn.to_bytes(), AcceleratorConfig.for_programs(
            pinn, weight_words=cfg.weight_words // 2))
    assert e.value.code == Reason.WEIGHT_MEMORY


def _edit(prog, off, fmt, value, crc=True):
    img = bytearray(prog.to_bytes())
    struct.pack_into(fmt, img, off, value)
    return _recrc(img) if crc else bytes(img)


def refusal_cases(prog, cfg):
    """(name, image, cfg, golden reason) of single faults, one per reason code."""
    img = prog.to_bytes()
    o = lambda i, field: _op_off(prog, i) + field       # noqa: E731
    lin, att, add, ro = 0, 3, 4, 5
    c = []
    add_case = lambda n, im, code, cf=cfg: c.append((n, im, cf, code))  # noqa: E731
    add_case("short", img[:20], Reason.TOO_SHORT)
    add_case("too large", img, Reason.TOO_LARGE, replace(cfg, program_bytes=len(img) - 1))
    add_case("magic", _edit(prog, 0, "<4s", b"SFPX"), Reason.BAD_MAGIC)
    add_case("version", _edit(prog, 4, "<H", 2), Reason.BAD_VERSION)
    add_case("size", _recrc(img[:-1]), Reason.BAD_SIZE)
    flip = bytearray(img)
    flip[len(img) // 2] ^= 0x10
    add_case("crc flip", bytes(flip), Reason.BAD_CRC)
    add_case("timesteps", _edit(prog, 6, "<H", 8), Reason.TIMESTEPS)
    add_case("buffers", img, Reason.TOO_MANY_BUFFERS, replace(cfg, max_buffers=4))
    add_case("ops", img, Reason.TOO_MANY_OPS, replace(cfg, max_ops=4))
    add_case("buffer id", _edit(prog, o(ro, 5), "<B", 9), Reason.BUFFER_ID)
    add_case("input id", _edit(prog, 12, "<B", 9), Reason.BUFFER_ID)
    add_case("buffer kind", _edit(prog, _buf_off(2) + 4, "<B", 7), Reason.BUFFER_KIND)
    add_case("buffer size", img, Reason.BUFFER_SIZE, replace(cfg, max_tokens=3))
    add_case("act memory", img, Reason.ACT_MEMORY, replace(cfg, act_words=30))
    add_case("input kind", _edit(prog, 12, "<B", len(prog.buffers) - 1), Reason.INPUT_KIND)
    add_case("output", _edit(prog, 13, "<B", len(prog.buffers) - 1), Reason.OUTPUT)
    add_case("opcode", _edit(prog, o(add, 0), "<B", 9), Reason.OPCODE)
    add_case("sources", _edit(prog, o(add, 1), "<B", 1), Reason.SOURCES)
    add_case("attn mode", _edit(prog, o(att, 7), "<B", 5), Reason.ATTN_MODE)
    add_case("lif theta", _edit(prog, o(lin, 20), "<i", 0), Reason.LIF)
    add_case("lif width", _edit(prog, o(lin, 17), "<B", 12), Reason.LIF_BUILD)
    add_case("lif reset", img, Reason.LIF_BUILD, replace(cfg, reset="subtract"))
    add_case("current width", img, Reason.LIF_BUILD, replace(cfg, current_width=15))
    add_case("shape", _edit(prog, o(lin, 8), "<H", 5), Reason.SHAPE)
    add_case("blob range", _edit(prog, o(ro, 32), "<I", len(prog.blob) - 10), Reason.BLOB_RANGE)
    add_case("bias rows", _edit(prog, o(lin, 40), "<B", 3), Reason.BIAS_ROWS)
    add_case("weight range", _edit(prog, o(lin, 19), "<B", 6), Reason.WEIGHT_RANGE)
    add_case("weight bits", img, Reason.WEIGHT_BITS, replace(cfg, weight_width=7))
    add_case("bias range", img, Reason.BIAS_RANGE, replace(cfg, bias_width=8))
    add_case("v0", _edit(prog, o(lin, 28), "<i", 40000), Reason.V0)
    # reset to v_reset with v_reset != 0: the build's LIFs reset to 0
    add_case("v reset", _edit(prog, o(lin, 24), "<i", 5), Reason.LIF_BUILD)
    add_case("size limit", img, Reason.SIZE_LIMIT, replace(cfg, max_in=5))
    add_case("weight memory", img, Reason.WEIGHT_MEMORY, replace(cfg, weight_words=40))
    add_case("bias memory", img, Reason.BIAS_MEMORY, replace(cfg, bias_words=20))
    add_case("no attention", img, Reason.NO_ATTENTION, replace(cfg, attn_tokens=None))
    add_case("attn dim", img, Reason.ATTN_SHAPE, replace(cfg, attn_dim=8))
    add_case("attn block", img, Reason.ATTN_BLOCK, replace(cfg, attn_max_block=1))
    add_case("int read", _edit(prog, o(add, 2), "<B", len(prog.buffers) - 1), Reason.INT_READ)
    add_case("unwritten", _edit(prog, o(add, 3), "<B", 5), Reason.UNWRITTEN)
    add_case("int write", _edit(prog, o(add, 5), "<B", len(prog.buffers) - 1),
             Reason.INT_WRITE)
    add_case("planes", img, Reason.PLANES, replace(cfg, max_planes=1))
    # zero fields (a division by zero, an empty weight range): refused, not a crash
    add_case("heads zero", _edit(prog, o(att, 13), "<B", 0), Reason.ATTN_SHAPE)
    add_case("block zero", _edit(prog, o(att, 14), "<B", 0), Reason.ATTN_BLOCK)
    add_case("weight bits zero", _edit(prog, o(lin, 19), "<B", 0), Reason.WEIGHT_BITS)
    return c


def test_every_refusal_reason_golden(small):
    prog, cfg = small
    cases = refusal_cases(prog, cfg)
    seen = set()
    for name, img, cf, code in cases:
        with pytest.raises(ProgramError) as e:
            program_loader(img, cf)
        assert isinstance(e.value, LoadError) and e.value.code == code, (name, str(e.value))
        assert str(e.value)                          # a sentence, not just a code
        seen.add(code)
    # repeat: a PINN-style LINEAR with repeat not a multiple of lanes
    b = _Builder(4)
    i = b.buffer(1, 1, BufKind.UINT, 4)
    d = b.buffer(1, 6, BufKind.SPIKES)
    o = b.buffer(1, 1, BufKind.INT, 32)
    b.matrix_op(Op.LINEAR, i, d, np.ones((2, 1)), None, 8, repeat=3,
                lif=LIFParams(theta=4, width=16, reset="zero"))
    b.matrix_op(Op.READOUT, d, o, np.ones((1, 6)), None, 8)
    rp = b.program(i, o)
    with pytest.raises(LoadError) as e:
        program_loader(rp.to_bytes(), AcceleratorConfig.for_programs(rp))
    seen.add(e.value.code)
    assert e.value.code == Reason.REPEAT
    # (OP_BUILD is a compact build's: tests/test_compact.py)
    assert seen == set(Reason) - {Reason.OK, Reason.OP_BUILD}, \
        set(Reason) - {Reason.OK, Reason.OP_BUILD} - seen
    assert program_loader(prog.to_bytes(), cfg).header.n_ops == len(prog.ops)


# ------------------------------------------------------------------------------ RTL

def rtl_load(image, cfg, mem_bytes=None):
    """Run the RTL loader on `image` in program memory; returns the tables it wrote."""
    dut = ProgramLoader(cfg)
    m = Module()
    m.submodules.dut = dut
    depth = cfg.program_bytes
    m.submodules.prog = prog = Memory(shape=8, depth=depth, init=list(image)[:depth])
    rp = prog.read_port()
    m.d.comb += [rp.addr.eq(dut.prog_addr), rp.en.eq(dut.prog_en), dut.prog_data.eq(rp.data)]
    mems = {}
    for name, port, shape, n in (("w", "w", dut.w_data.shape(), cfg.weight_words),
                                 ("b", "b", dut.b_data.shape(), cfg.bias_words),
                                 ("buf", "buf", dut.buf_data.shape(), cfg.max_buffers),
                                 ("op", "op", dut.op_data.shape(), cfg.max_ops)):
        m.submodules[name] = mem = Memory(shape=shape, depth=n, init=[])
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(getattr(dut, f"{port}_addr")), wp.en.eq(getattr(dut, f"{port}_en")),
                     wp.data.eq(getattr(dut, f"{port}_data"))]
        mems[name] = mem
    out = {}

    async def bench(ctx):
        ctx.set(dut.size, len(image))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles = 0
        while True:
            cycles += 1
            _, _, done, error = await ctx.tick().sample(dut.done, dut.error)
            if done:
                break
        out.update(cycles=cycles, error=error, reason=ctx.get(dut.reason),
                   header=ctx.get(dut.header))
        if not out["error"]:
            out["w"] = [[int(x) for x in ctx.get(mems["w"].data[a])] for a in range(cfg.weight_words)]
            out["b"] = [[int(x) for x in ctx.get(mems["b"].data[a])] for a in range(cfg.bias_words)]
            out["buf"] = [ctx.get(mems["buf"].data[a]) for a in range(cfg.max_buffers)]
            out["op"] = [ctx.get(mems["op"].data[a]) for a in range(cfg.max_ops)]

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


def _compare(rtl, loaded, cfg):
    assert not rtl["error"], Reason(rtl["reason"])
    n_w, n_b = len(loaded.weight_words), len(loaded.bias_words)
    assert rtl["w"][:n_w] == loaded.weight_words
    assert rtl["b"][:n_b] == loaded.bias_words
    for got, want in zip(rtl["buf"], loaded.buffers):
        assert {k: int(getattr(got, k)) for k in want.__dataclass_fields__} == want.__dict__
    for got, want in zip(rtl["op"], loaded.ops):
        assert {k: int(getattr(got, k)) for k in want.__dataclass_fields__} == want.__dict__
    h = rtl["header"]
    assert tuple(int(x) for x in h.info) == loaded.header.info
    for k in ("timesteps", "n_buffers", "n_ops", "input_buffer", "output_buffer"):
        assert int(getattr(h, k)) == getattr(loaded.header, k)


def test_rtl_pinn_tables(pinn):
    cfg = AcceleratorConfig.for_programs(pinn)
    loaded = program_loader(pinn.to_bytes(), cfg)
    rtl = rtl_load(pinn.to_bytes(), cfg)
    _compare(rtl, loaded, cfg)
    assert rtl["cycles"] == loader_cycles(loaded, cfg)


@pytest.mark.parametrize("engine_lanes", [None, 8, 16])
def test_rtl_reduced_digits_tables(small, engine_lanes):
    prog, cfg = small
    cfg = replace(cfg, engine_lanes=engine_lanes)
    loaded = program_loader(prog.to_bytes(), cfg)
    rtl = rtl_load(prog.to_bytes(), cfg)
    _compare(rtl, loaded, cfg)
    assert rtl["cycles"] == loader_cycles(loaded, cfg)


RTL_FAULTS = ["magic", "version", "size", "crc flip", "buffer id", "weight range", "v reset",
              "no attention", "unwritten", "bias range", "planes",
              # every refusal of the copy pipeline
              "blob range", "weight memory", "bias memory",
              "heads zero", "block zero", "weight bits zero"]


def test_rtl_refusal_codes(small):
    prog, cfg = small
    cases = {name: (img, cf, code) for name, img, cf, code in refusal_cases(prog, cfg)}
    for name in RTL_FAULTS:
        img, cf, code = cases[name]
        with pytest.raises(LoadError) as e:
            program_loader(img, cf)
        rtl = rtl_load(img, cf)
        assert rtl["error"] and Reason(rtl["reason"]) == e.value.code == code, name
