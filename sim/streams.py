"""Reusable cocotb helpers for `amaranth.lib.stream` ports (valid / ready / packed payload).

`pack` / `unpack` convert an Amaranth `data.Layout` value (nested dicts / lists / ints / enum
members) to and from the packed integer on the Verilog port. `StreamDriver` drives a source
with random idle gaps, `StreamSink` drives `ready` with random pauses, `StreamMonitor` records
transfers, `Scoreboard` compares them in order against expectations (the golden model).

Timing convention (all helpers share it, so they compose on one clock): inputs are written
right after `RisingEdge`, handshakes are sampled in `ReadOnly` of the same time step; a
`valid & ready` seen there is the transfer that happens at the next rising edge.
"""

from __future__ import annotations

import enum
import random
from collections import deque

from amaranth.hdl import Shape
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, SimTimeoutError, with_timeout


def pack(layout, value) -> int:
    """Pack `value` (dict for structs, sequence for arrays, int / enum member for leaves)."""
    if isinstance(layout, data.Layout):
        bits = 0
        for key, field in layout:
            item = value.get(key, 0) if isinstance(layout, data.StructLayout) else value[key]
            bits |= pack(field.shape, item) << field.offset
        return bits
    if isinstance(value, enum.Enum):
        value = value.value
    shape = Shape.cast(layout)
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    if not lo <= int(value) < lo + (1 << shape.width):
        raise ValueError(f"{value!r} does not fit {shape!r}")
    return int(value) & ((1 << shape.width) - 1)


def unpack(layout, bits: int):
    """Inverse of `pack`; enum fields come back as members (raw int if not a member)."""
    if isinstance(layout, data.Layout):
        fields = {key: unpack(field.shape, bits >> field.offset) for key, field in layout}
        return fields if isinstance(layout, data.StructLayout) else list(fields.values())
    shape = Shape.cast(layout)
    raw = bits & ((1 << shape.width) - 1)
    if shape.signed and raw >> (shape.width - 1):
        raw -= 1 << shape.width
    if isinstance(layout, type) and issubclass(layout, enum.Enum):
        try:
            return layout(raw)
        except ValueError:
            return raw
    return raw


TIME0_TRIGGER = "$auto$verilog_backend"


def _kick_comb_blocks(module, depth: int = 0) -> None:
    """Yosys' Verilog gives every `always @*` block a dummy reg (`$auto$verilog_backend...
    dump_module$N = 0`) so that it runs at time 0. On Icarus that initializer can race the
    block's start, leaving a block whose inputs never change at X (e.g. a LIF sum that only
    ever sees zero currents). Writing the dummy reg re-runs every such block of the module."""
    for handle in module:
        name = getattr(handle, "_name", "")
        if name.startswith(TIME0_TRIGGER):
            handle.value = 1
        elif depth < 8 and type(handle).__name__ == "HierarchyObject":
            _kick_comb_blocks(handle, depth + 1)


async def start_and_reset(dut, inputs, clock_ns: float, cycles: int = 2) -> None:
    """Drive `inputs` low, start the clock on `dut.clk` and hold `dut.rst` for `cycles`."""
    for port in inputs:
        port.value = 0
    dut.rst.value = 1
    Clock(dut.clk, clock_ns, unit="ns").start()
    _kick_comb_blocks(dut)
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0


def read_counters(dut, names) -> dict:
    """The named output ports as unsigned ints (1-bit ports read as Logic, wider as arrays)."""
    values = {}
    for name in names:
        value = getattr(dut, name).value
        values[name] = value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)
    return values


def counter_mismatches(label: str, got: dict, want: dict) -> list[str]:
    return [f"{label} {name}: got {got[name]}, expected {want[name]}"
            for name in want if got[name] != want[name]]


async def wait_case(done, work_cycles: int, *, gap_prob: float, backpressure_prob: float,
                    clock_ns: float, margin_cycles: int) -> bool:
    """Wait for `done` (a cocotb Event) with a budget of 4x the ideal work, stretched by the
    random input gaps and output pauses; False if the case did not finish in it."""
    slack = (1 - gap_prob) * (1 - backpressure_prob)
    budget = int(4 * work_cycles / max(slack, 0.05)) + margin_cycles
    try:
        await with_timeout(done.wait(), budget * clock_ns, "ns")
    except SimTimeoutError:
        return False
    return True


def _high(handle) -> bool:
    return str(handle.value) == "1"  # X / Z count as low rather than raising


class StreamDriver:
    """Source side: sends queued payload ints; before raising `valid` for an item it idles a
    cycle with probability `gap_prob`. Once up, `valid` and payload hold until the transfer."""

    def __init__(self, clk, valid, ready, payload, *, gap_prob=0.0, rng=None):
        self.clk, self.valid, self.ready, self.payload = clk, valid, ready, payload
        self.gap_prob, self.rng = gap_prob, rng or random.Random()
        self.queue: deque[int] = deque()
        self.pending: int | None = None      # item on the port, waiting for `ready`
        self.sent = 0
        self.first_transfer = self.last_transfer = None  # sim time (ns), for throughput
        self.valid.value = 0

    def send(self, bits: int) -> None:
        self.queue.append(bits)

    @property
    def done(self) -> bool:
        return not self.queue and self.pending is None

    async def run(self) -> None:
        while True:
            await RisingEdge(self.clk)
            if self.pending is None and self.queue and self.rng.random() >= self.gap_prob:
                self.pending = self.queue.popleft()
                self.payload.value = self.pending
            self.valid.value = int(self.pending is not None)
            await ReadOnly()
            if self.pending is not None and _high(self.ready):
                self.pending = None
                self.sent += 1
                self.last_transfer = get_sim_time("ns")
                if self.first_transfer is None:
                    self.first_transfer = self.last_transfer


class StreamSink:
    """Sink side: drives `ready`, low with probability `pause_prob` each cycle."""

    def __init__(self, clk, ready, *, pause_prob=0.0, rng=None):
        self.clk, self.ready = clk, ready
        self.pause_prob, self.rng = pause_prob, rng or random.Random()
        self.ready.value = 0

    async def run(self) -> None:
        while True:
            await RisingEdge(self.clk)
            self.ready.value = int(self.rng.random() >= self.pause_prob)


class StreamMonitor:
    """Passive: on every transfer calls `callback(unpack(layout, payload))` (or the raw int when
    `layout` is None). Transfer times (sim ns) let benches measure throughput."""

    def __init__(self, clk, valid, ready, payload, layout=None, callback=None):
        self.clk, self.valid, self.ready, self.payload = clk, valid, ready, payload
        self.layout, self.callback = layout, callback
        self.count = 0
        self.first_transfer = self.last_transfer = None

    async def run(self) -> None:
        while True:
            await RisingEdge(self.clk)
            await ReadOnly()
            if _high(self.valid) and _high(self.ready):
                value = self.payload.value
                if not value.is_resolvable:
                    raise AssertionError(f"{self.payload._name}: transfer of a payload with "
                                         f"X/Z bits: {value}")
                bits = value.to_unsigned()
                self.count += 1
                self.last_transfer = get_sim_time("ns")
                if self.first_transfer is None:
                    self.first_transfer = self.last_transfer
                if self.callback is not None:
                    self.callback(bits if self.layout is None else unpack(self.layout, bits))


class Scoreboard:
    """In-order scoreboard: `expect()` golden items, feed DUT items to `receive()`;
    `check()` asserts no mismatch and that every expected item came out."""

    def __init__(self, name="scoreboard", keep=10):
        self.name, self.keep = name, keep
        self.expected: deque = deque()
        self.errors = 0
        self.matched = 0
        self.mismatches: list[str] = []     # the first `keep` mismatches, described

    def expect(self, item) -> None:
        self.expected.append(item)

    def receive(self, got) -> None:
        if not self.expected:
            self._error(f"unexpected item {got!r}")
            return
        want = self.expected.popleft()
        if got == want:
            self.matched += 1
        else:
            self._error(f"item {self.matched + self.errors}: expected {want!r}, got {got!r}")

    def _error(self, message: str) -> None:
        self.errors += 1
        if len(self.mismatches) < self.keep:
            self.mismatches.append(message)

    @property
    def passed(self) -> bool:
        return self.errors == 0 and not self.expected

    def check(self) -> None:
        assert self.errors == 0, (f"{self.name}: {self.errors} mismatches; first: "
                                  + "; ".join(self.mismatches))
        assert not self.expected, (f"{self.name}: {len(self.expected)} expected items never "
                                   f"came out (next: {self.expected[0]!r})")
