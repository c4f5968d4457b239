"""Compiler, program image and golden interpreter: the program of each shipped network
runs bit-identical to the golden network; corrupt or inconsistent images are refused."""

import struct
import zlib

import numpy as np
import pytest

from spikeforge.golden import transformer as tf
from spikeforge.golden.compile import (HEADER, OP_STRUCT, Op, Program, ProgramError,
                                       compile_pinn, compile_transformer, pinn_input,
                                       run_program)
from spikeforge.golden.pinn import convert, eval_grid, load_weights, snn_output_int


@pytest.fixture(scope="module")
def digits():
    images, labels = tf.digits_test_set()
    return images[:40], labels[:40]


@pytest.mark.parametrize("attention", ["ssa", "sdsa", "statten"])
def test_transformer_program_equals_the_golden_network(attention, digits):
    model, _ = tf.load_int(tf.model_paths(attention)[1])
    prog = Program.from_bytes(compile_transformer(model).to_bytes())
    enc = tf.encode_input(digits[0], model.cfg)
    run, tr = run_program(prog, enc), model.run(enc)
    assert np.array_equal(run.output[:, 0, 0], tr.logits)
    # every intermediate buffer too: the accelerator is checked layer by layer against these
    written = [op.dst for op in prog.ops]
    for name in ("emb", "q", "k", "v", "attn", "proj", "fc1", "fc2", "x2"):
        assert any(np.array_equal(run.buffers[b], tr.values[name]) for b in written), name
    assert sum(run.sat_counts) == tr.sat_count
    assert np.mean(tr.predictions() == digits[1]) >= 0.9


@pytest.mark.parametrize("problem", ["sin", "multi"])
def test_pinn_program_equals_the_golden_snn(problem):
    snn = convert(load_weights(problem), 16, integer=True)
    prog = Program.from_bytes(compile_pinn(snn).to_bytes())
    x = eval_grid(64)
    run = run_program(prog, pinn_input(snn, x))
    assert np.array_equal(run.output[:, 0, 0, 0], snn_output_int(snn, x))
    assert [op.op for op in prog.ops] == [Op.LINEAR] * len(snn.weights) + [Op.READOUT]


@pytest.fixture(scope="module")
def image():
    model, _ = tf.load_int(tf.model_paths("ssa")[1])
    return compile_transformer(model).to_bytes()


def _recrc(img: bytearray) -> bytes:
    """Fix the CRC after an edit, so the check under test is not the CRC."""
    img[HEADER.size - 4:HEADER.size] = b"\0" * 4
    img[HEADER.size - 4:HEADER.size] = struct.pack("<I", zlib.crc32(bytes(img)))
    return bytes(img)


def _op_offset(image, i):
    _, _, _, nb, *_ = HEADER.unpack_from(image)
    return HEADER.size + nb * 8 + i * OP_STRUCT.size


def test_every_single_byte_corruption_is_refused(image):
    rng = np.random.default_rng(0)
    for pos in rng.choice(len(image), size=200, replace=False):
        bad = bytearray(image)
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(ProgramError):
            Program.from_bytes(bad)


@pytest.mark.parametrize("edit, match", [
    (lambda b: b.__setitem__(slice(0, 4), b"XXXX"), "bad magic"),
    (lambda b: b.__setitem__(slice(4, 6), struct.pack("<H", 7)), "version 7"),
    (lambda b: b.extend(b"\0"), "header says"),
    (lambda b: b.__setitem__(slice(_op_offset(b, 0), _op_offset(b, 0) + 1), b"\x09"),
     "unknown opcode 9"),
    (lambda b: b.__setitem__(slice(_op_offset(b, 1) + 5, _op_offset(b, 1) + 6), b"\x63"),
     "buffer id 99 out of range"),
    # weight address of op 0 pushed past the end of the blob
    (lambda b: b.__setitem__(slice(_op_offset(b, 0) + 32, _op_offset(b, 0) + 36),
                             struct.pack("<I", 10 ** 6)), "outside the"),
    # theta 0 is not a valid LIF
    (lambda b: b.__setitem__(slice(_op_offset(b, 0) + 20, _op_offset(b, 0) + 24),
                             struct.pack("<i", 0)), "invalid LIF"),
])
def test_inconsistent_images_are_refused_with_a_reason(image, edit, match):
    bad = bytearray(image)
    edit(bad)
    with pytest.raises(ProgramError, match=match):
        Program.from_bytes(_recrc(bad))


def test_truncated_image_and_bad_inputs(image):
    with pytest.raises(ProgramError, match="too short"):
        Program.from_bytes(image[:10])
    with pytest.raises(ProgramError, match="header says"):
        Program.from_bytes(image[:-1])
    prog = Program.from_bytes(image)
    with pytest.raises(ValueError, match="inputs must be"):
        run_program(prog, np.zeros((1, 4, 8, 7), dtype=np.int64))
    with pytest.raises(ValueError, match="values must be in"):
        run_program(prog, np.full((1, 4, 8, 8), 40, dtype=np.int64))
