"""LIFArray: time-multiplexed integer LIF neurons (design.md §3, §8), bit-exact with
`spikeforge.golden.lif.lif_array`.

`n` neurons in `n // lanes` groups; one group (all `lanes` neurons) is updated per cycle.
Membranes live in `amaranth.lib.memory` (one word = `lanes` membranes). Three pipeline
stages, all advancing together when the output can accept (`~o.valid | o.ready`):

    A: accept beat, issue the membrane read       (address = index)
    B: read data -> forwarding mux -> leak        (v - (v >> k))
    C: add current, spike compare, reset, write back; result -> output register

The read-modify-write loop is closed by forwarding: B takes the membrane from C (update
in flight) or from the last write (not yet visible to the non-transparent read port)
when the index matches, so back-to-back beats for the same group never stall.
The spike decision and saturation are computed from unsaturated sums so that only two
adders and a select sit in the loop: `h >= θ  <=>  l + x >= θ` because θ <= max.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..golden.lif import check_lif_params, signed_range


class LIFOp(enum.Enum, shape=2):
    UPDATE = 0  # one LIF timestep with `current`
    READ = 1    # no state change; output the stored membrane
    LOAD = 2    # membrane <- sat_W(current)


def config_signature(width: int) -> wiring.Signature:
    return wiring.Signature({
        "we": Out(1),
        "theta": Out(width),
        "leak_en": Out(1),
        "leak_shift": Out(range(width)),
    })


class LIFArray(wiring.Component):
    def __init__(self, *, n, lanes=1, width=16, current_width=None, leak_shift=None, theta,
                 reset="subtract", v_reset=0, signed_spikes=False):
        check_lif_params(width=width, leak_shift=leak_shift, theta=theta, reset=reset,
                         v_reset=v_reset, current_width=current_width)
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes (P) must be a positive integer, got {lanes!r}")
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if n % lanes:
            raise ValueError(f"lanes (P={lanes}) must divide n (N={n})")
        self.n, self.lanes, self.width = n, lanes, width
        self.in_width = width if current_width is None else current_width
        self.leak_shift, self.theta, self.reset = leak_shift, theta, reset
        self.v_reset, self.signed_spikes = v_reset, signed_spikes
        self.groups = n // lanes
        self.index_width = max(1, ceil_log2(self.groups))

        spike_shape = signed(2) if signed_spikes else unsigned(1)
        self.i_layout = data.StructLayout({
            "op": LIFOp,
            "index": unsigned(self.index_width),
            "current": data.ArrayLayout(signed(self.in_width), lanes),
        })
        self.o_layout = data.StructLayout({
            "op": LIFOp,
            "index": unsigned(self.index_width),
            "spikes": data.ArrayLayout(spike_shape, lanes),
            "membrane": data.ArrayLayout(signed(width), lanes),
        })
        super().__init__({
            "i": In(stream.Signature(self.i_layout)),
            "o": Out(stream.Signature(self.o_layout)),
            "cfg": In(config_signature(width)),
            "saturated": Out(1),
            "sat_count": Out(32),
            "index_error": Out(1),
            "cfg_error": Out(1),
            "clear_flags": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        W, P = self.width, self.lanes
        lo, hi = signed_range(W)
        sum_width = max(W, self.in_width) + 2  # l + x ± θ never overflows this

        m.submodules.mem = mem = Memory(shape=data.ArrayLayout(signed(W), P),
                                        depth=self.groups, init=[])
        rd = mem.read_port()
        wr = mem.write_port()

        # Run-time configuration (reset values are the constructor's).
        theta = Signal(W, init=self.theta)
        leak_en = Signal(init=self.leak_shift is not None)
        leak_shift = Signal(range(W), init=self.leak_shift or 0)
        with m.If(self.cfg.we):
            with m.If((self.cfg.theta == 0) | (self.cfg.theta > hi)):
                m.d.sync += self.cfg_error.eq(1)
            with m.Else():
                m.d.sync += [theta.eq(self.cfg.theta), leak_en.eq(self.cfg.leak_en),
                             leak_shift.eq(self.cfg.leak_shift)]

        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)

        # Stage A: accept and read.
        in_range = self.i.payload.index < self.groups
        m.d.comb += [rd.addr.eq(self.i.payload.index), rd.en.eq(advance)]
        b_valid = Signal()
        b = Signal(self.i_layout)
        with m.If(advance):
            m.d.sync += [b_valid.eq(self.i.valid & in_range), b.eq(self.i.payload)]
        with m.If(self.i.valid & advance & ~in_range):
            m.d.sync += self.index_error.eq(1)

        # Stage C registers (declared first: B forwards from C's result).
        c_valid = Signal()
        c_op = Signal(LIFOp)
        c_index = Signal(self.index_width)
        c_leaked = Signal(data.ArrayLayout(signed(W), P))
        c_x = Signal(data.ArrayLayout(signed(self.in_width), P))
        c_new_v = Signal(data.ArrayLayout(signed(W), P))
        c_writes = c_valid & (c_op != LIFOp.READ)

        # Last write, for a read issued in the same cycle as that write.
        lw_valid = Signal()
        lw_index = Signal(self.index_width)
        lw_v = Signal(data.ArrayLayout(signed(W), P))

        # Stage B: forwarding mux and leak.
        v_b = Signal(data.ArrayLayout(signed(W), P))
        with m.If(c_writes & (c_index == b.index)):
            m.d.comb += v_b.eq(c_new_v)
        with m.Elif(lw_valid & (lw_index == b.index)):
            m.d.comb += v_b.eq(lw_v)
        with m.Else():
            m.d.comb += v_b.eq(rd.data)
        with m.If(advance):
            m.d.sync += [c_valid.eq(b_valid), c_op.eq(b.op), c_index.eq(b.index),
                         c_x.eq(b.current)]
            for lane in range(P):
                v = v_b[lane]
                m.d.sync += c_leaked[lane].eq(Mux(leak_en & (b.op == LIFOp.UPDATE),
                                                  v - (v >> leak_shift), v))

        # Stage C: integrate, fire, reset.
        spikes = Signal(self.o_layout["spikes"].shape)
        sat_lanes = Signal(P)
        for lane in range(P):
            l, x = c_leaked[lane], c_x[lane]
            a = Signal(signed(sum_width), name=f"sum{lane}")        # l + x
            above = Signal(signed(sum_width), name=f"above{lane}")  # l + x - θ
            m.d.comb += [a.eq(Mux(c_op == LIFOp.LOAD, x, l + x)), above.eq(l + x - theta)]
            over, under = a > hi, a < lo
            h = Mux(over, hi, Mux(under, lo, a))
            fire = (c_op == LIFOp.UPDATE) & (above >= 0)
            fire_neg = Signal(name=f"fire_neg{lane}")
            if self.signed_spikes:
                m.d.comb += fire_neg.eq((c_op == LIFOp.UPDATE) & (a + theta <= 0))
            if self.reset == "subtract":
                fired_v = Mux(over, hi - theta, above)
                fired_neg_v = Mux(under, lo + theta, a + theta)
            else:
                fired_v = fired_neg_v = self.v_reset
            with m.If(c_op == LIFOp.READ):
                m.d.comb += c_new_v[lane].eq(l)
            with m.Elif(fire):
                m.d.comb += c_new_v[lane].eq(fired_v)
            with m.Elif(fire_neg):
                m.d.comb += c_new_v[lane].eq(fired_neg_v)
            with m.Else():
                m.d.comb += c_new_v[lane].eq(h)
            m.d.comb += [spikes[lane].eq(Mux(fire, 1, Mux(fire_neg, -1, 0))),
                         sat_lanes[lane].eq((c_op != LIFOp.READ) & (over | under))]

        m.d.comb += [wr.addr.eq(c_index), wr.data.eq(c_new_v), wr.en.eq(advance & c_writes)]
        with m.If(advance):
            m.d.sync += [
                self.o.valid.eq(c_valid),
                self.o.payload.op.eq(c_op),
                self.o.payload.index.eq(c_index),
                self.o.payload.spikes.eq(spikes),
                self.o.payload.membrane.eq(c_new_v),
                lw_valid.eq(c_writes), lw_index.eq(c_index), lw_v.eq(c_new_v),
            ]

        # Saturation flag and counter: count every lane-update that clipped.
        new_sats = Signal(range(P + 1))
        m.d.comb += new_sats.eq(sum(sat_lanes[lane] for lane in range(P)))
        with m.If(self.clear_flags):
            m.d.sync += [self.saturated.eq(0), self.sat_count.eq(0), self.index_error.eq(0),
                         self.cfg_error.eq(0)]
        with m.Elif(advance & c_valid & (new_sats != 0)):
            m.d.sync += self.saturated.eq(1)
            with m.If(self.sat_count <= (1 << 32) - 1 - P):  # saturates, never wraps
                m.d.sync += self.sat_count.eq(self.sat_count + new_sats)
        return m
