"""HostLink: the RTL side of the host link protocol (golden/host_link.py, docs/host-link.md),
answering byte for byte what the golden `HostLinkDevice` answers.

UART (rtl/uart.py, 8N1, `divisor` clock cycles per bit) -> a small receive FIFO -> frame
parser (SYNC hunt, header, length > 1024 refused as soon as the header is in, payload into a
1024-byte `lib.memory` frame buffer, CRC-16/CCITT-FALSE a byte per cycle, idle timeout of
`timeout_bytes` byte-times mid-frame -> NACK TRUNCATED) -> command decode with every
length / space / address check of the golden `_cmd_*` functions -> execution on the device
port (`device_signature`) -> reply encoder (ACK = cmd | 0x80, NACK 0x7F [cmd, code], seq
echoed, CRC appended) -> UART.

Replies about the device (STATUS after its two leading bytes, COUNTERS, PERF, the RUN and
LOAD acknowledgements) are read a byte at a time from the device's register map
(`REGISTERS`, through `reg_addr` / `reg_data`), so the device may keep them in a block RAM.
Nothing reaches the device before the CRC checked out, so a refused frame changes nothing.
HostLink answers PING itself and owns `last_error` (set by every NACK, cleared by RESET).
While a command executes and its reply goes out the parser does not read: received bytes
wait in the `rx_fifo_depth`-byte FIFO and, once it is full, further bytes are dropped.
One frame is looked for even then: a whole, CRC-correct RESET entering the FIFO while a RUN
executes raises `abort`, so the RUN stops (NACK ABORTED); the parser then meets that RESET
in the FIFO and executes it as usual.
"""

from amaranth import C, Cat, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.host_link import (ACK_BIT, MAX_PAYLOAD, NACK, PROTOCOL_VERSION, READ_ONLY,
                                SYNC, Cmd, Error, Space, crc16)
from .uart import UARTRx, UARTTx, check_divisor

__all__ = ["HostLink", "device_signature", "crc16_step", "REGISTERS", "REG_OFFSET"]

# The device's register map, little-endian, in this order: what the replies carry.
REGISTERS = (("inferences", 4), ("ops_total", 4), ("sats_total", 4), ("perf_cycles", 4),
             ("perf_events", 4), ("perf_skipped", 4), ("run_ops", 4), ("run_sats", 4),
             ("load_info", 10))
REG_OFFSET = {}
_off = 0
for _name, _n in REGISTERS:
    REG_OFFSET[_name] = _off
    _off += _n
REG_BYTES = _off


def device_signature(addr_width):
    """The port between HostLink and the accelerator; directions as seen from HostLink
    (`Out` = driven by HostLink). Strobes are one cycle long and registered. `reg_data` is
    byte `reg_addr` of the device's register map (`REGISTERS`) the cycle after `reg_addr`
    is set."""
    if not isinstance(addr_width, int) or not 1 <= addr_width <= 32:
        raise ValueError(f"addr_width must be an integer in 1..32, got {addr_width!r}")
    size = addr_width + 1
    assert max(Space) < 4, "mem_space is 2 bits"
    return wiring.Signature({
        "mem_space": Out(2), "mem_addr": Out(addr_width), "mem_wdata": Out(8),
        "mem_we": Out(1), "mem_re": Out(1), "mem_rdata": In(8), "mem_rvalid": In(1),
        "program_size": In(size), "input_size": In(size), "output_size": In(size),
        "layers_size": In(size),
        "program_written": Out(1),
        "cmd_start": Out(1), "cmd": Out(4), "load_size": Out(32),
        "cmd_done": In(1), "cmd_error": In(4),
        "abort": Out(1),                 # a RESET frame arrived while a RUN executes
        "state": In(2),
        "reg_addr": Out(range(REG_BYTES)), "reg_data": In(8),
    })


def _crc16_taps():
    """Which bits of (crc, byte) feed each bit of the next CRC: the update is linear over
    GF(2), so it is found from the golden `crc16` on unit vectors (crc16 of one byte from
    a given start value)."""
    taps = [[] for _ in range(16)]
    for k in range(24):                       # bits 0..15: crc, 16..23: byte
        crc, byte = (1 << k, 0) if k < 16 else (0, 1 << (k - 16))
        out = crc16(bytes([byte]), crc) ^ crc16(b"\0", 0)
        for j in range(16):
            if out >> j & 1:
                taps[j].append(k)
    return taps


_TAPS = _crc16_taps()


def crc16_step(crc, byte):
    """CRC-16/CCITT-FALSE of one more byte (golden `crc16`): one XOR per output bit."""
    bits = Cat(crc, byte)
    out = []
    for taps in _TAPS:
        x = bits[taps[0]]
        for k in taps[1:]:
            x = x ^ bits[k]
        out.append(x)
    return Cat(*out)


def _reset_frame_crc(m, seq):
    """The CRC of the RESET frame with sequence number `seq` (bytes 08 seq 00 00): four
    `crc16_step`s (the constant bytes fold away in synthesis), each into a signal so the
    expression does not grow as a tree of the previous step's."""
    crc = C(0xFFFF, 16)
    for k, byte in enumerate((C(Cmd.RESET, 8), seq, C(0, 8), C(0, 8))):
        step = Signal(16, name=f"reset_crc{k}")
        m.d.comb += step.eq(crc16_step(crc, byte))
        crc = step
    return crc


def _const_bytes(data):
    return C(int.from_bytes(data, "little"), 8 * len(data))


class HostLink(wiring.Component):
    def __init__(self, divisor, *, addr_width=18, timeout_bytes=64, rx_fifo_depth=16):
        if not isinstance(timeout_bytes, int) or timeout_bytes < 1:
            raise ValueError(f"timeout_bytes must be a positive integer, got {timeout_bytes!r}")
        if not isinstance(rx_fifo_depth, int) or rx_fifo_depth < 2:
            raise ValueError(f"rx_fifo_depth must be an integer >= 2, got {rx_fifo_depth!r}")
        check_divisor(divisor)
        self.divisor, self.addr_width = divisor, addr_width
        self.timeout_bytes, self.rx_fifo_depth = timeout_bytes, rx_fifo_depth
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1),
                          "dev": Out(device_signature(addr_width))})

    def elaborate(self, platform):
        m = Module()
        dev = self.dev
        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)
        m.submodules.rx_fifo = rxq = fifo.SyncFIFOBuffered(width=8, depth=self.rx_fifo_depth)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        wiring.connect(m, producer=urx.o, consumer=rxq.w_stream)

        rbyte, rvalid = rxq.r_stream.payload, rxq.r_stream.valid
        take = Signal()
        got = rvalid & take
        m.d.comb += rxq.r_stream.ready.eq(take)

        # idle timer: byte-times since the last byte arrived on the line
        limit = self.timeout_bytes * 10 * self.divisor
        idle = Signal(range(limit + 1))
        with m.If(urx.o.valid & urx.o.ready):
            m.d.sync += idle.eq(limit)
        with m.Elif(idle != 0):
            m.d.sync += idle.eq(idle - 1)
        expired = idle == 0

        # RESET during a RUN: the parser waits on the device then, so a watcher keeps the
        # last 7 bytes that entered the FIFO and raises `abort` while they are a RESET frame
        window = Signal(56)                           # oldest byte in bits 0..7
        with m.If(urx.o.valid & urx.o.ready):
            m.d.sync += window.eq(Cat(window[8:], urx.o.payload))
        w = [window[8 * k:8 * k + 8] for k in range(7)]
        is_reset_frame = ((w[0] == SYNC) & (w[1] == Cmd.RESET) & (w[3] == 0) & (w[4] == 0) &
                          (Cat(w[5], w[6]) == _reset_frame_crc(m, w[2])))
        running = Signal()                            # a RUN is with the device
        m.d.sync += dev.abort.eq(running & is_reset_frame)

        # frame buffer: payload bytes wait here until the CRC is known
        m.submodules.frame_buf = buf = Memory(shape=8, depth=MAX_PAYLOAD, init=[])
        wp, rp = buf.write_port(), buf.read_port()

        cmd, seq, len_lo = Signal(8), Signal(8), Signal(8)
        length = Signal(range(MAX_PAYLOAD + 1))
        cnt = Signal(range(MAX_PAYLOAD + 1))          # payload bytes stored
        remaining = Signal(range(MAX_PAYLOAD + 1))
        arg = Signal(56)                              # payload bytes 0..6, byte 0 lowest
        space, addr, count, size = arg[0:8], arg[8:40], arg[40:56], arg[0:32]
        crc, crc_lo = Signal(16), Signal(8)
        crc_in = Signal(8)
        crc_next = crc16_step(crc, crc_in)
        last_error = Signal(4)
        done_error = Signal(4)           # the device's answer to LAUNCH, registered
        # EXEC's length checks, registered (length and the arguments are set bytes before)
        empty, length_4, length_ge5, read_len_ok = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [empty.eq(length == 0), length_4.eq(length == 4), length_ge5.eq(length >= 5),
                     read_len_ok.eq((length == 7) & (count <= MAX_PAYLOAD))]

        rptr = Signal(range(MAX_PAYLOAD))
        ptr = Signal(self.addr_width)                 # device address of the next byte
        n = Signal(16)                                # bytes to write / read
        end = Signal(34)
        size_sel = Signal(self.addr_width + 1)
        bad_space = Signal()

        rcmd = Signal(8)
        rlen = Signal(range(MAX_PAYLOAD + 1))
        rleft = Signal(range(MAX_PAYLOAD + 1))
        rpay = Signal(48)                             # the reply's own head, byte 0 first
        head = Signal(3)                              # ... its bytes left; then registers
        from_mem = Signal()
        tx_byte = Signal(8)
        reg_addr = Signal.like(dev.reg_addr)
        m.d.comb += dev.reg_addr.eq(reg_addr)

        m.d.comb += [wp.addr.eq(cnt), wp.data.eq(rbyte), rp.addr.eq(rptr),
                     dev.mem_addr.eq(ptr), dev.mem_space.eq(space[:2]),
                     utx.i.payload.eq(tx_byte), crc_in.eq(rbyte),
                     # straight from registers the parser leaves alone while busy
                     dev.cmd.eq(cmd[:4]), dev.load_size.eq(size)]
        m.d.sync += [dev.mem_we.eq(0), dev.mem_re.eq(0), dev.cmd_start.eq(0),
                     dev.program_written.eq(0)]
        with m.If(dev.mem_we):
            m.d.sync += ptr.eq(ptr + 1)

        # A reply names its head source (`payload_sel`, up to 6 bytes: PING, a NACK's (cmd,
        # last_error), STATUS's (state, last_error)); TX_PREP loads the head from it a cycle
        # later, so the head register has one load condition and a registered select. The
        # bytes after the head come from the device's register map from `regs` on.
        payload_sources = [Cat(cmd, last_error)]
        payload_sel = Signal(range(8))

        def reply(rc, nbytes, source=None, mem=False, heads=0, regs=0):
            m.d.sync += [rcmd.eq(rc), rlen.eq(nbytes), rleft.eq(nbytes), from_mem.eq(mem),
                         payload_sel.eq(source or 0), head.eq(heads), reg_addr.eq(regs)]
            m.next = "TX_PREP"

        def ack(nbytes, payload=None, mem=False, regs=None):
            """ACK with `nbytes` of payload: `payload` (a head of its size in bytes) then,
            from register `regs` on, the rest; or from memory (`mem`)."""
            source, heads = None, 0
            if payload is not None:
                payload_sources.append(payload)
                source, heads = len(payload_sources), len(payload) // 8
            reply(cmd | ACK_BIT, nbytes, source, mem, heads,
                  REG_OFFSET[regs] if regs is not None else 0)

        def nack(code):
            m.d.sync += last_error.eq(code)
            reply(NACK, 2, 1, heads=2)

        def receive(then):
            """Frame states: take a byte, or time out if the line stays idle."""
            m.d.comb += take.eq(1)
            with m.If(rvalid):
                then()
            with m.Elif(expired):
                nack(Error.TRUNCATED)

        with m.FSM():
            # ---------------------------------------------------------------- receive
            with m.State("HUNT"):
                m.d.comb += take.eq(1)
                with m.If(rvalid & (rbyte == SYNC)):      # anything else is noise
                    m.d.sync += [crc.eq(0xFFFF), cmd.eq(0), seq.eq(0)]
                    m.next = "HDR_CMD"
            with m.State("HDR_CMD"):
                def _():
                    m.d.sync += [cmd.eq(rbyte), crc.eq(crc_next)]
                    m.next = "HDR_SEQ"
                receive(_)
            with m.State("HDR_SEQ"):
                def _():
                    m.d.sync += [seq.eq(rbyte), crc.eq(crc_next)]
                    m.next = "HDR_LEN0"
                receive(_)
            with m.State("HDR_LEN0"):
                def _():
                    m.d.sync += [len_lo.eq(rbyte), crc.eq(crc_next)]
                    m.next = "HDR_LEN1"
                receive(_)
            with m.State("HDR_LEN1"):
                def _():
                    full = Cat(len_lo, rbyte)
                    m.d.sync += [length.eq(full), remaining.eq(full), cnt.eq(0),
                                 crc.eq(crc_next)]
                    with m.If(full > MAX_PAYLOAD):
                        nack(Error.BAD_LENGTH)
                    with m.Elif(full == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
                receive(_)
            with m.State("PAYLOAD"):
                def _():
                    m.d.comb += wp.en.eq(1)
                    with m.Switch(cnt):
                        for k in range(7):
                            with m.Case(k):
                                m.d.sync += arg[8 * k:8 * k + 8].eq(rbyte)
                    m.d.sync += [cnt.eq(cnt + 1), remaining.eq(remaining - 1),
                                 crc.eq(crc_next)]
                    with m.If(remaining == 1):
                        m.next = "CRC0"
                receive(_)
            with m.State("CRC0"):
                def _():
                    m.d.sync += crc_lo.eq(rbyte)
                    m.next = "CRC1"
                receive(_)
            with m.State("CRC1"):
                def _():
                    with m.If(Cat(crc_lo, rbyte) == crc):
                        m.next = "EXEC"
                    with m.Else():
                        nack(Error.BAD_CRC)
                receive(_)

            # ---------------------------------------------------------------- decode
            with m.State("EXEC"):
                with m.Switch(cmd):
                    with m.Case(Cmd.PING):
                        with m.If(empty):
                            ack(6, _const_bytes(b"SFHL" + PROTOCOL_VERSION.to_bytes(2, "little")))
                        with m.Else():
                            nack(Error.BAD_LENGTH)
                    with m.Case(Cmd.STATUS):
                        with m.If(empty):
                            ack(6, Cat(dev.state, C(0, 6), last_error, C(0, 4)),
                                regs="inferences")
                        with m.Else():
                            nack(Error.BAD_LENGTH)
                    with m.Case(Cmd.COUNTERS):           # inferences, ops, saturations
                        with m.If(empty):
                            ack(12, regs="inferences")
                        with m.Else():
                            nack(Error.BAD_LENGTH)
                    with m.Case(Cmd.PERF):               # cycles, events, skipped
                        with m.If(empty):
                            ack(12, regs="perf_cycles")
                        with m.Else():
                            nack(Error.BAD_LENGTH)
                    with m.Case(Cmd.RUN, Cmd.RESET):
                        with m.If(empty):
                            m.next = "LAUNCH"
                        with m.Else():
                            nack(Error.BAD_LENGTH)
                    with m.Case(Cmd.LOAD):
                        with m.If(length_4):
                            m.next = "LOAD_CHECK"
                        with m.Else():
                            nack(Error.BAD_LENGTH)
                    with m.Case(Cmd.WRITE):
                        with m.If(length_ge5):
                            m.d.sync += n.eq(length - 5)
                            m.next = "ADDR_SUM"
                        with m.Else():
                            nack(Error.BAD_LENGTH)
                    with m.Case(Cmd.READ):
                        with m.If(read_len_ok):
                            m.d.sync += n.eq(count)
                            m.next = "ADDR_SUM"
                        with m.Else():
                            nack(Error.BAD_LENGTH)
                    with m.Default():
                        nack(Error.UNKNOWN_CMD)
            with m.State("ADDR_SUM"):
                # golden: unknown space, a write to a read-only space, or addr + len beyond
                # the space
                sizes = {Space.PROGRAM: dev.program_size, Space.INPUT: dev.input_size,
                         Space.OUTPUT: dev.output_size, Space.LAYERS: dev.layers_size}
                assert set(sizes) == set(Space), "every space needs a size port"
                selected = C(0, self.addr_width + 1)
                for sp, sz in sizes.items():
                    selected = Mux(space == sp, sz, selected)
                m.d.sync += [
                    end.eq(addr + n), size_sel.eq(selected),
                    bad_space.eq((space > max(Space)) |
                                 ((cmd == Cmd.WRITE) & space.matches(*READ_ONLY))),
                    ptr.eq(addr), rptr.eq(5)]
                m.next = "ADDR_CMP"
            with m.State("ADDR_CMP"):
                with m.If(bad_space | (end > size_sel)):
                    nack(Error.BAD_ADDRESS)
                with m.Elif(cmd == Cmd.READ):
                    ack(n, mem=True)
                with m.Elif(n == 0):
                    m.next = "WR_DONE"
                with m.Else():
                    m.next = "WR_RD"
            with m.State("LOAD_CHECK"):
                with m.If(size > dev.program_size):
                    nack(Error.BAD_ADDRESS)
                with m.Else():
                    m.next = "LAUNCH"

            # ---------------------------------------------------------------- execute
            with m.State("WR_RD"):                         # frame buffer read: 1 cycle
                m.next = "WR_WE"
            with m.State("WR_WE"):
                m.d.sync += [dev.mem_we.eq(1), dev.mem_wdata.eq(rp.data),
                             rptr.eq(rptr + 1), n.eq(n - 1)]
                with m.If(n == 1):
                    m.next = "WR_DONE"
                with m.Else():
                    m.next = "WR_RD"
            with m.State("WR_DONE"):
                m.d.sync += dev.program_written.eq(space == Space.PROGRAM)
                ack(0)
            with m.State("LAUNCH"):
                m.d.sync += [dev.cmd_start.eq(1), running.eq(cmd == Cmd.RUN)]
                m.next = "WAIT_DONE"
            with m.State("WAIT_DONE"):
                # the device's answer is registered before it steers the reply (a long path
                # from the sequencer otherwise)
                with m.If(dev.cmd_done):
                    m.d.sync += [running.eq(0), done_error.eq(dev.cmd_error)]
                    m.next = "DONE"
            with m.State("DONE"):
                with m.If(done_error != 0):
                    nack(done_error)
                with m.Elif(cmd == Cmd.LOAD):
                    ack(10, regs="load_info")
                with m.Elif(cmd == Cmd.RUN):
                    ack(8, regs="run_ops")
                with m.Else():                             # RESET
                    m.d.sync += last_error.eq(0)
                    ack(0)

            # ---------------------------------------------------------------- reply
            def goto(state):
                return lambda: setattr(m, "next", state)

            def send(byte, then, update_crc=True):
                m.d.comb += [utx.i.valid.eq(1), tx_byte.eq(byte)]
                if update_crc:
                    m.d.comb += crc_in.eq(byte)
                with m.If(utx.i.ready):
                    if update_crc:
                        m.d.sync += crc.eq(crc_next)
                    then()

            with m.State("TX_PREP"):
                assert len(payload_sources) < 2 ** len(payload_sel)
                with m.Switch(payload_sel):
                    for k, source in enumerate(payload_sources, start=1):
                        with m.Case(k):
                            m.d.sync += rpay.eq(source)
                m.next = "TX_SYNC"
            with m.State("TX_SYNC"):
                def _():
                    m.d.sync += crc.eq(0xFFFF)
                    m.next = "TX_CMD"
                send(SYNC, _, update_crc=False)
            with m.State("TX_CMD"):
                send(rcmd, goto("TX_SEQ"))
            with m.State("TX_SEQ"):
                send(seq, goto("TX_LEN0"))
            with m.State("TX_LEN0"):
                send(rlen[:8], goto("TX_LEN1"))
            with m.State("TX_LEN1"):
                def _():
                    with m.If(rlen == 0):
                        m.next = "TX_CRC0"
                    with m.Elif(from_mem):
                        m.next = "RD_REQ"
                    with m.Else():
                        m.next = "TX_PAY"
                send(rlen[8:], _)
            with m.State("TX_PAY"):
                # the head's bytes, then the registers' (reg_data a cycle after reg_addr)
                with m.If(head == 0):
                    m.next = "TX_REG"
                with m.Else():
                    def _():
                        m.d.sync += [rpay.eq(rpay >> 8), rleft.eq(rleft - 1), head.eq(head - 1)]
                        with m.If(rleft == 1):
                            m.next = "TX_CRC0"
                    send(rpay[:8], _)
            with m.State("TX_REG"):
                def _():
                    m.d.sync += [rleft.eq(rleft - 1), reg_addr.eq(reg_addr + 1)]
                    with m.If(rleft == 1):
                        m.next = "TX_CRC0"
                    with m.Else():
                        m.next = "TX_PAY"            # a cycle for the next register byte
                send(dev.reg_data, _)
            with m.State("RD_REQ"):
                m.d.sync += dev.mem_re.eq(1)
                m.next = "RD_WAIT"
            with m.State("RD_WAIT"):
                with m.If(dev.mem_rvalid):
                    m.d.sync += [rpay[:8].eq(dev.mem_rdata), ptr.eq(ptr + 1)]
                    m.next = "TX_RD"
            with m.State("TX_RD"):
                def _():
                    m.d.sync += rleft.eq(rleft - 1)
                    with m.If(rleft == 1):
                        m.next = "TX_CRC0"
                    with m.Else():
                        m.next = "RD_REQ"
                send(rpay[:8], _)
            with m.State("TX_CRC0"):
                send(crc[:8], goto("TX_CRC1"), update_crc=False)
            with m.State("TX_CRC1"):
                send(crc[8:], goto("HUNT"), update_crc=False)
        return m
