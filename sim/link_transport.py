"""A host-driver transport onto a simulated UART: the same `AcceleratorLink` code path that
talks to a board over a serial port talks to the RTL in cocotb.

`CocotbUartTransport(dut, divisor, timeout_cycles=...)` drives `dut.rx` (8N1, LSB first,
`divisor` clock cycles per bit, optional seeded random idle gaps between bytes) and decodes
`dut.tx` into a byte queue. Its `write` / `read` are *blocking* methods for a thread started
with `cocotb.task.bridge` (the job thread of `link_bench`): each call hands a coroutine to the
scheduler with `cocotb.task.resume` and the simulation runs until it completes.
`send` / `receive` are the same operations as coroutines, for benches.

Timing (all in simulated clock cycles, the clock period `clock_ns` is the bench's):
- `write(data)` returns once the stop bit of the last byte is on the line (a serial port's
  write + flush), so a read's timeout never counts the host's own transmission;
- `pause(seconds)` lets `seconds` of simulated time pass (e.g. to RESET mid-RUN);
- `read(n, timeout_s)` ignores the wall-clock `timeout_s`: it returns once `n` bytes are in
  or when no further byte has completed for `timeout_cycles` cycles (an inter-byte idle
  timeout, so a long reply never times out while it streams in; a silent line returns after
  exactly `timeout_cycles`). Pick `timeout_cycles` above the device's longest silence (e.g. a
  RUN). `last_wait_cycles` says how long the last read waited after its last byte.
Line edges are placed 1 ns after a rising clock edge, never on one, so the device samples a
stable level on every simulator.
"""

from __future__ import annotations

import random
from collections import deque

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.task import resume
from cocotb.triggers import Event, FallingEdge, First, RisingEdge, Timer

EDGE_OFFSET_NS = 1      # where our rx edges sit after a rising clock edge


def _level(handle) -> int | None:
    text = str(handle.value)
    return int(text) if text in ("0", "1") else None      # X / Z: None


class CocotbUartTransport:
    def __init__(self, dut, divisor: int, timeout_cycles: int = 100_000, *,
                 clock_ns: float = 10, max_gap_cycles: int = 0, seed: int = 0,
                 rx=None, tx=None, clk=None):
        if divisor < 2:
            raise ValueError(f"divisor must be at least 2 clock cycles per bit, got {divisor}")
        if timeout_cycles < 1:
            raise ValueError(f"timeout_cycles must be positive, got {timeout_cycles}")
        if max_gap_cycles < 0:
            raise ValueError(f"max_gap_cycles must be >= 0, got {max_gap_cycles}")
        if clock_ns <= 2 * EDGE_OFFSET_NS:
            raise ValueError(f"clock_ns must exceed {2 * EDGE_OFFSET_NS} ns, got {clock_ns}")
        self.rx = rx if rx is not None else dut.rx
        self.tx = tx if tx is not None else dut.tx
        self.clk = clk if clk is not None else dut.clk
        self.divisor, self.timeout_cycles = divisor, timeout_cycles
        self.clock_ns, self.max_gap_cycles = clock_ns, max_gap_cycles
        self.rng = random.Random(seed)
        self.bit_ns = divisor * clock_ns
        self._to_send: deque[int] = deque()
        self._send_wake, self._sent_all = Event(), Event()
        self._sent_all.set()
        self.received: deque[int] = deque()
        self._got_byte = Event()
        self.bytes_sent = self.bytes_received = 0
        self.framing_errors = 0         # stop bit low on tx: the byte is dropped
        self.last_wait_cycles = 0
        self._tasks = []
        self.rx.value = 1               # idle line (start_and_reset drives only what it is given)

    # --- lifecycle ---

    def start(self) -> None:
        """Start the rx driver and the tx monitor (after reset)."""
        if not self._tasks:
            self._tasks = [cocotb.start_soon(self._drive()), cocotb.start_soon(self._monitor())]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    # --- coroutine API ---

    async def send(self, data: bytes) -> None:
        """Queue `data` on rx and wait until its last stop bit has been driven."""
        if not self._tasks:
            raise RuntimeError("CocotbUartTransport.start() was not called")
        if not data:
            return
        self._to_send.extend(bytes(data))
        self._sent_all.clear()
        self._send_wake.set()
        await self._sent_all.wait()

    async def receive(self, n: int) -> bytes:
        """Up to `n` bytes from tx: fewer when the line stays quiet for `timeout_cycles`."""
        if not self._tasks:
            raise RuntimeError("CocotbUartTransport.start() was not called")
        timeout_ns = self.timeout_cycles * self.clock_ns
        while len(self.received) < n:
            self._got_byte.clear()
            since, timer = get_sim_time("ns"), Timer(timeout_ns, "ns")
            if await First(self._got_byte.wait(), timer) is timer:
                self.last_wait_cycles = round((get_sim_time("ns") - since) / self.clock_ns)
                break
        else:
            self.last_wait_cycles = 0
        return bytes(self.received.popleft() for _ in range(min(n, len(self.received))))

    async def idle(self, seconds: float) -> None:
        """Leave the line idle for `seconds` of simulated time (whole clock cycles)."""
        await Timer(max(1, round(seconds * 1e9 / self.clock_ns)) * self.clock_ns, "ns")

    # --- blocking API for the driver (call from a cocotb.task.bridge thread) ---

    def write(self, data: bytes) -> None:
        resume(self.send)(data)

    def pause(self, seconds: float) -> None:
        resume(self.idle)(seconds)

    def timeout_text(self, timeout_s: float) -> str:
        """How a read times out here, for the driver's LinkTimeout message."""
        return f"{self.timeout_cycles} idle clock cycles (simulated)"

    def read(self, n: int, timeout_s: float) -> bytes:
        return resume(self.receive)(n)

    # --- line processes ---

    async def _drive(self) -> None:
        await RisingEdge(self.clk)
        await Timer(EDGE_OFFSET_NS, "ns")      # from here on every wait is whole cycles
        while True:
            if not self._to_send:
                self._sent_all.set()
                self._send_wake.clear()
                await self._send_wake.wait()   # woken inside some time step: realign
                await RisingEdge(self.clk)
                await Timer(EDGE_OFFSET_NS, "ns")
                continue
            gap = self.rng.randint(0, self.max_gap_cycles) if self.max_gap_cycles else 0
            if gap:
                await Timer(gap * self.clock_ns, "ns")
            byte = self._to_send.popleft()
            # start bit, 8 data bits LSB first, stop bit; a wait only where the level changes
            bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
            k = 0
            while k < len(bits):
                run = 1
                while k + run < len(bits) and bits[k + run] == bits[k]:
                    run += 1
                self.rx.value = bits[k]
                await Timer(run * self.bit_ns, "ns")
                k += run
            self.bytes_sent += 1

    async def _monitor(self) -> None:
        # sample mid-bit, off the clock edges where the device's tx changes
        half_ns = (self.divisor // 2) * self.clock_ns + EDGE_OFFSET_NS
        while _level(self.tx) != 1:            # wait for an idle (high) line after reset
            await RisingEdge(self.clk)
        while True:
            await FallingEdge(self.tx)
            await Timer(half_ns, "ns")         # middle of the start bit
            if _level(self.tx) != 0:
                continue                       # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await Timer(self.bit_ns, "ns")
                level = _level(self.tx)
                if level is None:
                    raise AssertionError(f"UART tx is {self.tx.value} in data bit {i} "
                                         f"at {get_sim_time('ns')} ns")
                byte |= level << i
            await Timer(self.bit_ns, "ns")
            if _level(self.tx) != 1:
                self.framing_errors += 1       # no stop bit: drop it, wait for idle
                while _level(self.tx) != 1:
                    await RisingEdge(self.clk)
                continue
            self.received.append(byte)
            self.bytes_received += 1
            self._got_byte.set()
