"""AttentionCore: spiking self-attention (design.md §5) on binary Q, K, V tiles, bit-exact
with `spikeforge.golden.attention` (`ssa`, `statten`, `sdsa`); beat order and cycle model
in `spikeforge.golden.attention_core`.

Input `i`: one token row {q, k, v} (D bits each) per beat, timestep-major, T·N beats per
inference. A block of B timesteps (B = 1 for SSA and SDSA) is loaded, then computed:
  - every token row is stored in `qmem` ({q, v}); only the *useful* key rows (SSA/STAtten:
    k != 0 and v != 0; SDSA: the AND product != 0) are kept, compacted, in `kmem` — silent
    key rows are dropped on arrival and cost no compute cycle (counted as `skipped`);
  - one op per cycle feeds a D-lane accumulator (AND + popcount adders, no multiplier):
      qk_v  (Q Kᵀ) V : per query row, per stored key row j: acc += popcount(q & k_j) · v_j
      q_kv  Q (Kᵀ V) : KV[a] = Σ_j k_j[a] · v_j (D rows to `kvmem`), then per query row,
                       per channel a: acc += q[a] · KV[a]
      sdsa           : acc += product_j over stored rows -> mask LIF; then Q (reference) or
                       V (paper) AND mask, per token row;
    the order is `order` if forced, else qk_v iff B·N <= D (golden `cheaper_order`);
  - finished rows go, `lanes` (P) values a beat, to a LIFArray of N·D neurons (SDSA: the D
    mask neurons are groups 0..D/P-1); the first timestep's beats are LIFOp.FIRST (an update
    from v = 0, as the golden LIF starts), so no reset pass is needed between inferences.
Output `o`: P-lane beats {kind, index (neuron group), spikes, membrane}: ATTN (the LIF's
update of attention neurons), MASK (SDSA mask neurons), GATED (SDSA output spikes; membrane 0).
Beats leave through a FIFO in block RAM (OUT_CREDITS entries). The LIF never stalls (its
`o.ready` is tied high): the serializer sends a beat only while it holds a credit (beats in
flight from the serializer to `o` < OUT_CREDITS, a registered flag), so backpressure on `o`
reaches the pipeline through one register instead of a ready chain.
Mode, block, SDSA variant and order are set at run time through `cfg` between inferences
(a bad value or a write during an inference sets `cfg_error` and is ignored); θ and the leak
through `lif_cfg`. Not double-buffered: a block's rows are loaded, then computed.
"""

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from ..golden.attention import MODES, ORDERS, SDSA_VARIANTS
from .lif_array import LIFArray, LIFOp, config_signature


class AttnMode(enum.Enum, shape=2):
    SSA = 0
    STATTEN = 1
    SDSA = 2


class AttnOrder(enum.Enum, shape=2):
    AUTO = 0
    QK_V = 1
    Q_KV = 2


class SDSAVariant(enum.Enum, shape=1):
    REFERENCE = 0
    PAPER = 1


class OutKind(enum.Enum, shape=2):
    ATTN = 0
    MASK = 1
    GATED = 2


class _Op(enum.Enum, shape=3):
    QK = 0      # qk_v: popcount(q & k_j) into the lanes where v_j is set
    KVB = 1     # q_kv build: k_j[a] into the lanes where v_j is set, row a -> kvmem
    QKV = 2     # q_kv rows: KV[a] into every lane if q[a]
    COL = 3     # sdsa column sum of the stored AND products
    GATE = 4    # sdsa output row: (q or v) AND mask


MODE_OF = dict(zip(MODES, (AttnMode.SSA, AttnMode.STATTEN, AttnMode.SDSA)))
ORDER_OF = {None: AttnOrder.AUTO, "qk_v": AttnOrder.QK_V, "q_kv": AttnOrder.Q_KV}
VARIANT_OF = dict(zip(SDSA_VARIANTS, (SDSAVariant.REFERENCE, SDSAVariant.PAPER)))


def attention_config_signature(max_block: int) -> wiring.Signature:
    return wiring.Signature({
        "we": Out(1),
        "mode": Out(AttnMode),
        "block": Out(range(max_block + 1)),
        "variant": Out(SDSAVariant),
        "order": Out(AttnOrder),
    })


def adder_tree(terms):
    """Balanced sum of a list of values."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k]
                 for k in range(0, len(terms), 2)]
    return terms[0]


class AttentionCore(wiring.Component):
    OUT_CREDITS = 16   # output FIFO entries = beats in flight from the serializer to `o`

    def __init__(self, *, n, d, timesteps=4, max_block=None, lanes=None, width=16,
                 leak_shift=None, theta, reset="subtract", v_reset=0, mode="ssa", block=1,
                 variant="reference", order=None):
        for name, value in (("n", n), ("d", d), ("timesteps", timesteps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        max_block = timesteps if max_block is None else max_block
        lanes = d if lanes is None else lanes
        if not isinstance(max_block, int) or not 1 <= max_block <= timesteps:
            raise ValueError(f"max_block must be an integer in [1, timesteps={timesteps}], "
                             f"got {max_block!r}")
        if not isinstance(lanes, int) or lanes < 1 or d % lanes:
            raise ValueError(f"lanes (P={lanes!r}) must be a positive divisor of d (D={d})")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if variant not in SDSA_VARIANTS:
            raise ValueError(f"variant must be one of {SDSA_VARIANTS}, got {variant!r}")
        if order is not None and order not in ORDERS:
            raise ValueError(f"order must be None or one of {ORDERS}, got {order!r}")
        if mode != "statten":
            block = 1
        if not isinstance(block, int) or not 1 <= block <= max_block or timesteps % block:
            raise ValueError(f"block must divide timesteps={timesteps} and be in "
                             f"[1, max_block={max_block}], got {block!r}")
        self.n, self.d, self.timesteps, self.max_block = n, d, timesteps, max_block
        self.lanes, self.groups = lanes, d // lanes
        self.mode, self.block, self.variant, self.order = mode, block, variant, order
        # Widths: the largest pre-LIF value is max_block·N·D (STAtten); KV entries <= B·N.
        self.acc_width = bits_for(max_block * n * d)
        self.kv_width = bits_for(max_block * n)
        self.lif = LIFArray(n=n * d, lanes=lanes, width=width,
                            current_width=self.acc_width + 1, leak_shift=leak_shift,
                            theta=theta, reset=reset, v_reset=v_reset)
        self.width = width

        self.i_layout = data.StructLayout({"q": unsigned(d), "k": unsigned(d),
                                           "v": unsigned(d)})
        self.o_layout = data.StructLayout({
            "kind": OutKind, "index": unsigned(self.lif.index_width),
            "spikes": data.ArrayLayout(unsigned(1), lanes),
            "membrane": data.ArrayLayout(signed(width), lanes)})
        super().__init__({
            "i": In(stream.Signature(self.i_layout)),
            "o": Out(stream.Signature(self.o_layout)),
            "cfg": In(attention_config_signature(max_block)),
            "lif_cfg": In(config_signature(width)),
            "busy": Out(1),
            "cfg_error": Out(1),
            "busy_cycles": Out(32),
            "events": Out(32),       # key rows stored (useful)
            "skipped": Out(32),      # key rows dropped on arrival (silent)
            "ops": Out(32),          # accumulate ops issued
            "saturated": Out(1),
            "sat_count": Out(32),
            "clear_counters": In(1),
        })

    def outputs_per_inference(self, mode: str) -> int:
        """o beats of one inference (the test benches count them)."""
        per_t = self.n * self.groups + (self.groups if mode == "sdsa" else 0)
        return self.timesteps * per_t

    def elaborate(self, platform):
        m = Module()
        N, D, T, P, G = self.n, self.d, self.timesteps, self.lanes, self.groups
        rows_max = self.max_block * N
        m.submodules.lif = lif = self.lif

        qrow = data.StructLayout({"q": unsigned(D), "v": unsigned(D)})
        krow = data.StructLayout({"k": unsigned(D), "v": unsigned(D)})
        kvrow = data.ArrayLayout(unsigned(self.kv_width), D)
        m.submodules.qmem = qmem = Memory(shape=qrow, depth=rows_max, init=[])
        m.submodules.kmem = kmem = Memory(shape=krow, depth=rows_max, init=[])
        m.submodules.kvmem = kvmem = Memory(shape=kvrow, depth=D, init=[])
        q_rd, q_wr = qmem.read_port(), qmem.write_port()
        k_rd, k_wr = kmem.read_port(), kmem.write_port()
        kv_rd, kv_wr = kvmem.read_port(), kvmem.write_port()

        # --- run-time configuration (applied between inferences only) ---
        mode = Signal(AttnMode, init=MODE_OF[self.mode])
        block = Signal(range(self.max_block + 1), init=self.block)
        variant = Signal(SDSAVariant, init=VARIANT_OF[self.variant])
        forced = Signal(AttnOrder, init=ORDER_OF[self.order])
        use_q_kv = Signal()
        m.d.comb += use_q_kv.eq(Mux(forced == AttnOrder.AUTO, block * N > D,
                                    forced == AttnOrder.Q_KV))
        is_sdsa = mode == AttnMode.SDSA
        active = Signal()            # an inference is in flight (first row .. last output)
        cfg_ok = Signal()
        block_ok = Cat(self.cfg.block == b for b in range(1, self.max_block + 1)
                       if T % b == 0).any()
        known = (self.cfg.mode.as_value() != 3) & (self.cfg.order.as_value() != 3)
        m.d.comb += cfg_ok.eq(~active & known &
                              ((self.cfg.mode != AttnMode.STATTEN) | block_ok))
        # Rows per block and timesteps per block, registered (they gate the input's ready).
        new_block = Mux(self.cfg.mode == AttnMode.STATTEN, self.cfg.block, 1)
        block_rows = Signal(range(rows_max + 1), init=self.block * N)
        ld_left = Signal(range(rows_max + 1), init=self.block * N)   # rows still to load
        ld_zero = Signal()                      # ld_left == 0, registered (blocks >= 1 row)
        with m.If(self.cfg.we):
            with m.If(cfg_ok):
                m.d.sync += [mode.eq(self.cfg.mode), variant.eq(self.cfg.variant),
                             forced.eq(self.cfg.order), block.eq(new_block),
                             block_rows.eq(new_block * N), ld_left.eq(new_block * N),
                             ld_zero.eq(0)]
            with m.Else():
                m.d.sync += self.cfg_error.eq(1)
        wiring.connect(m, wiring.flipped(self.lif_cfg), lif.cfg)

        # --- pipeline registers: S1 (memory data out), S2 (data registered), S3 (addends) ---
        op_layout = data.StructLayout({"op": _Op, "first": 1, "last": 1, "zero": 1, "t0": 1,
                                       "a": unsigned(max(1, ceil_log2(D))),
                                       "base": unsigned(lif.index_width)})
        # Stage data means nothing without its valid flag: no reset (a synchronous reset
        # would add a LUT to every `advance` enable).
        s1_valid, s1 = Signal(), Signal(op_layout, reset_less=True)
        s2_valid, s2 = Signal(), Signal(op_layout, reset_less=True)
        s2_kv = Signal(kvrow, reset_less=True)
        s3_valid, s3 = Signal(), Signal(op_layout, reset_less=True)
        addend_layout = data.ArrayLayout(unsigned(self.acc_width), D)
        s3_add = Signal(addend_layout, reset_less=True)
        acc = Signal(addend_layout, reset_less=True)   # cleared by an op's `first`
        # Issued ops wait in a two-entry queue (q_have0: one, q_have1: two) when the
        # pipeline stalls, so the generator runs on `~q_have1` (a register) and never sees
        # `advance`; an op goes straight to S1 when the queue is empty.
        q_have0, q_have1 = Signal(), Signal()
        pipe_empty = ~q_have0 & ~s1_valid & ~s2_valid & ~s3_valid

        # Serializer: one finished row, emitted P lanes a beat to the LIF (or to `o`).
        e_valid, e_row = Signal(), Signal(addend_layout, reset_less=True)
        e_g, e_base = Signal(range(G), reset_less=True), Signal(lif.index_width, reset_less=True)
        e_to_o = Signal()                     # GATE rows go to `o`, the others to the LIF
        e_t0 = Signal(reset_less=True)        # a row of the first timestep: LIFOp.FIRST
        credit_ok = Signal(init=1)            # a beat may be sent (a register, see below)
        credit_ok_n = Signal()                # its next value
        inflight = Signal(range(self.OUT_CREDITS + 1))  # beats sent, not yet out of `o`
        e_sink_ready = credit_ok & (e_to_o | lif.i.ready)
        e_take = e_valid & e_sink_ready       # a beat leaves the serializer
        e_at_last = Signal()                  # e_g == G - 1
        to_serializer = Signal()              # S3 holds the last op of a row for it
        # The whole pipeline stalls only while a finished row waits for the serializer:
        # advance = ~to_serializer | ~e_valid | (e_at_last & e_sink_ready). It fans out to
        # every stage and memory port, so it is built from flags registered a cycle ahead
        # (from the next-state values below, the credit included): one LUT level before
        # the fan-out.
        blocked, last_to_lif, last_to_o = Signal(), Signal(), Signal()   # last_*: credit ok
        advance = ~blocked | last_to_o | (last_to_lif & lif.i.ready)

        # --- generator: loops over (outer, inner), one op per advancing cycle ---
        count = Signal(range(rows_max + 1))     # useful key rows of this block
        count_m1 = Signal(range(rows_max))      # max(count, 1) - 1: a silent block still
        m.d.comb += count_m1.eq(Mux(count == 0, 0, count - 1))  # costs one (zero) op
        # The loop state means nothing while not `running` (a start sets all of it): no
        # reset, which would sit in the enable path.
        loop_range = range(max(rows_max, D))
        # outer/inner count up to outer_last/inner_last; the loop-end tests compare with
        # the registered last - 1 (no carry chain before the compare) and last == 0.
        outer = Signal(loop_range, reset_less=True)
        outer_lm1 = Signal(loop_range, reset_less=True)
        inner = Signal(loop_range, reset_less=True)
        inner_lm1 = Signal(loop_range, reset_less=True)
        inner_single = Signal(reset_less=True)  # inner_last == 0
        inner_single_row = Signal(reset_less=True)  # and the op's outer counts token rows
        row_base = Signal(lif.index_width, reset_less=True)  # token * G of the row `outer`
        tok = Signal(range(N), reset_less=True)
        issue = Signal()                        # the generator issues an op this cycle
        gen_op = Signal(_Op, reset_less=True)
        t_done = Signal(range(T + 1))           # timesteps finished before this block
        ld_addr = Signal(range(rows_max + 1))
        mask_seen = Signal(range(G + 1))
        mask = Signal(D)

        # Loop-end tests are registered flags, computed a step ahead, off the issue path.
        running, inner_first = Signal(), Signal(reset_less=True)
        row_t0 = Signal(reset_less=True)        # the row `outer` is of timestep 0
        inner_done, outer_done, tok_done = (Signal(reset_less=True) for _ in range(3))
        row_step = Signal(reset_less=True)      # inner_done and outer counts token rows

        # A loop starts (the FSM decides a cycle ahead: `start` and its operands are
        # registers) or steps (an op issues): mutually exclusive, so `running` alone picks
        # the next values, and the enables are (issue | start), both short.
        start = Signal()
        start_op = Signal(_Op, reset_less=True)
        start_outer_last, start_inner_last = (Signal(loop_range, reset_less=True)
                                              for _ in range(2))
        m.d.sync += start.eq(0)

        def start_loop(op, outer_n_minus_1, inner_n_minus_1):
            m.d.sync += [start.eq(1), start_op.eq(op), start_outer_last.eq(outer_n_minus_1),
                         start_inner_last.eq(inner_n_minus_1)]

        m.d.comb += issue.eq(running & ~q_have1)
        loop_done = inner_done & outer_done
        with m.If(issue | start):
            with m.If(running):
                with m.If(row_step):                 # (implies inner_done)
                    with m.If(tok_done):
                        m.d.sync += [tok.eq(0), row_base.eq(0), tok_done.eq(N == 1),
                                     row_t0.eq(0)]
                    with m.Else():
                        m.d.sync += [tok.eq(tok + 1), row_base.eq(row_base + G),
                                     tok_done.eq(tok == N - 2)]
                with m.If(inner_done):
                    m.d.sync += [inner.eq(0), outer.eq(outer + 1), inner_first.eq(1),
                                 inner_done.eq(inner_single), row_step.eq(inner_single_row),
                                 outer_done.eq(outer == outer_lm1)]
                    with m.If(outer_done):
                        m.d.sync += running.eq(0)
                with m.Else():
                    m.d.sync += [inner.eq(inner + 1), inner_first.eq(0),
                                 inner_done.eq(inner == inner_lm1),
                                 row_step.eq((inner == inner_lm1) & (gen_op != _Op.KVB))]
            with m.Else():
                m.d.sync += [gen_op.eq(start_op), outer.eq(0), inner.eq(0), tok.eq(0),
                             row_base.eq(0), outer_lm1.eq(start_outer_last - 1),
                             inner_lm1.eq(start_inner_last - 1),
                             inner_single.eq(start_inner_last == 0),
                             inner_single_row.eq((start_inner_last == 0) &
                                                 (start_op != _Op.KVB)),
                             running.eq(1), inner_first.eq(1),
                             inner_done.eq(start_inner_last == 0),
                             row_step.eq((start_inner_last == 0) & (start_op != _Op.KVB)),
                             outer_done.eq(start_outer_last == 0), tok_done.eq(N == 1),
                             row_t0.eq(t_done == 0)]

        # The op and its memory addresses: issued now (gen) or the queue's head (q0).
        issued_layout = data.StructLayout({"op": op_layout, "q_addr": loop_range,
                                           "k_addr": loop_range, "kv_addr": loop_range})
        gen = Signal(issued_layout)
        q0, q1 = Signal(issued_layout, reset_less=True), Signal(issued_layout, reset_less=True)
        m.d.comb += [gen.op.op.eq(gen_op), gen.op.first.eq(inner_first),
                     gen.op.last.eq(inner_done), gen.op.zero.eq(count == 0),
                     gen.op.t0.eq(row_t0), gen.op.a.eq(Mux(gen_op == _Op.KVB, outer, inner)),
                     gen.op.base.eq(Mux(gen_op == _Op.COL, 0, row_base)),
                     gen.q_addr.eq(outer), gen.k_addr.eq(Mux(gen_op == _Op.QKV, 0, inner)),
                     gen.kv_addr.eq(inner)]
        pop = advance & q_have0
        with m.If(pop):
            with m.If(q_have1):                 # full: the generator is waiting
                m.d.sync += [q0.eq(q1), q_have1.eq(0)]
            with m.Elif(issue):
                m.d.sync += q0.eq(gen)
            with m.Else():
                m.d.sync += q_have0.eq(0)
        with m.Elif(issue & (q_have0 | ~advance)):
            with m.If(q_have0):
                m.d.sync += [q1.eq(gen), q_have1.eq(1)]
            with m.Else():
                m.d.sync += [q0.eq(gen), q_have0.eq(1)]
        src = Signal(issued_layout)
        m.d.comb += src.eq(Mux(q_have0, q0, gen))
        # Memory read addresses follow the op; reads advance with the pipeline.
        m.d.comb += [q_rd.addr.eq(src.q_addr), k_rd.addr.eq(src.k_addr),
                     kv_rd.addr.eq(src.kv_addr), q_rd.en.eq(advance), k_rd.en.eq(advance),
                     kv_rd.en.eq(advance)]
        with m.If(advance):
            m.d.sync += [s1_valid.eq(q_have0 | issue), s1.eq(src.op)]

        # Input rows: registered on arrival, written to memory the cycle after.
        accept = self.i.valid & self.i.ready
        r_valid, row = Signal(), Signal(self.i_layout)
        useful, r_product = Signal(), Signal(D)   # the key row is stored; SDSA's AND product
        arriving = self.i.payload
        product = Mux(variant == SDSAVariant.REFERENCE, arriving.k & arriving.v,
                      arriving.q & arriving.k)
        m.d.sync += [r_valid.eq(accept), row.eq(arriving), r_product.eq(product),
                     useful.eq(Mux(is_sdsa, product.any(),
                                   arriving.k.any() & arriving.v.any()))]
        with m.If(accept):
            m.d.sync += [ld_left.eq(ld_left - 1), ld_zero.eq(ld_left == 1)]
        m.d.comb += [q_wr.addr.eq(ld_addr), q_wr.data.q.eq(row.q), q_wr.data.v.eq(row.v),
                     q_wr.en.eq(r_valid),
                     k_wr.addr.eq(count), k_wr.data.k.eq(Mux(is_sdsa, r_product, row.k)),
                     k_wr.data.v.eq(row.v), k_wr.en.eq(r_valid & useful)]
        with m.If(r_valid):
            m.d.sync += ld_addr.eq(ld_addr + 1)
            with m.If(useful):
                m.d.sync += count.eq(count + 1)
        # After an inference's last block, a new one waits until all its outputs are out.
        wait_drain = Signal()
        with m.If(~active):
            m.d.sync += wait_drain.eq(0)

        block_steps = Mux(is_sdsa, 1, block)    # timesteps per block
        last_block = t_done + block_steps == T
        with m.FSM(init="LOAD"):
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(~ld_zero & ~wait_drain)
                with m.If(ld_zero & ~r_valid):
                    with m.If(is_sdsa):
                        start_loop(_Op.COL, 0, count_m1)
                        m.d.sync += mask_seen.eq(0)
                    with m.Elif(use_q_kv):
                        start_loop(_Op.KVB, D - 1, count_m1)
                    with m.Else():
                        start_loop(_Op.QK, block_rows - 1, count_m1)
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(issue & loop_done):
                    with m.Switch(gen_op):
                        with m.Case(_Op.KVB):
                            m.next = "WAIT_KV"
                        with m.Case(_Op.COL):
                            m.next = "WAIT_MASK"
                        with m.Default():
                            m.next = "BLOCK_END"
            with m.State("WAIT_KV"):          # kvmem written before its rows are read
                with m.If(pipe_empty):
                    start_loop(_Op.QKV, block_rows - 1, D - 1)
                    m.next = "RUN"
            with m.State("WAIT_MASK"):        # the mask LIF's beats have all come out
                with m.If(mask_seen == G):
                    start_loop(_Op.GATE, N - 1, 0)
                    m.next = "RUN"
            with m.State("BLOCK_END"):        # reads done before the next block's writes
                with m.If(pipe_empty):
                    m.d.sync += [ld_addr.eq(0), count.eq(0), ld_left.eq(block_rows),
                                 ld_zero.eq(0)]
                    with m.If(last_block):
                        m.d.sync += [t_done.eq(0), wait_drain.eq(1)]
                    with m.Else():
                        m.d.sync += t_done.eq(t_done + block_steps)
                    m.next = "LOAD"

        # --- S1 -> S2: register the memory outputs (block RAM clock-to-out is slow), the
        # popcount of q & k per nibble of channels (two LUT levels), the channel-a bits
        # (a D:1 mux) and, per lane, which addend S3 gets (one LUT from the memory data):
        # the S2 -> S3 step is then an AND-OR, no decode of the op ---
        nibbles = (D + 3) // 4
        s2_nibbles = Signal(data.ArrayLayout(unsigned(3), nibbles), reset_less=True)
        # k[a] (KV build), q[a] (Q (KᵀV) rows)
        k_bit, q_bit = Signal(reset_less=True), Signal(reset_less=True)
        lane_bits = data.ArrayLayout(unsigned(1), D)
        sel_qk = Signal(lane_bits, reset_less=True)    # QK: the score in this lane
        sel_kvb = Signal(lane_bits, reset_less=True)   # KVB: k[a] in this lane
        one_bit = Signal(lane_bits, reset_less=True)   # COL / GATE: a one-bit addend
        is_qkv = Signal(reset_less=True)
        both = q_rd.data.q & k_rd.data.k
        gate_src = Mux(variant == SDSAVariant.REFERENCE, q_rd.data.q, q_rd.data.v) & mask
        with m.If(advance):
            m.d.sync += [s2_valid.eq(s1_valid), s2.eq(s1), s2_kv.eq(kv_rd.data),
                         k_bit.eq(k_rd.data.k.bit_select(s1.a, 1)),
                         q_bit.eq(q_rd.data.q.bit_select(s1.a, 1)),
                         is_qkv.eq(s1.op == _Op.QKV)]
            for p in range(nibbles):
                m.d.sync += s2_nibbles[p].eq(adder_tree(both[c] for c in range(4 * p,
                                                                             min(4 * p + 4, D))))
            live = ~s1.zero
            for lane in range(D):
                v_set = k_rd.data.v[lane] & live
                m.d.sync += [sel_qk[lane].eq((s1.op == _Op.QK) & v_set),
                             sel_kvb[lane].eq((s1.op == _Op.KVB) & v_set),
                             one_bit[lane].eq(Mux(s1.op == _Op.COL, k_rd.data.k[lane] & live,
                                                  (s1.op == _Op.GATE) & gate_src[lane]))]

        # --- S2 -> S3: the addend of every lane (AND + popcount, no multiplier) ---
        score = Signal(range(D + 1))
        m.d.comb += score.eq(adder_tree(s2_nibbles[p] for p in range(nibbles)))
        use_kv = Signal()
        m.d.comb += use_kv.eq(is_qkv & q_bit)
        with m.If(advance):
            m.d.sync += [s3_valid.eq(s2_valid), s3.eq(s2)]
            for lane in range(D):
                m.d.sync += s3_add[lane].eq(Mux(sel_qk[lane], score, 0)
                                            | Mux(use_kv, s2_kv[lane], 0)
                                            | (sel_kvb[lane] & k_bit) | one_bit[lane])

        # --- S3: accumulate; a finished row goes to kvmem or the serializer ---
        acc_next = Signal(addend_layout)
        for lane in range(D):
            m.d.comb += acc_next[lane].eq(Mux(s3.first, 0, acc[lane]) + s3_add[lane])
        with m.If(advance & s3_valid):
            m.d.sync += acc.eq(acc_next)
        kv_word = Signal(kvrow)
        for lane in range(D):
            m.d.comb += kv_word[lane].eq(acc_next[lane])   # <= B·N, proven by the width
        m.d.comb += [kv_wr.addr.eq(s3.a), kv_wr.data.eq(kv_word),
                     kv_wr.en.eq(advance & s3_valid & s3.last & (s3.op == _Op.KVB))]

        # --- serializer -> LIF input (or `o` for GATE rows) ---
        to_ser_n, e_valid_n, e_at_last_n, e_to_o_n = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [to_ser_n.eq(to_serializer), e_valid_n.eq(e_valid),
                     e_at_last_n.eq(e_at_last), e_to_o_n.eq(e_to_o)]
        with m.If(advance):
            m.d.comb += to_ser_n.eq(s2_valid & s2.last & (s2.op != _Op.KVB))
        with m.If(advance & to_serializer):
            m.d.comb += [e_valid_n.eq(1), e_at_last_n.eq(G == 1),
                         e_to_o_n.eq(s3.op == _Op.GATE)]
            m.d.sync += [e_row.eq(acc_next), e_g.eq(0), e_base.eq(s3.base), e_t0.eq(s3.t0)]
        with m.Elif(e_take):
            m.d.comb += [e_valid_n.eq(~e_at_last), e_at_last_n.eq(e_g == G - 2)]
            m.d.sync += e_g.eq(e_g + 1)
        m.d.sync += [to_serializer.eq(to_ser_n), e_valid.eq(e_valid_n),
                     e_at_last.eq(e_at_last_n), e_to_o.eq(e_to_o_n),
                     blocked.eq(to_ser_n & e_valid_n),
                     last_to_lif.eq(e_valid_n & e_at_last_n & ~e_to_o_n & credit_ok_n),
                     last_to_o.eq(e_valid_n & e_at_last_n & e_to_o_n & credit_ok_n)]
        slice_ = data.ArrayLayout(unsigned(self.acc_width), P)
        e_slice = Signal(slice_)
        m.d.comb += e_slice.eq(e_row.as_value().word_select(e_g, self.acc_width * P))
        m.d.comb += [lif.i.valid.eq(e_valid & ~e_to_o & credit_ok),
                     lif.i.payload.op.eq(Mux(e_t0, LIFOp.FIRST, LIFOp.UPDATE)),
                     lif.i.payload.index.eq(e_base + e_g)]
        for lane in range(P):
            m.d.comb += lif.i.payload.current[lane].eq(e_slice[lane])

        # --- output: LIF updates or gated rows, through a FIFO in block RAM. The LIF runs
        # without backpressure (its output never stalls it); instead every beat sent into it
        # (or a gated row's beat, which goes to the FIFO directly) takes a credit, returned
        # when the beat leaves `o`. OUT_CREDITS covers the round trip (serializer -> LIF ->
        # FIFO -> o -> credit), so the serializer runs on a registered "credit available" and
        # never sees `o.ready` or a ready chain ---
        # Gated rows and LIF outputs never overlap: gating starts once the mask beats are
        # all out, and the next mask row enters the serializer after the last gated row.
        gate_out = e_valid & e_to_o
        m.d.comb += lif.o.ready.eq(1)            # the LIF never stalls (see above)
        beat = Signal(self.o_layout)
        with m.If(gate_out):
            m.d.comb += [beat.kind.eq(OutKind.GATED), beat.index.eq(e_base + e_g)]
            for lane in range(P):
                m.d.comb += beat.spikes[lane].eq(e_slice[lane][0])
        with m.Else():
            m.d.comb += [beat.kind.eq(Mux(is_sdsa, OutKind.MASK, OutKind.ATTN)),
                         beat.index.eq(lif.o.payload.index),
                         beat.spikes.eq(lif.o.payload.spikes),
                         beat.membrane.eq(lif.o.payload.membrane)]
        depth = self.OUT_CREDITS
        m.submodules.omem = omem = Memory(shape=self.o_layout, depth=depth, init=[])
        f_wr, f_rd = omem.write_port(), omem.read_port()
        # the beat and its write are registered by the serializer and the LIF, so the FIFO
        # (placed by its reader) is reached by a route alone, not by their logic as well
        f_write, f_beat = Signal(), Signal(self.o_layout)
        m.d.sync += [f_write.eq(lif.o.valid | (gate_out & e_take)), f_beat.eq(beat)]
        wp, rp = Signal(range(depth)), Signal(range(depth))
        f_level, f_nonempty = Signal(range(depth + 1)), Signal()   # entries in the memory
        m_valid = Signal()                      # f_rd.data holds an entry (stage M)
        m_adv = ~m_valid | ~self.o.valid | self.o.ready
        f_read = f_nonempty & m_adv
        m.d.comb += [f_wr.addr.eq(wp), f_wr.data.eq(f_beat), f_wr.en.eq(f_write),
                     f_rd.addr.eq(rp), f_rd.en.eq(f_read)]
        with m.If(f_write):
            m.d.sync += wp.eq(wp + 1)
        with m.If(f_read):
            m.d.sync += rp.eq(rp + 1)
        f_level_n = Signal(range(depth + 1))
        m.d.comb += f_level_n.eq(f_level + f_write - f_read)
        m.d.sync += [f_level.eq(f_level_n), f_nonempty.eq(f_level_n != 0)]
        with m.If(m_adv):
            m.d.sync += m_valid.eq(f_read)
        with m.If(~self.o.valid | self.o.ready):
            m.d.sync += [self.o.valid.eq(m_valid), self.o.payload.eq(f_rd.data)]
        out_take = self.o.valid & self.o.ready
        # Credits: beats sent and not yet out; a register says whether one more may go.
        inflight_n = Signal(range(depth + 2))
        m.d.comb += inflight_n.eq(inflight + e_take - out_take)
        m.d.comb += credit_ok_n.eq(inflight_n < depth)
        m.d.sync += [inflight.eq(inflight_n), credit_ok.eq(credit_ok_n)]
        with m.If(lif.o.valid & is_sdsa):
            m.d.sync += [mask.word_select(lif.o.payload.index, P).eq(
                lif.o.payload.spikes.as_value()), mask_seen.eq(mask_seen + 1)]

        # --- inference tracking and counters ---
        out_count = Signal(range(self.outputs_per_inference("sdsa") + 1))
        expected = Mux(is_sdsa, self.outputs_per_inference("sdsa"),
                       self.outputs_per_inference("ssa"))
        with m.If(accept & ~active):
            m.d.sync += active.eq(1)
        with m.If(out_take):
            with m.If(out_count == expected - 1):
                m.d.sync += [out_count.eq(0), active.eq(0)]
            with m.Else():
                m.d.sync += out_count.eq(out_count + 1)
        m.d.comb += self.busy.eq(active)
        m.d.comb += [self.saturated.eq(lif.saturated), self.sat_count.eq(lif.sat_count),
                     lif.clear_flags.eq(self.clear_counters)]
        with m.If(self.clear_counters):
            m.d.sync += [self.busy_cycles.eq(0), self.events.eq(0), self.skipped.eq(0),
                         self.ops.eq(0), self.cfg_error.eq(0)]
        with m.Else():
            with m.If(active):
                m.d.sync += self.busy_cycles.eq(self.busy_cycles + 1)
            with m.If(r_valid & useful):
                m.d.sync += self.events.eq(self.events + 1)
            with m.If(r_valid & ~useful):
                m.d.sync += self.skipped.eq(self.skipped + 1)
            with m.If(issue):
                m.d.sync += self.ops.eq(self.ops + 1)
        return m
