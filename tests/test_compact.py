"""The compact build (rtl/compact.py: the MicroEngine firmware, scan / walk / collect / encode
units) in the Amaranth simulator against the golden interpreter and loader: bit-exact
outputs, counters, per-op cycles at least the compact ideal bound; bad input, abort and
NO_PROGRAM; every LOAD refusal with the golden reason code. The golden side of the compact
build (its config, capability rules and cycle bound) is tested here too. The shipped PINN runs
end to end through the UART in tests/test_device_cocotb.py (Verilator)."""

import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest

from spikeforge.golden.accelerator import accelerator_cycles, compact_cycles, step_events
from spikeforge.golden.compile import (BUFFER, HEADER, OP_STRUCT, BufKind, Op, OpDesc,
                                       _Builder, run_program)
from spikeforge.golden.host_link import Error, State
from spikeforge.golden.lif import LIFParams
from spikeforge.golden.program_loader import (AcceleratorConfig, LoadError, Reason,
                                              program_loader)
from spikeforge.rtl.compact import CompactAccelerator
from spikeforge.sim.amaranth_runs import check_runs, run_accelerator, run_loads


def compact_program(seed=0, T=4, signed=True, leak=None, reset="subtract"):
    """Two tokens, a UINT4 input, a LINEAR with repeat 2, acc_shift -1, v0 and per-token
    biases, a LINEAR into 20 channels (two activation words), a READOUT with a bias."""
    rng = np.random.default_rng(seed)
    b = _Builder(T)
    lif = LIFParams(theta=40, leak_shift=leak, width=16, reset=reset, signed_spikes=signed,
                    current_width=18)
    kind = BufKind.SIGNED_SPIKES if signed else BufKind.SPIKES
    x = b.buffer(2, 5, BufKind.UINT, 4)
    h = b.buffer(2, 12, kind)
    h2 = b.buffer(2, 20, kind)
    out = b.buffer(1, 3, BufKind.INT, 32)
    b.matrix_op(Op.LINEAR, x, h, rng.integers(-20, 21, size=(6, 5)),
                rng.integers(-30, 30, size=(2, 12)), 8, lif=lif, repeat=2, acc_shift=-1, v0=10)
    b.matrix_op(Op.LINEAR, h, h2, rng.integers(-60, 61, size=(20, 12)),
                rng.integers(-30, 30, size=20), 8, lif=lif)
    b.matrix_op(Op.READOUT, h2, out, rng.integers(-100, 100, size=(3, 20)),
                rng.integers(-50, 50, size=3), 8)
    # spare buffers for the faults: INT (4 channels), one shaped as h, an INT shaped as h2
    b.buffer(2, 4, BufKind.INT, 32)
    b.buffer(2, 12, kind)
    b.buffer(2, 20, BufKind.INT, 32)
    return b.program(x, out)


def run_compare(prog, inputs, cfg):
    got = run_accelerator(CompactAccelerator(cfg), prog.to_bytes(), inputs)
    want = check_runs(got, prog, inputs, cfg)
    # events: the set (channel, plane) bits of the last run's LINEAR / READOUT sources
    bufs = {k: v[-1] for k, v in want.buffers.items()}
    events = sum(int(step_events(bufs[op.src[0]], prog.buffers[op.src[0]].kind,
                                 prog.buffers[op.src[0]].bits).sum()) for op in prog.ops)
    c = got["counters"]
    assert c["perf_events"] == events
    # PERF cycles: from the run's start to its end, inside the RUN command, around its ops
    assert sum(got["layer_cycles"][-1]) <= c["perf_cycles"] <= got["runs"][-1][1]
    return got


# ------------------------------------------------------------------------------ golden

def test_compact_config_rules():
    with pytest.raises(ValueError, match="lanes"):
        AcceleratorConfig(timesteps=4, lanes=4, attn_tokens=None, compact=True)
    with pytest.raises(ValueError, match="attn_tokens"):
        AcceleratorConfig(timesteps=4, lanes=1, compact=True)
    with pytest.raises(ValueError, match="weight_width"):
        AcceleratorConfig(timesteps=4, lanes=1, attn_tokens=None, weight_width=12, compact=True)
    prog = compact_program()
    cfg = AcceleratorConfig.for_programs(prog, compact=True)
    assert (cfg.lanes, cfg.act_lanes, cfg.max_input, cfg.max_events) == (1, 16, 10, 40)
    assert cfg.input_elements == 4 * 10
    b = _Builder(4)
    i, o = b.buffer(1, 3, BufKind.UINT, 2), b.buffer(1, 3, BufKind.UINT, 3)
    b.ops.append(OpDesc(Op.ADD, o, (i, i)))
    with pytest.raises(ValueError, match="LINEAR and READOUT ops only; the programs hold ADD"):
        AcceleratorConfig.for_programs(b.program(i, o), compact=True)


def test_compact_capability_refusals():
    prog = compact_program()
    cfg = AcceleratorConfig.for_programs(prog, compact=True)
    program_loader(prog.to_bytes(), cfg)             # accepted: no weight / bias memories
    for field, value, code in (("max_input", 9, Reason.BUFFER_SIZE),
                               ("max_events", 39, Reason.PLANES)):
        with pytest.raises(LoadError) as e:
            program_loader(prog.to_bytes(), replace(cfg, **{field: value}))
        assert e.value.code == code, field


def test_compact_cycle_bound_by_hand():
    """One token, T = 2, 3 channels of spikes: t0 has 2 events, t1 one; 4 units, repeat 1."""
    b = _Builder(2)
    x = b.buffer(1, 3, BufKind.SPIKES)
    h = b.buffer(1, 4, BufKind.SPIKES)
    o = b.buffer(1, 2, BufKind.INT, 32)
    lif = LIFParams(theta=5, width=16, reset="zero")
    b.matrix_op(Op.LINEAR, x, h, np.ones((4, 3), dtype=int), np.zeros(4, dtype=int), 8,
                lif=lif)
    b.matrix_op(Op.READOUT, h, o, np.ones((2, 4), dtype=int), None, 8)
    prog = b.program(x, o)
    cfg = AcceleratorConfig.for_programs(prog, compact=True)
    x0 = np.array([[[1, 1, 0]], [[0, 0, 1]]])
    bufs = {k: v[0] for k, v in run_program(prog, x0[None]).buffers.items()}
    assert step_events(bufs[x], BufKind.SPIKES, 1).tolist() == [[2], [1]]
    got = compact_cycles(prog, bufs, cfg)
    # LINEAR: max(2·4 weights, 4 neurons, 1 word) + max(1·4, 4, 1) + one bias row (2·4 reads)
    # READOUT: h has no spikes (ones < theta 5): max(0, 1 word) per step
    assert got == {"encode": 6, "ops": [8 + 4 + 8, 1 + 1], "total": 28}


# ------------------------------------------------------------------------------ RTL

def test_compact_bit_exact_two_tokens_every_feature():
    prog = compact_program()
    rng = np.random.default_rng(1)
    inputs = [rng.integers(0, 16, size=(4, 2, 5)) for _ in range(2)]
    bufs = run_program(prog, np.stack(inputs)).buffers
    assert 0.05 < np.abs(bufs[1]).mean() < 0.95 and bufs[2].any(), "the test needs live spikes"
    run_compare(prog, inputs, AcceleratorConfig.for_programs(prog, compact=True))


def test_compact_bit_exact_leak_reset_zero_spikes():
    prog = compact_program(seed=3, signed=False, leak=2, reset="zero")
    rng = np.random.default_rng(2)
    inputs = [rng.integers(0, 16, size=(4, 2, 5))]
    assert run_program(prog, np.stack(inputs)).buffers[2].any(), "the test needs live spikes"
    run_compare(prog, inputs, AcceleratorConfig.for_programs(prog, compact=True))


def test_compact_bad_input_abort_and_no_program():
    prog = compact_program()
    cfg = AcceleratorConfig.for_programs(prog, compact=True)
    rng = np.random.default_rng(4)
    good = rng.integers(0, 16, size=(4, 2, 5))
    bad = good.copy()
    bad[2, 1, 3] = 16                                # above the 4-bit input range
    want = run_program(prog, good[None]).output[0].reshape(-1).tolist()
    got = run_accelerator(CompactAccelerator(cfg), prog.to_bytes(), [bad, good, good],
                          abort_after=(1, 1500))
    assert [r[0] for r in got["runs"]] == [Error.BAD_INPUT, Error.ABORTED, 0]
    assert got["runs"][2][2].tolist() == want
    # RUN before any LOAD: NO_PROGRAM, the device in ERROR
    got = run_accelerator(CompactAccelerator(cfg), b"", [good])
    assert got["runs"][0][0] == Error.NO_PROGRAM and got["counters"]["state"] == State.ERROR


def _recrc(img) -> bytes:
    img = bytearray(img)
    img[HEADER.size - 4:HEADER.size] = b"\0" * 4
    img[HEADER.size - 4:HEADER.size] = struct.pack("<I", zlib.crc32(bytes(img)))
    return bytes(img)


def _edit(prog, off, fmt, value):
    img = bytearray(prog.to_bytes())
    struct.pack_into(fmt, img, off, value)
    return _recrc(img)


def _edits(prog, edits):
    img = bytearray(prog.to_bytes())
    for off, fmt, value in edits:
        struct.pack_into(fmt, img, off, value)
    return _recrc(img)


def _op(prog, i, field):
    return HEADER.size + len(prog.buffers) * BUFFER.size + i * OP_STRUCT.size + field


def _attention_program():
    """LINEAR, ATTENTION, ADD, READOUT: what a compact build refuses (and the attention
    faults it must name as the golden loader does)."""
    b = _Builder(4)
    lif = LIFParams(theta=20, leak_shift=1, width=16, reset="subtract", signed_spikes=True,
                    current_width=18)
    x = b.buffer(1, 4, BufKind.UINT, 2)
    q = b.buffer(1, 8, BufKind.SIGNED_SPIKES)
    b.matrix_op(Op.LINEAR, x, q, np.ones((8, 4), dtype=int), None, 8, lif=lif)
    att = b.buffer(1, 8, BufKind.SPIKES)
    b.ops.append(OpDesc(Op.ATTENTION, att, (q, q, q), heads=2, mode="ssa", block=1,
                        lif=LIFParams(theta=2, width=16, reset="zero")))
    s = b.buffer(1, 8, BufKind.UINT, 2)
    b.ops.append(OpDesc(Op.ADD, s, (att, att)))
    o = b.buffer(1, 2, BufKind.INT, 32)
    b.matrix_op(Op.READOUT, s, o, np.ones((2, 8), dtype=int), None, 8)
    return b.program(x, o)


def compact_refusals(prog, cfg):
    """(name, image, cfg) single faults of the compact program (golden gives the reason)."""
    img = prog.to_bytes()
    lin, lin2, ro = 0, 1, 2
    c = [("short", img[:20], cfg), ("too large", img, replace(cfg, program_bytes=len(img) - 1)),
         ("magic", _edit(prog, 0, "<4s", b"SFPX"), cfg),
         ("version", _edit(prog, 4, "<H", 2), cfg), ("size", _recrc(img[:-1]), cfg)]
    flip = bytearray(img)
    flip[len(img) // 2] ^= 0x10
    c += [("crc flip", bytes(flip), cfg),
          ("timesteps", _edit(prog, 6, "<H", 8), cfg),
          ("timesteps zero", _edit(prog, 6, "<H", 0), cfg),
          ("buffers", img, replace(cfg, max_buffers=4)),
          ("ops", img, replace(cfg, max_ops=2)),
          ("dst id", _edit(prog, _op(prog, ro, 5), "<B", 9), cfg),
          ("input id", _edit(prog, 12, "<B", 9), cfg),
          ("buffer kind", _edit(prog, HEADER.size + 2 * BUFFER.size + 4, "<B", 7), cfg),
          ("buffer size", img, replace(cfg, max_tokens=1)),
          ("input size", img, replace(cfg, max_input=9)),
          ("act memory", img, replace(cfg, act_words=cfg.act_words - 1)),
          ("input kind", _edit(prog, 12, "<B", 4), cfg),
          ("output", _edit(prog, 13, "<B", 4), cfg),
          ("opcode", _edit(prog, _op(prog, lin2, 0), "<B", 9), cfg),
          ("sources", _edit(prog, _op(prog, lin2, 1), "<B", 2), cfg),
          ("attn mode", _edit(prog, _op(prog, lin2, 7), "<B", 5), cfg),
          ("lif theta", _edit(prog, _op(prog, lin, 20), "<i", 0), cfg),
          ("lif leak", _edit(prog, _op(prog, lin, 16), "<B", 16), cfg),
          ("lif v_reset", _edit(prog, _op(prog, lin, 24), "<i", 1 << 20), cfg),
          ("lif width", _edit(prog, _op(prog, lin, 17), "<B", 20), cfg),
          ("lif reset", img, replace(cfg, reset="zero")),
          ("current width", img, replace(cfg, current_width=15)),
          ("shape", _edit(prog, _op(prog, lin, 8), "<H", 4), cfg),
          ("tokens", _edit(prog, HEADER.size + 1 * BUFFER.size, "<H", 1), cfg),
          ("weight blob", _edit(prog, _op(prog, ro, 32), "<I", len(prog.blob) - 10), cfg),
          ("bias blob", _edit(prog, _op(prog, lin2, 36), "<I", len(prog.blob) - 8), cfg),
          ("bias rows", _edit(prog, _op(prog, lin, 40), "<B", 3), cfg),
          ("weight range", _edit(prog, _op(prog, lin, 19), "<B", 4), cfg),
          ("weight bits zero", _edit(prog, _op(prog, lin, 19), "<B", 0), cfg),
          ("weight bits", img, replace(cfg, weight_width=6)),
          ("bias range", img, replace(cfg, bias_width=5)),
          ("v0", _edit(prog, _op(prog, lin, 28), "<i", 40000), cfg),
          ("size limit", img, replace(cfg, max_in=5)),
          ("planes", img, replace(cfg, max_planes=3)),
          ("events", img, replace(cfg, max_events=39)),
          # op 1 reads the spare INT buffer, its n_in matching: INT_READ
          ("int read", _edits(prog, [(_op(prog, lin2, 2), "<B", 4),
                                     (_op(prog, lin2, 8), "<H", 4)]), cfg),
          # op 0 writes the spare buffer shaped as h: op 1 reads h, unwritten
          ("unwritten", _edit(prog, _op(prog, lin, 5), "<B", 5), cfg),
          # op 1 (LINEAR) writes the spare INT buffer shaped as h2
          ("int write", _edit(prog, _op(prog, lin2, 5), "<B", 6), cfg)]
    att = _attention_program()
    acfg = replace(AcceleratorConfig.for_programs(att), lanes=1, attn_tokens=None,
                   compact=True, max_events=32, max_input=4, max_planes=2)
    a_op = lambda i, f: _op(att, i, f)       # noqa: E731
    c += [("no attention", att.to_bytes(), acfg),
          ("heads zero", _edit(att, a_op(1, 13), "<B", 0), acfg),
          ("heads", _edit(att, a_op(1, 13), "<B", 3), acfg),
          ("block", _edit(att, a_op(1, 14), "<B", 3), acfg),
          ("add shape", _edit(att, HEADER.size + 3 * BUFFER.size + 2, "<H", 7), acfg)]
    # an ADD (no attention): a compact build does not run it
    b = _Builder(4)
    lif = LIFParams(theta=20, width=16, reset="subtract", signed_spikes=True, current_width=18)
    x, h = b.buffer(1, 4, BufKind.UINT, 2), b.buffer(1, 8, BufKind.SIGNED_SPIKES)
    b.matrix_op(Op.LINEAR, x, h, np.ones((8, 4), dtype=int), None, 8, lif=lif)
    s_ = b.buffer(1, 8, BufKind.UINT, 2)
    b.ops.append(OpDesc(Op.ADD, s_, (h, h)))
    o = b.buffer(1, 2, BufKind.INT, 32)
    b.matrix_op(Op.READOUT, s_, o, np.ones((2, 8), dtype=int), None, 8)
    add = b.program(x, o)
    c += [("op build", add.to_bytes(), replace(acfg, max_events=16))]
    return c


def test_compact_refusals_match_the_golden_loader():
    prog = compact_program()
    cfg = AcceleratorConfig.for_programs(prog, compact=True)
    cases = compact_refusals(prog, cfg)
    want = {}
    for name, img, cf in cases:
        with pytest.raises(LoadError) as e:
            program_loader(img, cf)
        want[name] = e.value.code
    # the faults cover every reason a compact build can give: not the weight and bias
    # memories (it has none), nor REPEAT (with one lane only repeat = 0 is refused, and a
    # unit of no neurons fails SHAPE first unless its destination has no channels)
    missing = set(Reason) - set(want.values()) - {
        Reason.OK, Reason.WEIGHT_MEMORY, Reason.BIAS_MEMORY, Reason.REPEAT}
    assert not missing, missing
    by_cfg = {}
    for name, img, cf in cases:
        by_cfg.setdefault(cf, []).append((name, img))
    for cf, items in by_cfg.items():
        got = run_loads(CompactAccelerator(cf), [img for _, img in items])
        for (name, _), (error, reason) in zip(items, got):
            assert error == Error.BAD_PROGRAM, name
            assert Reason(reason) == want[name], (name, Reason(reason), want[name])


# ------------------------------------------------------------------ review regressions

def _mini(T=2, tokens=1, n_in=4, kind=BufKind.SPIKES, bits=1, n_out=3, repeat=1, dst=None,
          lif=None, readout=2, out_tokens=1, out_bits=32, ro_bias_rows=1, seed=0, lin_w=None,
          v0=0, ro_w=20, ro_weights=None):
    """LINEAR (optional) then READOUT, small: the review's edge cases."""
    rng = np.random.default_rng(seed)
    b = _Builder(T)
    x = b.buffer(tokens, n_in, kind, bits)
    src = x
    if lif is not None:
        h = b.buffer(tokens, n_out * repeat, dst if dst is not None else BufKind.SPIKES)
        w = lin_w if lin_w is not None else rng.integers(-30, 31, size=(n_out, n_in))
        b.matrix_op(Op.LINEAR, x, h, w, None, 8, lif=lif, repeat=repeat, v0=v0)
        src = h
    o = b.buffer(out_tokens, readout, BufKind.INT, out_bits)
    ch = b.buffers[src].channels
    bias = rng.integers(-9, 10, size=(ro_bias_rows, readout))
    w = ro_weights if ro_weights is not None else rng.integers(-ro_w, ro_w + 1,
                                                                size=(readout, ch))
    b.matrix_op(Op.READOUT, src, o, w, bias, 8)
    return b.program(x, o)


def _exact(prog, inputs):
    cfg = AcceleratorConfig.for_programs(prog, compact=True)
    got = run_accelerator(CompactAccelerator(cfg), prog.to_bytes(), inputs)
    return got, run_program(prog, np.stack(inputs)).output.reshape(len(inputs), -1)


def test_review_readout_wider_than_the_neurons_and_per_token_bias_rows():
    """More READOUT outputs than LIF neurons (the bias cache and walk counters are sized by
    both), and a READOUT with two bias rows (golden adds row 0 for every token)."""
    lif = LIFParams(theta=3, width=16, reset="zero")
    prog = _mini(tokens=2, n_out=2, lif=lif, readout=6, out_tokens=2, ro_bias_rows=2)
    rng = np.random.default_rng(1)
    x = [rng.integers(0, 2, size=(2, 2, 4)) for _ in range(2)]
    got, want = _exact(prog, x)
    assert [r[0] for r in got["runs"]] == [0, 0]
    assert [r[2].tolist() for r in got["runs"]] == want.tolist()


def test_review_wide_sums_v0_wider_than_the_current_and_signed_spikes_into_spikes():
    # 100 UINT4 channels at 15, weights 127: a sum that needs the exact plane-sum width
    prog = _mini(T=1, n_in=100, kind=BufKind.UINT, bits=4, readout=1, ro_w=127)
    w = prog.weights(prog.ops[0])
    prog.blob = prog.blob[:prog.ops[0].weight_addr] + np.full(w.shape, 127, np.int8).tobytes() \
        + prog.blob[prog.ops[0].weight_addr + w.size:]
    got, want = _exact(prog, [np.full((1, 1, 100), 15)])
    assert got["runs"][0][0] == 0 and got["runs"][0][2].tolist() == want[0].tolist()
    # v0 = 200 with an 8-bit current: the LOAD pass carries the membrane's 16 bits
    lif = LIFParams(theta=250, width=16, reset="zero", current_width=8)
    prog = _mini(T=2, lif=lif, v0=200, n_out=2, lin_w=np.full((2, 4), 30))
    got, want = _exact(prog, [np.ones((2, 1, 4), dtype=int)])
    assert got["runs"][0][0] == 0 and got["runs"][0][2].tolist() == want[0].tolist()
    # a signed LIF into a SPIKES buffer: a -1 spike is out of its range, BAD_INPUT as golden
    lif = LIFParams(theta=5, width=16, reset="subtract", signed_spikes=True)
    prog = _mini(T=2, lif=lif, n_out=2, lin_w=np.full((2, 4), -30))
    with pytest.raises(ValueError):
        run_program(prog, np.ones((1, 2, 1, 4), dtype=int))
    cfg = AcceleratorConfig.for_programs(prog, compact=True)
    got = run_accelerator(CompactAccelerator(cfg), prog.to_bytes(), [np.ones((2, 1, 4), int)])
    assert got["runs"][0][0] == Error.BAD_INPUT


def test_review_refused_readout_keeps_the_output_and_zero_tokens_sum_to_zero():
    # 8-bit INT output: the first input fits, the second does not (BAD_INPUT): OUTPUT keeps
    # the first run's totals, as golden's device
    prog = _mini(T=2, n_in=4, readout=2, out_bits=8, ro_weights=np.full((2, 4), 20))
    small, big = np.zeros((2, 1, 4), dtype=int), np.ones((2, 1, 4), dtype=int)
    with pytest.raises(ValueError):
        run_program(prog, big[None])
    cfg = AcceleratorConfig.for_programs(prog, compact=True)
    got = run_accelerator(CompactAccelerator(cfg), prog.to_bytes(), [small, big])
    assert [r[0] for r in got["runs"]] == [0, Error.BAD_INPUT]
    first = run_program(prog, small[None]).output.reshape(-1).tolist()
    assert got["runs"][1][2].tolist() == first
    # a source of no tokens: the READOUT's totals are 0 + T·0·bias = 0
    prog = _mini(T=2, tokens=0, readout=2)
    got, want = _exact(prog, [np.zeros((2, 0, 4), dtype=int)])
    assert got["runs"][0][0] == 0 and got["runs"][0][2].tolist() == want[0].tolist() == [0, 0]


def test_review_refusals_v_reset_and_linear_into_uint():
    lif = LIFParams(theta=5, width=16, reset="zero", v_reset=3)
    p_vreset = _mini(lif=lif)
    p_uint = _mini(lif=LIFParams(theta=5, width=16, reset="zero"), dst=BufKind.UINT)
    for prog, code in ((p_vreset, Reason.LIF_BUILD), (p_uint, Reason.OP_BUILD)):
        cfg = AcceleratorConfig.for_programs(prog, compact=True)
        with pytest.raises(LoadError) as e:
            program_loader(prog.to_bytes(), cfg)
        assert e.value.code == code
        (error, reason), = run_loads(CompactAccelerator(cfg), [prog.to_bytes()])
        assert error == Error.BAD_PROGRAM and Reason(reason) == code
