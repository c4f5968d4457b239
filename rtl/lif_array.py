"""LIFArray: time-multiplexed integer LIF neurons (design.md §3, §8), bit-exact with
`spikeforge.golden.lif.lif_array`.

`n` neurons in `n // lanes` groups; one group (all `lanes` neurons) is updated per cycle.
Membranes live in `amaranth.lib.memory` (one word = `lanes` membranes). Pipeline
stages, advancing together when the output can accept (`~o.valid | o.ready`):

    A: skid buffer; issue the membrane read       (address = index)
    B: read data -> forwarding mux -> v >> 4·k[2:] (the high half of the leak shift)
    S: l = v - (v >> k) (the low two shift levels, then the subtraction); x - θ, x + θ
    C: the sums l + x, l + x - θ, l + x + θ and their range flags
    D: fire / reset / saturate select, write back; result -> output register

No cycle holds more than one carry chain and a few LUTs (the read-modify-write loop of
ODIN-style cores is what limits their clock, design.md §9). B forwards the membrane from
the last write, which the non-transparent read port cannot see yet; a beat whose group is
still in B, S or C waits (a bubble). In timestep-major order with four or more groups that
never happens: one beat per cycle. With 1, 2 or 3 groups the rate drops to 1/4, 2/4, 3/4.
(The test looks at the low two index bits only, see below: with more than 4 groups that are
not a multiple of 4, the wrap from the last group to group 0 can cost up to three bubbles.)
A consumer that ties `o.ready` high (the AttentionCore counts credits against its output
FIFO instead) gets a pipeline that never stalls: `advance` is constant and synthesis removes
the stage enables and the stall side of the bubble logic. A `cfg` write is registered and
takes effect the cycle after (its θ check is off the enables).
Spike and saturation decisions use unsaturated sums: `h >= θ  <=>  l + x >= θ` since
θ <= max, and likewise for the negative spike.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..golden.lif import check_lif_params, signed_range


class LIFOp(enum.Enum, shape=2):
    UPDATE = 0  # one LIF timestep with `current`
    READ = 1    # no state change; output the stored membrane
    LOAD = 2    # membrane <- sat_W(current)
    FIRST = 3   # UPDATE from v = 0: an inference's first timestep without a LOAD pass


def config_signature(width: int) -> wiring.Signature:
    return wiring.Signature({
        "we": Out(1),
        "theta": Out(width),
        "leak_en": Out(1),
        "leak_shift": Out(range(width)),
    })


class LIFArray(wiring.Component):
    def __init__(self, *, n, lanes=1, width=16, current_width=None, leak_shift=None, theta,
                 reset="subtract", v_reset=0, signed_spikes=False, compact=False):
        check_lif_params(width=width, leak_shift=leak_shift, theta=theta, reset=reset,
                         v_reset=v_reset, current_width=current_width)
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes (P) must be a positive integer, got {lanes!r}")
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if n % lanes:
            raise ValueError(f"lanes (P={lanes}) must divide n (N={n})")
        if not isinstance(compact, bool):
            raise ValueError(f"compact must be a bool, got {compact!r}")
        self.compact = compact
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
        word = data.ArrayLayout(signed(W), P)
        wide = data.ArrayLayout(signed(sum_width), P)

        # (compact: never read and written at one address in a cycle, see below)
        mem = Memory(shape=word, depth=self.groups, init=[],
                     attrs={"no_rw_check": 1} if self.compact else None)
        m.submodules["membranes" if self.compact else "mem"] = mem
        rd = mem.read_port()
        wr = mem.write_port()

        # Run-time configuration (reset values are the constructor's).
        theta = Signal(W, init=self.theta)
        leak_en = Signal(init=self.leak_shift is not None)
        leak_shift = Signal(range(W), init=self.leak_shift or 0)
        # A write is registered first (its check beside it) and applied the cycle after:
        # the θ range test never sits in front of the enables. A beat needs more than a
        # cycle from `i` to the stages that read the configuration.
        cfg_we, cfg_bad = Signal(), Signal()
        cfg_theta, cfg_leak_en = Signal.like(self.cfg.theta), Signal.like(self.cfg.leak_en)
        cfg_leak_shift = Signal.like(self.cfg.leak_shift)
        m.d.sync += [cfg_we.eq(self.cfg.we),
                     cfg_bad.eq((self.cfg.theta == 0) | (self.cfg.theta > hi)),
                     cfg_theta.eq(self.cfg.theta), cfg_leak_en.eq(self.cfg.leak_en),
                     cfg_leak_shift.eq(self.cfg.leak_shift)]
        with m.If(cfg_we):
            with m.If(cfg_bad):
                m.d.sync += self.cfg_error.eq(1)
            with m.Else():
                m.d.sync += [theta.eq(cfg_theta), leak_en.eq(cfg_leak_en),
                             leak_shift.eq(cfg_leak_shift)]

        advance = ~self.o.valid | self.o.ready
        if self.compact:
            counted, sat_lanes = self._compact_datapath(m, rd, wr, advance, theta, leak_en,
                                                        leak_shift, lo, hi, sum_width)
            self._sat_counter(m, counted, sat_lanes)
            return m
        # Stage payloads mean nothing without their valid flags: no reset (it would add
        # a LUT to every `advance` enable).
        b_valid, b = Signal(), Signal(self.i_layout, reset_less=True)
        s_valid, s = Signal(), Signal(self.i_layout, reset_less=True)  # S (subtract): B's beat
        c_valid, c_op, c_index = Signal(), Signal(LIFOp), Signal(self.index_width)
        d_valid, d_op, d_index = Signal(), Signal(LIFOp), Signal(self.index_width)
        d_writes = d_valid & (d_op != LIFOp.READ)

        # Stage A: a skid buffer, so that `i.ready` is a register and the producer never
        # waits on our comparators; then the read. A beat whose group is in B, S or C would
        # miss its write-back (neither the memory nor the last-write register has it yet):
        # it waits in A. The test is registered: when a beat enters A it is compared with
        # the beats that will be 1, 2 and 3 ahead of it (`near`), and the flags shift as
        # bubbles pass. It compares the two low index bits only (one LUT each): exact for
        # up to 4 groups, conservative beyond (a false match only costs a bubble).
        a_valid, a = Signal(), Signal(self.i_layout, reset_less=True)
        # The skid copies every input beat while it is empty (kept only if the beat cannot
        # enter A): its enable is a register, not the output's ready.
        skid_valid, skid = Signal(), Signal(self.i_layout, reset_less=True)
        near = Signal(3)  # near[d]: A's beat matches the beat d+1 ahead
        a_take = advance & ~near.any()
        m.d.comb += [self.i.ready.eq(~skid_valid), rd.addr.eq(a.index), rd.en.eq(advance)]
        in_range = self.i.payload.index < self.groups
        arriving = self.i.valid & self.i.ready & in_range
        with m.If(self.i.valid & self.i.ready & ~in_range):
            m.d.sync += self.index_error.eq(1)  # dropped on arrival

        with m.If(~skid_valid):
            m.d.sync += skid.eq(self.i.payload)
        low = min(2, self.index_width)
        entering = Signal(self.i_layout)
        m.d.comb += entering.eq(Mux(skid_valid, skid, self.i.payload))

        def same(valid, beat_index):
            return valid & (beat_index[:low] == entering.index[:low])
        # What will be ahead of a beat entering A: if the pipeline advances, A's old beat
        # (when it leaves now), then B's and S's beats; if it stalls, B's, S's and C's.
        ahead_if_advance = Cat(same(a_valid, a.index), same(b_valid, b.index),
                               same(s_valid, s.index))
        ahead_if_stall = Cat(same(b_valid, b.index), same(s_valid, s.index),
                             same(c_valid, c_index))
        with m.If(~a_valid | a_take):
            with m.If(skid_valid):
                m.d.sync += [a_valid.eq(1), a.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [a_valid.eq(arriving), a.eq(self.i.payload)]
            m.d.sync += near.eq(Mux(advance, ahead_if_advance, ahead_if_stall))
        with m.Else():
            with m.If(arriving):
                m.d.sync += skid_valid.eq(1)
            with m.If(advance):  # A holds, a bubble enters B: everything ahead moves on
                m.d.sync += near.eq(near << 1)
        # The beat in D now is the last write when A's beat reaches B: decide the
        # forwarding here so B's path starts at a register.
        b_forward = Signal()
        with m.If(advance):
            m.d.sync += [b_valid.eq(a_valid & a_take), b.eq(a),
                         b_forward.eq(d_writes & (d_index == a.index))]

        # Stage B: forwarding mux and the leak shift v >> k. k is a run-time register, so
        # this is a real barrel shifter (log2 W levels of 2:1 muxes): B shifts by the high
        # bits of k (4·k[2:]), S by the low two (arithmetic shifts compose), so that
        # neither the block RAM output nor S's carry chain sees all the levels.
        lw_v = Signal(word)  # last write
        v_b = Signal(word)
        m.d.comb += v_b.eq(Mux(b_forward, lw_v, rd.data))
        s_v, s_shifted = Signal(word), Signal(word)   # s_shifted: v >> 4·k[2:] (or 0)
        k_high = Cat(Const(0, 2), leak_shift[2:]) if W > 4 else Const(0)
        k_low = leak_shift[:2] if W > 4 else leak_shift
        s_k_low = Signal(len(k_low))   # the beat's own k (a write between B and S is not split)
        with m.If(advance):
            m.d.sync += [s_valid.eq(b_valid), s.eq(b), s_v.eq(v_b), s_k_low.eq(k_low)]
            for lane in range(P):
                m.d.sync += s_shifted[lane].eq(Mux(leak_en & (b.op == LIFOp.UPDATE),
                                                   v_b[lane] >> k_high, 0))

        # Stage S: l = v - (v >> k); x - θ and x + θ off the critical path.
        # LOAD and FIRST: l = 0, so the sum is the loaded value (FIRST: the first step's
        # current); READ: x = 0, so the sum is the stored membrane (which fits, so it never
        # saturates).
        c_leaked, c_x = Signal(word), Signal(data.ArrayLayout(signed(self.in_width), P))
        c_x_minus, c_x_plus = Signal(wide), Signal(wide)
        with m.If(advance):
            m.d.sync += [c_valid.eq(s_valid), c_op.eq(s.op), c_index.eq(s.index)]
            from_zero = (s.op == LIFOp.LOAD) | (s.op == LIFOp.FIRST)
            for lane in range(P):
                x = Mux(s.op == LIFOp.READ, 0, s.current[lane])
                m.d.sync += [c_leaked[lane].eq(Mux(from_zero, 0,
                                                    s_v[lane] - (s_shifted[lane] >> s_k_low))),
                             c_x[lane].eq(x), c_x_minus[lane].eq(x - theta),
                             c_x_plus[lane].eq(x + theta)]

        # Stage C: the three sums and their range flags.
        d_sum, d_above, d_below = Signal(wide), Signal(wide), Signal(wide)  # l+x, -θ, +θ
        d_over, d_under, d_below_le0 = Signal(P), Signal(P), Signal(P)
        with m.If(advance):
            m.d.sync += [d_valid.eq(c_valid), d_op.eq(c_op), d_index.eq(c_index)]
            for lane in range(P):
                l = c_leaked[lane]
                a = Signal(signed(sum_width), name=f"sum{lane}")
                below = Signal(signed(sum_width), name=f"below{lane}")
                m.d.comb += [a.eq(l + c_x[lane]), below.eq(l + c_x_plus[lane])]
                # Out of the W-bit range iff the bits above W-1 are not a sign extension.
                top = a[W - 1:]
                fits = (top == 0) | (top == (1 << len(top)) - 1)
                m.d.sync += [d_sum[lane].eq(a), d_above[lane].eq(l + c_x_minus[lane]),
                             d_below[lane].eq(below), d_over[lane].eq(~fits & ~a[-1]),
                             d_under[lane].eq(~fits & a[-1]),
                             d_below_le0[lane].eq(below <= 0)]

        # Stage D: fire, reset, saturate; write back.
        d_new_v = Signal(word)
        spikes = Signal(self.o_layout["spikes"].shape)
        sat_lanes = Signal(P)
        for lane in range(P):
            over, under = d_over[lane], d_under[lane]
            h = Mux(over, hi, Mux(under, lo, d_sum[lane]))
            updating = (d_op == LIFOp.UPDATE) | (d_op == LIFOp.FIRST)
            fire = updating & ~d_above[lane][-1]
            fire_neg = Signal(name=f"fire_neg{lane}")
            if self.signed_spikes:
                m.d.comb += fire_neg.eq(updating & d_below_le0[lane])
            if self.reset == "subtract":
                fired_v = Mux(over, hi - theta, d_above[lane])
                fired_neg_v = Mux(under, lo + theta, d_below[lane])
            else:
                fired_v = fired_neg_v = self.v_reset
            with m.If(fire):
                m.d.comb += d_new_v[lane].eq(fired_v)
            with m.Elif(fire_neg):
                m.d.comb += d_new_v[lane].eq(fired_neg_v)
            with m.Else():
                m.d.comb += d_new_v[lane].eq(h)
            m.d.comb += [spikes[lane].eq(Mux(fire, 1, Mux(fire_neg, -1, 0))),
                         sat_lanes[lane].eq(over | under)]

        m.d.comb += [wr.addr.eq(d_index), wr.data.eq(d_new_v), wr.en.eq(advance & d_writes)]
        with m.If(advance):
            m.d.sync += [
                self.o.valid.eq(d_valid),
                self.o.payload.op.eq(d_op),
                self.o.payload.index.eq(d_index),
                self.o.payload.spikes.eq(spikes),
                self.o.payload.membrane.eq(d_new_v),
                lw_v.eq(d_new_v),
            ]

        self._sat_counter(m, advance & d_valid, sat_lanes)
        return m

    def _sat_counter(self, m, counted, sat_lanes):
        """Saturation flag and counter, one cycle behind the update to keep the 32-bit count
        off the datapath: count every lane-update that clipped (`sat_lanes` when `counted`);
        the count saturates."""
        P = self.lanes
        sat_seen = Signal(range(P + 1))
        with m.If(counted):
            m.d.sync += sat_seen.eq(sum(sat_lanes[lane] for lane in range(P)))
        with m.Else():
            m.d.sync += sat_seen.eq(0)
        # Adding at most P cannot overflow while the upper bits are not all ones; that test
        # runs beside the adder. Past it the count sticks at 2^32 - 1 (it never wraps; the
        # last 2^L counts below the maximum are not resolved).
        low_bits = (P + 1).bit_length()
        room = ~self.sat_count[low_bits:].all()
        next_count = Mux(room, self.sat_count + sat_seen, (1 << 32) - 1)
        with m.If(self.clear_flags):
            m.d.sync += [self.saturated.eq(0), self.sat_count.eq(0), self.index_error.eq(0),
                         self.cfg_error.eq(0)]
        with m.Elif(sat_seen != 0):
            m.d.sync += [self.saturated.eq(1),
                         self.sat_count.eq(next_count)]

    def _compact_datapath(self, m, rd, wr, advance, theta, leak_en, leak_shift, lo, hi,
                          sum_width):
        """compact=True: two stages, R (the membrane is read) and U (update, write back,
        output), one beat a cycle, for small FPGAs. A beat for the neuron group in U would
        read before U's write: it waits a cycle (`i.ready` low), so no read and write of one
        address share a cycle. Returns (counted, sat_lanes) for the saturation counter."""
        W, P = self.width, self.lanes
        word = data.ArrayLayout(signed(W), P)
        r_valid, r = Signal(), Signal(self.i_layout, reset_less=True)
        in_range = self.i.payload.index < self.groups
        hazard = r_valid & (r.op != LIFOp.READ) & (self.i.payload.index == r.index)
        m.d.comb += [self.i.ready.eq(advance & ~hazard),
                     rd.addr.eq(self.i.payload.index), rd.en.eq(advance)]
        with m.If(self.i.valid & self.i.ready & ~in_range):
            m.d.sync += self.index_error.eq(1)  # dropped on arrival
        with m.If(advance):
            m.d.sync += [r_valid.eq(self.i.valid & self.i.ready & in_range),
                         r.eq(self.i.payload)]
        updating = (r.op == LIFOp.UPDATE) | (r.op == LIFOp.FIRST)
        from_zero = (r.op == LIFOp.LOAD) | (r.op == LIFOp.FIRST)
        new_v = Signal(word)
        spikes = Signal(self.o_layout["spikes"].shape)
        sat_lanes = Signal(P)
        for lane in range(P):
            v = rd.data[lane]
            leak = Mux(leak_en & (r.op == LIFOp.UPDATE), v >> leak_shift, 0)
            l = Mux(from_zero, 0, v - leak)
            x = Mux(r.op == LIFOp.READ, 0, r.current[lane])
            total = Signal(signed(sum_width), name=f"u_sum{lane}")
            above = Signal(signed(sum_width), name=f"u_above{lane}")
            below = Signal(signed(sum_width), name=f"u_below{lane}")
            m.d.comb += [total.eq(l + x), above.eq(total - theta), below.eq(total + theta)]
            top = total[W - 1:]
            fits = (top == 0) | (top == (1 << len(top)) - 1)
            over, under = ~fits & ~total[-1], ~fits & total[-1]
            h = Mux(over, hi, Mux(under, lo, total))
            fire = updating & ~above[-1]
            fire_neg = (updating & (below <= 0)) if self.signed_spikes else Const(0)
            if self.reset == "subtract":
                fired_v = Mux(over, hi - theta, above)
                fired_neg_v = Mux(under, lo + theta, below)
            else:
                fired_v = fired_neg_v = self.v_reset
            m.d.comb += [new_v[lane].eq(Mux(fire, fired_v, Mux(fire_neg, fired_neg_v, h))),
                         spikes[lane].eq(Mux(fire, 1, Mux(fire_neg, -1, 0))),
                         sat_lanes[lane].eq(over | under)]
        m.d.comb += [wr.addr.eq(r.index), wr.data.eq(new_v),
                     wr.en.eq(advance & r_valid & (r.op != LIFOp.READ))]
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(r_valid), self.o.payload.op.eq(r.op),
                         self.o.payload.index.eq(r.index), self.o.payload.spikes.eq(spikes),
                         self.o.payload.membrane.eq(new_v)]
        return advance & r_valid, sat_lanes
