"""Host link protocol (golden/host_link.py) and the driver (spikeforge/driver.py) against
the golden reference device: end to end on the shipped networks, and every bad-input case
of the protocol (corrupt, truncated, over-long and unknown frames, bad programs, running
without a program, a silent device)."""

import struct

import numpy as np
import pytest

from spikeforge.driver import AcceleratorLink, DeviceError, GoldenTransport, LinkTimeout
from spikeforge.golden import transformer as tf
from spikeforge.golden.compile import compile_pinn, compile_transformer, pinn_input
from spikeforge.golden.host_link import (MAX_PAYLOAD, NACK, SYNC, Cmd, Error, FrameParser,
                                         HostLinkDevice, Space, State, crc16, encode_frame)
from spikeforge.golden.pinn import convert, eval_grid, load_weights, snn_output_int


def test_crc16_is_ccitt_false():
    # the published check value of CRC-16/CCITT-FALSE for the ASCII digits 1..9
    assert crc16(b"123456789") == 0x29B1


@pytest.fixture(scope="module")
def ssa():
    model, _ = tf.load_int(tf.model_paths("ssa")[1])
    images, labels = tf.digits_test_set()
    return model, images[:6], labels[:6]


def linked():
    transport = GoldenTransport()
    return AcceleratorLink(transport), transport.device


def test_digits_through_the_link_equal_the_golden_network(ssa):
    model, images, _ = ssa
    link, _ = linked()
    assert link.ping() == 1
    link.load_program(compile_transformer(model))
    enc = tf.encode_input(images, model.cfg)
    golden = model.run(enc)
    for k in range(len(images)):
        out = link.infer(enc[k])
        assert np.array_equal(out[0], golden.logits[k])
    assert link.counters()["inferences"] == len(images)
    assert link.status()["state"] == "DONE"


def test_pinn_through_the_link_equals_the_golden_snn():
    snn = convert(load_weights("sin"), 16, integer=True)
    link, _ = linked()
    link.load_program(compile_pinn(snn))
    x = eval_grid(8)
    enc = pinn_input(snn, x)
    got = [link.infer(enc[k])[0, 0] for k in range(len(x))]
    assert np.array_equal(got, snn_output_int(snn, x))


def reply(device, frame):
    out = device.feed(frame)
    assert out[0] == SYNC
    _, cmd, seq, length = struct.unpack_from("<BBBH", out)
    return cmd, seq, out[5:5 + length]


def nack_code(device, frame):
    cmd, _, payload = reply(device, frame)
    assert cmd == NACK
    return Error(payload[1])


def test_every_single_bit_flip_is_refused_and_memory_is_untouched():
    device = HostLinkDevice()
    frame = encode_frame(Cmd.WRITE, 9, struct.pack("<BI", Space.PROGRAM, 16) + b"\x11" * 8)
    for bit in range(8, 8 * len(frame)):          # every bit after SYNC
        bad = bytearray(frame)
        bad[bit // 8] ^= 1 << (bit % 8)
        out = device.feed(bytes(bad)) + device.idle(device.timeout_bytes)
        assert out, f"bit {bit}: no answer"
        _, cmd, *_ = struct.unpack_from("<BBBH", out)
        assert cmd == NACK, f"bit {bit}: a corrupted frame was accepted"
        assert Error(out[6]) in (Error.BAD_CRC, Error.BAD_LENGTH, Error.TRUNCATED)
        assert not any(device.program_mem), f"bit {bit}: memory changed"
    assert reply(device, encode_frame(Cmd.PING, 1))[0] == Cmd.PING | 0x80   # still responsive


def test_truncated_frame_times_out_and_the_link_recovers():
    device = HostLinkDevice(timeout_bytes=10)
    frame = encode_frame(Cmd.PING, 3)
    assert device.feed(frame[:4]) == b""
    assert device.idle(5) == b""                     # not yet
    out = device.idle(5)
    assert out[1] == NACK and Error(out[6]) == Error.TRUNCATED
    assert reply(device, frame)[0] == Cmd.PING | 0x80


def test_noise_between_frames_is_skipped():
    device = HostLinkDevice()
    cmd, seq, _ = reply(device, b"\x00\x13\x37" + encode_frame(Cmd.PING, 77))
    assert (cmd, seq) == (Cmd.PING | 0x80, 77)


@pytest.mark.parametrize("frame,error", [
    (encode_frame(0x42, 1), Error.UNKNOWN_CMD),
    (bytes([SYNC, Cmd.WRITE, 1]) + struct.pack("<H", MAX_PAYLOAD + 1), Error.BAD_LENGTH),
    (encode_frame(Cmd.READ, 1, b"\x00"), Error.BAD_LENGTH),
    (encode_frame(Cmd.READ, 1, struct.pack("<BIH", Space.PROGRAM, 0, MAX_PAYLOAD + 1)),
     Error.BAD_LENGTH),
    (encode_frame(Cmd.WRITE, 1, struct.pack("<BI", Space.PROGRAM, 256 * 1024 - 2) + b"abc"),
     Error.BAD_ADDRESS),
    (encode_frame(Cmd.WRITE, 1, struct.pack("<BI", Space.OUTPUT, 0) + b"a"), Error.BAD_ADDRESS),
    (encode_frame(Cmd.WRITE, 1, struct.pack("<BI", 7, 0) + b"a"), Error.BAD_ADDRESS),
    (encode_frame(Cmd.RUN, 1), Error.NO_PROGRAM),
    (encode_frame(Cmd.LOAD, 1, struct.pack("<I", 64)), Error.BAD_PROGRAM),
])
def test_bad_frames_get_the_right_nack(frame, error):
    device = HostLinkDevice()
    assert nack_code(device, frame) == error
    assert not any(device.program_mem)
    assert reply(device, encode_frame(Cmd.PING, 2))[0] == Cmd.PING | 0x80


def test_corrupt_program_image_is_refused(ssa):
    model = ssa[0]
    image = bytearray(compile_transformer(model).to_bytes())
    image[len(image) // 2] ^= 0x10                  # the image's own CRC-32 catches it
    link, device = linked()
    with pytest.raises(DeviceError, match="BAD_PROGRAM"):
        link.load_program(bytes(image))
    assert link.status()["state"] == "ERROR"
    with pytest.raises(DeviceError, match="NO_PROGRAM"):
        link.command(Cmd.RUN)


def test_input_out_of_range_is_refused_and_reset_recovers(ssa):
    model, images, _ = ssa
    link, _ = linked()
    link.load_program(compile_transformer(model))
    enc = tf.encode_input(images[:1], model.cfg)[0]
    bad = enc.copy()
    bad[0, 0, 0] = 30000                             # beyond the input buffer's bits
    with pytest.raises(DeviceError, match="BAD_INPUT"):
        link.infer(bad)
    link.reset()
    assert link.status()["state"] == "READY"
    assert np.array_equal(link.infer(enc)[0], model.run(enc[None]).logits[0])


def test_a_run_in_flight_blocks_other_commands_until_reset(ssa):
    """start_run sends RUN without waiting; every other command is refused by the driver
    (the next reply on the line is the RUN's) until finish_run or reset collects it. On the
    golden device the RUN has finished by then: reset() says it stopped nothing, and the
    RESET cleared the output."""
    model, images, _ = ssa
    link, device = linked()
    link.load_program(compile_transformer(model))
    enc = tf.encode_input(images[:1], model.cfg)[0]
    link.start_run(enc)
    for call in (link.ping, link.status, lambda: link.start_run(enc), lambda: link.infer(enc)):
        with pytest.raises(RuntimeError, match="a RUN is in flight"):
            call()
    assert link.reset() is False
    assert link.status() == {"state": "READY", "last_error": None, "inferences": 1}
    assert len(device.output_mem) == 0
    with pytest.raises(RuntimeError, match="no RUN in flight"):
        link.finish_run()
    assert np.array_equal(link.infer(enc)[0], model.run(enc[None]).logits[0])


class StoppingDevice(HostLinkDevice):
    """A golden device whose RUNs are all stopped by the RESET behind them (as the RTL's,
    when the RESET arrives while the RUN executes), or fail with `error`."""

    def __init__(self, error=Error.ABORTED):
        super().__init__()
        self.error = error

    def _cmd_run(self, payload):
        self.state = State.ERROR
        return self.error


@pytest.mark.parametrize("error, stopped", [(Error.ABORTED, True), (Error.BAD_INPUT, False)])
def test_reset_collects_both_replies_of_a_stopped_run(ssa, error, stopped):
    """reset() during a RUN reads the RUN's reply (NACK ABORTED: stopped; another NACK: the
    run had ended on its own) and then the RESET's, so the link stays in step."""
    model, images, _ = ssa
    link = AcceleratorLink(GoldenTransport(StoppingDevice(error)))
    link.load_program(compile_transformer(model))
    link.start_run(tf.encode_input(images[:1], model.cfg)[0])
    assert link.reset() is stopped
    assert link.status()["state"] == "READY" and link.ping() == 1
    link.start_run()
    with pytest.raises(DeviceError, match=error.name):
        link.finish_run()


def test_driver_times_out_with_a_clear_message():
    class Silent:
        def write(self, data):
            pass

        def read(self, n, timeout_s):
            return b""
    link = AcceleratorLink(Silent(), timeout_s=0.01)
    with pytest.raises(LinkTimeout, match="no answer from the device"):
        link.ping()


def test_parser_rejects_a_length_beyond_its_limit_at_once():
    parser = FrameParser(max_payload=8)
    frame = bytes([SYNC, Cmd.WRITE, 5]) + struct.pack("<H", 9)
    results = [parser.push(b) for b in frame]
    assert results[-1] == (Error.BAD_LENGTH, Cmd.WRITE, 5) and not parser.in_frame


def test_cli_run_reports_bit_identical_results(capsys):
    import json

    from spikeforge.cli import main
    assert main(["run", "--model", "digits-sdsa", "--count", "5"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["bit_identical_to_golden"] and summary["inferences"] == 5
    assert len(summary["predictions"].split()) == 5
    assert main(["run", "--model", "pinn-sin", "--count", "0"]) == 2    # a message, not a crash


def test_perf_answers_zeros_from_the_golden_device(ssa):
    """PERF (0x09): cycles, events, skipped of the last RUN; the golden device has no cycle
    model, so 0 = not modelled, before and after a run; a payload is BAD_LENGTH."""
    model, images, _ = ssa
    link, device = linked()
    zeros = {"cycles": 0, "events": 0, "skipped": 0}
    assert link.perf() == zeros
    link.load_program(compile_transformer(model))
    link.infer(tf.encode_input(images[:1], model.cfg)[0])
    assert link.perf() == zeros
    assert reply(device, encode_frame(Cmd.PERF, 4)) == (Cmd.PERF | 0x80, 4, bytes(12))
    assert nack_code(device, encode_frame(Cmd.PERF, 5, b"\x00")) == Error.BAD_LENGTH


def test_layers_space_is_sized_by_load_read_only_and_zero_on_the_golden_device(ssa):
    """LAYERS (space 3): u32 cycles per op of the last RUN; empty before a LOAD, 4 bytes per
    op after it, zeros from the golden device (no cycle model), never writable."""
    model = ssa[0]
    program = compile_transformer(model)
    n_ops = len(program.ops)
    link, device = linked()

    def read(addr, count, seq=1):
        return encode_frame(Cmd.READ, seq, struct.pack("<BIH", Space.LAYERS, addr, count))

    def write(addr, data, seq=1):
        return encode_frame(Cmd.WRITE, seq, struct.pack("<BI", Space.LAYERS, addr) + data)

    assert reply(device, read(0, 0)) == (Cmd.READ | 0x80, 1, b"")       # size 0 before LOAD
    assert nack_code(device, read(0, 1)) == Error.BAD_ADDRESS
    assert nack_code(device, write(0, b"")) == Error.BAD_ADDRESS        # read only, even empty
    with pytest.raises(RuntimeError, match="no program loaded"):
        link.layer_cycles()
    link.load_program(program)
    assert link.n_ops == n_ops
    assert link.layer_cycles() == [0] * n_ops                          # before any RUN
    link.infer(tf.encode_input(ssa[1][:1], model.cfg)[0])
    assert link.layer_cycles() == [0] * n_ops                          # "not modelled"
    size = 4 * n_ops
    assert reply(device, read(size - 4, 4, seq=6)) == (Cmd.READ | 0x80, 6, bytes(4))
    assert nack_code(device, read(size - 3, 4)) == Error.BAD_ADDRESS   # one byte too far
    assert nack_code(device, read(size, 1)) == Error.BAD_ADDRESS
    assert nack_code(device, read(0xFFFFFFFF, 1)) == Error.BAD_ADDRESS
    for addr in (0, size - 1, size):
        assert nack_code(device, write(addr, b"\x01")) == Error.BAD_ADDRESS
    assert device.layers_mem == bytes(size)                            # nothing written
    # the driver decodes little-endian u32 per op (values a cycle-counting device would hold)
    device.layers_mem[:12] = bytes.fromhex("01000000" "78563412" "ffffffff")
    assert link.layer_cycles()[:3] == [1, 0x12345678, 2**32 - 1]


class DeviceWithoutLayers(HostLinkDevice):
    """A device older than LAYERS: space 3 is unknown, so its READ is BAD_ADDRESS."""
    def _space(self, space):
        return None if space == Space.LAYERS else super()._space(space)


def test_layer_cycles_on_a_device_without_layers():
    from spikeforge.sim.link_jobs import run_model
    link = AcceleratorLink(GoldenTransport(DeviceWithoutLayers()))
    summary, _ = run_model(link, "pinn-sin", count=2, timesteps=8)
    assert summary["bit_identical_to_golden"] and summary["layer_cycles"] is None
    with pytest.raises(DeviceError, match="refused READ: BAD_ADDRESS"):
        link.layer_cycles()
    # the current golden device answers one zero per op of the shipped PINN program
    link = AcceleratorLink(GoldenTransport())
    summary, _ = run_model(link, "pinn-sin", count=2, timesteps=8)
    n_ops = len(compile_pinn(convert(load_weights("sin"), 8, integer=True)).ops)
    assert n_ops > 0 and summary["layer_cycles"] == [0] * n_ops
