"""Golden host link (design.md §8): the framed, CRC-checked protocol between the host driver
and the accelerator, and `HostLinkDevice`, a reference device that answers it on the golden
interpreter (`golden.compile.run_program`). The RTL host link must answer the same bytes;
`spikeforge.driver` speaks it over a serial port or to this device. docs/host-link.md.

Frame, little-endian:  SYNC 0xA5 | cmd u8 | seq u8 | len u16 | payload[len] | crc u16
crc = CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected) over cmd..payload.
A reply echoes `seq`: ACK has cmd | 0x80 and a payload; NACK has cmd 0x7F and the payload
[request cmd, error code]. The receiver hunts for SYNC, so noise between frames is skipped;
a frame cut short is dropped after `timeout_bytes` idle byte-times (NACK TRUNCATED).
A rejected frame never changes memory or state.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

import numpy as np

from .compile import Program, ProgramError, run_program

SYNC = 0xA5
NACK = 0x7F
ACK_BIT = 0x80
MAX_PAYLOAD = 1024
HEADER = struct.Struct("<BBBH")          # sync, cmd, seq, len
PROTOCOL_VERSION = 1
PROGRAM_BYTES = 256 * 1024               # program memory of the reference device


class Cmd(enum.IntEnum):
    PING = 0x01          # -> b"SFHL", version u16
    WRITE = 0x02         # space u8, addr u32, data
    READ = 0x03          # space u8, addr u32, count u16 -> data
    LOAD = 0x04          # size u32: check the image in program memory -> T, in/out shapes
    RUN = 0x05           # one inference on the input memory -> ops run u32, saturations u32
    STATUS = 0x06        # -> state u8, last error u8, inferences u32
    COUNTERS = 0x07      # -> inferences u32, ops u32, saturations u32
    RESET = 0x08         # soft reset: clear input, output, status; keep the program.
                         #    Sent while a RUN executes, it also stops that inference
                         #    (the RUN answers NACK ABORTED), then resets
    PERF = 0x09          # -> cycles u32, events u32, skipped u32 of the last RUN (0 = not
                         #    modelled: the golden device has no cycle model)


class Space(enum.IntEnum):
    PROGRAM = 0          # the program image bytes
    INPUT = 1            # int16 per input element, [T, tokens, channels] order
    OUTPUT = 2           # int32 per output element (read only)
    LAYERS = 3           # u32 per op: cycles op k took in the last RUN (read only; 0 = not
                         #    modelled by the golden device, as PERF)


READ_ONLY = (Space.OUTPUT, Space.LAYERS)


class Error(enum.IntEnum):
    BAD_CRC = 1
    BAD_LENGTH = 2       # len above MAX_PAYLOAD, or the wrong payload size for the command
    UNKNOWN_CMD = 3
    BAD_ADDRESS = 4      # outside the space, or a write to a read-only space
    NO_PROGRAM = 5
    BAD_PROGRAM = 6      # the image fails its own checks (magic, version, CRC-32, ranges)
    TRUNCATED = 7        # the frame stopped before its CRC
    BAD_INPUT = 8        # input values out of the input buffer's range
    ABORTED = 9          # a RESET arrived while the RUN executed: the inference was stopped
                         #    (never from the golden device: its RUN takes no time)


class State(enum.IntEnum):
    IDLE = 0             # no program
    READY = 1            # program loaded
    DONE = 2             # an inference finished; OUTPUT holds its result
    ERROR = 3            # the last command failed


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE, bit by bit (the RTL computes it a byte per cycle)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def encode_frame(cmd: int, seq: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = bytes([cmd & 0xFF, seq & 0xFF]) + struct.pack("<H", len(payload)) + payload
    return bytes([SYNC]) + body + struct.pack("<H", crc16(body))


@dataclass
class Frame:
    cmd: int
    seq: int
    payload: bytes


class FrameParser:
    """Byte-at-a-time receiver (the RTL's state machine): `push(byte)` returns a Frame,
    an (Error, cmd, seq) tuple for a rejected frame, or None while a frame is incomplete."""

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_payload = max_payload
        self.buf = bytearray()

    @property
    def in_frame(self) -> bool:
        return bool(self.buf)

    def push(self, byte: int):
        if not self.buf:
            if byte == SYNC:
                self.buf.append(byte)
            return None                                   # hunting: noise is skipped
        self.buf.append(byte)
        if len(self.buf) < HEADER.size:
            return None
        _, cmd, seq, length = HEADER.unpack_from(self.buf)
        if length > self.max_payload:
            self.buf.clear()
            return (Error.BAD_LENGTH, cmd, seq)
        if len(self.buf) < HEADER.size + length + 2:
            return None
        body = bytes(self.buf[1:HEADER.size + length])
        (crc,) = struct.unpack_from("<H", self.buf, HEADER.size + length)
        self.buf.clear()
        if crc16(body) != crc:
            return (Error.BAD_CRC, cmd, seq)
        return Frame(cmd, seq, body[4:])

    def timeout(self):
        """The line went idle mid-frame: drop it."""
        if not self.buf:
            return None
        cmd = self.buf[1] if len(self.buf) > 1 else 0
        seq = self.buf[2] if len(self.buf) > 2 else 0
        self.buf.clear()
        return (Error.TRUNCATED, cmd, seq)


@dataclass
class HostLinkDevice:
    """Reference accelerator behind the host link: memories, status, counters, and the
    golden interpreter as its compute. `feed(bytes)` returns the reply bytes; `idle(n)`
    lets n byte-times pass (a partial frame times out after `timeout_bytes`)."""

    timeout_bytes: int = 64
    program_bytes: int = PROGRAM_BYTES
    parser: FrameParser = field(default_factory=FrameParser)
    program_mem: bytearray = field(init=False)
    program: Program | None = None
    input_mem: bytearray = field(default_factory=bytearray)
    output_mem: bytearray = field(default_factory=bytearray)
    layers_mem: bytearray = field(default_factory=bytearray)   # sized by LOAD, as INPUT
    state: State = State.IDLE
    last_error: int = 0
    inferences: int = 0
    ops_run: int = 0
    saturations: int = 0
    _idle: int = 0

    def __post_init__(self):
        self.program_mem = bytearray(self.program_bytes)

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            self._idle = 0
            got = self.parser.push(byte)
            if got is not None:
                out += self._answer(got)
        return bytes(out)

    def idle(self, byte_times: int) -> bytes:
        if not self.parser.in_frame:
            return b""
        self._idle += byte_times
        if self._idle < self.timeout_bytes:
            return b""
        self._idle = 0
        return self._answer(self.parser.timeout())

    # --- command execution ---

    def _nack(self, cmd: int, seq: int, error: Error) -> bytes:
        self.last_error = int(error)
        return encode_frame(NACK, seq, bytes([cmd & 0xFF, int(error)]))

    def _answer(self, got) -> bytes:
        if isinstance(got, tuple):
            error, cmd, seq = got
            return self._nack(cmd, seq, error)
        try:
            cmd = Cmd(got.cmd)
        except ValueError:
            return self._nack(got.cmd, got.seq, Error.UNKNOWN_CMD)
        result = getattr(self, f"_cmd_{cmd.name.lower()}")(got.payload)
        if isinstance(result, Error):
            return self._nack(got.cmd, got.seq, result)
        return encode_frame(got.cmd | ACK_BIT, got.seq, result)

    def _space(self, space: int) -> bytearray | None:
        return {Space.PROGRAM: self.program_mem, Space.INPUT: self.input_mem,
                Space.OUTPUT: self.output_mem, Space.LAYERS: self.layers_mem}.get(space)

    def _cmd_ping(self, payload):
        return Error.BAD_LENGTH if payload else b"SFHL" + struct.pack("<H", PROTOCOL_VERSION)

    def _cmd_write(self, payload):
        if len(payload) < 5:
            return Error.BAD_LENGTH
        space, addr = struct.unpack_from("<BI", payload)
        data = payload[5:]
        mem = self._space(space)
        if mem is None or space in READ_ONLY or addr + len(data) > len(mem):
            return Error.BAD_ADDRESS
        mem[addr:addr + len(data)] = data
        if space == Space.PROGRAM and self.program is not None:
            self.program, self.state = None, State.IDLE   # reload before the next run
        return b""

    def _cmd_read(self, payload):
        if len(payload) != 7:
            return Error.BAD_LENGTH
        space, addr, count = struct.unpack("<BIH", payload)
        mem = self._space(space)
        if count > MAX_PAYLOAD:
            return Error.BAD_LENGTH
        if mem is None or addr + count > len(mem):
            return Error.BAD_ADDRESS
        return bytes(mem[addr:addr + count])

    def _cmd_load(self, payload):
        if len(payload) != 4:
            return Error.BAD_LENGTH
        (size,) = struct.unpack("<I", payload)
        if size > len(self.program_mem):
            return Error.BAD_ADDRESS
        try:
            program = Program.from_bytes(bytes(self.program_mem[:size]))
        except ProgramError:
            self.program, self.state = None, State.ERROR
            return Error.BAD_PROGRAM
        ib, ob = program.buffers[program.input_buffer], program.buffers[program.output_buffer]
        self.program, self.state = program, State.READY
        self.input_mem = bytearray(2 * program.timesteps * ib.tokens * ib.channels)
        self.output_mem = bytearray()
        # no cycle model: every op's count stays 0 ("not modelled"), the RTL counts cycles
        self.layers_mem = bytearray(4 * len(program.ops))
        return struct.pack("<HHHHH", program.timesteps, ib.tokens, ib.channels, ob.tokens,
                           ob.channels)

    def _cmd_run(self, payload):
        if payload:
            return Error.BAD_LENGTH
        if self.program is None:
            self.state = State.ERROR
            return Error.NO_PROGRAM
        prog = self.program
        ib = prog.buffers[prog.input_buffer]
        x = np.frombuffer(bytes(self.input_mem), dtype="<i2").astype(np.int64)
        x = x.reshape(1, prog.timesteps, ib.tokens, ib.channels)
        try:
            run = run_program(prog, x)
        except ValueError:
            self.state = State.ERROR
            return Error.BAD_INPUT
        self.output_mem = bytearray(run.output.astype("<i4").tobytes())
        sat = int(sum(run.sat_counts))
        self.inferences += 1
        self.ops_run += len(prog.ops)
        self.saturations += sat
        self.state = State.DONE
        return struct.pack("<II", len(prog.ops), sat)

    def _cmd_status(self, payload):
        if payload:
            return Error.BAD_LENGTH
        return struct.pack("<BBI", int(self.state), self.last_error, self.inferences)

    def _cmd_counters(self, payload):
        if payload:
            return Error.BAD_LENGTH
        return struct.pack("<III", self.inferences, self.ops_run, self.saturations)

    def _cmd_perf(self, payload):
        """Performance counters of the last RUN. The golden device has no cycle model, so
        it answers zeros ("0 = not modelled by the golden reference device"); the RTL
        device reports its own cycles, events and skipped events."""
        if payload:
            return Error.BAD_LENGTH
        return struct.pack("<III", 0, 0, 0)

    def _cmd_reset(self, payload):
        if payload:
            return Error.BAD_LENGTH
        self.input_mem = bytearray(len(self.input_mem))
        self.output_mem = bytearray()
        self.state = State.READY if self.program is not None else State.IDLE
        self.last_error = 0
        return b""
