"""UART 8N1, LSB first, for the host link (docs/host-link.md).

`divisor` is the number of clock cycles per bit (`divisor_for(clk_hz, baud)`); it must be
>= 4 so that a bit has a middle to sample. `UARTRx` synchronizes the `rx` pin with two
flops, checks the start bit at mid-bit, samples every bit at mid-bit and drops a byte whose
stop bit is 0 (then waits for the line to go high again). A received byte is held on `o`
until it is taken; a byte that completes while the previous one is still held is dropped
(overrun). `UARTTx` shifts `i` out on `tx` (a flop), accepting the next byte in the last
cycle of the stop bit so back-to-back bytes run at the full line rate.
"""

from amaranth import C, Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


def divisor_for(clk_hz, baud=115200):
    """Clock cycles per bit for `baud` at `clk_hz` (rounded to the nearest cycle)."""
    divisor = round(clk_hz / baud)
    if divisor < 4:
        raise ValueError(f"a {clk_hz} Hz clock is too slow for {baud} baud "
                         f"(needs >= 4 cycles per bit, has {clk_hz / baud:.2f})")
    return divisor


def check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"divisor (clock cycles per bit) must be an integer >= 4, "
                         f"got {divisor!r}")


class UARTRx(wiring.Component):
    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    frame_error: Out(1)     # one-cycle pulse: a byte was dropped for a 0 stop bit

    def __init__(self, divisor):
        check_divisor(divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        sync1 = Signal(init=1)
        line = Signal(init=1)          # the pin after two flops (metastability)
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1)]

        timer = Signal(range(d))
        bit = Signal(range(8))
        shreg = Signal(8)
        m.d.sync += self.frame_error.eq(0)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # two cycles of the half bit were spent in the synchronizer
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):
                        m.next = "IDLE"            # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), shreg.eq(Cat(shreg[1:], line)),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):
                        with m.If(~self.o.valid | self.o.ready):   # else: overrun, drop
                            m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):                   # hunt again only from an idle line
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor):
        check_divisor(divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        shreg = Signal(10, init=0x3FF)      # bit 0 is on the line; idle shifts in ones
        left = Signal(range(11))            # bits still to send, the current one included
        timer = Signal(range(d))
        m.d.comb += self.tx.eq(shreg[0])
        # registered tx: shreg[0] is a flop, so the pin has no logic in front of it
        last = (left == 1) & (timer == 0)
        m.d.comb += self.i.ready.eq((left == 0) | last)

        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(left != 0):
            m.d.sync += [shreg.eq(Cat(shreg[1:], C(1, 1))), left.eq(left - 1),
                         timer.eq(d - 1)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(Cat(C(0, 1), self.i.payload, C(1, 1))), left.eq(10),
                         timer.eq(d - 1)]
        return m
