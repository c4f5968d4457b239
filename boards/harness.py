"""CoreHarness: keeps any `wiring.Component` core alive on a board so that its utilization
and Fmax can be measured through the same flow as the self test.

Every input port of the core is driven from a free-running 32-bit LFSR (random valid,
ready, payloads, commands: the core sees backpressure and gaps), every output port is
registered and xor-folded into one LED, so no logic can be optimised away. The harness
adds one LFSR, one register per output bit and an xor tree; the report names the core.
"""

from amaranth import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import wiring

from ..rtl.attention_core import AttentionCore
from ..rtl.lif_array import LIFArray
from ..rtl.spiking_linear import SpikingLinear
from ..rtl.synapse_engine import SynapseEngine
from .selftest import LFSR_SEED, LFSR_TAPS, add_pll_domain, request_leds

# Default parameter sets that `make synth-core CORE=...` builds (issue targets use these).
CORES = {
    "lif": lambda: LIFArray(n=64, lanes=1, width=16, leak_shift=4, theta=1500),
    "lif-p4": lambda: LIFArray(n=64, lanes=4, width=16, leak_shift=4, theta=1500),
    "synapse": lambda: SynapseEngine(n_in=64, n_out=64, lanes=4, timesteps=4),
    "spiking-linear": lambda: SpikingLinear(n_in=64, n_out=64, lanes=4, timesteps=4,
                                            bias_width=8, leak_shift=4, theta=1500),
    # One head of the digits transformer: 8 tokens, 16 channels, T = 4, STAtten up to B = 4.
    "attention": lambda: AttentionCore(n=8, d=16, timesteps=4, lanes=4, theta=8),
}


class CoreHarness(Elaboratable):
    def __init__(self, core: wiring.Component, pll=None):
        self.core, self.pll = core, pll

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        lfsr = Signal(32, init=LFSR_SEED)
        m.d.sync += lfsr.eq((lfsr >> 1) ^ Cat([lfsr[0]] * 32) & LFSR_TAPS)
        offset, outputs = 0, []
        for _, member, port in core.signature.flatten(core):
            value = Value.cast(port)  # payload views -> plain bits
            if member.flow == wiring.In:
                m.d.comb += value.eq(Cat(lfsr[(offset + j) % 32] for j in range(len(value))))
                offset += 7  # different bits for different ports
            else:
                outputs.append(value)
        sampled = Signal(sum(len(v) for v in outputs))
        m.d.sync += sampled.eq(Cat(*outputs))
        folded = Signal()
        m.d.sync += folded.eq(sampled.xor())
        if platform is not None:
            if self.pll is not None:
                add_pll_domain(m, platform, *self.pll)
            led, = request_leds(platform, 1)
            m.submodules.led = led
            m.d.comb += led.o.eq(folded)
        return m
