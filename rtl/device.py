"""Device: the whole accelerator as a host sees it, a UART host link (rtl/host_link.py) in
front of the Accelerator (rtl/accelerator.py). Ports `rx` / `tx` (8N1, `divisor` clock cycles
per bit); everything else goes through the framed protocol of docs/host-link.md.

`device_params(program, divisor)` gives the constructor parameters of the smallest build that
runs `program` (`AcceleratorConfig.for_programs`), as plain values: the cocotb runner keys its
build directories by them, and `Device(**params)` rebuilds the same design. `DIGITS_BUILD` and
`PINN_BUILD` are the shapes the demo, the benchmarks, the board builds and the end-to-end tests
use (`device_params(*programs, divisor=d, **DIGITS_BUILD)`).
"""

from dataclasses import asdict

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..golden.program_loader import AcceleratorConfig
from .accelerator import Accelerator
from .compact import CompactAccelerator
from .host_link import HostLink

# lanes: activation / LIF lanes; engine_lanes: the engine's accumulate width (an event adds
# that many weights a cycle). The digits transformers' throughput build (docs/accelerator.md)
# and the PINN's small one.
DIGITS_BUILD = {"lanes": 16, "engine_lanes": 32}
PINN_BUILD = {"lanes": 4}
# the compact build (rtl/compact.py): one neuron a cycle, for the iCE40UP5K
COMPACT_BUILD = {"compact": True}


def build_label(build: dict) -> str:
    """'16 lanes, 32-lane engine' (or 'compact') for a build dict as above."""
    if build.get("compact"):
        return "compact"
    engine = build.get("engine_lanes")
    return f"{build['lanes']} lanes" + (f", {engine}-lane engine" if engine else "")


def device_params(*programs, divisor: int, lanes: int = 4, **overrides) -> dict:
    cfg = AcceleratorConfig.for_programs(*programs, lanes=lanes, **overrides)
    return {"divisor": divisor, **asdict(cfg)}


class Device(wiring.Component):
    rx: In(1)
    tx: Out(1)
    busy: Out(1)

    def __init__(self, *, divisor, **config):
        self.cfg = AcceleratorConfig(**config)
        self.divisor = divisor
        self.accel = (CompactAccelerator if self.cfg.compact else Accelerator)(self.cfg)
        self.link = HostLink(divisor=divisor, addr_width=self.accel.addr_width)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        m.submodules.accel = accel = self.accel
        wiring.connect(m, link=link.dev, accel=accel.dev)
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx), self.busy.eq(accel.busy)]
        return m
