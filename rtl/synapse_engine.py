"""SynapseEngine: event-driven spike accumulation (design.md §4), bit-exact with
`spikeforge.golden.synapse.synapse_engine`.

Events `(index, T-bit word)` arrive on `i`; a silent word (0) is dropped on arrival and
counted as skipped, so work is proportional to the input spikes. An event costs one cycle
per output group (`n_out / lanes`): the weight word `w[group lanes, index]` is read and
added, for every timestep whose bit is set, into that group's accumulator word
(`timesteps x lanes` exact accumulators in `lib.memory`). The read-modify-write loop is a
single adder with forwarding from the last write. After the event flagged `last`, the
accumulators (+ bias) are drained timestep-major on `o` as LIFArray UPDATE beats: connect
`o` to a `LIFArray(n=n_out, lanes=lanes, current_width=current_width)`. With
`acc_banks=2` the accumulators are two banks used in turn, so the next `last`-terminated
stream (token) accumulates while the previous one drains (the drain reads through a second
read port: the accumulator memory is built twice); with 1 (the default, half the memory)
the next stream waits for the drain. Two banks are cleared by flags (a group not yet
written since its bank's last drain reads as 0), one bank by writes of 0 as the drain reads
each group's last timestep.
Weights and biases are written at run time through `load` while the engine is idle
(`data` holds the lanes packed at `weight_width`, or `bias_width`, bit stride).

For the Accelerator (one engine serving layers of different shapes), `row_addressing=True`
makes events carry `row`, the weight address of their group 0 (word `row + g`), and the run-time
input `active_groups` (1..n_out/lanes) sets the groups per event and drain; `max_shift > 0` adds an
event field `shift` (the weight is added `<< shift`: one bit plane of a multi-bit input) and
`signed_events` a field `negate` (subtracted: the −1 plane of signed spikes). `active_groups`, like
the weights, changes only while the engine is idle.
"""

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..golden.lif import signed_range
from ..golden.synapse import plane_sum_width
from .lif_array import LIFOp


class LoadTarget(enum.Enum, shape=1):
    WEIGHT = 0  # addr = index * groups + group
    BIAS = 1    # addr = group


class SynapseEngine(wiring.Component):
    def __init__(self, *, n_in, n_out, lanes=1, timesteps=4, weight_width=8, bias_width=None,
                 weights=None, bias=None, row_addressing=False, weight_depth=None,
                 max_shift=0, signed_events=False, acc_width=None, acc_banks=1):
        for name, value in (("n_in", n_in), ("n_out", n_out), ("lanes", lanes),
                            ("timesteps", timesteps)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if n_out % lanes:
            raise ValueError(f"lanes (P={lanes}) must divide n_out (N={n_out})")
        if not isinstance(weight_width, int) or weight_width < 2:
            raise ValueError(f"weight_width must be an integer >= 2, got {weight_width!r}")
        if bias_width is not None and (not isinstance(bias_width, int) or bias_width < 2):
            raise ValueError(f"bias_width must be None or an integer >= 2, got {bias_width!r}")
        if not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"max_shift must be a non-negative integer, got {max_shift!r}")
        if type(acc_banks) is not int or acc_banks not in (1, 2):
            raise ValueError(f"acc_banks must be 1 or 2, got {acc_banks!r}")
        if weights is not None and row_addressing:
            raise ValueError("initial weights need index addressing (row_addressing=False)")
        self.n_in, self.n_out, self.lanes, self.timesteps = n_in, n_out, lanes, timesteps
        self.weight_width, self.bias_width = weight_width, bias_width
        self.row_addressing, self.max_shift = row_addressing, max_shift
        self.signed_events, self.acc_banks = signed_events, acc_banks
        self.groups = n_out // lanes
        self.weight_depth = n_in * self.groups if weight_depth is None else weight_depth
        if not isinstance(self.weight_depth, int) or self.weight_depth < 1:
            raise ValueError(f"weight_depth must be a positive integer, got {weight_depth!r}")
        # Exact for n_in events in each of the max_shift + 1 planes (plane p: << p).
        exact = plane_sum_width(n_in, weight_width, max_shift + 1)
        if acc_width is not None and (not isinstance(acc_width, int) or acc_width < 2):
            raise ValueError(f"acc_width must be None or an integer >= 2, got {acc_width!r}")
        self.acc_width = exact if acc_width is None else acc_width
        self.current_width = (plane_sum_width(n_in, weight_width, max_shift + 1, bias_width)
                              if acc_width is None else
                              self.acc_width if bias_width is None else
                              max(self.acc_width, bias_width) + 1)
        self.index_width = max(1, ceil_log2(n_in))
        self.group_width = max(1, ceil_log2(self.groups))
        self.weight_init = self._weight_words(weights)
        self.bias_init = self._bias_words(bias)

        load_width = lanes * max(weight_width, bias_width or 0)
        event = {"index": unsigned(self.index_width), "spikes": unsigned(timesteps), "last": 1}
        if row_addressing:
            event["row"] = unsigned(max(1, ceil_log2(self.weight_depth)))
        if max_shift:
            event["shift"] = range(max_shift + 1)
        if signed_events:
            event["negate"] = 1
        self.i_layout = data.StructLayout(event)
        self.o_layout = data.StructLayout({
            "op": LIFOp, "index": unsigned(self.group_width),
            "current": data.ArrayLayout(signed(self.current_width), lanes)})
        self.load_layout = data.StructLayout({
            "target": LoadTarget, "addr": unsigned(max(1, ceil_log2(self.weight_depth))),
            "data": unsigned(load_width)})
        super().__init__({
            "i": In(stream.Signature(self.i_layout)),
            "o": Out(stream.Signature(self.o_layout)),
            "load": In(stream.Signature(self.load_layout)),
            "busy": Out(1),
            "busy_cycles": Out(32),
            "events": Out(32),
            "skipped": Out(32),
            "index_error": Out(1),
            "clear_counters": In(1),
            **({"active_groups": In(range(1, self.groups + 1), init=self.groups)}
               if row_addressing else {}),
        })

    def _weight_words(self, weights):
        """[n_out, n_in] ints -> memory words, word index*groups+g holds lanes of group g."""
        if weights is None:
            return []
        w = np.asarray(weights)
        if w.shape != (self.n_out, self.n_in) or not np.issubdtype(w.dtype, np.integer):
            raise ValueError(f"weights must be an integer array of shape "
                             f"({self.n_out}, {self.n_in}), got {w.dtype} {w.shape}")
        lo, hi = signed_range(self.weight_width)
        if w.size and (w.min() < lo or w.max() > hi):
            raise ValueError(f"weights must fit signed {self.weight_width}-bit [{lo}, {hi}]")
        P = self.lanes
        return [[int(x) for x in w[g * P:(g + 1) * P, i]]
                for i in range(self.n_in) for g in range(self.groups)]

    def _bias_words(self, bias):
        if bias is None:
            return []
        if self.bias_width is None:
            raise ValueError("bias given but bias_width is None")
        b = np.asarray(bias)
        if b.shape != (self.n_out,) or not np.issubdtype(b.dtype, np.integer):
            raise ValueError(f"bias must be an integer array of shape ({self.n_out},)")
        lo, hi = signed_range(self.bias_width)
        if b.size and (b.min() < lo or b.max() > hi):
            raise ValueError(f"bias must fit signed {self.bias_width}-bit [{lo}, {hi}]")
        P = self.lanes
        return [[int(x) for x in b[g * P:(g + 1) * P]] for g in range(self.groups)]

    def elaborate(self, platform):
        m = Module()
        P, T, G = self.lanes, self.timesteps, self.groups
        acc_word = data.ArrayLayout(data.ArrayLayout(signed(self.acc_width), P), T)
        weight_word = data.ArrayLayout(signed(self.weight_width), P)

        m.submodules.weights = wmem = Memory(shape=weight_word, depth=self.weight_depth,
                                             init=self.weight_init)
        # two banks: word Cat(group, bank), read by the accumulate (a_rd) and the drain
        # (q_rd); one bank: word `group`, one read port shared (the drain's while it runs)
        two_banks = self.acc_banks == 2
        m.submodules.accs = amem = Memory(shape=acc_word, depth=self.acc_banks << self.group_width,
                                          init=[])
        w_rd, w_wr = wmem.read_port(), wmem.write_port()
        a_rd, a_wr = amem.read_port(), amem.write_port()
        q_rd = amem.read_port() if two_banks else a_rd
        if self.bias_width is not None:
            bias_word = data.ArrayLayout(signed(self.bias_width), P)
            m.submodules.bias = bmem = Memory(shape=bias_word, depth=G, init=self.bias_init)
            b_rd, b_wr = bmem.read_port(), bmem.write_port()

        # --- accumulate: dispatch (issue reads) -> update (add, write back) ---
        d_valid = Signal()                      # an event is being dispatched
        # The event's fields mean nothing without d_valid: no reset (a synchronous reset
        # would sit in their enable path).
        d_index = Signal(self.index_width, reset_less=True)
        d_spikes = Signal(T, reset_less=True)
        d_group = Signal(self.group_width, reset_less=True)
        d_row = Signal(self.i_layout["row"].shape if self.row_addressing else 1,
                       reset_less=True)
        d_shift = Signal(range(self.max_shift + 1), reset_less=True)
        d_negate = Signal(reset_less=True)
        # The group count: run-time with row addressing (held while busy), else n_out / P.
        g_last = Signal(self.group_width)        # groups - 1
        g_one = Signal()                         # a single group
        if self.row_addressing:
            m.d.comb += [g_last.eq(self.active_groups - 1), g_one.eq(self.active_groups == 1)]
        else:
            m.d.comb += [g_last.eq(G - 1), g_one.eq(G == 1)]
        d_at_last = Signal()                    # registered d_group == G - 1
        # Banks: `a_bank` takes the events; a `last` marks it pending (drained once its
        # beats have left the pipeline) and moves a_bank to the other bank, which takes
        # events once it is free (neither pending nor being drained). `touched` has a bit
        # per group of each bank: written since the bank's last drain.
        a_bank = Signal()
        pending = Signal(2)
        touched = [Signal(G, name=f"touched{b}") for b in range(2)]
        d_bank = Signal(reset_less=True)

        # The memory outputs are registered (F -> U) before the adders: a block RAM's
        # clock-to-out is too slow to add and write back in the same cycle.
        f_valid, f_group, f_spikes = Signal(), Signal(self.group_width), Signal(T)
        u_valid, u_group, u_spikes = Signal(), Signal(self.group_width), Signal(T)
        f_bank, u_bank, lw1_bank = Signal(), Signal(), Signal()
        f_fresh = Signal()                      # the read group was not touched: read 0
        f_shift = Signal.like(d_shift)
        f_negate, u_negate = Signal(), Signal()
        shift_width = self.weight_width + self.max_shift
        term_word = data.ArrayLayout(signed(shift_width), P)
        # data only (meaningless without the stage's valid): no reset in their enable paths
        f_w, u_term = Signal(weight_word, reset_less=True), Signal(term_word, reset_less=True)
        u_acc = Signal(acc_word)
        lw1_valid, lw1_group, lw1_acc = Signal(), Signal(self.group_width), Signal(acc_word)
        lw2_acc = Signal(acc_word)

        # Silent and out-of-range beats are dropped on arrival, even while an event is
        # being dispatched; a real event waits for the dispatch to free up. The ready path
        # is kept short: `open_free` (a_bank free, dispatch free) and `closed` (a_bank not
        # free) are registers, computed from next-state values, and `new_event` is spelled
        # out without `ready`.
        closed, closed_n = Signal(), Signal()
        open_free = Signal(init=1)
        silent = self.i.payload.spikes == 0
        in_range = self.i.payload.index < self.n_in
        m.d.comb += self.i.ready.eq(open_free | (~closed & (silent | ~in_range)))
        take = self.i.valid & self.i.ready
        new_event = self.i.valid & open_free & ~silent & in_range
        d_done = d_valid & d_at_last            # dispatch frees up after this cycle
        d_valid_n, d_at_last_n = Signal(), Signal()
        m.d.comb += [d_valid_n.eq(d_valid & ~d_at_last), d_at_last_n.eq(d_at_last)]
        with m.If(new_event):
            m.d.comb += [d_valid_n.eq(1), d_at_last_n.eq(g_one)]
            m.d.sync += [d_index.eq(self.i.payload.index), d_spikes.eq(self.i.payload.spikes),
                         d_group.eq(0), d_bank.eq(a_bank)]
            if self.row_addressing:
                m.d.sync += d_row.eq(self.i.payload.row)
            if self.max_shift:
                m.d.sync += d_shift.eq(self.i.payload.shift)
            if self.signed_events:
                m.d.sync += d_negate.eq(self.i.payload.negate)
        with m.Elif(d_valid):
            m.d.comb += d_at_last_n.eq(d_group + 1 == g_last)
            m.d.sync += d_group.eq(d_group + 1)
        m.d.sync += [d_valid.eq(d_valid_n), d_at_last.eq(d_at_last_n),
                     open_free.eq(~closed_n & (~d_valid_n | d_at_last_n))]
        end_token = take & self.i.payload.last

        # The weight word of (event, group) is read a cycle ahead of the dispatch, at the
        # address the dispatch moves to (word row + group, or index * G + group, counted up
        # with the group), so it is registered twice before the adders: the shift and the
        # negation get a stage of their own (F -> U) and the adders' input register need not
        # sit at the block RAM.
        w_addr, w_addr_n = Signal.like(w_rd.addr), Signal.like(w_rd.addr)
        m.d.comb += w_addr_n.eq(w_addr)
        with m.If(new_event):
            m.d.comb += w_addr_n.eq(self.i.payload.row if self.row_addressing
                                    else self.i.payload.index * G)
        with m.Elif(d_valid):
            m.d.comb += w_addr_n.eq(w_addr + 1)
        m.d.sync += w_addr.eq(w_addr_n)
        m.d.comb += [w_rd.addr.eq(w_addr_n), w_rd.en.eq(1)]
        # Update: a sum is written back from a register a cycle after U (lw1), so the wide
        # write data has no adder in front of it. The accumulator read issued with the
        # dispatch then misses the three writes made while it travelled (the beats one, two
        # and three ahead). They are merged as the beat enters U: U's sum being computed now
        # (muxed after its adder, so U's loop is register -> adder -> 2:1 -> register), the
        # sum in lw1 and the one written now (lw2). The selects (wide fan-out) are
        # registered: compared a stage early.
        acc_out = Signal(acc_word)
        f_after_u, f_after_lw1, f_after_lw2 = Signal(), Signal(), Signal()
        m.d.sync += [f_after_u.eq(f_valid & (f_group == d_group) & (f_bank == d_bank)),
                     f_after_lw1.eq(u_valid & (u_group == d_group) & (u_bank == d_bank)),
                     f_after_lw2.eq(lw1_valid & (lw1_group == d_group) & (lw1_bank == d_bank))]
        if two_banks:
            m.d.sync += f_fresh.eq(~Mux(d_bank, touched[1], touched[0]).bit_select(d_group, 1))
        m.d.sync += [f_valid.eq(d_valid), f_group.eq(d_group), f_spikes.eq(d_spikes),
                     f_shift.eq(d_shift), f_negate.eq(d_negate), f_bank.eq(d_bank),
                     u_valid.eq(f_valid), u_group.eq(f_group), u_spikes.eq(f_spikes),
                     u_negate.eq(f_negate), u_bank.eq(f_bank),
                     f_w.eq(w_rd.data),
                     u_acc.eq(Mux(f_after_u, acc_out,
                                  Mux(f_after_lw1, lw1_acc,
                                      Mux(f_after_lw2, lw2_acc,
                                          Mux(f_fresh, 0, a_rd.data)))))]
        # The weight term of a lane (F -> U), shifted (bit planes) and, for a negated event,
        # inverted (signed spikes): the negation is completed in the accumulate as
        # ~term + 1, the 1 as the adder's carry-in, so the loop holds one carry chain. With
        # neither feature the term is the weight.
        flip = f_negate.replicate(shift_width).as_signed()
        for lane in range(P):
            shifted = f_w[lane] << f_shift if self.max_shift else f_w[lane]
            m.d.sync += u_term[lane].eq(shifted ^ flip if self.signed_events else shifted)
        for t in range(T):
            for lane in range(P):
                if self.signed_events:
                    added = (u_acc[t][lane] + Mux(u_spikes[t], u_term[lane], 0)
                             + (u_spikes[t] & u_negate))
                else:
                    added = u_acc[t][lane] + Mux(u_spikes[t], u_term[lane], 0)
                m.d.comb += acc_out[t][lane].eq(added)
        m.d.sync += [lw1_valid.eq(u_valid), lw1_group.eq(u_group), lw1_bank.eq(u_bank),
                     lw1_acc.eq(acc_out), lw2_acc.eq(lw1_acc)]
        if two_banks:
            m.d.comb += [a_rd.addr.eq(Cat(d_group, d_bank)), a_rd.en.eq(1),
                         a_wr.addr.eq(Cat(lw1_group, lw1_bank)), a_wr.data.eq(lw1_acc),
                         a_wr.en.eq(lw1_valid)]

        # --- drain: timestep-major read of every group of the oldest pending bank, + bias ---
        # issue (counter) -> read stage (memory data, select timestep) -> register ->
        # bias add into the output register; all advance together when the output can accept.
        # A pending bank is drained once none of its beats is in D, F or U (lw1's write
        # lands before the first drain read); after its last read it is free, its flags clear.
        advance = ~self.o.valid | self.o.ready
        r_active = Signal()                      # reads left to issue
        r_bank = Signal()                        # the bank drained (or drained next)
        r_t = Signal(range(T))
        r_group = Signal(self.group_width)
        q_valid = Signal()                       # read data belongs to (q_t, q_group)
        q_t = Signal(range(T))
        q_group = Signal(self.group_width)
        q_fresh = Signal()                       # ... a group not touched: 0
        q2_valid, q2_group = Signal(), Signal(self.group_width)
        q2_acc = Signal(data.ArrayLayout(signed(self.acc_width), P))
        in_pipe = [(d_valid & (d_bank == b)) | (f_valid & (f_bank == b)) |
                   (u_valid & (u_bank == b)) for b in range(2)]
        drain_go = ~r_active & pending.bit_select(r_bank, 1) & ~Mux(r_bank, *in_pipe[::-1])
        r_end = advance & r_active & (r_group == g_last) & (r_t == T - 1)
        with m.If(drain_go):
            m.d.sync += [r_t.eq(0), r_group.eq(0)]
        with m.If(advance):
            m.d.sync += [q_valid.eq(r_active), q_t.eq(r_t), q_group.eq(r_group)]
            if two_banks:
                m.d.sync += q_fresh.eq(~Mux(r_bank, touched[1], touched[0])
                                       .bit_select(r_group, 1))
            with m.If(r_active):
                with m.If(r_group == g_last):
                    m.d.sync += [r_group.eq(0), r_t.eq(r_t + 1)]
                with m.Else():
                    m.d.sync += r_group.eq(r_group + 1)
        if two_banks:
            m.d.comb += [q_rd.addr.eq(Cat(r_group, r_bank)), q_rd.en.eq(advance)]
        else:   # the drain's data is held in the port until q2 takes it; the drain clears
            draining = r_active | q_valid
            m.d.comb += [a_rd.addr.eq(Mux(r_active, r_group, d_group)),
                         a_rd.en.eq(~draining | advance)]
            with m.If(draining):
                m.d.comb += [a_wr.addr.eq(q_group), a_wr.data.eq(0),
                             a_wr.en.eq(advance & q_valid & (q_t == T - 1))]
            with m.Else():
                m.d.comb += [a_wr.addr.eq(lw1_group), a_wr.data.eq(lw1_acc),
                             a_wr.en.eq(lw1_valid)]
        if two_banks:
            for b in range(2):
                with m.If(r_end & (r_bank == b)):
                    m.d.sync += touched[b].eq(0)
                with m.Elif(lw1_valid & (lw1_bank == b)):
                    m.d.sync += touched[b].eq(touched[b] | (Const(1, G) << lw1_group)[:G])

        # bank state, and `closed` (a_bank not free) from the next-state values
        pending_n, a_bank_n = Signal(2), Signal()
        r_active_n, r_bank_n = Signal(), Signal()
        for b in range(2):
            m.d.comb += pending_n[b].eq((pending[b] & ~(drain_go & (r_bank == b))) |
                                        (end_token & (a_bank == b)))
        m.d.comb += [a_bank_n.eq(a_bank ^ end_token if two_banks else 0),
                     r_active_n.eq((r_active & ~r_end) | drain_go),
                     r_bank_n.eq(r_bank ^ r_end if two_banks else 0)]
        bank_busy_n = [pending_n[b] | (r_active_n & (r_bank_n == b)) for b in range(2)]
        if not two_banks:   # ... and while the shared read port holds the drain's last read
            bank_busy_n[0] = bank_busy_n[0] | Mux(advance, r_active, q_valid)
        m.d.comb += closed_n.eq(Mux(a_bank_n, bank_busy_n[1], bank_busy_n[0]))
        m.d.sync += [a_bank.eq(a_bank_n), pending.eq(pending_n), r_active.eq(r_active_n),
                     r_bank.eq(r_bank_n), closed.eq(closed_n)]

        if self.bias_width is not None:
            m.d.comb += [b_rd.addr.eq(r_group), b_rd.en.eq(advance)]
            q2_bias = Signal(data.ArrayLayout(signed(self.bias_width), P))
        currents = Signal(self.o_layout["current"].shape)
        with m.If(advance):
            m.d.sync += [q2_valid.eq(q_valid), q2_group.eq(q_group),
                         q2_acc.eq(Mux(q_fresh, 0, q_rd.data.as_value()
                                       .word_select(q_t, self.acc_width * P)))]
            if self.bias_width is not None:
                m.d.sync += q2_bias.eq(b_rd.data)
        for lane in range(P):
            value = q2_acc[lane]
            if self.bias_width is not None:
                value = value + q2_bias[lane]
            m.d.comb += currents[lane].eq(value)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(q2_valid),
                         self.o.payload.op.eq(LIFOp.UPDATE),
                         self.o.payload.index.eq(q2_group),
                         self.o.payload.current.eq(currents)]

        # --- run-time weight / bias load, only while idle ---
        idle = ~(d_valid | f_valid | u_valid | lw1_valid | pending.any() | r_active |
                 q_valid | q2_valid)
        m.d.comb += [self.load.ready.eq(idle), self.busy.eq(~idle)]
        load_go = self.load.valid & idle
        m.d.comb += [w_wr.addr.eq(self.load.payload.addr),
                     w_wr.data.eq(self.load.payload.data),
                     w_wr.en.eq(load_go & (self.load.payload.target == LoadTarget.WEIGHT))]
        if self.bias_width is not None:
            m.d.comb += [b_wr.addr.eq(self.load.payload.addr),
                         b_wr.data.eq(self.load.payload.data),
                         b_wr.en.eq(load_go & (self.load.payload.target == LoadTarget.BIAS))]

        # --- performance counters ---
        # The input handshake is registered before it reaches the counters (it is the
        # slowest path, through `i.ready`): they count a cycle late. A clear wins in both
        # cycles, so the counts are those of counting at once.
        ev_seen, skip_seen, err_seen = Signal(), Signal(), Signal()
        m.d.sync += [ev_seen.eq(new_event & ~self.clear_counters),
                     skip_seen.eq(take & silent & in_range & ~self.clear_counters),
                     err_seen.eq(take & ~in_range & ~self.clear_counters)]
        with m.If(self.clear_counters):
            m.d.sync += [self.busy_cycles.eq(0), self.events.eq(0), self.skipped.eq(0),
                         self.index_error.eq(0)]
        with m.Else():
            with m.If(~idle):
                m.d.sync += self.busy_cycles.eq(self.busy_cycles + 1)
            with m.If(ev_seen):
                m.d.sync += self.events.eq(self.events + 1)
            with m.If(skip_seen):
                m.d.sync += self.skipped.eq(self.skipped + 1)
            with m.If(err_seen):
                m.d.sync += self.index_error.eq(1)
        return m
