"""SpikingLinear: a SynapseEngine feeding a LIFArray (design.md §4), bit-exact with
`spikeforge.golden.lif.spiking_linear` on the event list of the input spikes.

Events in on `i` (see SynapseEngine), LIF output beats (spikes + membranes, timestep-major)
out on `o`; `load` writes weights/biases, `cfg` retunes the LIF at run time.
"""

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .lif_array import LIFArray, config_signature
from .synapse_engine import SynapseEngine


class SpikingLinear(wiring.Component):
    def __init__(self, *, n_in, n_out, lanes=1, timesteps=4, weight_width=8, bias_width=None,
                 weights=None, bias=None, width=16, leak_shift=None, theta, reset="subtract",
                 v_reset=0, signed_spikes=False):
        self.engine = SynapseEngine(n_in=n_in, n_out=n_out, lanes=lanes, timesteps=timesteps,
                                    weight_width=weight_width, bias_width=bias_width,
                                    weights=weights, bias=bias)
        self.lif = LIFArray(n=n_out, lanes=lanes, width=width,
                            current_width=self.engine.current_width, leak_shift=leak_shift,
                            theta=theta, reset=reset, v_reset=v_reset,
                            signed_spikes=signed_spikes)
        super().__init__({
            "i": In(stream.Signature(self.engine.i_layout)),
            "o": Out(stream.Signature(self.lif.o_layout)),
            "load": In(stream.Signature(self.engine.load_layout)),
            "cfg": In(config_signature(width)),
            "busy": Out(1),
            "saturated": Out(1),
            "sat_count": Out(32),
            "index_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        m.submodules.lif = lif = self.lif
        wiring.connect(m, wiring.flipped(self.i), engine.i)
        wiring.connect(m, wiring.flipped(self.load), engine.load)
        wiring.connect(m, producer=engine.o, consumer=lif.i)
        wiring.connect(m, lif.o, wiring.flipped(self.o))
        wiring.connect(m, wiring.flipped(self.cfg), lif.cfg)
        m.d.comb += [self.busy.eq(engine.busy | lif.o.valid),
                     self.saturated.eq(lif.saturated), self.sat_count.eq(lif.sat_count),
                     self.index_error.eq(engine.index_error | lif.index_error)]
        return m
