"""Accelerator: runs a compiled program (golden/compile.py) over the SynapseEngine, a LIFArray
and the AttentionCore, bit-exact with the golden interpreter `golden.compile.run_program`.
Build parameters: `golden.program_loader.AcceleratorConfig`; LOAD-time checks and table/weight
layouts: `golden/program_loader.py` and `rtl/program_loader.py`.

Behind the host link (`dev`, the HostLink device port) sit byte-wide PROGRAM, INPUT (int16 per
element) and OUTPUT (int32 per element) memories. LOAD runs the ProgramLoader; RUN executes
one inference, op by op:

  ENCODE     INPUT elements -> bit planes of the input buffer in the activation memory
  LINEAR     the reader streams the source planes (address order, T words a slot); the
             emitter sends one engine event (channel, T-bit word, row, plane shift, negate)
             per live channel of a slot, a cycle each, silent channels cost nothing; the
             engine drains each token (timestep-major, per unit group) into the four-stage
             post unit (acc_shift, repeat, bias, range check; FIRST at t = 0, or a LOAD pass
             of v0) at one LIF beat a cycle; LIF spikes are written to the destination
             planes. Tokens pipeline through reader, engine, post unit and writer.
  ATTENTION  per head: token rows {q, k, v} (timestep-major) through a row FIFO into the
             AttentionCore (the reader runs ahead into the next head while the core
             computes); its ATTN (SDSA: GATED) spikes go to the destination
  ADD        per word: the element values of both sources, summed, range-checked, re-encoded
  READOUT    like LINEAR; drained currents + bias summed over T and tokens; the int32
             totals are written to OUTPUT
ENCODE and ADD share the value unit: a reader assembles one (token, group, t) word while the
plane writer stores the previous one. Per-op cycles of the last RUN are readable in the LAYERS
space; `golden/accelerator.py` gives the ideal bound they are benched against.

Activation word `T·w + t` (w: the buffer word of `golden.program_loader`) holds `lanes` bits:
plane p of channels g·P .. g·P+P-1 at timestep t. A value outside its buffer's range (ADD
overflow, input out of range, a LIF current wider than the op allows) stops the run with
BAD_INPUT, as the golden device does. `abort` (the port, or the host link's `dev.abort`: a
RESET frame sent during the RUN) stops it with ABORTED. Stopping soft-resets the cores and
flushes the engine's accumulators, so the next run is exact.
"""

from contextlib import contextmanager

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from ..golden.compile import BufKind, Op
from ..golden.host_link import Cmd, Error, Space, State
from .attention_core import AttentionCore, AttnOrder, OutKind
from .host_link import REGISTERS, device_signature
from .lif_array import LIFArray, LIFOp
from .program_loader import ProgramLoader, buffer_entry_layout, op_entry_layout
from .synapse_engine import LoadTarget, SynapseEngine

VALUE = signed(18)   # element values in flight (int16 inputs, small sums)
MAX_LEFT_SHIFT = 7   # acc_shift range the drain supports: [-31, 7]


class Accelerator(wiring.Component):
    def __init__(self, cfg):
        self.cfg = cfg
        P, T = cfg.lanes, cfg.timesteps
        self.T = T
        self.input_bytes = 2 * T * cfg.max_tokens * cfg.max_channels
        self.output_bytes = 4 * cfg.max_readout
        self.addr_width = max(1, ceil_log2(max(cfg.program_bytes, self.input_bytes,
                                               self.output_bytes)))
        self.readout_groups = -(-cfg.max_readout // P)
        E = cfg.eng_lanes
        units = -(-max(cfg.max_neurons, self.readout_groups * P) // E) * E
        self.loader = ProgramLoader(cfg)
        self.engine = SynapseEngine(
            n_in=cfg.max_channels, n_out=units, lanes=E, timesteps=T,
            weight_width=cfg.weight_width, row_addressing=True,
            weight_depth=cfg.weight_words, max_shift=cfg.max_planes - 1, signed_events=True,
            acc_banks=2)
        self.lif = LIFArray(n=cfg.max_neurons, lanes=P, width=cfg.width,
                            current_width=cfg.current_width, theta=1, reset=cfg.reset,
                            signed_spikes=cfg.signed_spikes)
        self.attention = None
        if cfg.attn_tokens is not None:
            if cfg.attn_dim % P or (cfg.attn_dim // P) & (cfg.attn_dim // P - 1):
                raise ValueError(f"attn_dim / lanes must be a power of two, got "
                                 f"{cfg.attn_dim} / {P}")
            self.attention = AttentionCore(
                n=cfg.attn_tokens, d=cfg.attn_dim, timesteps=T, max_block=cfg.attn_max_block,
                lanes=P, width=cfg.width, theta=1, reset=cfg.attn_reset)
        super().__init__({
            "dev": In(device_signature(self.addr_width)),
            "abort": In(1),
            "busy": Out(1),
            "op_cycles": Out(32),        # cycles of the op running (or the last one)
        })

    def elaborate(self, platform):
        m = Module()
        cfg, T, P = self.cfg, self.T, self.cfg.lanes
        dev = self.dev
        soft_reset = Signal()
        m.submodules.loader = loader = self.loader
        m.submodules.engine = engine = ResetInserter(soft_reset)(self.engine)
        engine = self.engine
        m.submodules.lif = ResetInserter(soft_reset)(self.lif)
        lif = self.lif
        attn = self.attention
        if attn is not None:
            m.submodules.attention = ResetInserter(soft_reset)(attn)

        # ---------------------------------------------------------------- memories
        m.submodules.prog_mem = prog_mem = Memory(shape=8, depth=cfg.program_bytes, init=[])
        # the input: int16 elements, one a word (ENCODE reads an element a cycle), written
        # and read by the host a byte at a time (little-endian)
        m.submodules.in_mem = in_mem = Memory(shape=16, depth=self.input_bytes // 2, init=[])
        m.submodules.out_mem = out_mem = Memory(shape=8, depth=self.output_bytes, init=[])
        m.submodules.layers = layers_mem = Memory(shape=32, depth=cfg.max_ops, init=[])
        m.submodules.act = act = Memory(shape=P, depth=cfg.act_words * T, init=[])
        m.submodules.bias = bias_mem = Memory(
            shape=data.ArrayLayout(signed(cfg.bias_width), P), depth=cfg.bias_words, init=[])
        m.submodules.ops = op_mem = Memory(shape=op_entry_layout(cfg), depth=cfg.max_ops,
                                           init=[])
        m.submodules.bufs = buf_mem = Memory(shape=buffer_entry_layout(cfg),
                                             depth=cfg.max_buffers, init=[])
        prog_rd, prog_wr = prog_mem.read_port(), prog_mem.write_port()
        in_rd, in_wr = in_mem.read_port(), in_mem.write_port(granularity=8)
        out_rd, out_wr = out_mem.read_port(), out_mem.write_port()
        layers_rd, layers_wr = layers_mem.read_port(), layers_mem.write_port()
        act_rd, act_wr = act.read_port(), act.write_port()
        bias_rd, bias_wr = bias_mem.read_port(), bias_mem.write_port()
        op_rd, op_wr = op_mem.read_port(), op_mem.write_port()
        buf_rd, buf_wr = buf_mem.read_port(), buf_mem.write_port()

        # ----------------------------------------------------- loader -> tables, weights
        m.d.comb += [
            bias_wr.addr.eq(loader.b_addr), bias_wr.data.eq(loader.b_data),
            bias_wr.en.eq(loader.b_en),
            op_wr.addr.eq(loader.op_addr), op_wr.data.eq(loader.op_data),
            op_wr.en.eq(loader.op_en),
            buf_wr.addr.eq(loader.buf_addr), buf_wr.data.eq(loader.buf_data),
            buf_wr.en.eq(loader.buf_en),
            engine.load.valid.eq(loader.w_en),
            engine.load.payload.target.eq(LoadTarget.WEIGHT),
            engine.load.payload.addr.eq(loader.w_addr),
            engine.load.payload.data.eq(loader.w_data),
            loader.prog_data.eq(prog_rd.data),
        ]
        header = loader.header

        # ------------------------------------------------------------ host access
        loaded = Signal()
        state = Signal(2, init=State.IDLE)
        input_size = Signal(self.addr_width + 1)
        output_size = Signal(self.addr_width + 1)
        layers_size = Signal(self.addr_width + 1)
        ran = Signal()                   # a RUN since the LOAD: LAYERS reads its counts
        inferences, ops_total, sats_total = Signal(32), Signal(32), Signal(32)
        cycles, run_sats = Signal(32), Signal(32)
        events, skipped = Signal(32), Signal(32)
        m.d.comb += [dev.program_size.eq(cfg.program_bytes), dev.input_size.eq(input_size),
                     dev.output_size.eq(output_size), dev.layers_size.eq(layers_size),
                     dev.state.eq(state)]
        # the register map (host_link.REGISTERS): the byte at reg_addr, registered
        registers = {"inferences": inferences, "ops_total": ops_total,
                     "sats_total": sats_total, "perf_cycles": cycles, "perf_events": events,
                     "perf_skipped": skipped, "run_ops": header.n_ops, "run_sats": run_sats,
                     "load_info": header.info}
        fields = []
        for name, n in REGISTERS:
            field = Signal(8 * n, name=f"reg_{name}")    # zero-extended to its bytes
            m.d.comb += field.eq(registers[name])
            fields.append(field)
        m.d.sync += dev.reg_data.eq(Cat(*fields).word_select(dev.reg_addr, 8))
        space = dev.mem_space
        m.d.comb += [
            prog_wr.addr.eq(dev.mem_addr), prog_wr.data.eq(dev.mem_wdata),
            prog_wr.en.eq(dev.mem_we & (space == Space.PROGRAM)),
            prog_rd.addr.eq(Mux(loader.prog_en, loader.prog_addr, dev.mem_addr)),
            prog_rd.en.eq(1),
            in_rd.addr.eq(dev.mem_addr >> 1), in_rd.en.eq(1),
            in_wr.addr.eq(dev.mem_addr >> 1), in_wr.data.eq(dev.mem_wdata.replicate(2)),
            in_wr.en.eq(Mux(dev.mem_we & (space == Space.INPUT),
                            Cat(~dev.mem_addr[0], dev.mem_addr[0]), 0)),
            out_rd.addr.eq(dev.mem_addr), out_rd.en.eq(1),
            layers_rd.addr.eq(dev.mem_addr >> 2), layers_rd.en.eq(1),
        ]
        # Host reads: the memory answers a cycle later, the reply register one more.
        read_pending, read_space, read_byte = Signal(), Signal(2), Signal(2)
        m.d.sync += [read_pending.eq(dev.mem_re), dev.mem_rvalid.eq(read_pending)]
        with m.If(dev.mem_re):
            m.d.sync += [read_space.eq(space), read_byte.eq(dev.mem_addr[:2])]
        with m.If(read_pending):
            with m.Switch(read_space):
                with m.Case(Space.PROGRAM):
                    m.d.sync += dev.mem_rdata.eq(prog_rd.data)
                with m.Case(Space.INPUT):
                    m.d.sync += dev.mem_rdata.eq(in_rd.data.word_select(read_byte[0], 8))
                with m.Case(Space.OUTPUT):
                    m.d.sync += dev.mem_rdata.eq(out_rd.data)
                with m.Case(Space.LAYERS):    # little-endian u32 per op, 0 before a RUN
                    m.d.sync += dev.mem_rdata.eq(
                        Mux(ran, layers_rd.data.word_select(read_byte, 8), 0))
        with m.If(dev.program_written):
            m.d.sync += [loaded.eq(0), state.eq(State.IDLE)]

        # ------------------------------------------------------------- run state
        op_index = Signal(range(cfg.max_ops + 1))
        # The op and buffer tables are read at registers (no state decoding before their
        # LUT-RAM addresses): the op entry at op_index, a buffer entry at buf_raddr.
        buf_raddr = Signal.like(buf_rd.addr)
        m.d.comb += [op_rd.addr.eq(op_index), buf_rd.addr.eq(buf_raddr)]
        op = Signal(op_entry_layout(cfg))
        bufs = [Signal(buffer_entry_layout(cfg), name=f"buf_{n}")
                for n in ("src0", "src1", "src2", "dst")]
        src, src1, src2, dst = bufs
        token = Signal(16)
        tstep = Signal(range(T + 1))
        ctr = Signal(16)

        def held(value, name):
            """`value`, a function of buffer or op fields (they change only between ops),
            registered: valid a cycle after the fields are set, before a walker compares
            with it. Keeps subtractors and shifts out of the walkers' compare paths.
            Called here, outside any `m.If`, so the register updates on every cycle."""
            reg = Signal(value.shape(), name=name)
            m.d.sync += reg.eq(value)
            return reg
        # the last index of each buffer dimension and op loop: walkers stop on these
        src_last, dst_last = ({f: held(getattr(b, f) - 1, f"{n}_{f}_last")
                               for f in ("planes", "cgroups", "tokens")}
                              for b, n in ((src, "src"), (dst, "dst")))
        op_last = {f: held(getattr(op, f) - 1, f"op_{f}_last")
                   for f in ("repeat", "ngroups", "groups")}
        per_unit_last = held((op.repeat >> exact_log2(P)) - 1, "per_unit_last")

        # Activation addresses without run-time multiplies (they were the critical path):
        # per buffer, registered while the buffers are set (they change only between ops),
        # the address of its word 0, of a channel group (planes·T words) and of a token
        # (cgroups·planes·T); the walkers below add them up as they advance.
        addr_shape = unsigned(max(1, ceil_log2(cfg.act_words * T + 1)))
        base_t, grp_step, tok_step = ([Signal(addr_shape, name=f"{n}_{b}") for b in
                                       ("src0", "src1", "src2", "dst")]
                                      for n in ("base_t", "grp_step", "tok_step"))
        tok_words = [Signal(addr_shape, name=f"tok_words_{k}") for k in range(4)]
        for k, b in enumerate(bufs):
            m.d.sync += [base_t[k].eq(b.base * T), grp_step[k].eq(b.planes * T),
                         tok_words[k].eq(b.cgroups * b.planes), tok_step[k].eq(tok_words[k] * T)]

        def plane_t(pln, t):
            return pln * T + t          # T is a build constant: shifts and adds

        # Activation writes are posted: each writer registers its word, written a cycle
        # later (no writer reads back what it writes within an op), so no address adder
        # or spike encoding sits in front of the memory's write port.
        wr_en, wr_addr, wr_data = Signal(), Signal.like(act_wr.addr), Signal.like(act_wr.data)
        m.d.sync += wr_en.eq(0)
        m.d.comb += [act_wr.en.eq(wr_en), act_wr.addr.eq(wr_addr), act_wr.data.eq(wr_data)]

        def post_write(addr, value):
            m.d.sync += [wr_en.eq(1), wr_addr.eq(addr), wr_data.eq(value)]

        def slot_reads(n, name):
            """A slot of `n` activation words read one a cycle (the row reader). The read data
            is used from its register (`rd_act`, a cycle after the port): read k lands in
            `words[k]` two cycles after `track(issue, k)`; `last` is high while the slot's last
            word is in that register, and `slot` is then the whole slot (that word from it).
            A slot's first read waits until the previous slot moves: with the data two cycles
            out, an earlier read could overwrite a slot still waiting for its consumer."""
            got, got_k = Signal(name=f"{name}_got"), Signal(range(n), name=f"{name}_got_k")
            got_q, got_kq = Signal(name=f"{name}_got_q"), Signal(range(n), name=f"{name}_got_kq")
            held = Signal(name=f"{name}_held")   # a slot is being read or waits
            words = Signal(data.ArrayLayout(P, n), name=f"{name}_words")
            whole = Signal(data.ArrayLayout(P, n), name=f"{name}_slot")
            last = Signal(name=f"{name}_last")
            m.d.sync += [got_q.eq(got), got_kq.eq(got_k)]
            m.d.comb += [last.eq(got_q & (got_kq == n - 1)),
                         whole.eq(Mux(last, Cat(words.as_value()[:P * (n - 1)], rd_act), words))]
            with m.If(got_q):
                with m.Switch(got_kq):
                    for k in range(n):
                        with m.Case(k):
                            m.d.sync += words[k].eq(rd_act)

            full = Signal(name=f"{name}_full")   # a complete slot waits for its consumer

            def hand_off(on, free, k):
                """The consumer takes the complete slot while `free` (comb: free now or
                freed this cycle). Returns (room, move, waiting): read `k` of a slot may be
                issued this cycle; the slot moves to the consumer this cycle; a slot waits."""
                move = Signal(name=f"{name}_move")
                m.d.comb += move.eq(on & (last | full) & free)
                with m.If(on & last & ~free):
                    m.d.sync += full.eq(1)
                with m.If(move):
                    m.d.sync += [full.eq(0), held.eq(0)]
                with m.If(~on):
                    m.d.sync += [full.eq(0), held.eq(0), got_q.eq(0)]
                return (k != 0) | ~held | move, move, full

            def track(issue, k):
                m.d.sync += [got.eq(issue), got_k.eq(k)]
                with m.If(issue & (k == 0)):
                    m.d.sync += held.eq(1)      # after hand_off's clear: a new slot wins
            return got | got_q, whole, track, hand_off

        def lane_mask(buf, grp):
            """The lanes of channel group `grp` that are real channels (padding stays 0)."""
            return Cat(((grp * P + lane) < buf.channels) for lane in range(P))

        def plane_bits(buf, pln, values):
            """Plane `pln` of the P lane `values`, encoded for `buf`'s kind."""
            return Cat(Mux(buf.kind == BufKind.SIGNED_SPIKES, Mux(pln == 0, v == 1, v == -1),
                           Mux(buf.kind == BufKind.SPIKES, v == 1, (v.as_unsigned() >> pln)[0]))
                       for v in (values[lane] for lane in range(P)))

        def plane_value(buf, pln, bit):
            """What one set bit of plane `pln` of `buf` is worth: 2^p (UINT), -1 (the second
            plane of signed spikes) or 1."""
            return Mux(bit, Mux(buf.kind == BufKind.UINT, Const(1, VALUE) << pln,
                                Mux((buf.kind == BufKind.SIGNED_SPIKES) & (pln == 1), -1, 1)), 0)

        # ----------------------------------------- element values (ENCODE and ADD)
        # A reader assembles the P values of one (token, group, t) word, one read a cycle:
        # ENCODE reads an input element per real lane (padding lanes stay 0), ADD the planes
        # of both sources. On its last read's data the word is range-checked and handed to the
        # plane writer, which writes the destination planes (one a cycle) while the reader
        # goes on with the next word.
        # the unit's own walk: read k (v_ctr) of word (v_token, v_group, v_tstep)
        v_token, v_group = Signal(16), Signal(16)
        v_tstep, v_ctr = Signal(range(T + 1)), Signal(16)
        val_on = Signal()                # ENC_READ or ADD_READ: the unit runs
        encoding = Signal()              # ENCODE (not ADD) owns the value unit
        vals = Signal(data.ArrayLayout(VALUE, P))        # the word being assembled
        vals_next = Signal(data.ArrayLayout(VALUE, P))   # ... with this cycle's read data
        n0 = src.planes
        # The word's last read (reads - 1): ENCODE reads one element per real lane (the last
        # group may be partial), ADD the planes of both sources. All from registers, each a
        # single register after the buffer fields (valid from the unit's second cycle); a
        # word has at least 2 reads, so nothing compares against them at ctr = 0: a word of
        # one real lane reads its element twice (`enc_repeat`: read 1 is read 0 again).
        in_last_group = Signal()
        m.d.sync += in_last_group.eq(v_group == dst.cgroups - 1)
        if P > 1:
            ch_mod = dst.channels[:exact_log2(P)]       # real lanes of the last group (0: P)
            enc_last_read = held(Mux(ch_mod == 0, P, Mux(ch_mod == 1, 2, ch_mod)) - 1,
                                 "enc_last_read")
            enc_one_lane = held(ch_mod == 1, "enc_one_lane")
            enc_repeat = in_last_group & enc_one_lane
            enc_full_read = P - 1
        else:
            enc_last_read, enc_repeat, enc_full_read = Const(1), Const(1), 1
        add_last_read = held(n0 + src1.planes - 1, "add_last_read")
        last_read = Mux(encoding, Mux(in_last_group, enc_last_read, enc_full_read),
                        add_last_read)
        rd_valid, rd_last = Signal(), Signal()           # read data arrives (the word's last)
        rd_k = Signal(8)                 # ... of read k of its word
        rd_unit = Signal(VALUE)          # ADD: what a set bit of the arriving plane is worth
        rd_act, rd_in = Signal(P), Signal(16)    # the read data, registered
        rd_done = Signal()               # every read of the op issued
        # where the word goes (dst offset, timestep): set with its last read, carried along
        # the read pipeline (a word of 2 reads may start its successor's last read before
        # its own data has arrived)
        h_t, mv_h_t, rd_h_t = (Signal(range(T + 1), name=n) for n in ("h_t", "mv_h_t", "rd_h_t"))
        pw_full = Signal()
        pw_vals = Signal(data.ArrayLayout(VALUE, P))
        pw_pln = Signal(6)
        pw_t = Signal(range(T + 1))
        # the (token, group) offset of the word: src, src1 (reader) and dst; ENCODE's input
        # element of (token, group, t) = enc_t + enc_grp + lane
        rd_off = [Signal(addr_shape, name=f"rd_off{k}") for k in range(3)]
        h_off, mv_h_off, rd_h_off = (Signal(addr_shape, name=n)
                                     for n in ("h_off", "mv_h_off", "rd_h_off"))
        pw_off = Signal(addr_shape)
        in_tc = Signal(range(self.input_bytes + 1))     # input tokens · channels (LOAD)
        enc_t, enc_grp, enc_tok = (Signal(range(self.input_bytes + 1), name=n)
                                   for n in ("enc_t", "enc_grp", "enc_tok"))
        val_lo, val_hi = Signal(VALUE), Signal(VALUE)     # dst's range (registered)
        with m.Switch(dst.kind):
            with m.Case(BufKind.SPIKES):
                m.d.sync += [val_lo.eq(0), val_hi.eq(1)]
            with m.Case(BufKind.SIGNED_SPIKES):
                m.d.sync += [val_lo.eq(-1), val_hi.eq(1)]
            with m.Default():
                m.d.sync += [val_lo.eq(0), val_hi.eq((Const(1, VALUE) << dst.bits) - 1)]

        # the arriving read's contribution
        m.d.comb += vals_next.eq(vals)
        with m.If(rd_valid):
            with m.If(encoding):
                for lane in range(P):
                    with m.If(rd_k == lane):
                        m.d.comb += vals_next[lane].eq(rd_in.as_signed())
            with m.Else():
                for lane in range(P):
                    m.d.comb += vals_next[lane].eq(vals[lane] + Mux(rd_act[lane], rd_unit, 0))
        completing = rd_valid & rd_last
        # A complete word is registered (c), range-checked per lane into registers (c2) and
        # then waits, with its verdict, in a FIFO for the plane writer. The reader starts a
        # word only when the FIFO has room for it and for the words in flight (reading, in c
        # or c2): a decision on registers alone. VAL_QUEUE covers the reader's latency.
        VAL_QUEUE = 8
        c_valid, c_vals = Signal(), Signal(data.ArrayLayout(VALUE, P))
        c_off, c_t = Signal(addr_shape), Signal(range(T + 1))
        c2_valid, c2_vals = Signal(), Signal(data.ArrayLayout(VALUE, P))
        c2_off, c2_t, c2_lane_ok = Signal(addr_shape), Signal(range(T + 1)), Signal(P)
        word_layout = data.StructLayout({"vals": data.ArrayLayout(VALUE, P), "off": addr_shape,
                                         "t": range(T + 1), "ok": 1})
        m.submodules.val_q = val_q = ResetInserter(~val_on)(
            fifo.SyncFIFO(width=word_layout.size, depth=VAL_QUEUE))
        head = word_layout(val_q.r_data)
        in_flight = Signal(range(VAL_QUEUE + 1))     # words started, not queued
        m.d.sync += [c2_valid.eq(c_valid), c2_vals.eq(c_vals), c2_off.eq(c_off), c2_t.eq(c_t),
                     c2_lane_ok.eq(Cat((c_vals[lane] >= val_lo) & (c_vals[lane] <= val_hi)
                                       for lane in range(P)))]
        queued = Signal(word_layout)
        m.d.comb += [queued.vals.eq(c2_vals), queued.off.eq(c2_off), queued.t.eq(c2_t),
                     queued.ok.eq(c2_lane_ok.all()),
                     val_q.w_data.eq(queued.as_value()), val_q.w_en.eq(c2_valid)]
        pw_on_last = Signal()            # pw_pln == the last plane (registered)
        pw_free = ~pw_full | pw_on_last  # free, or writes its last plane now
        take = val_on & val_q.r_rdy & pw_free & head.ok
        val_error = val_on & val_q.r_rdy & ~head.ok
        m.d.comb += val_q.r_en.eq(take)
        m.d.sync += [vals.eq(Mux(completing, 0, vals_next)), c_valid.eq(completing)]
        with m.If(completing):
            m.d.sync += [c_vals.eq(vals_next), c_off.eq(rd_h_off), c_t.eq(rd_h_t)]
        with m.If(val_on & pw_full):
            post_write(base_t[3] + pw_off + plane_t(pw_pln, pw_t), plane_bits(dst, pw_pln, pw_vals))
            m.d.sync += [pw_pln.eq(pw_pln + 1), pw_on_last.eq(pw_pln + 1 == dst_last["planes"])]
            with m.If(pw_on_last):
                m.d.sync += [pw_full.eq(0), pw_pln.eq(0)]
        with m.If(take):
            m.d.sync += [pw_full.eq(1), pw_vals.eq(head.vals), pw_pln.eq(0),
                         pw_on_last.eq(dst_last["planes"] == 0),
                         pw_off.eq(head.off), pw_t.eq(head.t)]

        # the reader: a word starts when the queue holds room for it. `room` is registered:
        # it counts the word started in its cycle but not a word taken (conservative by one).
        # The walk's ends are flags registered from the counters: they move at most once a
        # word (>= 2 reads), so a flag is current by the next word's last read.
        room = Signal()
        v_t_last, v_g_last, v_tok_last = Signal(), Signal(), Signal()
        m.d.sync += [v_t_last.eq(v_tstep == T - 1), v_g_last.eq(v_group == dst_last["cgroups"]),
                     v_tok_last.eq(v_token == dst_last["tokens"])]
        rd_issue = val_on & ~rd_done & ((v_ctr != 0) | room)
        m.d.sync += room.eq(val_q.level + in_flight + (rd_issue & (v_ctr == 0)) < VAL_QUEUE)
        rd_word_last = v_ctr == last_read
        m.d.sync += in_flight.eq(in_flight + (rd_issue & (v_ctr == 0)) - c2_valid)
        # A read is requested (its address registered) a cycle before it is made: no counter
        # logic in front of the memories' address inputs.
        rq_valid, rq_last, rq_k = Signal(), Signal(), Signal(8)
        rq_addr, rq_unit = Signal(addr_shape), Signal(VALUE)
        rq_in_addr = Signal.like(in_rd.addr)
        # request (rq) -> the memory reads (mv) -> its data registered (rd) -> accumulated
        mv_valid, mv_last, mv_k, mv_unit = Signal(), Signal(), Signal(8), Signal(VALUE)
        enc_lane = Mux(enc_repeat, 0, v_ctr)         # the lane an ENCODE read fills
        m.d.sync += [rq_valid.eq(rd_issue), rq_last.eq(rd_issue & rd_word_last),
                     rq_k.eq(Mux(encoding, enc_lane, v_ctr)),
                     mv_valid.eq(rq_valid), mv_last.eq(rq_last), mv_k.eq(rq_k),
                     mv_unit.eq(rq_unit),
                     rd_valid.eq(mv_valid), rd_last.eq(mv_last), rd_k.eq(mv_k),
                     rd_unit.eq(mv_unit), rd_act.eq(act_rd.data), rd_in.eq(in_rd.data),
                     mv_h_off.eq(h_off), mv_h_t.eq(h_t), rd_h_off.eq(mv_h_off), rd_h_t.eq(mv_h_t)]
        with m.If(rq_valid & encoding):
            m.d.comb += in_rd.addr.eq(rq_in_addr)
        with m.If(rd_issue):
            with m.If(encoding):
                m.d.sync += rq_in_addr.eq(enc_t + enc_grp + enc_lane)
            with m.Else():
                rd_first = v_ctr < n0
                rd_plane = Mux(rd_first, v_ctr, v_ctr - n0)[:6]
                # what a set bit of this plane adds, ready when its data arrives
                m.d.sync += rq_unit.eq(Mux(rd_first, plane_value(src, rd_plane, 1),
                                           plane_value(src1, rd_plane, 1)))
                m.d.sync += rq_addr.eq(Mux(rd_first, base_t[0] + rd_off[0],
                                           base_t[1] + rd_off[1]) + plane_t(rd_plane, v_tstep))
            m.d.sync += v_ctr.eq(v_ctr + 1)
            with m.If(rd_word_last):
                # t fastest, then groups, then tokens
                m.d.sync += [v_ctr.eq(0), h_off.eq(rd_off[2]), h_t.eq(v_tstep),
                             v_tstep.eq(v_tstep + 1), enc_t.eq(enc_t + in_tc)]
                with m.If(v_t_last):
                    m.d.sync += [v_tstep.eq(0), v_group.eq(v_group + 1), enc_t.eq(0),
                                 enc_grp.eq(enc_grp + P)]
                    m.d.sync += [rd_off[k].eq(rd_off[k] + grp_step[k if k < 2 else 3])
                                 for k in range(3)]
                    with m.If(v_g_last):
                        m.d.sync += [v_group.eq(0), v_token.eq(v_token + 1),
                                     enc_tok.eq(enc_tok + dst.channels),
                                     enc_grp.eq(enc_tok + dst.channels)]
                        with m.If(v_tok_last):
                            m.d.sync += rd_done.eq(1)
        val_idle = rd_done & (in_flight == 0) & ~val_q.r_rdy & ~pw_full
        with m.If(~val_on):
            m.d.sync += [rq_valid.eq(0), mv_valid.eq(0), rd_valid.eq(0), in_flight.eq(0),
                         pw_full.eq(0), vals.eq(0), c_valid.eq(0), c2_valid.eq(0)]

        # --------------------------------------------------------------- scanner
        # LINEAR / READOUT read the source planes in address order (token, group, plane, t:
        # consecutive words), one read a cycle, T words per slot, into two slot banks used
        # in turn. A bank is handed to the emitter two cycles after its last word arrives:
        # one to register its live lanes, one to count them, so the emitter and the reader
        # decide on registers alone (no block-RAM data in the hand-off). The emitter sends
        # one engine event per live channel (lowest lane first, a cycle each); silent
        # channels cost nothing. Padding lanes are always 0 in the activation memory (every
        # writer masks them), so a live lane is a real channel.
        lin_on = Signal()                # LINEAR / READOUT running (seq in LIN_RUN)
        row_shape = engine.i_layout["row"].shape
        r_addr = Signal(range(cfg.act_words * T + 1))
        r_t = Signal(range(T))
        r_pln, r_grp, r_tok = Signal(8), Signal(16), Signal(16)
        r_row = Signal(row_shape)        # weight row of the slot's lane 0
        r_done = Signal()                # every read of the op issued
        r_bank = Signal()                # the bank being read into
        banks_held = Signal(range(3))    # banks being filled or waiting for the emitter
        got, got_k, got_bank = Signal(), Signal(range(T)), Signal()   # read data arrives
        bank_words = [Signal(data.ArrayLayout(P, T), name=f"bank{b}_words") for b in range(2)]
        bank_live = [Signal(P, name=f"bank{b}_live") for b in range(2)]
        bank_done = [Signal(name=f"bank{b}_done") for b in range(2)]    # last word in
        bank_ready = [Signal(name=f"bank{b}_ready") for b in range(2)]  # ... and counted
        bank_count = [Signal(range(P + 1), name=f"bank{b}_count") for b in range(2)]
        bank_silent = [Signal(range(P + 1), name=f"bank{b}_silent") for b in range(2)]
        bank_grp = [Signal(16, name=f"bank{b}_grp") for b in range(2)]
        bank_pln = [Signal(8, name=f"bank{b}_pln") for b in range(2)]
        bank_row = [Signal(row_shape, name=f"bank{b}_row") for b in range(2)]
        # the weight row of each lane of a bank (bank_row + lane · egroups), registered: ready
        # long before the bank is handed over (>= 3 cycles after bank_row is set)
        bank_lane_rows = [[Signal(row_shape, name=f"bank{b}_row{lane}") for lane in range(P)]
                          for b in range(2)]
        bank_last = [Signal(name=f"bank{b}_last") for b in range(2)]
        e_bank = Signal()                # the bank the emitter takes next
        e_full = Signal()
        e_words = Signal(data.ArrayLayout(P, T))
        e_rest = Signal(P)               # live lanes not yet sent, but for e_sel's
        e_count = Signal(range(P + 1))   # ... how many
        e_grp, e_pln, e_last = Signal(16), Signal(8), Signal()
        e_rows = [Signal(row_shape, name=f"e_row{lane}") for lane in range(P)]
        scan_skipped = Signal(32)        # silent (channel, plane) pairs never sent
        lane_off = [Signal(row_shape, name=f"lane_off{lane}") for lane in range(P)]
        m.d.sync += [lane_off[lane].eq(op.egroups * lane) for lane in range(P)]
        m.d.sync += [bank_lane_rows[b][lane].eq(bank_row[b] + lane_off[lane])
                     for b in range(2) for lane in range(P)]
        # The engine's group count is held for a whole op (it must not change while it works);
        # full during a flush, so every accumulator is drained and cleared.
        eng_groups = Signal.like(engine.active_groups, init=engine.groups)
        m.d.comb += engine.active_groups.eq(eng_groups)

        # emitter: `e_sel`, the lowest live lane of its slot, is a register (it steers the
        # event's lane row and spikes), and so are the live lanes after it (`e_rest`):
        # a send moves to the lowest lane of e_rest and clears that lane (x & (x - 1)), so
        # no decoder of e_sel sits in the emitter's loop.
        def lowest(mask):
            low = Signal(range(P), name="lowest")
            for lane in reversed(range(P)):
                with m.If(mask[lane]):
                    m.d.comb += low.eq(lane)
            return low

        def but_lowest(mask):
            return mask & (mask - 1)
        e_sel = Signal(range(P))
        e_has = e_count != 0
        e_final = e_count <= 1                   # this emission empties the slot
        e_valid = e_full & (e_has | e_last)      # a slot without live lanes: `last` only
        sel_row = Signal(row_shape)
        with m.Switch(e_sel):
            for lane in range(P):
                with m.Case(lane):
                    m.d.comb += sel_row.eq(e_rows[lane])
        # Events reach the engine through a FIFO: the emitter waits on the FIFO's registered
        # room, not on the engine's `i.ready`; its output is a register (SyncFIFOBuffered),
        # so the engine's dispatch and weight read-ahead start at a flip-flop.
        m.submodules.event_q = event_q = ResetInserter(~lin_on)(
            fifo.SyncFIFOBuffered(width=engine.i_layout.size, depth=3))
        event = Signal(engine.i_layout)
        e_sent = e_valid & event_q.w_rdy
        e_free = Signal()                        # the slot is (or becomes) free this cycle
        m.d.comb += e_free.eq(~e_full | (~e_has & ~e_last) | (e_sent & e_final))
        m.d.comb += [
            event.index.eq(Cat(e_sel, e_grp) if P > 1 else e_grp),
            event.spikes.eq(Mux(e_has, Cat(e_words[t].bit_select(e_sel, 1)
                                           for t in range(T)), 0)),
            event.row.eq(sel_row),
            event.shift.eq(Mux(src.kind == BufKind.UINT, e_pln, 0)),
            event.negate.eq((src.kind == BufKind.SIGNED_SPIKES) & (e_pln == 1)),
            event.last.eq(e_last & e_final),
            event_q.w_data.eq(event.as_value()), event_q.w_en.eq(lin_on & e_valid),
        ]
        # The engine's input: the event FIFO in LINEAR / READOUT, else the flush beat (FLUSH:
        # silent, `last`). Chosen by registered flags only: no state decoding in front of
        # the engine's dispatch and weight address.
        flush_on = Signal()
        queued = engine.i_layout(event_q.r_data)
        m.d.comb += [engine.i.valid.eq(Mux(lin_on, event_q.r_rdy, flush_on)),
                     engine.i.payload.eq(event_q.r_data),
                     engine.i.payload.spikes.eq(Mux(lin_on, queued.spikes, 0)),
                     engine.i.payload.last.eq(~lin_on | queued.last),
                     event_q.r_en.eq(lin_on & engine.i.ready)]
        # (outside LINEAR / READOUT e_full is held clear: no gate on the sequencer state)
        with m.If(e_full & ~e_has & ~e_last):
            m.d.sync += e_full.eq(0)
        with m.Elif(e_sent):
            m.d.sync += [e_rest.eq(but_lowest(e_rest)), e_sel.eq(lowest(e_rest)),
                         e_count.eq(e_count - 1)]
            with m.If(e_final):
                m.d.sync += e_full.eq(0)

        # reader: a slot's first read needs a bank that is not held
        r_issue = lin_on & ~r_done & ((r_t != 0) | (banks_held < 2))
        e_move = lin_on & e_free & Mux(e_bank, bank_ready[1], bank_ready[0])
        m.d.sync += banks_held.eq(banks_held + (r_issue & (r_t == 0)) - e_move)
        with m.If(r_issue):
            m.d.sync += [r_addr.eq(r_addr + 1), r_t.eq(r_t + 1)]
            with m.If(r_t == T - 1):
                m.d.sync += r_t.eq(0)
                for b in range(2):
                    with m.If(r_bank == b):
                        m.d.sync += [bank_grp[b].eq(r_grp), bank_pln[b].eq(r_pln),
                                     bank_row[b].eq(r_row),
                                     bank_last[b].eq((r_pln == src_last["planes"]) &
                                                     (r_grp == src_last["cgroups"]))]
                m.d.sync += r_bank.eq(~r_bank)
                with m.If(r_pln == src_last["planes"]):
                    m.d.sync += [r_pln.eq(0), r_grp.eq(r_grp + 1),
                                 r_row.eq(r_row + (op.egroups << exact_log2(P)))]
                    with m.If(r_grp == src_last["cgroups"]):
                        m.d.sync += [r_grp.eq(0), r_row.eq(op.wbase), r_tok.eq(r_tok + 1)]
                        with m.If(r_tok == src_last["tokens"]):
                            m.d.sync += r_done.eq(1)
                with m.Else():
                    m.d.sync += r_pln.eq(r_pln + 1)
        m.d.sync += [got.eq(r_issue), got_k.eq(r_t), got_bank.eq(r_bank)]
        for b in range(2):
            arriving = got & (got_bank == b)
            with m.If(arriving):
                m.d.sync += bank_live[b].eq(Mux(got_k == 0, 0, bank_live[b]) | act_rd.data)
                with m.Switch(got_k):
                    for k in range(T):
                        with m.Case(k):
                            m.d.sync += bank_words[b][k].eq(act_rd.data)
            # counted from registers: valid once the bank is done, held until it is refilled
            m.d.sync += [bank_done[b].eq(arriving & (got_k == T - 1)),
                         bank_count[b].eq(sum(bank_live[b][lane] for lane in range(P))),
                         bank_silent[b].eq(sum((lane_mask(src, bank_grp[b]) & ~bank_live[b])[lane]
                                               for lane in range(P)))]
            with m.If(bank_done[b]):
                m.d.sync += bank_ready[b].eq(1)
        # the emitter takes the next bank once it is counted
        with m.If(e_move):
            for b in range(2):
                with m.If(e_bank == b):
                    m.d.sync += [e_full.eq(1), e_words.eq(bank_words[b]),
                                 e_rest.eq(but_lowest(bank_live[b])),
                                 e_sel.eq(lowest(bank_live[b])),
                                 e_count.eq(bank_count[b]), e_grp.eq(bank_grp[b]),
                                 e_pln.eq(bank_pln[b]),
                                 *(e_rows[lane].eq(bank_lane_rows[b][lane])
                                   for lane in range(P)),
                                 e_last.eq(bank_last[b]), bank_ready[b].eq(0)]
                    with m.If(lin_on):
                        m.d.sync += scan_skipped.eq(scan_skipped + bank_silent[b])
            m.d.sync += e_bank.eq(~e_bank)

        # --------------------------------- engine drain -> LIF / readout (post unit)
        # One LIF beat a cycle in four stages. A holds a lane group of an engine beat (lane
        # group s_g of timestep p_t of token p_tok; an engine beat of E = eng_lanes lanes, from
        # the drain FIFO, holds E / P of them, the last beat of a timestep maybe fewer) and
        # issues its sub-beats: one, or
        # `repeat` (a unit's current copied to `repeat` neurons), each with its bias read;
        # a token with v0 first gets a LOAD pass of every LIF group. B receives the bias
        # word, C registers it, D holds current + bias and offers it to the LIF,
        # range-checked; a READOUT's D sums into `readout_sums`.
        is_readout = Signal()
        p_tok = Signal(16)
        p_t = Signal(range(T + 1))
        p_h = Signal(16)                 # LIF neuron group / bias group of the next sub-beat
        p_row_base = Signal(16)          # bias word of the token's bias row
        p_loading = Signal()             # the v0 LOAD pass of the token
        cur_shape = engine.o_layout["current"].shape
        a_valid = Signal()
        ways = cfg.eng_lanes // P
        s_half = Signal(range(ways))     # the lane group of the FIFO's head beat taken next
        s_g = Signal(16)                 # ... its lane group within the timestep
        s_g_last = Signal()              # ... is the op's last (registered: s_g == groups - 1)
        a_sub = Signal(8)                # repeat sub-beat
        a_ul = Signal(range(P))          # repeat: the unit lane of this sub-beat
        a_j = Signal(8)                  # repeat: sub-beat within the unit
        repeat_one = held(op.repeat == 1, "repeat_one")
        lane_w = len(engine.o.payload.current[0])
        val_shape = signed(max(lane_w + MAX_LEFT_SHIFT, cfg.width) + 1)
        a_acc = Signal(data.ArrayLayout(val_shape, P))   # the beat, acc_shift applied
        b_valid = Signal()
        b_op = Signal(LIFOp)
        b_h = Signal(16)
        b_val = Signal(data.ArrayLayout(val_shape, P))
        b_bias = Signal()                # add the bias read data
        c_valid, d_valid = Signal(), Signal()
        cur_w = cfg.current_width
        cur_lo = Signal(signed(cur_w + 1))
        cur_hi = Signal(signed(cur_w + 1))
        half = Signal(signed(cur_w + 1))          # 2^(cur_width - 1)
        m.d.comb += half.eq(Const(1, signed(cur_w + 1)) << (op.cur_width - 1)[:6])
        m.d.sync += [cur_lo.eq(-half), cur_hi.eq(half - 1)]      # registered: op fields
        post_error = Signal()
        post_done = Signal()             # every engine beat of the op taken by A
        readout_sums = Signal(data.ArrayLayout(signed(40), self.readout_groups * P))
        shift_right = held(op.acc_shift < 0, "shift_right")
        neg_shift = held((-op.acc_shift).as_unsigned()[:5], "neg_shift")
        pos_shift = held(op.acc_shift.as_unsigned()[:3], "pos_shift")

        def shifted(x):
            return Mux(shift_right, x >> neg_shift, x << pos_shift)

        # A's loop ends are registered flags, each set where its counter moves (s_g's when
        # the beat is taken): A's issue decides on single bits, not on compares.
        a_g_last, a_sub_last, a_j_last = Signal(), Signal(), Signal()
        p_h_last, p_t_first, p_t_last, p_tok_last = Signal(), Signal(), Signal(), Signal()
        v0_set = held(op.v0 != 0, "v0_set")
        bias_on = held(op.bias_rows != 0, "bias_on")
        bias_per_token = held(op.bias_rows > 1, "bias_per_token")
        p_baddr = Signal.like(bias_rd.addr)      # = (READOUT ? bbase : p_row_base) + p_h

        advance_b = ~post_error & (~d_valid | is_readout | lif.i.ready)   # A..D move
        a_issue = lin_on & advance_b & (p_loading | a_valid)
        beat_end = ~p_loading & (repeat_one | is_readout | a_sub_last)
        m.d.comb += [bias_rd.addr.eq(p_baddr), bias_rd.en.eq(advance_b)]

        def p_h_step():
            m.d.sync += [p_h.eq(p_h + 1), p_baddr.eq(p_baddr + 1),
                         p_h_last.eq(p_h + 1 == op_last["ngroups"])]

        def p_h_restart(row_base):
            m.d.sync += [p_h.eq(0), p_baddr.eq(Mux(is_readout, op.bbase, row_base)),
                         p_h_last.eq(op_last["ngroups"] == 0)]
        with m.If(advance_b):
            m.d.sync += b_valid.eq(a_issue)
        with m.If(a_issue):
            m.d.sync += b_h.eq(p_h)
            with m.If(p_loading):
                m.d.sync += [b_op.eq(LIFOp.LOAD), b_bias.eq(0)]
                m.d.sync += [b_val[lane].eq(op.v0) for lane in range(P)]
                p_h_step()
                with m.If(p_h_last):
                    m.d.sync += p_loading.eq(0)
                    p_h_restart(p_row_base)
            with m.Else():
                first = p_t_first & ~v0_set
                m.d.sync += [b_op.eq(Mux(first, LIFOp.FIRST, LIFOp.UPDATE)), b_bias.eq(bias_on)]
                m.d.sync += [b_val[lane].eq(Mux(repeat_one | is_readout, a_acc[lane],
                                                a_acc[a_ul])) for lane in range(P)]
                p_h_step()
                with m.If(beat_end):
                    m.d.sync += a_valid.eq(0)
                    with m.If(a_g_last):
                        m.d.sync += [p_t.eq(p_t + 1), p_t_first.eq(0),
                                     p_t_last.eq(p_t + 1 == T - 1)]
                        p_h_restart(p_row_base)
                        with m.If(p_t_last):
                            next_base = Mux(bias_per_token, p_row_base + op.ngroups, p_row_base)
                            m.d.sync += [p_t.eq(0), p_t_first.eq(1), p_t_last.eq(T == 1),
                                         p_tok.eq(p_tok + 1),
                                         p_tok_last.eq(p_tok + 1 == src_last["tokens"]),
                                         p_row_base.eq(next_base),
                                         p_loading.eq(v0_set & ~is_readout)]
                            p_h_restart(next_base)
                            with m.If(p_tok_last):
                                m.d.sync += [post_done.eq(1), p_loading.eq(0)]
                with m.Else():
                    m.d.sync += [a_sub.eq(a_sub + 1), a_sub_last.eq(a_sub + 1 == op_last["repeat"]),
                                 a_j.eq(a_j + 1), a_j_last.eq(a_j + 1 == per_unit_last)]
                    with m.If(a_j_last):
                        m.d.sync += [a_j.eq(0), a_j_last.eq(per_unit_last == 0),
                                     a_ul.eq(a_ul + 1)]
        # Drained beats reach A through a 2-entry FIFO: the engine's `o.ready` (which steers
        # its accumulator clears) is then the FIFO's registered room, not A's repeat logic.
        o_layout = engine.o.payload.shape()
        m.submodules.drain = drain = ResetInserter(~lin_on)(
            fifo.SyncFIFO(width=o_layout.size, depth=2))
        drained = o_layout(drain.r_data)
        m.d.comb += [drain.w_data.eq(engine.o.payload.as_value()),
                     drain.w_en.eq(lin_on & engine.o.valid),
                     # outside LINEAR / READOUT the FIFO is held empty, so a flush drains
                     # freely: the ready is the FIFO's alone, not the sequencer state's
                     engine.o.ready.eq(drain.w_rdy)]
        take_beat = lin_on & ~post_done & (~a_valid | (a_issue & beat_end))
        half_end = s_g_last | (s_half == ways - 1)      # the head beat's last lane group
        m.d.comb += drain.r_en.eq(take_beat & half_end)
        group_beat = drained.current.as_value().word_select(s_half, P * lane_w)
        with m.If(take_beat & drain.r_rdy):
            # acc_shift applied on the way in: A's issue is then only the repeat select
            for lane in range(P):
                current = group_beat[lane * lane_w:(lane + 1) * lane_w].as_signed()
                m.d.sync += a_acc[lane].eq(Mux(is_readout, current, shifted(current)))
            m.d.sync += [a_valid.eq(1), a_g_last.eq(s_g_last),
                         s_half.eq(Mux(half_end, 0, s_half + 1)),
                         s_g.eq(Mux(s_g_last, 0, s_g + 1)),
                         s_g_last.eq(Mux(s_g_last, op_last["groups"] == 0,
                                         s_g + 1 == op_last["groups"])),
                         a_sub.eq(0), a_sub_last.eq(op_last["repeat"] == 0), a_ul.eq(0),
                         a_j.eq(0), a_j_last.eq(per_unit_last == 0)]

        # B: the bias word arrives from its block RAM (held there while the stages stall);
        # C: registered, D: + bias, registered -> the LIF (range-checked) or the READOUT
        # sums. No stage adds or compares straight off a memory's output.
        c_op, d_op = Signal(LIFOp), Signal(LIFOp)
        c_h, d_h = Signal(16), Signal(16)
        c_val = Signal(data.ArrayLayout(val_shape, P))
        c_bias = Signal(data.ArrayLayout(signed(cfg.bias_width), P))
        cur = Signal(data.ArrayLayout(signed(val_shape.width + 1), P))
        with m.If(advance_b):
            m.d.sync += [c_valid.eq(b_valid), c_op.eq(b_op), c_h.eq(b_h), c_val.eq(b_val),
                         c_bias.eq(Mux(b_bias, bias_rd.data.as_value(), 0)),
                         d_valid.eq(c_valid), d_op.eq(c_op), d_h.eq(c_h)]
            m.d.sync += [cur[lane].eq(c_val[lane] + c_bias[lane]) for lane in range(P)]
        # (d_valid is only ever set in LINEAR / READOUT: no gate on the sequencer state)
        m.d.comb += [lif.i.valid.eq(d_valid & ~post_error & ~is_readout),
                     lif.i.payload.op.eq(d_op), lif.i.payload.index.eq(d_h)]
        m.d.comb += [lif.i.payload.current[lane].eq(cur[lane]) for lane in range(P)]
        # The range check is registered per lane: the run stops a beat later (it fails
        # anyway; LINEAR ends only after the writer has the last beat, well after).
        cur_bad = Signal(P)
        checked = lin_on & ~is_readout & d_valid & (d_op != LIFOp.LOAD)
        m.d.sync += cur_bad.eq(Cat(checked & ((cur[lane] < cur_lo) | (cur[lane] > cur_hi))
                                   for lane in range(P)))
        with m.If(cur_bad.any()):
            m.d.sync += post_error.eq(1)
        with m.If(lin_on & is_readout & d_valid):
            for g in range(self.readout_groups):
                with m.If(d_h == g):
                    for lane in range(P):
                        k = g * P + lane
                        m.d.sync += readout_sums[k].eq(readout_sums[k] + cur[lane])
        with m.If(~lin_on):
            m.d.sync += [a_valid.eq(0), b_valid.eq(0), c_valid.eq(0), d_valid.eq(0),
                         e_full.eq(0), p_loading.eq(0), banks_held.eq(0), r_bank.eq(0),
                         e_bank.eq(0), *(ready.eq(0) for ready in bank_ready)]

        # ------------------------------------------------ LIF spikes -> destination
        w_tok = Signal(16)
        w_t = Signal(range(T + 1))
        w_g = Signal(16)
        w_tok_off, w_g_off = Signal(addr_shape), Signal(addr_shape)
        w_second = Signal()              # signed spikes: the -1 plane
        # the walk's loop ends, registered as it advances (no compares before w_done)
        w_g_last, w_t_last, w_tok_last = Signal(), Signal(), Signal()
        w_done = Signal()
        lin_write = Signal()             # LINEAR running: the writer owns act_wr
        m.d.comb += lin_write.eq(lin_on & ~is_readout)
        # LIF beats reach the writer through a 2-entry FIFO: the LIF's pipeline enables then
        # hang on the FIFO's registered room, not on the writer's state.
        lif_beat = lif.o.payload.shape()
        m.submodules.spike_q = spike_q = ResetInserter(~lin_write)(
            fifo.SyncFIFO(width=lif_beat.size, depth=2))
        m.d.comb += [spike_q.w_data.eq(lif.o.payload.as_value()),
                     spike_q.w_en.eq(lin_write & lif.o.valid)]
        m.d.comb += lif.o.ready.eq(spike_q.w_rdy)     # held empty (ready) outside LINEAR
        beat = lif_beat(spike_q.r_data)
        spikes = beat.spikes
        pos_bits = Cat((spikes[lane] == 1) for lane in range(P))
        neg_bits = Cat((spikes[lane].as_signed() == -1) for lane in range(P)) \
            if cfg.signed_spikes else Const(0, P)
        is_load_beat = beat.op == LIFOp.LOAD
        signed_dst = dst.kind == BufKind.SIGNED_SPIKES
        with m.If(lin_write):
            with m.If(spike_q.r_rdy & is_load_beat):
                m.d.comb += spike_q.r_en.eq(1)
            with m.Elif(spike_q.r_rdy):
                post_write(base_t[3] + w_tok_off + w_g_off + plane_t(w_second, w_t),
                           Mux(w_second, neg_bits, pos_bits) & lane_mask(dst, w_g))
                with m.If(signed_dst & ~w_second):
                    m.d.sync += w_second.eq(1)
                with m.Else():
                    m.d.comb += spike_q.r_en.eq(1)
                    m.d.sync += [w_second.eq(0), w_g.eq(w_g + 1),
                                 w_g_off.eq(w_g_off + grp_step[3]),
                                 w_g_last.eq(w_g + 1 == dst_last["cgroups"])]
                    with m.If(w_g_last):
                        m.d.sync += [w_g.eq(0), w_g_off.eq(0), w_t.eq(w_t + 1),
                                     w_g_last.eq(dst_last["cgroups"] == 0),
                                     w_t_last.eq(w_t + 1 == T - 1)]
                        with m.If(w_t_last):
                            m.d.sync += [w_t.eq(0), w_tok.eq(w_tok + 1),
                                         w_tok_off.eq(w_tok_off + tok_step[3]),
                                         w_t_last.eq(T == 1),
                                         w_tok_last.eq(w_tok + 1 == dst_last["tokens"])]
                            with m.If(w_tok_last):
                                m.d.sync += w_done.eq(1)

        # ------------------------------------------- attention spikes -> destination
        a_on = Signal()                  # ATTN_READ or ATTN_WAIT
        ar_on = Signal()                 # ATTN_READ
        a_t = Signal(range(T + 1))
        a_idx = Signal(16)
        a_done = Signal()                # every head's spikes written
        a_head = Signal(8)               # the head being written ...
        head_off = Signal(addr_shape)    # ... at a_head · (D / P) · T
        head = Signal(8)                 # the head being read ...
        ar_head_off = Signal(addr_shape)  # ... at head · (D / P) · T
        aw_tok_off, ar_tok_off = Signal(addr_shape), Signal(addr_shape)
        if attn is not None:
            Gd = cfg.attn_dim // P
            N = cfg.attn_tokens
            final_kind = Mux(op.mode == 2, OutKind.GATED.value, OutKind.ATTN.value)
            with m.If(a_on):
                m.d.comb += attn.o.ready.eq(1)
                with m.If(attn.o.valid & (attn.o.payload.kind.as_value() == final_kind)):
                    index = attn.o.payload.index
                    g_in_head = index[:exact_log2(Gd)] if Gd > 1 else 0
                    post_write(base_t[3] + aw_tok_off + head_off + plane_t(g_in_head, a_t),
                               Cat(attn.o.payload.spikes[lane] for lane in range(P)))
                    m.d.sync += a_idx.eq(a_idx + 1)
                    with m.If(g_in_head == Gd - 1):
                        m.d.sync += aw_tok_off.eq(aw_tok_off + tok_step[3])
                    with m.If(a_idx == N * Gd - 1):
                        m.d.sync += [a_idx.eq(0), a_t.eq(a_t + 1), aw_tok_off.eq(0)]
                        with m.If(a_t == T - 1):
                            m.d.sync += [a_t.eq(0), a_head.eq(a_head + 1),
                                         head_off.eq(head_off + Gd * T)]
                            with m.If(a_head == op.heads - 1):
                                m.d.sync += a_done.eq(1)

            # the row reader: 3·Gd words {q, k, v} of (token, t) a row, one read a cycle,
            # into a FIFO of a head's rows: the core loads a block a row a cycle, and the
            # reader goes on into the next head while the core computes
            reads = 3 * Gd
            ar_k = Signal(range(reads))
            ar_addr = Signal(addr_shape)
            ar_done = Signal()           # every row of every head issued
            ar_got, row_in, track_rows, hand_off_rows = slot_reads(reads, "rows")
            m.submodules.rows_q = rows_q = ResetInserter(~a_on)(
                fifo.SyncFIFOBuffered(width=P * reads, depth=T * N))
            rows_room, rows_move, rows_waiting = hand_off_rows(ar_on, rows_q.w_rdy, ar_k)
            row_out = data.ArrayLayout(P, reads)(rows_q.r_data)
            ar_issue = ar_on & ~ar_done & rows_room
            which = ar_k >> exact_log2(Gd) if Gd > 1 else ar_k
            gi = ar_k[:exact_log2(Gd)] if Gd > 1 else 0
            # ar_addr, the address of read ar_k, is a register: each read computes its
            # successor's (the next word of the matrix, the next matrix's first, or the next
            # row's first), so no adder sits before the memory's address input
            # The next row's matrix starts (nxt) are registers recomputed every cycle from
            # the row walk (which moves only at a row's end, >= 3 reads apart); the current
            # row's k and v starts (cur) are taken from them as the row begins.
            row_last = Signal()          # the row's token is the last
            next_off = Mux(row_last, 0, ar_tok_off + tok_step[0])
            nxt = [Signal(addr_shape, name=f"ar_next{w}") for w in range(3)]
            # ... and the next head's matrix starts, the same way
            nxt_head = [Signal(addr_shape, name=f"ar_next_head{w}") for w in range(3)]
            ar_cur = [Signal(addr_shape, name=f"ar_cur{w}") for w in range(1, 3)]
            m.d.sync += [row_last.eq(token == src_last["tokens"])]
            m.d.sync += [nxt[w].eq(base_t[w] + next_off + ar_head_off +
                                   Mux(row_last, tstep + 1, tstep)) for w in range(3)]
            m.d.sync += [nxt_head[w].eq(base_t[w] + ar_head_off + Gd * T) for w in range(3)]
            with m.If(ar_issue):
                m.d.sync += [ar_k.eq(ar_k + 1), ar_addr.eq(ar_addr + T)]
                with m.If(ar_k == reads - 1):
                    m.d.sync += [ar_k.eq(0), token.eq(token + 1), ar_tok_off.eq(next_off),
                                 ar_addr.eq(nxt[0]), ar_cur[0].eq(nxt[1]), ar_cur[1].eq(nxt[2])]
                    with m.If(row_last):
                        m.d.sync += [token.eq(0), tstep.eq(tstep + 1)]
                        with m.If(tstep == T - 1):
                            m.d.sync += [tstep.eq(0), head.eq(head + 1),
                                         ar_head_off.eq(ar_head_off + Gd * T),
                                         ar_addr.eq(nxt_head[0]), ar_cur[0].eq(nxt_head[1]),
                                         ar_cur[1].eq(nxt_head[2])]
                            with m.If(head == op.heads - 1):
                                m.d.sync += ar_done.eq(1)
                with m.Elif(gi == Gd - 1):
                    m.d.sync += ar_addr.eq(Mux(which == 0, ar_cur[0], ar_cur[1]))
            track_rows(ar_issue, ar_k)
            m.d.comb += [rows_q.w_data.eq(row_in), rows_q.w_en.eq(rows_move)]
            with m.If(a_on):
                m.d.comb += [attn.i.valid.eq(rows_q.r_rdy), rows_q.r_en.eq(attn.i.ready),
                             attn.i.payload.q.eq(Cat(row_out[k] for k in range(Gd))),
                             attn.i.payload.k.eq(Cat(row_out[Gd + k] for k in range(Gd))),
                             attn.i.payload.v.eq(Cat(row_out[2 * Gd + k] for k in range(Gd)))]
            ar_idle = ar_done & ~ar_got & ~rows_waiting

        # The activation read port reads every cycle at the running unit's address register
        # (chosen by the registered run flags); a unit tracks the reads it issued, so the
        # port's address and enable wait on no unit's handshake.
        read_addr = Mux(lin_on, r_addr, rq_addr)
        if attn is not None:
            read_addr = Mux(ar_on, ar_addr, read_addr)
        m.d.comb += [act_rd.en.eq(1), act_rd.addr.eq(read_addr)]

        # ----------------------------------------------------------- the sequencer
        run_cycle = Signal()
        with m.If(run_cycle):
            m.d.sync += [cycles.eq(cycles + 1), self.op_cycles.eq(self.op_cycles + 1)]
        lif_sats = lif.sat_count
        attn_sats = attn.sat_count if attn is not None else 0

        fail_code = Signal(4)            # what a stopped run answers
        abort = self.abort | dev.abort

        def posted_config(port, name):
            """Registers in front of a core's config port: OP_START writes them, the core
            takes them a cycle later (long before the op's first beat reaches it), so no
            sequencer state decoding sits in front of the core's config checks."""
            regs = {f: Signal.like(getattr(port, f), name=f"{name}_{f}")
                    for f in port.signature.members}
            m.d.sync += regs["we"].eq(0)
            m.d.comb += [getattr(port, f).eq(r) for f, r in regs.items()]
            return regs
        lif_cfg = posted_config(lif.cfg, "lif_cfg")
        if attn is not None:
            attn_cfg = posted_config(attn.cfg, "attn_cfg")
            attn_lif_cfg = posted_config(attn.lif_cfg, "attn_lif_cfg")

        # The units' run flags are registers, set with every state change from the state
        # entered (no state decoding in front of the units' logic). Every transition goes
        # through `go`, so a flag is exactly "the sequencer is in one of its states".
        # The cores' soft reset (FAIL) and the engine's flush beat (FLUSH) are such flags too.
        unit_states = ((val_on, ("ENC_READ", "ADD_READ")), (lin_on, ("LIN_RUN",)),
                       (a_on, ("ATTN_READ", "ATTN_WAIT")), (ar_on, ("ATTN_READ",)),
                       (soft_reset, ("FAIL",)), (flush_on, ("FLUSH",)))

        # A transition updates only the flags it changes (or that an earlier, overridden
        # transition of the same state set), so a flag's next-value logic holds just the
        # transitions into and out of its states, not every condition of the FSM.
        current = {"state": None, "set": set()}   # the state being elaborated

        @contextmanager
        def seq_state(name):
            current.update(state=name, set=set())
            with m.State(name):
                yield
            current.update(state=None, set=set())

        def go(state):
            m.next = state
            for k, (flag, states) in enumerate(unit_states):
                if (state in states) != (current["state"] in states) or k in current["set"]:
                    m.d.sync += flag.eq(state in states)
                    current["set"].add(k)

        def abort_check():
            # `abort` stops a run from any of its states (last in the state: it wins)
            with m.If(abort):
                m.d.sync += fail_code.eq(Error.ABORTED)
                go("FAIL")

        # The answer to a command is registered before it reaches the host link (the link
        # reacts a cycle later; nothing else waits on it).
        cmd_done, cmd_error = Signal(), Signal.like(dev.cmd_error)
        m.d.sync += [dev.cmd_done.eq(cmd_done), dev.cmd_error.eq(cmd_error)]

        with m.FSM(name="seq") as seq:
            with seq_state("IDLE"):
                with m.If(dev.cmd_start):
                    with m.Switch(dev.cmd):
                        with m.Case(Cmd.LOAD):
                            m.d.comb += [loader.start.eq(1), loader.size.eq(dev.load_size)]
                            m.d.sync += loaded.eq(0)
                            go("LOADING")
                        with m.Case(Cmd.RUN):
                            with m.If(loaded):
                                m.d.sync += [cycles.eq(0), op_index.eq(0), post_error.eq(0),
                                             fail_code.eq(Error.BAD_INPUT),
                                             scan_skipped.eq(0),
                                             encoding.eq(1)]
                                m.d.sync += buf_raddr.eq(header.input_buffer)
                                m.d.comb += [engine.clear_counters.eq(1),
                                             lif.clear_flags.eq(1)]
                                if attn is not None:
                                    m.d.comb += attn.clear_counters.eq(1)
                                go("ENC_FETCH")
                            with m.Else():
                                m.d.comb += [cmd_done.eq(1),
                                             cmd_error.eq(Error.NO_PROGRAM)]
                                m.d.sync += state.eq(State.ERROR)
                        with m.Case(Cmd.RESET):
                            m.d.sync += ctr.eq(0)
                            go("CLEAR_INPUT")
                        with m.Default():
                            m.d.comb += [cmd_done.eq(1), cmd_error.eq(Error.UNKNOWN_CMD)]

            with seq_state("LOADING"):
                with m.If(loader.done):
                    with m.If(loader.error):
                        m.d.comb += [cmd_done.eq(1), cmd_error.eq(Error.BAD_PROGRAM)]
                        m.d.sync += state.eq(State.ERROR)
                        go("IDLE")
                    with m.Else():
                        m.d.sync += [ctr.eq(0), input_size.eq(0), output_size.eq(0), in_tc.eq(0),
                                     ran.eq(0), layers_size.eq(header.n_ops << 2)]
                        go("LOAD_SIZES")
            with seq_state("LOAD_SIZES"):
                # INPUT bytes = 2·T·tokens·channels, one token per cycle (no multiplier)
                with m.If(ctr == header.info[1]):
                    m.d.comb += cmd_done.eq(1)
                    m.d.sync += [loaded.eq(1), state.eq(State.READY)]
                    go("IDLE")
                with m.Else():
                    m.d.sync += [ctr.eq(ctr + 1),
                                 input_size.eq(input_size + header.info[2] * (2 * T)),
                                 in_tc.eq(in_tc + header.info[2])]

            with seq_state("CLEAR_INPUT"):
                # RESET: zero the input memory, drop the output, clear the status
                m.d.comb += [in_wr.addr.eq(ctr), in_wr.data.eq(0), in_wr.en.eq(0b11)]
                m.d.sync += ctr.eq(ctr + 1)
                with m.If(ctr == self.input_bytes // 2 - 1):
                    m.d.comb += cmd_done.eq(1)
                    m.d.sync += [output_size.eq(0),
                                 state.eq(Mux(loaded, State.READY, State.IDLE))]
                    go("IDLE")

            # ---- ENCODE: the input buffer's planes from the int16 input elements
            with seq_state("ENC_FETCH"):
                m.d.comb += run_cycle.eq(1)      # buf_raddr was set with the RUN
                go("ENC_BUF")
                abort_check()
            with seq_state("ENC_BUF"):
                m.d.comb += run_cycle.eq(1)
                m.d.sync += [dst.eq(buf_rd.data), token.eq(0), tstep.eq(0),
                             ctr.eq(0), rd_done.eq(0), v_token.eq(0), v_group.eq(0),
                             v_tstep.eq(0), v_ctr.eq(0), enc_t.eq(0), enc_grp.eq(0),
                             enc_tok.eq(0), rd_off[2].eq(0)]
                go("ENC_SETTLE")
                abort_check()
            with seq_state("ENC_SETTLE"):
                # two cycles: dst, its held limits, then the walk's flags are current
                m.d.comb += run_cycle.eq(1)
                m.d.sync += ctr.eq(ctr + 1)
                with m.If(ctr == 1):
                    m.d.sync += ctr.eq(0)
                    go("ENC_READ")
                abort_check()
            with seq_state("ENC_READ"):
                # the value unit encodes every (token, group, t) word of the input buffer
                m.d.comb += run_cycle.eq(1)
                with m.If(val_error):
                    go("FAIL")
                with m.Elif(val_idle):
                    go("OP_FETCH")
                abort_check()

            # ---- the next op: its entry, then its four buffers
            with seq_state("OP_NEXT"):
                m.d.comb += [run_cycle.eq(1), layers_wr.addr.eq(op_index),
                             layers_wr.data.eq(self.op_cycles), layers_wr.en.eq(1)]
                m.d.sync += op_index.eq(op_index + 1)
                go("OP_FETCH")
                abort_check()
            with seq_state("OP_FETCH"):
                m.d.comb += run_cycle.eq(1)
                m.d.sync += [self.op_cycles.eq(0), encoding.eq(0)]
                go("OP_ENTRY")
                with m.If(op_index == header.n_ops):
                    go("FINISH")
                abort_check()
            with seq_state("OP_ENTRY"):
                m.d.comb += run_cycle.eq(1)
                m.d.sync += [op.eq(op_rd.data), ctr.eq(0), buf_raddr.eq(op_rd.data.src0)]
                go("OP_BUFS")
                abort_check()
            with seq_state("OP_BUFS"):
                m.d.comb += run_cycle.eq(1)
                # buffer k is read at ctr = k (address registered a cycle ahead), taken at k + 1
                m.d.sync += [ctr.eq(ctr + 1),
                             buf_raddr.eq(Mux(ctr == 0, op.src1, Mux(ctr == 1, op.src2, op.dst)))]
                for k, b in enumerate(bufs):
                    with m.If(ctr == k + 1):
                        m.d.sync += b.eq(buf_rd.data)
                with m.If(ctr == 4):
                    m.d.sync += [token.eq(0), tstep.eq(0),
                                 head.eq(0), ctr.eq(0), v_token.eq(0), v_group.eq(0),
                                 v_tstep.eq(0), v_ctr.eq(0)]
                    go("OP_START")
                abort_check()
            with seq_state("OP_START"):
                m.d.comb += run_cycle.eq(1)
                with m.Switch(op.op):
                    with m.Case(Op.LINEAR, Op.READOUT):
                        m.d.sync += [
                            r_addr.eq(src.base * T), r_t.eq(0), r_pln.eq(0), r_grp.eq(0),
                            r_tok.eq(0), r_row.eq(op.wbase), r_done.eq(0),
                            p_tok.eq(0), p_t.eq(0), p_h.eq(0), p_row_base.eq(op.bbase),
                            p_baddr.eq(op.bbase), p_h_last.eq(op.ngroups == 1),
                            p_t_first.eq(1), p_t_last.eq(T == 1),
                            p_tok_last.eq(src.tokens == 1),
                            p_loading.eq((op.op == Op.LINEAR) & (op.v0 != 0)),
                            post_done.eq(0), is_readout.eq(op.op == Op.READOUT),
                            w_tok.eq(0), w_t.eq(0), w_g.eq(0), w_second.eq(0),
                            w_g_last.eq(dst.cgroups == 1), w_t_last.eq(T == 1),
                            w_tok_last.eq(dst.tokens == 1),
                            w_done.eq(0), readout_sums.eq(0), eng_groups.eq(op.egroups),
                            w_tok_off.eq(0), w_g_off.eq(0),
                            s_half.eq(0), s_g.eq(0), s_g_last.eq(op.groups == 1)]
                        m.d.sync += [lif_cfg["we"].eq(op.op == Op.LINEAR),
                                     lif_cfg["theta"].eq(op.theta),
                                     lif_cfg["leak_en"].eq(op.leak != 255),
                                     lif_cfg["leak_shift"].eq(op.leak)]
                        with m.If((op.acc_shift > MAX_LEFT_SHIFT) | (op.acc_shift < -31)):
                            go("FAIL")
                        with m.Else():
                            go("LIN_RUN")
                    with m.Case(Op.ADD):
                        m.d.sync += [rd_done.eq(0), ctr.eq(0), v_ctr.eq(0)] + [
                            r.eq(0) for r in rd_off]
                        go("ADD_READ")
                    if attn is not None:
                        with m.Case(Op.ATTENTION):
                            m.d.sync += [attn_cfg["we"].eq(1), attn_cfg["mode"].eq(op.mode),
                                         attn_cfg["block"].eq(op.block),
                                         attn_cfg["variant"].eq(op.variant),
                                         attn_cfg["order"].eq(AttnOrder.AUTO),
                                         attn_lif_cfg["we"].eq(1),
                                         attn_lif_cfg["theta"].eq(op.theta),
                                         attn_lif_cfg["leak_en"].eq(op.leak != 255),
                                         attn_lif_cfg["leak_shift"].eq(op.leak)]
                            m.d.sync += [a_t.eq(0), a_idx.eq(0), a_done.eq(0), a_head.eq(0),
                                         ar_done.eq(0), ar_k.eq(0), head_off.eq(0),
                                         ar_head_off.eq(0),
                                         aw_tok_off.eq(0), ar_tok_off.eq(0),
                                         ar_addr.eq(base_t[0]), ar_cur[0].eq(base_t[1]),
                                         ar_cur[1].eq(base_t[2])]
                            go("ATTN_READ")
                    with m.Default():
                        go("FAIL")
                abort_check()

            # ---- LINEAR / READOUT: the reader, emitter, engine, post unit and writer run
            # concurrently (tokens pipeline through them) until the last LIF beat is written
            with seq_state("LIN_RUN"):
                m.d.comb += run_cycle.eq(1)
                with m.If(post_error):
                    go("FAIL")
                with m.Elif(post_done & ~b_valid & ~c_valid & ~d_valid &
                            (is_readout | w_done)):
                    m.d.sync += ctr.eq(0)
                    go("OP_NEXT")
                    with m.If(is_readout):
                        go("OUT_WRITE")
                abort_check()
            with seq_state("OUT_WRITE"):
                # the READOUT totals as little-endian int32 bytes
                m.d.comb += run_cycle.eq(1)
                byte_sel = ctr[:2]
                unit = ctr >> 2
                total = Signal(signed(40))
                m.d.comb += total.eq(readout_sums.as_value().word_select(
                    unit[:ceil_log2(self.readout_groups * P + 1)], 40).as_signed())
                m.d.comb += [out_wr.addr.eq(ctr), out_wr.en.eq(1),
                             out_wr.data.eq(total.as_unsigned().word_select(byte_sel, 8))]
                m.d.sync += ctr.eq(ctr + 1)
                with m.If(ctr == op.n_out * 4 - 1):
                    go("OP_NEXT")
                abort_check()

            # ---- ADD: element values of both sources for one (token, group, t)
            with seq_state("ADD_READ"):
                # the value unit sums both sources' planes word by word into the destination
                m.d.comb += run_cycle.eq(1)
                with m.If(val_error):
                    go("FAIL")
                with m.Elif(val_idle):
                    go("OP_NEXT")
                abort_check()

            # ---- ATTENTION: every head's rows read (ATTN_READ), then its last spikes (ATTN_WAIT)
            if attn is not None:
                with seq_state("ATTN_READ"):
                    m.d.comb += run_cycle.eq(1)
                    with m.If(ar_idle):
                        go("ATTN_WAIT")
                    abort_check()
                with seq_state("ATTN_WAIT"):
                    m.d.comb += run_cycle.eq(1)
                    with m.If(a_done):
                        m.d.sync += a_done.eq(0)
                        go("OP_NEXT")
                    abort_check()

            with seq_state("FINISH"):
                m.d.comb += [cmd_done.eq(1)]
                m.d.sync += [run_sats.eq(lif_sats + attn_sats),
                             sats_total.eq(sats_total + lif_sats + attn_sats),
                             inferences.eq(inferences + 1),
                             ops_total.eq(ops_total + header.n_ops),
                             events.eq(engine.events), skipped.eq(scan_skipped),
                             output_size.eq(header.info[4] << 2), state.eq(State.DONE),
                             ran.eq(1)]
                go("IDLE")

            # ---- a run stopped: soft-reset the cores, flush the engine, answer fail_code
            with seq_state("FAIL"):
                m.d.sync += [ctr.eq(0), eng_groups.eq(engine.groups)]
                go("FLUSH")
            with seq_state("FLUSH"):
                # a silent `last` beat (flush_on) makes the engine drain (and clear) every group
                with m.If(engine.i.ready):
                    go("FLUSH_WAIT")
            with seq_state("FLUSH_WAIT"):
                m.d.sync += ctr.eq(ctr + 1)
                with m.If(~engine.busy & (ctr > 16)):
                    m.d.comb += [cmd_done.eq(1), cmd_error.eq(fail_code)]
                    m.d.sync += [state.eq(State.ERROR), post_done.eq(1)]
                    go("IDLE")

        m.d.comb += self.busy.eq(~seq.ongoing("IDLE"))
        return m


