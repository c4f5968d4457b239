"""Host driver for the accelerator's host link (golden/host_link.py, docs/host-link.md).

One driver class, `AcceleratorLink`, over a transport with `write(bytes)`,
`read(n, timeout_s) -> bytes` (fewer bytes on timeout) and `pause(seconds)` (let the device
work, e.g. before a RESET that stops a RUN):
- `SerialTransport(port, baud)`: a board on a serial port (pyserial);
- `GoldenTransport()`: the golden reference device in-process (the program runs on the
  golden interpreter) — the same frames, the same code path.
NACKs raise `DeviceError` naming the error; a device that does not answer raises
`LinkTimeout` with what was expected.
"""

from __future__ import annotations

import struct
import time

import numpy as np

from .golden.compile import HEADER as PROGRAM_HEADER, Program
from .golden.host_link import (ACK_BIT, HEADER, MAX_PAYLOAD, NACK, SYNC, Cmd, Error,
                               HostLinkDevice, Space, State, crc16, encode_frame)


class DeviceError(RuntimeError):
    def __init__(self, cmd: int, code: int):
        self.cmd, self.code = cmd, code
        try:
            name = Error(code).name
        except ValueError:
            name = f"unknown error {code}"
        try:
            what = Cmd(cmd).name
        except ValueError:
            what = f"command 0x{cmd:02x}"
        super().__init__(f"device refused {what}: {name}")


class LinkTimeout(TimeoutError):
    pass


class GoldenTransport:
    """The golden `HostLinkDevice`, answering in-process (bytes written are answered at once;
    a read that finds nothing lets the line go idle, so partial frames time out)."""

    def __init__(self, device: HostLinkDevice | None = None):
        self.device = device or HostLinkDevice()
        self.pending = bytearray()

    def write(self, data: bytes) -> None:
        self.pending += self.device.feed(data)

    def pause(self, seconds: float) -> None:
        pass                                  # the golden device takes no time

    def read(self, n: int, timeout_s: float) -> bytes:
        if len(self.pending) < n:
            self.pending += self.device.idle(self.device.timeout_bytes)
        out, self.pending = bytes(self.pending[:n]), self.pending[n:]
        return out


class SerialTransport:
    def __init__(self, port: str, baud: int = 115200):
        try:
            import serial
        except ImportError as e:
            raise RuntimeError("the serial transport needs pyserial: pip install '.[board]' "
                               "(or pip install pyserial)") from e
        self.port = serial.Serial(port, baud, timeout=0.1)

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def read(self, n: int, timeout_s: float) -> bytes:
        self.port.timeout = timeout_s
        return self.port.read(n)

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)


class AcceleratorLink:
    def __init__(self, transport, timeout_s: float = 2.0):
        self.transport, self.timeout_s = transport, timeout_s
        self.seq = 0
        self.input_shape: tuple[int, int, int] | None = None
        self.output_shape: tuple[int, int] | None = None
        self.n_ops: int | None = None               # of the loaded program: LAYERS entries
        self.running: int | None = None             # seq of a RUN sent by start_run

    # --- framing ---

    def _read_exact(self, n: int, what: str) -> bytes:
        data = self.transport.read(n, self.timeout_s)
        if len(data) != n:
            # a simulated line times out in clock cycles, not seconds: it says how
            within = getattr(self.transport, "timeout_text", lambda s: f"{s} s")(self.timeout_s)
            raise LinkTimeout(f"no answer from the device within {within} "
                              f"(waiting for {what}: got {len(data)} of {n} bytes)")
        return data

    def command(self, cmd: Cmd, payload: bytes = b"") -> bytes:
        """Send one frame, return the ACK payload; NACK -> DeviceError."""
        self._refuse_while_running(cmd)
        return self._reply(cmd, self._send(cmd, payload))

    def _refuse_while_running(self, cmd: Cmd) -> None:
        if self.running is not None:
            raise RuntimeError(f"a RUN is in flight: collect it with finish_run() or stop it "
                               f"with reset() before {cmd.name}")

    def _send(self, cmd: Cmd, payload: bytes = b"") -> int:
        self.seq = (self.seq + 1) & 0xFF
        self.transport.write(encode_frame(int(cmd), self.seq, payload))
        return self.seq

    def _reply(self, cmd: Cmd, seq: int) -> bytes:
        """Read the reply to frame `seq` (a `cmd`): the ACK payload; NACK -> DeviceError."""
        while True:                                   # skip noise before the reply's SYNC
            if self._read_exact(1, f"the reply to {cmd.name}")[0] == SYNC:
                break
        rest = self._read_exact(HEADER.size - 1, "the reply header")
        _, rcmd, rseq, length = HEADER.unpack(bytes([SYNC]) + rest)
        if length > MAX_PAYLOAD:
            raise RuntimeError(f"corrupt reply: length {length} > {MAX_PAYLOAD}")
        body = rest + self._read_exact(length, "the reply payload")
        (crc,) = struct.unpack("<H", self._read_exact(2, "the reply CRC"))
        if crc16(body) != crc:
            raise RuntimeError(f"corrupt reply to {cmd.name}: CRC mismatch")
        if rseq != seq:
            raise RuntimeError(f"reply to sequence {rseq}, expected {seq}")
        payload = body[4:]
        if rcmd == NACK:
            raise DeviceError(payload[0], payload[1])
        if rcmd != int(cmd) | ACK_BIT:
            raise RuntimeError(f"unexpected reply 0x{rcmd:02x} to {cmd.name}")
        return payload

    # --- memory ---

    def write(self, space: Space, addr: int, data: bytes) -> None:
        chunk = MAX_PAYLOAD - 5
        for off in range(0, len(data), chunk):
            self.command(Cmd.WRITE, struct.pack("<BI", space, addr + off)
                         + data[off:off + chunk])

    def read(self, space: Space, addr: int, count: int) -> bytes:
        out = bytearray()
        while len(out) < count:
            n = min(MAX_PAYLOAD, count - len(out))
            out += self.command(Cmd.READ, struct.pack("<BIH", space, addr + len(out), n))
        return bytes(out)

    # --- operations ---

    def ping(self) -> int:
        reply = self.command(Cmd.PING)
        if reply[:4] != b"SFHL":
            raise RuntimeError(f"not a spikeforge device: {reply!r}")
        return struct.unpack("<H", reply[4:6])[0]

    def load_program(self, program: Program | bytes) -> None:
        image = program.to_bytes() if isinstance(program, Program) else bytes(program)
        self.write(Space.PROGRAM, 0, image)
        T, tokens, channels, out_tokens, out_channels = struct.unpack(
            "<HHHHH", self.command(Cmd.LOAD, struct.pack("<I", len(image))))
        self.input_shape, self.output_shape = (T, tokens, channels), (out_tokens, out_channels)
        self.n_ops = PROGRAM_HEADER.unpack_from(image)[4]   # the device accepted this header

    def infer(self, x) -> np.ndarray:
        """One inference on encoded input [T, tokens, channels]; returns the output buffer
        [tokens, channels] (readout sums)."""
        self.start_run(x)
        self.finish_run()
        return self.output()

    def _input_bytes(self, x) -> bytes:
        if self.input_shape is None:
            raise RuntimeError("no program loaded: call load_program first")
        x = np.asarray(x)
        if x.shape != self.input_shape:
            raise ValueError(f"input must have shape {self.input_shape}, got {x.shape}")
        if x.size and (x.min() < -2**15 or x.max() >= 2**15):
            raise ValueError("input values must fit int16")
        return x.astype("<i2").tobytes()

    def start_run(self, x=None) -> None:
        """Send RUN (after writing input `x` [T, tokens, channels], if given) without waiting
        for its reply: collect it with `finish_run()`, or stop the inference with `reset()`."""
        self._refuse_while_running(Cmd.RUN)
        if x is not None:
            self.write(Space.INPUT, 0, self._input_bytes(x))
        self.running = self._send(Cmd.RUN)

    def finish_run(self) -> dict:
        """Wait for the RUN sent by `start_run`: ops run and saturations; NACK ->
        DeviceError (ABORTED when a RESET stopped it)."""
        if self.running is None:
            raise RuntimeError("no RUN in flight: call start_run first")
        seq, self.running = self.running, None
        ops, saturations = struct.unpack("<II", self._reply(Cmd.RUN, seq))
        return {"ops": ops, "saturations": saturations}

    def output(self) -> np.ndarray:
        """The output buffer of the last RUN, [tokens, channels] int64."""
        if self.output_shape is None:
            raise RuntimeError("no program loaded: call load_program first")
        n = self.output_shape[0] * self.output_shape[1]
        out = np.frombuffer(self.read(Space.OUTPUT, 0, 4 * n), dtype="<i4")
        return out.astype(np.int64).reshape(self.output_shape)

    def status(self) -> dict:
        state, error, inferences = struct.unpack("<BBI", self.command(Cmd.STATUS))
        return {"state": State(state).name, "last_error": Error(error).name if error else None,
                "inferences": inferences}

    def counters(self) -> dict:
        inferences, ops, saturations = struct.unpack("<III", self.command(Cmd.COUNTERS))
        return {"inferences": inferences, "ops": ops, "saturations": saturations}

    def perf(self) -> dict:
        """Cycles, events and skipped (silent) events of the last RUN; 0 before any run and
        from the golden reference device, which has no cycle model."""
        cycles, events, skipped = struct.unpack("<III", self.command(Cmd.PERF))
        return {"cycles": cycles, "events": events, "skipped": skipped}

    def layer_cycles(self) -> list[int]:
        """Cycles each op of the loaded program took in the last RUN (LAYERS space, u32 per
        op); 0 before any run and from the golden reference device, which has no cycle
        model. A device without LAYERS refuses the READ: DeviceError BAD_ADDRESS."""
        if self.n_ops is None:
            raise RuntimeError("no program loaded: call load_program first")
        data = self.read(Space.LAYERS, 0, 4 * self.n_ops)
        return [int(v) for v in np.frombuffer(data, dtype="<u4")]

    def reset(self) -> bool:
        """RESET: clear input, output and status; the program stays loaded. With a RUN in
        flight (`start_run`) the device stops that inference first. Returns True when a
        RUN was stopped (its reply: NACK ABORTED), False when there was none or it had
        ended before the RESET came (its reply, ACK or another NACK, is dropped: the RESET
        clears what it left)."""
        if self.running is None:
            self.command(Cmd.RESET)
            return False
        reset_seq = self._send(Cmd.RESET)
        try:
            self.finish_run()
            stopped = False
        except DeviceError as e:
            stopped = e.code == Error.ABORTED
        self._reply(Cmd.RESET, reset_seq)
        return stopped
