"""Accelerator: runs a compiled program (golden/compile.py) over the SynapseEngine, a LIFArray
and the AttentionCore, bit-exact with the golden interpreter `golden.compile.run_program`.
Build parameters: `golden.program_loader.AcceleratorConfig`; LOAD-time checks and table/weight
layouts: `golden/program_loader.py` and `rtl/program_loader.py`.

Behind the host link (`dev`, the HostLink device port) sit byte-wide PROGRAM, INPUT (int16 per
element) and OUTPUT (int32 per element) memories. LOAD runs the ProgramLoader; RUN executes
one inference, op by op:

  ENCODE     INPUT elements -> bit planes of the input buffer in the activation memory
  LINEAR     per token: the scanner reads the source planes and sends one engine event
             (channel, T-bit word, plane shift, negate) per non-silent channel and plane, then
             a silent `last` beat; the engine's drain (timestep-major, per unit group) is
             shifted by acc_shift, repeated, biased and fed to the LIF (FIRST at t = 0, or a
             LOAD pass of v0 first); LIF spikes are written to the destination planes. Tokens
             pipeline: the next token's scan runs while this one drains.
  ATTENTION  per head: token rows {q, k, v} (timestep-major) into the AttentionCore; its
             ATTN (SDSA: GATED) spikes go to the destination
  ADD        per word: the element values of both sources, summed, range-checked, re-encoded
  READOUT    scanned like LINEAR; drained currents + bias summed over T and tokens; the int32
             totals are written to OUTPUT

Activation word `T·w + t` (w: the buffer word of `golden.program_loader`) holds `lanes` bits:
plane p of channels g·P .. g·P+P-1 at timestep t. A value outside its buffer's range (ADD
overflow, input out of range, a LIF current wider than the op allows) stops the run with
BAD_INPUT, as the golden device does; so does `abort`. Stopping soft-resets the cores and
flushes the engine's accumulators, so the next run is exact.
"""

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from ..golden.compile import BufKind, Op
from ..golden.host_link import Cmd, Error, Space, State
from .attention_core import AttentionCore, AttnOrder, OutKind
from .host_link import device_signature
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
        units = max(cfg.max_neurons, self.readout_groups * P)
        self.loader = ProgramLoader(cfg)
        self.engine = SynapseEngine(
            n_in=cfg.max_channels, n_out=units, lanes=P, timesteps=T,
            weight_width=cfg.weight_width, row_addressing=True,
            weight_depth=cfg.weight_words, max_shift=cfg.max_planes - 1, signed_events=True)
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
        m.submodules.in_mem = in_mem = Memory(shape=8, depth=self.input_bytes, init=[])
        m.submodules.out_mem = out_mem = Memory(shape=8, depth=self.output_bytes, init=[])
        m.submodules.act = act = Memory(shape=P, depth=cfg.act_words * T, init=[])
        m.submodules.bias = bias_mem = Memory(
            shape=data.ArrayLayout(signed(cfg.bias_width), P), depth=cfg.bias_words, init=[])
        m.submodules.ops = op_mem = Memory(shape=op_entry_layout(cfg), depth=cfg.max_ops,
                                           init=[])
        m.submodules.bufs = buf_mem = Memory(shape=buffer_entry_layout(cfg),
                                             depth=cfg.max_buffers, init=[])
        prog_rd, prog_wr = prog_mem.read_port(), prog_mem.write_port()
        in_rd, in_wr = in_mem.read_port(), in_mem.write_port()
        out_rd, out_wr = out_mem.read_port(), out_mem.write_port()
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
        inferences, ops_total, sats_total = Signal(32), Signal(32), Signal(32)
        cycles, run_sats = Signal(32), Signal(32)
        events, skipped = Signal(32), Signal(32)
        m.d.comb += [dev.program_size.eq(cfg.program_bytes), dev.input_size.eq(input_size),
                     dev.output_size.eq(output_size), dev.state.eq(state),
                     dev.inferences.eq(inferences), dev.ops_total.eq(ops_total),
                     dev.sats_total.eq(sats_total), dev.perf_cycles.eq(cycles),
                     dev.perf_events.eq(events), dev.perf_skipped.eq(skipped),
                     dev.run_ops.eq(header.n_ops), dev.run_sats.eq(run_sats),
                     dev.load_info.eq(header.info)]
        space = dev.mem_space
        m.d.comb += [
            prog_wr.addr.eq(dev.mem_addr), prog_wr.data.eq(dev.mem_wdata),
            prog_wr.en.eq(dev.mem_we & (space == Space.PROGRAM)),
            prog_rd.addr.eq(Mux(loader.prog_en, loader.prog_addr, dev.mem_addr)),
            prog_rd.en.eq(1),
            in_rd.addr.eq(dev.mem_addr), in_rd.en.eq(1),
            in_wr.addr.eq(dev.mem_addr), in_wr.data.eq(dev.mem_wdata),
            in_wr.en.eq(dev.mem_we & (space == Space.INPUT)),
            out_rd.addr.eq(dev.mem_addr), out_rd.en.eq(1),
        ]
        # Host reads: the memory answers a cycle later, the reply register one more.
        read_pending, read_space = Signal(), Signal(2)
        m.d.sync += [read_pending.eq(dev.mem_re), dev.mem_rvalid.eq(read_pending)]
        with m.If(dev.mem_re):
            m.d.sync += read_space.eq(space)
        with m.If(read_pending):
            m.d.sync += dev.mem_rdata.eq(Mux(read_space == Space.PROGRAM, prog_rd.data,
                                         Mux(read_space == Space.INPUT, in_rd.data,
                                             out_rd.data)))
        with m.If(dev.program_written):
            m.d.sync += [loaded.eq(0), state.eq(State.IDLE)]

        # ------------------------------------------------------------- run state
        op_index = Signal(range(cfg.max_ops + 1))
        op = Signal(op_entry_layout(cfg))
        bufs = [Signal(buffer_entry_layout(cfg), name=f"buf_{n}")
                for n in ("src0", "src1", "src2", "dst")]
        src, src1, src2, dst = bufs
        token = Signal(16)
        group = Signal(16)
        tstep = Signal(range(T + 1))
        plane = Signal(6)
        ctr = Signal(16)

        def act_addr(buf, tok, grp, pln, t):
            return ((buf.base + (tok * buf.cgroups + grp) * buf.planes + pln) * T + t)

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
            return Mux(buf.kind == BufKind.UINT, Const(1, VALUE) << pln,
                       Mux((buf.kind == BufKind.SIGNED_SPIKES) & (pln == 1), -1, 1)) * bit

        # ----------------------------------------- element values (ENCODE and ADD)
        vals = Signal(data.ArrayLayout(VALUE, P))
        lo_byte = Signal(8)
        val_lo, val_hi = Signal(VALUE), Signal(VALUE)
        with m.Switch(dst.kind):
            with m.Case(BufKind.SPIKES):
                m.d.comb += [val_lo.eq(0), val_hi.eq(1)]
            with m.Case(BufKind.SIGNED_SPIKES):
                m.d.comb += [val_lo.eq(-1), val_hi.eq(1)]
            with m.Default():
                m.d.comb += [val_lo.eq(0), val_hi.eq((Const(1, VALUE) << dst.bits) - 1)]
        vals_ok = Cat((vals[lane] >= val_lo) & (vals[lane] <= val_hi) for lane in range(P)).all()

        # --------------------------------------------------------------- scanner
        scan_words = Signal(data.ArrayLayout(P, T))
        scan_lane = Signal(range(P))
        chan = Signal(16)
        event_word = Signal(T)
        m.d.comb += [chan.eq(group * P + scan_lane),
                     event_word.eq(Cat(scan_words[t].bit_select(scan_lane, 1)
                                       for t in range(T)))]
        # The engine's group count is held for a whole op (it must not change while it works);
        # full during a flush, so every accumulator is drained and cleared.
        eng_groups = Signal.like(engine.active_groups, init=engine.groups)
        m.d.comb += engine.active_groups.eq(eng_groups)
        row_g = Signal(engine.i_layout["row"].shape)   # weight row of channel group·P
        row = Signal.like(row_g)                    # weight row of channel `chan`

        # --------------------------------- engine drain -> LIF / readout (post unit)
        post_on = Signal()               # LINEAR or READOUT running
        is_readout = Signal()
        p_tok = Signal(16)
        p_t = Signal(range(T + 1))
        p_g = Signal(16)                 # engine (unit) group of the held beat
        p_sub = Signal(8)                # repeat sub-beat
        p_ul = Signal(range(P))          # repeat: the unit lane of this sub-beat
        p_j = Signal(8)                  # repeat: sub-beat within the unit
        p_h = Signal(16)                 # LIF neuron group / bias group
        p_row_base = Signal(16)          # bias word of the token's bias row
        p_loading = Signal()             # the v0 LOAD pass of the token
        p_acc = Signal(engine.o_layout["current"].shape)
        p_bias = Signal(data.ArrayLayout(signed(cfg.bias_width), P))
        per_unit = Signal(8)             # repeat / P (repeat > 1)
        m.d.comb += per_unit.eq(op.repeat >> exact_log2(P))
        repeat_one = op.repeat == 1
        cur_w = cfg.current_width
        cur_lo = Signal(signed(cur_w + 1))
        cur_hi = Signal(signed(cur_w + 1))
        half = Signal(signed(cur_w + 1))          # 2^(cur_width - 1)
        m.d.comb += [half.eq(Const(1, signed(cur_w + 1)) << (op.cur_width - 1)[:6]),
                     cur_lo.eq(-half), cur_hi.eq(half - 1)]
        post_error = Signal()
        post_done = Signal()             # every engine beat of the op consumed
        readout_sums = Signal(data.ArrayLayout(signed(40), self.readout_groups * P))
        acc_shift = op.acc_shift
        neg_shift = (-acc_shift).as_unsigned()[:5]
        pos_shift = acc_shift.as_unsigned()[:3]

        def shifted(x):
            return Mux(acc_shift < 0, x >> neg_shift, x << pos_shift)

        def post_idle_unless_on():
            # a stopped run (FAIL) leaves the unit waiting for the next op (last in each
            # state, so it wins over the state's own `m.next`)
            with m.If(~post_on):
                m.next = "WAIT"

        with m.FSM(name="post"):
            with m.State("WAIT"):
                with m.If(post_on & ~post_done):
                    m.next = "BEAT"
                    with m.If(p_loading & ~is_readout):
                        m.next = "LOAD_V0"
            with m.State("LOAD_V0"):
                m.d.comb += [lif.i.valid.eq(1), lif.i.payload.op.eq(LIFOp.LOAD),
                             lif.i.payload.index.eq(p_h)]
                for lane in range(P):
                    m.d.comb += lif.i.payload.current[lane].eq(op.v0)
                with m.If(lif.i.ready):
                    m.d.sync += p_h.eq(p_h + 1)
                    with m.If(p_h == op.ngroups - 1):
                        m.d.sync += [p_h.eq(0), p_loading.eq(0)]
                        m.next = "BEAT"
                post_idle_unless_on()
            with m.State("BEAT"):
                # take one drained beat of the engine
                m.d.comb += engine.o.ready.eq(1)
                with m.If(engine.o.valid):
                    m.d.sync += [p_acc.eq(engine.o.payload.current), p_g.eq(engine.o.payload.index),
                                 p_sub.eq(0), p_ul.eq(0), p_j.eq(0)]
                    m.d.sync += p_h.eq(Mux(is_readout | repeat_one, engine.o.payload.index,
                                           engine.o.payload.index * op.repeat))
                    m.next = "BIAS"
                post_idle_unless_on()
            with m.State("BIAS"):
                m.d.comb += [bias_rd.addr.eq(Mux(is_readout, op.bbase + p_h,
                                                 p_row_base + p_h)), bias_rd.en.eq(1)]
                m.next = "BIAS_DATA"
                post_idle_unless_on()
            with m.State("BIAS_DATA"):
                m.d.sync += p_bias.eq(Mux(op.bias_rows != 0, bias_rd.data, 0))
                m.next = "EMIT"
                with m.If(is_readout):
                    m.next = "SUM"
                post_idle_unless_on()
            with m.State("SUM"):
                for g in range(self.readout_groups):
                    with m.If(p_g == g):
                        for lane in range(P):
                            k = g * P + lane
                            m.d.sync += readout_sums[k].eq(readout_sums[k] + p_acc[lane] +
                                                           p_bias[lane])
                m.next = "NEXT"
                post_idle_unless_on()
            with m.State("EMIT"):
                first = (p_t == 0) & (op.v0 == 0)
                m.d.comb += [lif.i.valid.eq(~post_error),
                             lif.i.payload.op.eq(Mux(first, LIFOp.FIRST, LIFOp.UPDATE)),
                             lif.i.payload.index.eq(p_h)]
                bad = []
                for lane in range(P):
                    acc = Mux(repeat_one, p_acc[lane], p_acc[p_ul])
                    cur = Signal(signed(cfg.current_width + 8), name=f"cur{lane}")
                    m.d.comb += [cur.eq(shifted(acc) + p_bias[lane]),
                                 lif.i.payload.current[lane].eq(cur)]
                    bad.append((cur < cur_lo) | (cur > cur_hi))
                with m.If(Cat(bad).any()):
                    m.d.sync += post_error.eq(1)
                with m.Elif(lif.i.ready):
                    with m.If(repeat_one | (p_sub == op.repeat - 1)):
                        m.next = "NEXT"
                    with m.Else():
                        m.d.sync += [p_sub.eq(p_sub + 1), p_h.eq(p_h + 1), p_j.eq(p_j + 1)]
                        with m.If(p_j == per_unit - 1):
                            m.d.sync += [p_j.eq(0), p_ul.eq(p_ul + 1)]
                        m.next = "BIAS"
                post_idle_unless_on()
            with m.State("NEXT"):
                # position of the next engine beat: groups, then t, then tokens
                m.next = "BEAT"
                with m.If(p_g == op.groups - 1):
                    m.d.sync += p_t.eq(p_t + 1)
                    with m.If(p_t == T - 1):
                        m.d.sync += [p_t.eq(0), p_tok.eq(p_tok + 1),
                                     p_row_base.eq(Mux(op.bias_rows > 1,
                                                       p_row_base + op.ngroups, p_row_base)),
                                     p_loading.eq(op.v0 != 0), p_h.eq(0)]
                        with m.If(p_tok == src.tokens - 1):
                            m.d.sync += post_done.eq(1)
                            m.next = "WAIT"
                        with m.Elif(op.v0 != 0):
                            m.next = "LOAD_V0"
                post_idle_unless_on()

        # ------------------------------------------------ LIF spikes -> destination
        w_tok = Signal(16)
        w_t = Signal(range(T + 1))
        w_g = Signal(16)
        w_second = Signal()              # signed spikes: the -1 plane
        w_done = Signal()
        lin_write = Signal()             # LINEAR running: the writer owns act_wr
        spikes = lif.o.payload.spikes
        pos_bits = Cat((spikes[lane] == 1) for lane in range(P))
        neg_bits = Cat((spikes[lane].as_signed() == -1) for lane in range(P)) \
            if cfg.signed_spikes else Const(0, P)
        is_load_beat = lif.o.payload.op == LIFOp.LOAD
        signed_dst = dst.kind == BufKind.SIGNED_SPIKES
        with m.If(lin_write):
            with m.If(lif.o.valid & is_load_beat):
                m.d.comb += lif.o.ready.eq(1)
            with m.Elif(lif.o.valid):
                m.d.comb += [act_wr.en.eq(1),
                             act_wr.addr.eq(act_addr(dst, w_tok, w_g, w_second, w_t)),
                             act_wr.data.eq(Mux(w_second, neg_bits, pos_bits) &
                                            lane_mask(dst, w_g))]
                with m.If(signed_dst & ~w_second):
                    m.d.sync += w_second.eq(1)
                with m.Else():
                    m.d.comb += lif.o.ready.eq(1)
                    m.d.sync += [w_second.eq(0), w_g.eq(w_g + 1)]
                    with m.If(w_g == dst.cgroups - 1):
                        m.d.sync += [w_g.eq(0), w_t.eq(w_t + 1)]
                        with m.If(w_t == T - 1):
                            m.d.sync += [w_t.eq(0), w_tok.eq(w_tok + 1)]
                            with m.If(w_tok == dst.tokens - 1):
                                m.d.sync += w_done.eq(1)

        # ------------------------------------------- attention spikes -> destination
        a_on = Signal()
        a_t = Signal(range(T + 1))
        a_idx = Signal(16)
        a_done = Signal()
        head = Signal(8)
        if attn is not None:
            Gd = cfg.attn_dim // P
            N = cfg.attn_tokens
            final_kind = Mux(op.mode == 2, OutKind.GATED.value, OutKind.ATTN.value)
            with m.If(a_on):
                m.d.comb += attn.o.ready.eq(1)
                with m.If(attn.o.valid & (attn.o.payload.kind.as_value() == final_kind)):
                    index = attn.o.payload.index
                    a_token = index >> exact_log2(Gd)
                    a_group = head * Gd + index[:exact_log2(Gd)] if Gd > 1 else head
                    m.d.comb += [act_wr.en.eq(1),
                                 act_wr.addr.eq(act_addr(dst, a_token, a_group, 0, a_t)),
                                 act_wr.data.eq(Cat(attn.o.payload.spikes[lane]
                                                    for lane in range(P)))]
                    m.d.sync += a_idx.eq(a_idx + 1)
                    with m.If(a_idx == N * Gd - 1):
                        m.d.sync += [a_idx.eq(0), a_t.eq(a_t + 1)]
                        with m.If(a_t == T - 1):
                            m.d.sync += [a_t.eq(0), a_done.eq(1)]

        # ----------------------------------------------------------- the sequencer
        run_cycle = Signal()
        with m.If(run_cycle):
            m.d.sync += [cycles.eq(cycles + 1), self.op_cycles.eq(self.op_cycles + 1)]
        lif_sats = lif.sat_count
        attn_sats = attn.sat_count if attn is not None else 0
        encoding = Signal()              # ENCODE (not ADD) owns the value unit

        def abort_check():
            # `abort` stops a run from any of its states (last in the state: it wins)
            with m.If(self.abort):
                m.next = "FAIL"

        with m.FSM(name="seq") as seq:
            with m.State("IDLE"):
                with m.If(dev.cmd_start):
                    with m.Switch(dev.cmd):
                        with m.Case(Cmd.LOAD):
                            m.d.comb += [loader.start.eq(1), loader.size.eq(dev.load_size)]
                            m.d.sync += loaded.eq(0)
                            m.next = "LOADING"
                        with m.Case(Cmd.RUN):
                            with m.If(loaded):
                                m.d.sync += [cycles.eq(0), op_index.eq(0), post_error.eq(0),
                                             encoding.eq(1)]
                                m.d.comb += [engine.clear_counters.eq(1),
                                             lif.clear_flags.eq(1)]
                                if attn is not None:
                                    m.d.comb += attn.clear_counters.eq(1)
                                m.next = "ENC_FETCH"
                            with m.Else():
                                m.d.comb += [dev.cmd_done.eq(1),
                                             dev.cmd_error.eq(Error.NO_PROGRAM)]
                                m.d.sync += state.eq(State.ERROR)
                        with m.Case(Cmd.RESET):
                            m.d.sync += ctr.eq(0)
                            m.next = "CLEAR_INPUT"
                        with m.Default():
                            m.d.comb += [dev.cmd_done.eq(1), dev.cmd_error.eq(Error.UNKNOWN_CMD)]

            with m.State("LOADING"):
                with m.If(loader.done):
                    with m.If(loader.error):
                        m.d.comb += [dev.cmd_done.eq(1), dev.cmd_error.eq(Error.BAD_PROGRAM)]
                        m.d.sync += state.eq(State.ERROR)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [ctr.eq(0), input_size.eq(0), output_size.eq(0)]
                        m.next = "LOAD_SIZES"
            with m.State("LOAD_SIZES"):
                # INPUT bytes = 2·T·tokens·channels, one token per cycle (no multiplier)
                with m.If(ctr == header.info[1]):
                    m.d.comb += dev.cmd_done.eq(1)
                    m.d.sync += [loaded.eq(1), state.eq(State.READY)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [ctr.eq(ctr + 1),
                                 input_size.eq(input_size + header.info[2] * (2 * T))]

            with m.State("CLEAR_INPUT"):
                # RESET: zero the input memory, drop the output, clear the status
                m.d.comb += [in_wr.addr.eq(ctr), in_wr.data.eq(0), in_wr.en.eq(1)]
                m.d.sync += ctr.eq(ctr + 1)
                with m.If(ctr == self.input_bytes - 1):
                    m.d.comb += dev.cmd_done.eq(1)
                    m.d.sync += [output_size.eq(0),
                                 state.eq(Mux(loaded, State.READY, State.IDLE))]
                    m.next = "IDLE"

            # ---- ENCODE: the input buffer's planes from the int16 input elements
            with m.State("ENC_FETCH"):
                m.d.comb += [run_cycle.eq(1), buf_rd.addr.eq(header.input_buffer)]
                m.next = "ENC_BUF"
                abort_check()
            with m.State("ENC_BUF"):
                m.d.comb += run_cycle.eq(1)
                m.d.sync += [dst.eq(buf_rd.data), token.eq(0), group.eq(0), tstep.eq(0),
                             ctr.eq(0)]
                m.next = "ENC_READ"
                abort_check()
            with m.State("ENC_READ"):
                # 2·P byte reads (low, high) for the P lanes of (token, group, t); the data
                # of read k arrives while read k + 1 is issued
                m.d.comb += run_cycle.eq(1)
                lane_now = ctr >> 1
                element = (tstep * dst.tokens + token) * dst.channels + group * P + lane_now
                m.d.comb += in_rd.addr.eq(Cat(ctr[0], element))
                m.d.sync += ctr.eq(ctr + 1)
                with m.If(ctr != 0):
                    prev = (ctr - 1)[:16]
                    with m.If(~prev[0]):
                        m.d.sync += lo_byte.eq(in_rd.data)
                    with m.Else():
                        value = Cat(lo_byte, in_rd.data).as_signed()
                        for lane in range(P):
                            with m.If((prev >> 1) == lane):
                                m.d.sync += vals[lane].eq(
                                    Mux(group * P + lane < dst.channels, value, 0))
                with m.If(ctr == 2 * P):
                    m.d.sync += [ctr.eq(0), plane.eq(0)]
                    m.next = "VAL_CHECK"
                abort_check()

            # ---- shared by ENCODE and ADD: check `vals`, write the destination planes
            with m.State("VAL_CHECK"):
                m.d.comb += run_cycle.eq(1)
                with m.If(vals_ok):
                    m.next = "VAL_WRITE"
                with m.Else():
                    m.next = "FAIL"
                abort_check()
            with m.State("VAL_WRITE"):
                m.d.comb += [run_cycle.eq(1), act_wr.en.eq(1),
                             act_wr.addr.eq(act_addr(dst, token, group, plane, tstep)),
                             act_wr.data.eq(plane_bits(dst, plane, vals))]
                m.d.sync += plane.eq(plane + 1)
                with m.If(plane == dst.planes - 1):
                    m.d.sync += [plane.eq(0), ctr.eq(0), tstep.eq(tstep + 1)]
                    m.next = "VAL_NEXT"
                abort_check()
            with m.State("VAL_NEXT"):
                # t fastest, then groups, then tokens; back to ENCODE's or ADD's reader
                m.d.comb += run_cycle.eq(1)
                in_add = ~encoding
                m.d.sync += vals.eq(0)
                m.next = "ADD_READ"
                with m.If(~in_add):
                    m.next = "ENC_READ"
                with m.If(tstep == T):
                    m.d.sync += [tstep.eq(0), group.eq(group + 1)]
                    with m.If(group == dst.cgroups - 1):
                        m.d.sync += [group.eq(0), token.eq(token + 1)]
                        with m.If(token == dst.tokens - 1):
                            m.next = "OP_NEXT"
                            with m.If(~in_add):
                                m.next = "OP_FETCH"
                abort_check()

            # ---- the next op: its entry, then its four buffers
            with m.State("OP_NEXT"):
                m.d.comb += run_cycle.eq(1)
                m.d.sync += op_index.eq(op_index + 1)
                m.next = "OP_FETCH"
                abort_check()
            with m.State("OP_FETCH"):
                m.d.comb += [run_cycle.eq(1), op_rd.addr.eq(op_index)]
                m.d.sync += [self.op_cycles.eq(0), encoding.eq(0)]
                m.next = "OP_ENTRY"
                with m.If(op_index == header.n_ops):
                    m.next = "FINISH"
                abort_check()
            with m.State("OP_ENTRY"):
                m.d.comb += run_cycle.eq(1)
                m.d.sync += [op.eq(op_rd.data), ctr.eq(0)]
                m.next = "OP_BUFS"
                abort_check()
            with m.State("OP_BUFS"):
                m.d.comb += run_cycle.eq(1)
                ids = Mux(ctr == 0, op.src0, Mux(ctr == 1, op.src1,
                                                 Mux(ctr == 2, op.src2, op.dst)))
                m.d.comb += buf_rd.addr.eq(ids)
                m.d.sync += ctr.eq(ctr + 1)
                for k, b in enumerate(bufs):
                    with m.If(ctr == k + 1):
                        m.d.sync += b.eq(buf_rd.data)
                with m.If(ctr == 4):
                    m.d.sync += [token.eq(0), group.eq(0), tstep.eq(0), plane.eq(0),
                                 head.eq(0), ctr.eq(0)]
                    m.next = "OP_START"
                abort_check()
            with m.State("OP_START"):
                m.d.comb += run_cycle.eq(1)
                with m.Switch(op.op):
                    with m.Case(Op.LINEAR, Op.READOUT):
                        m.d.sync += [
                            p_tok.eq(0), p_t.eq(0), p_h.eq(0), p_row_base.eq(op.bbase),
                            p_loading.eq((op.op == Op.LINEAR) & (op.v0 != 0)),
                            post_done.eq(0), is_readout.eq(op.op == Op.READOUT),
                            w_tok.eq(0), w_t.eq(0), w_g.eq(0), w_second.eq(0),
                            w_done.eq(0), readout_sums.eq(0), row.eq(op.wbase),
                            row_g.eq(op.wbase), eng_groups.eq(op.groups)]
                        m.d.comb += [lif.cfg.we.eq(op.op == Op.LINEAR),
                                     lif.cfg.theta.eq(op.theta),
                                     lif.cfg.leak_en.eq(op.leak != 255),
                                     lif.cfg.leak_shift.eq(op.leak)]
                        with m.If((op.acc_shift > MAX_LEFT_SHIFT) | (op.acc_shift < -31)):
                            m.next = "FAIL"
                        with m.Else():
                            m.next = "SCAN_READ"
                    with m.Case(Op.ADD):
                        m.d.sync += vals.eq(0)
                        m.next = "ADD_READ"
                    if attn is not None:
                        with m.Case(Op.ATTENTION):
                            m.d.comb += [attn.cfg.we.eq(1), attn.cfg.mode.eq(op.mode),
                                         attn.cfg.block.eq(op.block),
                                         attn.cfg.variant.eq(op.variant),
                                         attn.cfg.order.eq(AttnOrder.AUTO),
                                         attn.lif_cfg.we.eq(1),
                                         attn.lif_cfg.theta.eq(op.theta),
                                         attn.lif_cfg.leak_en.eq(op.leak != 255),
                                         attn.lif_cfg.leak_shift.eq(op.leak)]
                            m.d.sync += [a_t.eq(0), a_idx.eq(0), a_done.eq(0)]
                            m.next = "ATTN_READ"
                    with m.Default():
                        m.next = "FAIL"
                abort_check()

            # ---- LINEAR / READOUT: scan token by token into engine events
            with m.State("SCAN_READ"):
                # T reads of (token, group, plane); the data of read t arrives a cycle later
                m.d.comb += [run_cycle.eq(1), post_on.eq(1), lin_write.eq(~is_readout),
                             act_rd.addr.eq(act_addr(src, token, group, plane, ctr)),
                             act_rd.en.eq(1)]
                m.d.sync += ctr.eq(ctr + 1)
                for t in range(T):
                    with m.If(ctr == t + 1):
                        m.d.sync += scan_words[t].eq(act_rd.data)
                with m.If(ctr == T):
                    m.d.sync += [ctr.eq(0), scan_lane.eq(0)]
                    m.next = "SCAN_EMIT"
                abort_check()
            with m.State("SCAN_EMIT"):
                m.d.comb += [run_cycle.eq(1), post_on.eq(1), lin_write.eq(~is_readout)]
                neg = (src.kind == BufKind.SIGNED_SPIKES) & (plane == 1)
                live = (event_word != 0) & (chan < src.channels)
                last_lane = scan_lane == P - 1
                last_beat = last_lane & (plane == src.planes - 1) & (group == src.cgroups - 1)
                m.d.comb += [
                    engine.i.valid.eq(live | last_beat),
                    engine.i.payload.index.eq(chan),
                    engine.i.payload.spikes.eq(Mux(live, event_word, 0)),
                    engine.i.payload.row.eq(row),
                    engine.i.payload.shift.eq(Mux(src.kind == BufKind.UINT, plane, 0)),
                    engine.i.payload.negate.eq(neg),
                    engine.i.payload.last.eq(last_beat),
                ]
                with m.If(~(live | last_beat) | engine.i.ready):
                    m.d.sync += [scan_lane.eq(scan_lane + 1), row.eq(row + op.groups)]
                    with m.If(last_lane):
                        m.next = "SCAN_READ"
                        m.d.sync += row.eq(row_g)           # the next plane: same channels
                        with m.If(plane == src.planes - 1):
                            m.d.sync += [plane.eq(0), row_g.eq(row + op.groups),
                                         row.eq(row + op.groups)]
                            with m.If(group == src.cgroups - 1):
                                m.d.sync += [group.eq(0), token.eq(token + 1),
                                             row_g.eq(op.wbase), row.eq(op.wbase)]
                                with m.If(token == src.tokens - 1):
                                    m.next = "OP_WAIT"
                            with m.Else():
                                m.d.sync += group.eq(group + 1)
                        with m.Else():
                            m.d.sync += plane.eq(plane + 1)
                abort_check()
            with m.State("OP_WAIT"):
                # the engine, the post unit and the writer finish the last token
                m.d.comb += [run_cycle.eq(1), post_on.eq(1), lin_write.eq(~is_readout)]
                with m.If(post_error):
                    m.next = "FAIL"
                with m.Elif(post_done & Mux(is_readout, 1, w_done)):
                    m.d.sync += ctr.eq(0)
                    m.next = "OP_NEXT"
                    with m.If(is_readout):
                        m.next = "OUT_WRITE"
                abort_check()
            with m.State("OUT_WRITE"):
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
                    m.next = "OP_NEXT"
                abort_check()

            # ---- ADD: element values of both sources for one (token, group, t)
            with m.State("ADD_READ"):
                # src0's planes, then src1's; the data of read k arrives a cycle later
                m.d.comb += run_cycle.eq(1)
                n0 = src.planes
                in_first = ctr < n0
                rd_plane = Mux(in_first, ctr, ctr - n0)[:6]
                m.d.comb += [act_rd.en.eq(1), act_rd.addr.eq(Mux(
                    in_first, act_addr(src, token, group, rd_plane, tstep),
                    act_addr(src1, token, group, rd_plane, tstep)))]
                m.d.sync += ctr.eq(ctr + 1)
                with m.If(ctr != 0):
                    prev = (ctr - 1)[:16]
                    prev_first = prev < n0
                    prev_plane = Mux(prev_first, prev, prev - n0)[:6]
                    for lane in range(P):
                        bit = act_rd.data[lane]
                        add = Mux(prev_first, plane_value(src, prev_plane, bit),
                                  plane_value(src1, prev_plane, bit))
                        m.d.sync += vals[lane].eq(vals[lane] + add)
                with m.If(ctr == n0 + src1.planes):
                    m.d.sync += [ctr.eq(0), plane.eq(0)]
                    m.next = "VAL_CHECK"
                abort_check()

            # ---- ATTENTION: rows {q, k, v} of head `head`, timestep-major
            if attn is not None:
                reads = 3 * Gd
                rows = Signal(data.ArrayLayout(P, reads))
                with m.State("ATTN_READ"):
                    m.d.comb += [run_cycle.eq(1), a_on.eq(1)]
                    which = ctr >> exact_log2(Gd) if Gd > 1 else ctr
                    gi = ctr[:exact_log2(Gd)] if Gd > 1 else 0
                    grp = head * Gd + gi
                    m.d.comb += [act_rd.en.eq(1), act_rd.addr.eq(Mux(
                        which == 0, act_addr(src, token, grp, 0, tstep),
                        Mux(which == 1, act_addr(src1, token, grp, 0, tstep),
                            act_addr(src2, token, grp, 0, tstep))))]
                    m.d.sync += ctr.eq(ctr + 1)
                    for k in range(reads):
                        with m.If(ctr == k + 1):
                            m.d.sync += rows[k].eq(act_rd.data)
                    with m.If(ctr == reads):
                        m.next = "ATTN_ROW"
                    abort_check()
                with m.State("ATTN_ROW"):
                    m.d.comb += [run_cycle.eq(1), a_on.eq(1), attn.i.valid.eq(1),
                                 attn.i.payload.q.eq(Cat(rows[k] for k in range(Gd))),
                                 attn.i.payload.k.eq(Cat(rows[Gd + k] for k in range(Gd))),
                                 attn.i.payload.v.eq(Cat(rows[2 * Gd + k] for k in range(Gd)))]
                    with m.If(attn.i.ready):
                        m.d.sync += [ctr.eq(0), token.eq(token + 1)]
                        m.next = "ATTN_READ"
                        with m.If(token == src.tokens - 1):
                            m.d.sync += [token.eq(0), tstep.eq(tstep + 1)]
                            with m.If(tstep == T - 1):
                                m.d.sync += tstep.eq(0)
                                m.next = "ATTN_WAIT"
                    abort_check()
                with m.State("ATTN_WAIT"):
                    m.d.comb += [run_cycle.eq(1), a_on.eq(1)]
                    with m.If(a_done):
                        m.d.sync += [a_done.eq(0), head.eq(head + 1)]
                        m.next = "ATTN_READ"
                        with m.If(head == op.heads - 1):
                            m.next = "OP_NEXT"
                    abort_check()

            with m.State("FINISH"):
                m.d.comb += [dev.cmd_done.eq(1)]
                m.d.sync += [run_sats.eq(lif_sats + attn_sats),
                             sats_total.eq(sats_total + lif_sats + attn_sats),
                             inferences.eq(inferences + 1),
                             ops_total.eq(ops_total + header.n_ops),
                             events.eq(engine.events), skipped.eq(engine.skipped),
                             output_size.eq(header.info[4] << 2), state.eq(State.DONE)]
                m.next = "IDLE"

            # ---- a run stopped: soft-reset the cores, flush the engine, answer BAD_INPUT
            with m.State("FAIL"):
                m.d.comb += soft_reset.eq(1)
                m.d.sync += [ctr.eq(0), eng_groups.eq(engine.groups)]
                m.next = "FLUSH"
            with m.State("FLUSH"):
                # a silent `last` beat makes the engine drain (and clear) every group
                m.d.comb += [engine.i.valid.eq(1), engine.i.payload.last.eq(1),
                             engine.i.payload.spikes.eq(0), engine.o.ready.eq(1),
                             lif.o.ready.eq(1)]
                with m.If(engine.i.ready):
                    m.next = "FLUSH_WAIT"
            with m.State("FLUSH_WAIT"):
                m.d.comb += [engine.o.ready.eq(1), lif.o.ready.eq(1)]
                m.d.sync += ctr.eq(ctr + 1)
                with m.If(~engine.busy & (ctr > 16)):
                    m.d.comb += [dev.cmd_done.eq(1), dev.cmd_error.eq(Error.BAD_INPUT)]
                    m.d.sync += [state.eq(State.ERROR), post_done.eq(1)]
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(~seq.ongoing("IDLE"))
        return m


