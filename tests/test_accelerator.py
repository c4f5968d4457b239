"""Accelerator (rtl/accelerator.py) in Amaranth's simulator against the golden interpreter
`run_program`: the host side is driven on the device port directly (the UART host link is
proven separately and end to end in cocotb). Programs: the shipped spiking PINN (signed IF,
v0, repeat, acc_shift, a 15-bit input) and small random transformer blocks (bit-plane input,
per-token bias, every attention mode, ADD, READOUT)."""

import functools

import numpy as np
import pytest

from spikeforge.golden.accelerator import accelerator_cycles
from spikeforge.golden.compile import (BufKind, Op, OpDesc, _Builder, compile_pinn,
                                       pinn_input, run_program)
from spikeforge.golden.host_link import Error, State
from spikeforge.golden.lif import LIFParams
from spikeforge.golden.pinn import convert, eval_grid, load_weights
from spikeforge.golden.program_loader import AcceleratorConfig
from spikeforge.rtl.accelerator import Accelerator
from spikeforge.sim.amaranth_runs import check_runs, run_accelerator


@functools.lru_cache(maxsize=None)
def pinn_program(T=16):
    snn = convert(load_weights("sin"), T, integer=True)
    return snn, compile_pinn(snn)


def block_program(mode, block=1, variant="reference", seed=0, heads=2, T=4):
    """A random one-block spiking transformer: UINT5 input -> LINEAR (per-token bias) ->
    q, k, v -> ATTENTION -> LINEAR -> ADD (residual) -> READOUT."""
    rng = np.random.default_rng(seed)
    N, D, C_in = 8, 16 * heads, 8
    b = _Builder(T)
    lif = lambda theta: LIFParams(theta=theta, leak_shift=1, width=16, reset="zero")
    x = b.buffer(N, C_in, BufKind.UINT, 5)
    emb, q, k, v, att, proj = (b.buffer(N, D, BufKind.SPIKES) for _ in range(6))
    res = b.buffer(N, D, BufKind.UINT, 2)
    out = b.buffer(1, 10, BufKind.INT, 32)
    w = lambda n_out, n_in, s=40: rng.integers(-s, s + 1, size=(n_out, n_in))
    b.matrix_op(Op.LINEAR, x, emb, w(D, C_in, 20), rng.integers(-50, 80, size=(N, D)), 8,
                lif=lif(200))
    for dst in (q, k, v):
        b.matrix_op(Op.LINEAR, emb, dst, w(D, D), rng.integers(-20, 40, size=D), 8,
                    lif=lif(60))
    b.ops.append(OpDesc(Op.ATTENTION, att, (q, k, v), heads=heads, mode=mode, block=block,
                        variant=variant, lif=LIFParams(theta=2, leak_shift=1, width=16,
                                                       reset="zero", current_width=16)))
    b.matrix_op(Op.LINEAR, att, proj, w(D, D), rng.integers(-20, 40, size=D), 8, lif=lif(50))
    b.ops.append(OpDesc(Op.ADD, res, (emb, proj)))
    b.matrix_op(Op.READOUT, res, out, w(10, D, 100), rng.integers(-30, 30, size=10), 8)
    return b.program(x, out)


def run_and_compare(prog, inputs, cfg):
    got = run_accelerator(Accelerator(cfg), prog.to_bytes(), inputs)
    check_runs(got, prog, inputs, cfg)
    return got


@pytest.mark.parametrize("engine_lanes", [None, 8])
def test_pinn_bit_exact(engine_lanes):
    """The PINN: T=16, biases, acc_shift, a LINEAR with `repeat` (currents copied to
    several neurons); with 8 engine lanes each drained beat is split in two."""
    snn, prog = pinn_program()
    x = pinn_input(snn, eval_grid(5)[[0, 2, 4]])
    run_and_compare(prog, list(x), AcceleratorConfig.for_programs(prog, lanes=4,
                                                                 engine_lanes=engine_lanes))


@pytest.mark.parametrize("mode,block,variant,engine_lanes", [
    ("ssa", 1, "reference", None), ("statten", 2, "reference", None),
    ("sdsa", 1, "reference", None), ("sdsa", 1, "paper", None), ("ssa", 1, "reference", 8)])
def test_transformer_block_bit_exact(mode, block, variant, engine_lanes):
    prog = block_program(mode, block, variant, seed=block + len(variant))
    rng = np.random.default_rng(1)
    inputs = [rng.integers(0, 17, size=(4, 8, 8)) for _ in range(2)]
    spikes = run_program(prog, np.stack(inputs)).buffers
    assert 0.05 < spikes[4].mean() < 0.95 and spikes[7].any(), "the test needs live spikes"
    run_and_compare(prog, inputs, AcceleratorConfig.for_programs(prog, lanes=4,
                                                                 engine_lanes=engine_lanes))


@pytest.mark.parametrize("engine_lanes", [None, 8, 16])
def test_partial_last_channel_group_bit_exact(engine_lanes):
    """Channel counts that leave the last group of P lanes partial, with several groups:
    ENCODE (6 input channels: groups of 4 and 2 lanes), LINEAR into 10 units
    (3 groups), ADD and READOUT over 10 channels, at 4 lanes. With 8 engine lanes the
    engine's second beat of a timestep holds one lane group of two; with 16, one beat
    holds three of four."""
    rng = np.random.default_rng(7)
    b = _Builder(4)
    lif = LIFParams(theta=30, leak_shift=2, width=16, reset="zero")
    x = b.buffer(3, 6, BufKind.UINT, 4)
    h, h2 = (b.buffer(3, 10, BufKind.SPIKES) for _ in range(2))
    s = b.buffer(3, 10, BufKind.UINT, 2)
    out = b.buffer(1, 5, BufKind.INT, 32)
    b.matrix_op(Op.LINEAR, x, h, rng.integers(-9, 10, size=(10, 6)),
                rng.integers(-5, 20, size=10), 8, lif=lif)
    b.matrix_op(Op.LINEAR, h, h2, rng.integers(-30, 40, size=(10, 10)), None, 8, lif=lif)
    b.ops.append(OpDesc(Op.ADD, s, (h, h2)))
    b.matrix_op(Op.READOUT, s, out, rng.integers(-9, 10, size=(5, 10)), None, 8)
    prog = b.program(x, out)
    inputs = [rng.integers(0, 16, size=(4, 3, 6)) for _ in range(2)]
    bufs = run_program(prog, np.stack(inputs)).buffers
    assert 0.05 < bufs[h].mean() < 0.95 and bufs[h2].any(), "the test needs live spikes"
    run_and_compare(prog, inputs, AcceleratorConfig.for_programs(prog, lanes=4,
                                                                 engine_lanes=engine_lanes))


def test_out_of_range_input_and_no_program():
    prog = block_program("ssa")
    cfg = AcceleratorConfig.for_programs(prog, lanes=4)
    good = np.random.default_rng(2).integers(0, 17, size=(4, 8, 8))
    bad = good.copy()
    bad[1, 3, 5] = 40          # above the 5-bit input range
    got = run_accelerator(Accelerator(cfg), prog.to_bytes(), [bad, good])
    assert got["runs"][0][0] == Error.BAD_INPUT
    want = run_program(prog, good[None])
    assert got["runs"][1][0] == 0
    assert got["runs"][1][2].tolist() == want.output[0].reshape(-1).tolist()


def test_abort_mid_inference_then_exact():
    prog = block_program("statten", 2)
    cfg = AcceleratorConfig.for_programs(prog, lanes=4)
    x = [np.random.default_rng(3).integers(0, 17, size=(4, 8, 8)) for _ in range(2)]
    got = run_accelerator(Accelerator(cfg), prog.to_bytes(), x, abort_after=(0, 6000))
    assert got["runs"][0][0] == Error.ABORTED        # the aborted run says so
    want = run_program(prog, x[1][None])
    assert got["runs"][1][0] == 0
    assert got["runs"][1][2].tolist() == want.output[0].reshape(-1).tolist()


def test_corrupt_image_refused():
    prog = block_program("ssa")
    cfg = AcceleratorConfig.for_programs(prog, lanes=4)
    image = bytearray(prog.to_bytes())
    image[100] ^= 0x10          # the CRC-32 no longer matches
    got = run_accelerator(Accelerator(cfg), bytes(image), [])
    assert got["load"] == Error.BAD_PROGRAM
