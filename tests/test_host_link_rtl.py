"""RTL host link (rtl/host_link.py, rtl/uart.py) in Amaranth's simulator, against the golden
`HostLinkDevice` (golden/host_link.py).

The bench drives the `rx` pin bit by bit (small divisor), decodes `tx`, and serves the device
port from a mock device that wraps a second golden `HostLinkDevice`: its bytearrays are the
memories, its `_cmd_load/_cmd_run/_cmd_reset` give the LOAD/RUN/RESET results. The same
request bytes go to a reference golden device; every reply must be the same byte string and
the two devices' memories, state and counters must stay equal.
"""

import struct

import numpy as np
import pytest
from amaranth.sim import Simulator

from spikeforge.golden.compile import BufKind, Op, _Builder
from spikeforge.golden.host_link import (MAX_PAYLOAD, NACK, SYNC, Cmd, Error, HostLinkDevice,
                                         Space, State, crc16, encode_frame)
from spikeforge.rtl.host_link import REGISTERS, HostLink, crc16_step, device_signature
from spikeforge.rtl.uart import UARTRx, UARTTx, divisor_for

DIV = 4                       # clock cycles per bit
BYTE = 10 * DIV               # cycles per byte on the line
TIMEOUT = 4                   # idle byte-times before a partial frame is dropped (fast tests)


def uart_bits(byte, stop=1):
    return [0] + [(byte >> k) & 1 for k in range(8)] + [stop]


async def drive_line(ctx, pin, data, divisor=DIV):
    for byte in data:
        for bit in uart_bits(byte):
            ctx.set(pin, bit)
            await ctx.tick().repeat(divisor)


def line_decoder(pin, received, divisor=DIV):
    """Background testbench: decode 8N1 bytes from `pin` into the list `received`."""
    async def decode(ctx):
        while True:
            await ctx.negedge(pin)
            await ctx.tick().repeat(divisor // 2)
            assert ctx.get(pin) == 0, "start bit did not last to mid-bit"
            byte = 0
            for k in range(8):
                await ctx.tick().repeat(divisor)
                byte |= ctx.get(pin) << k
            await ctx.tick().repeat(divisor)
            assert ctx.get(pin) == 1, "stop bit missing on tx"
            received.append(byte)
    return decode


def tiny_program(weights=((1, -2), (3, 4)), bias=(5, -6)):
    """A 100-byte program image: a READOUT of a [T=2, 1, 2] UINT4 input."""
    b = _Builder(2)
    src = b.buffer(1, 2, BufKind.UINT, 4)
    out = b.buffer(1, 2, BufKind.INT, 32)
    b.matrix_op(Op.READOUT, src, out, np.array(weights), np.array(bias), 8)
    return b.program(src, out).to_bytes()


class MockDevice:
    """Serves HostLink's device port from a golden HostLinkDevice (its memories and its
    command functions), with `latency` cycles between cmd_start and cmd_done and
    `read_latency` cycles between mem_re and mem_rvalid. `layers=False`: an accelerator
    without the LAYERS space (layers_size stays 0). A RUN watches `dev.abort` while it waits:
    raised, the RUN stops with ABORTED and does not happen (as the Accelerator's)."""

    def __init__(self, latency=3, read_latency=1, perf=None, layers=True):
        self.g = HostLinkDevice(timeout_bytes=TIMEOUT)
        self.latency, self.read_latency, self.layers = latency, read_latency, layers
        self.perf = perf or (lambda g: (0, 0, 0))   # golden: "0 = not modelled"
        self.writes = 0
        self.aborts = 0
        self.registers = {}

    def publish(self, ctx, dev):
        g = self.g
        for port, value in ((dev.program_size, len(g.program_mem)),
                            (dev.input_size, len(g.input_mem)),
                            (dev.output_size, len(g.output_mem)),
                            (dev.layers_size, len(g.layers_mem) if self.layers else 0),
                            (dev.state, int(g.state))):
            ctx.set(port, value)
        cycles, events, skipped = self.perf(g)
        self.registers.update(inferences=g.inferences, ops_total=g.ops_run,
                              sats_total=g.saturations, perf_cycles=cycles,
                              perf_events=events, perf_skipped=skipped)

    def register_bytes(self) -> bytes:
        """The register map (host_link.REGISTERS) of the device's current values."""
        return b"".join(int(self.registers.get(name, 0)).to_bytes(n, "little")
                        for name, n in REGISTERS)

    def serve_registers(self, dev):
        """reg_data: the register byte at reg_addr, a cycle later (as a block RAM)."""
        async def bench(ctx):
            while True:
                addr = ctx.get(dev.reg_addr)
                await ctx.tick()
                regs = self.register_bytes()       # (past the map: 0, as the RTL's)
                ctx.set(dev.reg_data, regs[addr] if addr < len(regs) else 0)
        return bench

    def serve(self, dev):
        async def bench(ctx):
            self.publish(ctx, dev)
            while True:
                we, re, start, written = await ctx.changed(
                    dev.mem_we, dev.mem_re, dev.cmd_start, dev.program_written)
                g = self.g
                if we:
                    mem = g._space(ctx.get(dev.mem_space))
                    mem[ctx.get(dev.mem_addr)] = ctx.get(dev.mem_wdata)
                    self.writes += 1
                if written and g.program is not None:
                    g.program, g.state = None, State.IDLE    # golden _cmd_write unload
                if re:
                    mem = g._space(ctx.get(dev.mem_space))
                    data = mem[ctx.get(dev.mem_addr)]
                    if self.read_latency > 1:
                        await ctx.tick().repeat(self.read_latency - 1)
                    ctx.set(dev.mem_rdata, data)
                    ctx.set(dev.mem_rvalid, 1)
                    await ctx.tick()
                    ctx.set(dev.mem_rvalid, 0)
                if start:
                    cmd, size = ctx.get(dev.cmd), ctx.get(dev.load_size)
                    aborted = False
                    for _ in range(self.latency):
                        await ctx.tick()
                        aborted = aborted or (cmd == Cmd.RUN and ctx.get(dev.abort))
                    if aborted:
                        self.aborts += 1
                        g.state = State.ERROR
                        result = Error.ABORTED
                    else:
                        result = {Cmd.LOAD: lambda: g._cmd_load(struct.pack("<I", size)),
                                  Cmd.RUN: lambda: g._cmd_run(b""),
                                  Cmd.RESET: lambda: g._cmd_reset(b"")}[Cmd(cmd)]()
                    if isinstance(result, Error):
                        ctx.set(dev.cmd_error, int(result))
                    else:
                        ctx.set(dev.cmd_error, 0)
                        if cmd == Cmd.LOAD:
                            self.registers["load_info"] = int.from_bytes(result, "little")
                        elif cmd == Cmd.RUN:
                            ops, sats = struct.unpack("<II", result)
                            self.registers.update(run_ops=ops, run_sats=sats)
                    ctx.set(dev.cmd_done, 1)
                    await ctx.tick()
                    ctx.set(dev.cmd_done, 0)
                self.publish(ctx, dev)
        return bench


def same_device(a: HostLinkDevice, b: HostLinkDevice):
    assert a.program_mem == b.program_mem, "program memory differs from the golden device"
    assert a.input_mem == b.input_mem and a.output_mem == b.output_mem
    assert a.layers_mem == b.layers_mem
    assert (a.state, a.inferences, a.ops_run, a.saturations) == \
        (b.state, b.inferences, b.ops_run, b.saturations)
    assert (a.program is None) == (b.program is None)


class Bench:
    """One simulation of HostLink + MockDevice; `run(script)` runs an async script that
    calls `await bench.exchange(ctx, request)`."""

    def __init__(self, timeout_bytes=TIMEOUT, **mock):
        self.dut = HostLink(DIV, timeout_bytes=timeout_bytes)
        self.mock = MockDevice(**mock)
        self.mock.g.timeout_bytes = timeout_bytes
        self.ref = HostLinkDevice(timeout_bytes=timeout_bytes)
        self.received = []
        self.replies = []

    def golden_reply(self, request):
        out = self.ref.feed(request)
        if self.ref.parser.in_frame:
            out += self.ref.idle(self.ref.timeout_bytes)
        return out

    async def collect(self, ctx, n, budget):
        waited = 0
        while len(self.received) < n and waited < budget:
            await ctx.tick().repeat(BYTE)
            waited += BYTE
        await ctx.tick().repeat(2 * BYTE)              # anything extra would show up here
        got, self.received[:] = bytes(self.received), []
        return got

    async def exchange(self, ctx, request, compare=True):
        """Send `request`; return the RTL reply, checked against the golden device."""
        expect = self.golden_reply(request)
        await drive_line(ctx, self.dut.rx, request)
        budget = BYTE * (len(expect) + 3 * self.ref.timeout_bytes + 8) \
            + 4 * self.mock.latency
        got = await self.collect(ctx, len(expect), budget)
        if compare:
            assert got == expect, f"request {request.hex()}: RTL {got.hex()} != golden " \
                                  f"{expect.hex()}"
            same_device(self.mock.g, self.ref)
        self.replies.append(got)
        return got

    def run(self, script):
        sim = Simulator(self.dut)
        sim.add_clock(1e-6)
        sim.add_testbench(line_decoder(self.dut.tx, self.received), background=True)
        sim.add_testbench(self.mock.serve(self.dut.dev), background=True)
        sim.add_testbench(self.mock.serve_registers(self.dut.dev), background=True)

        async def main(ctx):
            ctx.set(self.dut.rx, 1)
            await ctx.tick().repeat(4)
            await script(ctx, self)
        sim.add_testbench(main)
        sim.run()


def parse(reply):
    assert reply[0] == SYNC
    _, cmd, seq, length = struct.unpack_from("<BBBH", reply)
    assert len(reply) == 7 + length
    return cmd, seq, reply[5:5 + length]


def write(space, addr, data, seq=1):
    return encode_frame(Cmd.WRITE, seq, struct.pack("<BI", space, addr) + bytes(data))


def read(space, addr, count, seq=1):
    return encode_frame(Cmd.READ, seq, struct.pack("<BIH", space, addr, count))


# ------------------------------------------------------------------------------ UART


def test_crc16_step_matches_golden():
    from amaranth.sim import Simulator as Sim
    from amaranth import Module, Signal
    m = Module()
    crc, byte, out = Signal(16), Signal(8), Signal(16)
    m.d.comb += out.eq(crc16_step(crc, byte))
    rng = np.random.default_rng(1)
    cases = [(0xFFFF, 0x31), (0, 0), (0x8000, 0xFF)] + \
        [tuple(int(v) for v in (rng.integers(1 << 16), rng.integers(256))) for _ in range(50)]

    async def bench(ctx):
        for c, b in cases:
            ctx.set(crc, c)
            ctx.set(byte, b)
            assert ctx.get(out) == crc16(bytes([b]), c), (hex(c), hex(b))
    sim = Sim(m)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("divisor", [4, 5, 7])
def test_uart_rx_back_to_back_and_bad_stop_bit_dropped(divisor):
    dut = UARTRx(divisor)
    got, errors = [], []
    good = [0x55, 0xA5, 0x00, 0xFF, 0x81]

    async def source(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3)
        await drive_line(ctx, dut.rx, good[:2], divisor)   # back to back
        for bit in uart_bits(0x3C, stop=0):                # framing error: dropped
            ctx.set(dut.rx, bit)
            await ctx.tick().repeat(divisor)
        ctx.set(dut.rx, 1)                                 # the line returns to idle
        await ctx.tick().repeat(2 * divisor)
        await drive_line(ctx, dut.rx, good[2:], divisor)
        await ctx.tick().repeat(3 * divisor)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, valid, payload, ferr in ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                                  dut.frame_error):
            if valid:
                got.append(payload)
            if ferr:
                errors.append(len(got))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert got == good
    assert errors == [2]                                  # exactly the bad byte, in place


def test_uart_rx_overrun_keeps_the_held_byte():
    dut = UARTRx(4)
    got = []

    async def bench(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3)
        await drive_line(ctx, dut.rx, [0x12, 0x34], 4)      # nobody takes the first byte
        await ctx.tick().repeat(8)
        assert ctx.get(dut.o.valid)
        got.append(ctx.get(dut.o.payload))
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        ctx.set(dut.o.ready, 0)
        await ctx.tick()
        assert not ctx.get(dut.o.valid)                    # 0x34 was dropped (overrun)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [0x12]


@pytest.mark.parametrize("divisor", [4, 6])
def test_uart_tx_back_to_back_at_line_rate(divisor):
    dut = UARTTx(divisor)
    data = [0xA5, 0x00, 0xFF, 0x3C, 0x81]
    received, cycles = [], []

    async def source(ctx):
        n = 0
        for byte in data:
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                n += 1
                if ready:
                    break
        ctx.set(dut.i.valid, 0)
        while len(received) < len(data):
            await ctx.tick()
            n += 1
        cycles.append(n)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(line_decoder(dut.tx, received, divisor), background=True)
    sim.run()
    assert received == data
    # no idle cycle between bytes: 5 frames (the decoder stops at the last stop bit's middle)
    assert cycles[0] <= len(data) * 10 * divisor


def test_constructors_refuse_impossible_parameters():
    for bad in (3, 0, 4.5):
        with pytest.raises(ValueError, match="divisor"):
            UARTRx(bad)
        with pytest.raises(ValueError, match="divisor"):
            UARTTx(bad)
        with pytest.raises(ValueError, match="divisor"):
            HostLink(bad)
    with pytest.raises(ValueError, match="addr_width"):
        HostLink(4, addr_width=0)
    with pytest.raises(ValueError, match="addr_width"):
        device_signature(33)
    with pytest.raises(ValueError, match="timeout_bytes"):
        HostLink(4, timeout_bytes=0)
    with pytest.raises(ValueError, match="too slow"):
        divisor_for(300_000, 115200)
    assert divisor_for(48e6) == 417 and divisor_for(12e6) == 104


def test_frame_buffer_is_a_memory_not_flip_flops():
    from amaranth.lib.memory import Memory
    buf = HostLink(4).elaborate(None).submodules.frame_buf
    assert isinstance(buf, Memory) and buf.depth == MAX_PAYLOAD and buf.shape == 8
    assert [p.domain for p in buf.read_ports] == ["sync"]      # synchronous: block RAM


# ------------------------------------------------------------------------------ protocol


def test_ping_noise_and_bad_lengths():
    async def script(ctx, b):
        cmd, seq, payload = parse(await b.exchange(ctx, encode_frame(Cmd.PING, 7)))
        assert (cmd, seq, payload) == (Cmd.PING | 0x80, 7, b"SFHL\x01\x00")
        await b.exchange(ctx, b"\x00\x13\x37\xff" + encode_frame(Cmd.PING, 77))   # noise
        for frame in (encode_frame(Cmd.PING, 2, b"x"), encode_frame(Cmd.STATUS, 3, b"\0"),
                      encode_frame(Cmd.COUNTERS, 4, b"ab"), encode_frame(Cmd.PERF, 5, b"q"),
                      encode_frame(Cmd.RUN, 6, b"\0"), encode_frame(Cmd.RESET, 7, b"z"),
                      encode_frame(Cmd.LOAD, 8, b"\0\0\0"), encode_frame(Cmd.WRITE, 9, b"\0" * 4),
                      encode_frame(Cmd.READ, 10, b"\0" * 6), encode_frame(Cmd.READ, 11, b"\0" * 8),
                      read(Space.PROGRAM, 0, MAX_PAYLOAD + 1, seq=12)):
            cmd, _, payload = parse(await b.exchange(ctx, frame))
            assert cmd == NACK and payload[1] == Error.BAD_LENGTH
        # a length above 1024 is refused as soon as the header is in (no CRC, no payload)
        hdr = bytes([SYNC, Cmd.WRITE, 13]) + struct.pack("<H", MAX_PAYLOAD + 1)
        cmd, seq, payload = parse(await b.exchange(ctx, hdr))
        assert (cmd, seq, payload) == (NACK, 13, bytes([Cmd.WRITE, Error.BAD_LENGTH]))
        for code in (0x00, 0x0A, 0x42, 0x85, 0xFF):
            cmd, _, payload = parse(await b.exchange(ctx, encode_frame(code, 1)))
            assert cmd == NACK and payload == bytes([code, Error.UNKNOWN_CMD])
        # STATUS reports the last NACK's code
        _, _, payload = parse(await b.exchange(ctx, encode_frame(Cmd.STATUS, 1)))
        assert payload[1] == Error.UNKNOWN_CMD
    Bench().run(script)


def test_write_read_every_space_load_run_reset():
    image = tiny_program()
    x = np.array([[[3, 15]], [[0, 7]]], dtype="<i2").tobytes()     # [T=2, 1, 2]

    async def script(ctx, b):
        g = b.mock.g
        # before LOAD: PROGRAM is writable, INPUT and OUTPUT are empty
        await b.exchange(ctx, write(Space.PROGRAM, 16, b"\x11\x22\x33"))
        _, _, payload = parse(await b.exchange(ctx, read(Space.PROGRAM, 15, 5)))
        assert payload == b"\x00\x11\x22\x33\x00"
        await b.exchange(ctx, write(Space.INPUT, 0, b"\x01"))                   # BAD_ADDRESS
        await b.exchange(ctx, read(Space.OUTPUT, 0, 0))                         # empty ACK
        await b.exchange(ctx, read(Space.OUTPUT, 0, 1))                         # BAD_ADDRESS
        await b.exchange(ctx, write(Space.PROGRAM, 0, b""))                     # empty write
        # program memory edges and bad spaces
        end = len(g.program_mem)
        await b.exchange(ctx, write(Space.PROGRAM, end - 2, b"ab"))
        await b.exchange(ctx, write(Space.PROGRAM, end - 2, b"abc"))            # 1 too far
        await b.exchange(ctx, read(Space.PROGRAM, end - 2, 2))
        await b.exchange(ctx, read(Space.PROGRAM, end - 1, 2))
        await b.exchange(ctx, read(Space.PROGRAM, 0xFFFFFFFF, 1))               # no wrap
        await b.exchange(ctx, write(Space.PROGRAM, 0xFFFFFFFF, b"a"))
        await b.exchange(ctx, write(3, 0, b"a"))
        await b.exchange(ctx, read(7, 0, 1))
        await b.exchange(ctx, encode_frame(Cmd.RUN, 2))                         # NO_PROGRAM
        await b.exchange(ctx, encode_frame(Cmd.STATUS, 3))
        # LOAD: the size check is HostLink's, the image check the device's
        await b.exchange(ctx, encode_frame(Cmd.LOAD, 4, struct.pack("<I", end + 1)))
        await b.exchange(ctx, encode_frame(Cmd.LOAD, 4, struct.pack("<I", 64)))  # BAD_PROGRAM
        await b.exchange(ctx, write(Space.PROGRAM, 0, image))
        cmd, _, payload = parse(await b.exchange(ctx, encode_frame(
            Cmd.LOAD, 5, struct.pack("<I", len(image)))))
        assert cmd == Cmd.LOAD | 0x80 and struct.unpack("<5H", payload) == (2, 1, 2, 1, 2)
        # INPUT and OUTPUT after LOAD; RUN; READ the result back
        await b.exchange(ctx, write(Space.INPUT, 0, x))
        _, _, payload = parse(await b.exchange(ctx, read(Space.INPUT, 0, len(x))))
        assert payload == x
        await b.exchange(ctx, write(Space.INPUT, 6, b"\0\0\0"))                 # past the end
        cmd, _, payload = parse(await b.exchange(ctx, encode_frame(Cmd.RUN, 6)))
        assert cmd == Cmd.RUN | 0x80
        await b.exchange(ctx, read(Space.OUTPUT, 0, 8))
        await b.exchange(ctx, write(Space.OUTPUT, 0, b"\0"))                    # read only
        for cmd in (Cmd.STATUS, Cmd.COUNTERS, Cmd.PERF):
            await b.exchange(ctx, encode_frame(cmd, 9))
        # out-of-range input -> BAD_INPUT from the device, NACK from HostLink
        await b.exchange(ctx, write(Space.INPUT, 0, struct.pack("<h", 100)))
        await b.exchange(ctx, encode_frame(Cmd.RUN, 10))
        _, _, status = parse(await b.exchange(ctx, encode_frame(Cmd.STATUS, 11)))
        assert status[:2] == bytes([State.ERROR, Error.BAD_INPUT])
        # RESET clears last_error, input and output, keeps the program
        await b.exchange(ctx, encode_frame(Cmd.RESET, 12))
        _, _, status = parse(await b.exchange(ctx, encode_frame(Cmd.STATUS, 13)))
        assert status[:2] == bytes([State.READY, 0])
        await b.exchange(ctx, write(Space.INPUT, 0, x))
        await b.exchange(ctx, encode_frame(Cmd.RUN, 14))
        await b.exchange(ctx, read(Space.OUTPUT, 0, 8))
        await b.exchange(ctx, encode_frame(Cmd.COUNTERS, 15))
        # writing PROGRAM unloads the program until the next LOAD
        await b.exchange(ctx, write(Space.PROGRAM, 200, b"\x01"))
        cmd, _, payload = parse(await b.exchange(ctx, encode_frame(Cmd.RUN, 16)))
        assert cmd == NACK and payload[1] == Error.NO_PROGRAM
    Bench().run(script)


def test_run_result_equals_the_golden_interpreter():
    """The mock's compute is the golden interpreter: the OUTPUT read through HostLink is
    its readout, computed here independently."""
    w, bias = np.array([[1, -2], [3, 4]]), np.array([5, -6])
    xs = np.array([[[3, 15]], [[0, 7]]])
    expect = (w @ xs.sum(axis=(0, 1)) + 2 * bias).tolist()

    async def script(ctx, b):
        image = tiny_program()
        await b.exchange(ctx, write(Space.PROGRAM, 0, image))
        await b.exchange(ctx, encode_frame(Cmd.LOAD, 1, struct.pack("<I", len(image))))
        await b.exchange(ctx, write(Space.INPUT, 0, xs.astype("<i2").tobytes()))
        await b.exchange(ctx, encode_frame(Cmd.RUN, 2))
        _, _, out = parse(await b.exchange(ctx, read(Space.OUTPUT, 0, 8)))
        assert np.frombuffer(out, "<i4").tolist() == expect
    Bench(latency=2000, read_latency=3).run(script)


def test_perf_counters_are_forwarded():
    def perf(g):
        return (0x01020304 + 1000 * g.inferences, 77 * g.inferences, 0xFFFFFFFF - g.inferences)

    async def script(ctx, b):
        for seq in (1, 2):
            got = await b.exchange(ctx, encode_frame(Cmd.PERF, seq), compare=False)
            assert got == encode_frame(Cmd.PERF | 0x80, seq, struct.pack("<III", *perf(b.mock.g)))
        image = tiny_program()
        await b.exchange(ctx, write(Space.PROGRAM, 0, image))
        await b.exchange(ctx, encode_frame(Cmd.LOAD, 1, struct.pack("<I", len(image))))
        await b.exchange(ctx, encode_frame(Cmd.RUN, 2))
        assert b.mock.g.inferences == 1
        got = await b.exchange(ctx, encode_frame(Cmd.PERF, 3), compare=False)
        assert got == encode_frame(Cmd.PERF | 0x80, 3, struct.pack("<III", 0x01020304 + 1000,
                                                                   77, 0xFFFFFFFE))
    Bench(perf=perf).run(script)


def test_layers_space_sizes_read_only_and_edges():
    """LAYERS (space 3) through HostLink equals the golden device: empty before LOAD,
    4 bytes per op after it, every write refused, reads checked at the edge."""
    image = tiny_program()                                       # one READOUT op
    x = np.array([[[3, 15]], [[0, 7]]], dtype="<i2").tobytes()

    async def script(ctx, b):
        for frame in (read(Space.LAYERS, 0, 0), read(Space.LAYERS, 0, 1),
                      write(Space.LAYERS, 0, b""), write(Space.LAYERS, 0, b"\x01")):
            await b.exchange(ctx, frame)
        await b.exchange(ctx, write(Space.PROGRAM, 0, image))
        _, _, info = parse(await b.exchange(ctx, encode_frame(
            Cmd.LOAD, 2, struct.pack("<I", len(image)))))
        await b.exchange(ctx, write(Space.INPUT, 0, x))
        await b.exchange(ctx, encode_frame(Cmd.RUN, 3))
        cmd, _, payload = parse(await b.exchange(ctx, read(Space.LAYERS, 0, 4)))
        assert (cmd, payload) == (Cmd.READ | 0x80, bytes(4))     # golden: "not modelled"
        for frame in (read(Space.LAYERS, 1, 3), read(Space.LAYERS, 1, 4),
                      read(Space.LAYERS, 4, 1), read(Space.LAYERS, 0xFFFFFFFF, 1)):
            await b.exchange(ctx, frame)
        for addr in (0, 3, 4):
            cmd, _, payload = parse(await b.exchange(ctx, write(Space.LAYERS, addr, b"\x01")))
            assert (cmd, payload) == (NACK, bytes([Cmd.WRITE, Error.BAD_ADDRESS]))
        assert b.mock.writes == len(image) + len(x)               # none reached the device
    Bench().run(script)


def test_layer_cycles_are_streamed_from_the_device():
    """HostLink forwards whatever the device holds in LAYERS, byte for byte."""
    image = tiny_program()
    cycles = struct.pack("<I", 0xA1B2C3D4)

    async def script(ctx, b):
        await b.exchange(ctx, write(Space.PROGRAM, 0, image))
        await b.exchange(ctx, encode_frame(Cmd.LOAD, 1, struct.pack("<I", len(image))))
        b.mock.g.layers_mem[:] = cycles                          # what an RTL RUN counted
        got = await b.exchange(ctx, read(Space.LAYERS, 0, 4, seq=2), compare=False)
        assert got == encode_frame(Cmd.READ | 0x80, 2, cycles)
        got = await b.exchange(ctx, read(Space.LAYERS, 2, 2, seq=3), compare=False)
        assert got == encode_frame(Cmd.READ | 0x80, 3, cycles[2:])
    Bench(read_latency=3).run(script)


def test_layers_refused_by_an_accelerator_without_it():
    """layers_size held at 0 (an accelerator that does not serve LAYERS): every LAYERS
    read is BAD_ADDRESS, and the other spaces are unaffected."""
    image = tiny_program()

    async def script(ctx, b):
        await b.exchange(ctx, write(Space.PROGRAM, 0, image))
        await b.exchange(ctx, encode_frame(Cmd.LOAD, 1, struct.pack("<I", len(image))))
        assert len(b.ref.layers_mem) == 4                        # golden would answer
        got = await b.exchange(ctx, read(Space.LAYERS, 0, 4, seq=2), compare=False)
        assert got == encode_frame(NACK, 2, bytes([Cmd.READ, Error.BAD_ADDRESS]))
        b.ref.last_error = Error.BAD_ADDRESS                     # keep STATUS comparable
        await b.exchange(ctx, read(Space.PROGRAM, 0, 8, seq=3))
        await b.exchange(ctx, encode_frame(Cmd.STATUS, 4))
    Bench(layers=False).run(script)


def test_frames_sent_during_a_long_command_are_queued():
    """The host sends RUN and, without waiting, a PING: the PING waits in the receive FIFO
    while the device runs, then both are answered in order."""
    async def script(ctx, b):
        request = encode_frame(Cmd.RUN, 1) + encode_frame(Cmd.PING, 2)
        await b.exchange(ctx, request)
        assert [parse(r)[0] for r in (b.replies[-1][:9], b.replies[-1][9:])] == \
            [NACK, Cmd.PING | 0x80]
    Bench(latency=40 * BYTE).run(script)


def load_tiny(b):
    """WRITE + LOAD the tiny program (both exchanges checked against the golden device)."""
    image = tiny_program()

    async def steps(ctx):
        await b.exchange(ctx, write(Space.PROGRAM, 0, image))
        await b.exchange(ctx, encode_frame(Cmd.LOAD, 1, struct.pack("<I", len(image))))
    return steps


@pytest.mark.parametrize("seq", [0x00, 0x01, 0x80, 0xB7, 0xFF])
def test_reset_sent_during_a_run_aborts_it_then_resets(seq):
    """RUN, then at once a RESET (any seq: its CRC depends on it): the RUN stops (NACK
    ABORTED), then the RESET is executed (ACK), and the device is READY with no error."""
    async def script(ctx, b):
        await load_tiny(b)(ctx)
        request = encode_frame(Cmd.RUN, 3) + encode_frame(Cmd.RESET, seq)
        await drive_line(ctx, b.dut.rx, request)
        got = await b.collect(ctx, 9 + 7, 60 * BYTE + 2 * b.mock.latency)
        assert [parse(got[:9]), parse(got[9:])] == [
            (NACK, 3, bytes([Cmd.RUN, Error.ABORTED])), (Cmd.RESET | 0x80, seq, b"")]
        assert b.mock.aborts == 1 and b.mock.g.inferences == 0
        _, _, status = parse(await b.exchange(ctx, encode_frame(Cmd.STATUS, 4),
                                              compare=False))
        assert status[:2] == bytes([State.READY, 0])
    Bench(latency=40 * BYTE).run(script)


@pytest.mark.parametrize("frame", ["bad_crc", "other_command", "reset_with_payload"])
def test_only_a_whole_reset_frame_aborts_a_run(frame):
    """A RESET with a flipped CRC bit, a PING, or a RESET with a payload byte (BAD_LENGTH) sent
    during a RUN do not stop it: the RUN completes as on the golden device, then the frame
    gets the golden device's answer."""
    second = {"bad_crc": bytearray(encode_frame(Cmd.RESET, 7)),
              "other_command": encode_frame(Cmd.PING, 7),
              "reset_with_payload": encode_frame(Cmd.RESET, 7, b"\0")}[frame]
    if frame == "bad_crc":
        second[-1] ^= 0x10

    async def script(ctx, b):
        await load_tiny(b)(ctx)
        got = await b.exchange(ctx, encode_frame(Cmd.RUN, 3) + bytes(second))
        assert parse(got[:15])[0] == Cmd.RUN | 0x80 and b.mock.aborts == 0
    Bench(latency=40 * BYTE).run(script)


def test_a_reset_alone_after_a_run_does_not_abort_the_next_run():
    """The watcher looks at the last 7 bytes: a RESET executed before a RUN is behind the RUN
    frame in its window, so the RUN runs to the end."""
    async def script(ctx, b):
        await load_tiny(b)(ctx)
        await b.exchange(ctx, encode_frame(Cmd.RESET, 2))
        got = await b.exchange(ctx, encode_frame(Cmd.RUN, 3))
        assert parse(got)[0] == Cmd.RUN | 0x80 and b.mock.aborts == 0
    Bench(latency=40 * BYTE).run(script)


def test_bytes_beyond_the_fifo_are_dropped_while_busy_and_the_link_recovers():
    """Three PINGs (21 bytes) sent during a long RUN: the FIFO (16) and the UART's holding
    register keep 17 bytes, the rest is dropped; the cut third frame times out and the link
    answers the next frame."""
    async def script(ctx, b):
        pings = b"".join(encode_frame(Cmd.PING, s) for s in (1, 2, 3))
        await drive_line(ctx, b.dut.rx, encode_frame(Cmd.RUN, 9) + pings)
        got = await b.collect(ctx, 4 * 9 + 2 * 4, 60 * BYTE + 4 * TIMEOUT * BYTE)
        frames = []
        while got:
            frames.append(parse(got[:7 + got[3]]))
            got = got[7 + got[3]:]
        assert frames == [(NACK, 9, bytes([Cmd.RUN, Error.NO_PROGRAM])),
                          (Cmd.PING | 0x80, 1, b"SFHL\x01\x00"),
                          (Cmd.PING | 0x80, 2, b"SFHL\x01\x00"),
                          (NACK, 3, bytes([Cmd.PING, Error.TRUNCATED]))]
        b.ref = HostLinkDevice(timeout_bytes=TIMEOUT)
        b.ref.state = b.mock.g.state                    # the RUN above failed: ERROR
        await b.exchange(ctx, encode_frame(Cmd.PING, 4))
    Bench(latency=40 * BYTE).run(script)


def write_frame():
    return write(Space.PROGRAM, 16, b"\x11" * 8, seq=9)


@pytest.mark.parametrize("part", [0, 1])
def test_every_single_bit_flip_of_a_write_is_refused(part):
    """Every bit after SYNC of a 20-byte WRITE frame (152 flips over the two parts): the
    reply equals the golden device's (BAD_CRC, BAD_LENGTH or TRUNCATED), nothing is
    written, and the link still answers."""
    frame = write_frame()
    bits = list(range(8, 8 * len(frame)))
    bits = bits[part::2]

    async def script(ctx, b):
        for bit in bits:
            bad = bytearray(frame)
            bad[bit // 8] ^= 1 << (bit % 8)
            got = await b.exchange(ctx, bytes(bad))
            assert got and parse(got[:7 + got[3]])[0] == NACK, f"bit {bit} accepted"
            assert b.mock.writes == 0 and not any(b.mock.g.program_mem), f"bit {bit}"
        await b.exchange(ctx, frame)                 # the intact frame is accepted
        assert b.mock.writes == 8
    Bench().run(script)


def test_truncated_frame_times_out_and_the_link_recovers():
    async def script(ctx, b):
        frame = encode_frame(Cmd.PING, 3)
        await drive_line(ctx, b.dut.rx, frame[:4])
        assert b.ref.feed(frame[:4]) == b""
        await ctx.tick().repeat(int(0.8 * TIMEOUT * BYTE))
        assert b.received == [], "a partial frame was answered before the timeout"
        expect = b.ref.idle(TIMEOUT)
        got = await b.collect(ctx, len(expect), 4 * TIMEOUT * BYTE)
        assert got == expect and parse(got) == (NACK, 3, bytes([Cmd.PING, Error.TRUNCATED]))
        await b.exchange(ctx, frame)
        await b.exchange(ctx, bytes([SYNC]))         # SYNC alone: cmd 0, seq 0
        await b.exchange(ctx, write_frame()[:12])    # cut inside the payload: nothing written
        assert b.mock.writes == 0
        _, _, status = parse(await b.exchange(ctx, encode_frame(Cmd.STATUS, 4)))
        assert status[1] == Error.TRUNCATED
    Bench().run(script)


def test_default_timeout_is_64_byte_times():
    async def script(ctx, b):
        await drive_line(ctx, b.dut.rx, encode_frame(Cmd.STATUS, 5)[:3])
        await ctx.tick().repeat(60 * BYTE)
        assert b.received == []
        got = await b.collect(ctx, 9, 20 * BYTE)
        assert parse(got) == (NACK, 5, bytes([Cmd.STATUS, Error.TRUNCATED]))
    Bench(timeout_bytes=64).run(script)
