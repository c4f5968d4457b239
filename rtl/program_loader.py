"""ProgramLoader: the accelerator's LOAD (design.md §8), bit-exact with
`spikeforge.golden.program_loader.program_loader` (the spec: tables, layouts, reason codes).

After a `start` pulse the loader reads the program memory one byte per cycle through the
caller's synchronous read port (`prog_addr`/`prog_en` -> `prog_data` a cycle later). For
ECP5 timing `prog_addr`/`prog_en` come straight from registers (a byte issued in cycle t is
addressed in t+1) and `prog_data` (from a block RAM, ~5.8 ns clock-to-out) feeds only a
register, `byte_q`, so the byte is used in t+3: the CRC, the header/table captures and the
element assembly see `byte_q` with its tags `q_*` (the issue tags `p_*`, then `a_*`). Every
check is a registered flag (compares of wide fields registered a stage earlier, derived
header quantities such as blob_start in registers of their own); a check chain loads its
flags into a shift register and decides one a cycle from its bit 0. A copy is a register
walker (the byte address stepped, its counters' compares kept as registered flags) feeding an
issue stage, where the out-of-blob compare is made; an element is assembled into `value_q`,
range-checked into `r_bad` a cycle later and lane-packed (or refused) from there.
  1. CRC-32 (zlib) over `size` bytes (the CRC field counted as zero), capturing the header;
  2. header checks (magic, version, size, CRC, T and table counts of this build);
  3. the buffer table: checks, activation placement, one `buf_en` write per buffer;
  4. per op: its 48-byte descriptor, the checks one per cycle (the golden order inside an
     op), one `op_en` write, then its weights (`w_en`, lane-packed) and biases (`b_en`),
     every value range-checked as it is copied;
  5. the output checks; `done` (with `error` and `reason` = a golden `Reason` on refusal).
On refusal nothing is promised about the tables. `header` is valid from `done` without
`error`. For an image with a single fault the code equals the golden one; with several, the
RTL reports the first it meets (refusal itself always equals the golden's).
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from ..golden.compile import HEADER, MAGIC, VERSION, BufKind, Op
from ..golden.lif import signed_range
from ..golden.program_loader import AcceleratorConfig, Reason

OP_BYTES = 48
BUF_BYTES = 8
OP_USED_BYTES = 42          # 42..47 reserved


def _u(n):
    return unsigned(bits_for(n))


def header_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({
        "timesteps": 16, "n_buffers": _u(cfg.max_buffers), "n_ops": _u(cfg.max_ops),
        "input_buffer": _u(cfg.max_buffers - 1), "output_buffer": _u(cfg.max_buffers - 1),
        "info": data.ArrayLayout(16, 5),   # LOAD reply: T, in tokens/channels, out tokens/channels
    })


def buffer_entry_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({
        "tokens": _u(cfg.max_tokens), "channels": _u(cfg.max_channels), "kind": 2, "bits": 8,
        "planes": 8, "cgroups": _u(-(-cfg.max_channels // cfg.lanes)),
        "base": _u(cfg.act_words),
    })


def op_entry_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    W, P = cfg.width, cfg.lanes
    nmax = max(cfg.max_neurons, cfg.max_readout)
    buf = _u(cfg.max_buffers - 1)
    return data.StructLayout({
        "op": 3, "n_src": 2, "src0": buf, "src1": buf, "src2": buf, "dst": buf, "flags": 3,
        "mode": 2, "variant": 1, "block": _u(cfg.attn_max_block), "n_in": _u(cfg.max_in),
        "n_out": _u(nmax), "repeat": _u(min(255, cfg.max_neurons)), "heads": 8, "leak": 8,
        "theta": signed(W), "v_reset": signed(W), "v0": signed(W), "acc_shift": signed(8),
        "cur_width": 6,
        "bias_rows": _u(cfg.max_tokens), "weight_bits": _u(cfg.weight_width),
        "groups": _u(-(-nmax // P)), "ngroups": _u(-(-nmax // P)),
        "egroups": _u(-(-nmax // cfg.eng_lanes)),
        "wbase": _u(cfg.weight_words), "bbase": _u(cfg.bias_words),
    })


def _crc32_byte(m, crc, byte):
    """One reflected CRC-32 (0xEDB88320) byte step, unrolled: an XOR network. Each bit step
    is its own signal: as one nested expression every step would copy the previous one
    three times (3^8 terms in the generated Verilog and in every simulator cycle)."""
    c = crc ^ byte
    for k in range(8):
        step = Signal(32, name=f"crc_step{k}")
        m.d.comb += step.eq(Mux(c[0], (c >> 1) ^ 0xEDB88320, c >> 1))
        c = step
    return c


class ProgramLoader(wiring.Component):
    """LOAD of a program image for one `AcceleratorConfig` build (see module docs)."""

    def __init__(self, cfg: AcceleratorConfig):
        if not isinstance(cfg, AcceleratorConfig):
            raise ValueError(f"cfg must be an AcceleratorConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        P = cfg.lanes
        super().__init__({
            "start": In(1), "size": In(32),
            "done": Out(1), "error": Out(1), "reason": Out(8),
            "prog_addr": Out(range(cfg.program_bytes)), "prog_en": Out(1), "prog_data": In(8),
            "w_addr": Out(range(cfg.weight_words)), "w_en": Out(1),
            "w_data": Out(data.ArrayLayout(signed(cfg.weight_width), cfg.eng_lanes)),
            "b_addr": Out(range(cfg.bias_words)), "b_en": Out(1),
            "b_data": Out(data.ArrayLayout(signed(cfg.bias_width), P)),
            "buf_addr": Out(range(cfg.max_buffers)), "buf_en": Out(1),
            "buf_data": Out(buffer_entry_layout(cfg)),
            "op_addr": Out(range(cfg.max_ops)), "op_en": Out(1),
            "op_data": Out(op_entry_layout(cfg)),
            "header": Out(header_layout(cfg)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        P, W, T = cfg.lanes, cfg.width, cfg.timesteps
        E = cfg.eng_lanes        # weight words: E lanes; bias words: P
        lp, le = ceil_log2(P), ceil_log2(E)
        m = Module()

        size = Signal(32)
        addr = Signal(34)                     # next byte to read (table phases, CRC)
        crc = Signal(32)
        hdr = Signal(HEADER.size * 8)
        braw = Signal(BUF_BYTES * 8)
        oraw = Signal(OP_USED_BYTES * 8)
        cnt = Signal(6)                       # bytes issued in a fetch
        # issue tags: p_*: the address is in the prog_addr register this cycle; a_*: the byte is on
        # prog_data; q_*: the byte is in byte_q, where every consumer takes it
        p_valid, a_valid, q_valid = Signal(), Signal(), Signal()
        p_pos, a_pos, q_pos = Signal(6), Signal(6), Signal(6)
        p_zero, a_zero, q_zero = Signal(), Signal(), Signal()   # CRC: byte of the CRC field
        p_hdr, a_hdr, q_hdr = Signal(), Signal(), Signal()
        p_pad, a_pad, q_pad = Signal(), Signal(), Signal()      # copy: padding slot (no read)
        p_last, a_last, q_last = Signal(), Signal(), Signal()   # copy: last byte of element
        p_k, a_k, q_k = Signal(2), Signal(2), Signal(2)         # copy: byte index in element
        byte_q = Signal(8, reset_less=True)   # a plain register: no reset mux either
        prog_addr = Signal.like(self.prog_addr, reset_less=True)
        prog_en = Signal()
        m.d.comb += [self.prog_addr.eq(prog_addr), self.prog_en.eq(prog_en)]
        reason = Signal(8)
        m.d.comb += self.reason.eq(reason)
        m.d.sync += [p_valid.eq(0), prog_en.eq(0), self.w_en.eq(0), self.b_en.eq(0),
                     self.buf_en.eq(0), self.op_en.eq(0)]
        # the only use of prog_data: a plain register (no logic from the block RAM output)
        m.d.sync += byte_q.eq(self.prog_data)
        for p_, a, q in ((p_valid, a_valid, q_valid), (p_pos, a_pos, q_pos),
                         (p_zero, a_zero, q_zero), (p_hdr, a_hdr, q_hdr),
                         (p_pad, a_pad, q_pad), (p_last, a_last, q_last), (p_k, a_k, q_k)):
            m.d.sync += [a.eq(p_), q.eq(a)]

        def hfield(off, n):
            return hdr[off * 8:(off + n) * 8]
        magic, version, h_T = hfield(0, 4), hfield(4, 2), hfield(6, 2)
        h_nb, h_no, h_in, h_out = hfield(8, 2), hfield(10, 2), hfield(12, 1), hfield(13, 1)
        h_blob, h_crc = hfield(16, 4), hfield(20, 4)
        # derived header quantities, registered (free running: the header is final before
        # the header checks, and these registers settle in time, see H_* below)
        blob_start, blob_end = Signal(34), Signal(34)
        m.d.sync += [blob_start.eq(HEADER.size + (h_nb << 3) + (h_no << 5) + (h_no << 4)),
                     blob_end.eq(blob_start + h_blob)]

        def issue():
            """Issue the fetch byte at `addr` (registered: prog_addr follows `addr`, below)."""
            m.d.sync += [prog_en.eq(1), p_valid.eq(1)]

        def flag(cond, name):
            """`cond` as a register: a check reads it a cycle after its inputs settle."""
            f = Signal(name=name)
            m.d.sync += f.eq(cond)
            return f

        # ---------------------------------------------------------------- buffer fields
        b_tokens, b_channels = braw[0:16], braw[16:32]
        b_kind, b_bits = braw[32:40], braw[40:48]
        planes = Signal(8)
        m.d.comb += planes.eq(Mux(b_kind == BufKind.SPIKES, 1,
                              Mux(b_kind == BufKind.SIGNED_SPIKES, 2,
                              Mux(b_kind == BufKind.UINT, b_bits, 0))))
        cgroups = Signal(16)
        m.d.comb += cgroups.eq((b_channels + (P - 1)) >> lp)
        info_layout = data.StructLayout({"tokens": _u(cfg.max_tokens),
                                         "channels": _u(cfg.max_channels), "kind": 2,
                                         "planes": 8})
        m.submodules.info = info = Memory(shape=info_layout, depth=cfg.max_buffers, init=[])
        info_w, info_r = info.write_port(), info.read_port()
        buf_i = Signal(range(cfg.max_buffers + 1))
        op_i = Signal(range(cfg.max_ops + 1))
        act_next = Signal(bits_for(cfg.act_words) + 1)
        written = Signal(cfg.max_buffers)
        # one shared serial multiplier (shift-add, `mb` bits per cycle): small and registered
        ma, mp = Signal(34), Signal(34)
        mb = Signal(16)
        mstep = Signal(5)

        def mul_step(iterations, then):
            m.d.sync += [mp.eq(mp + Mux(mb[0], ma, 0)), ma.eq(ma << 1), mb.eq(mb >> 1),
                         mstep.eq(mstep + 1)]
            with m.If(mstep == iterations - 1):
                m.d.sync += mstep.eq(0)
                m.next = then

        def mul_start(a, b):
            m.d.sync += [ma.eq(a), mb.eq(b), mp.eq(0), mstep.eq(0)]

        words = Signal(34)
        info_in_tok, info_in_ch = Signal(16), Signal(16)
        out_kind = Signal(8)
        readouts = Signal(2)

        # ---------------------------------------------------------------- op fields
        def ob(i, n=1):
            return oraw[i * 8:(i + n) * 8]
        o_op, o_nsrc = ob(0), ob(1)
        o_src = [ob(2), ob(3), ob(4)]
        o_dst, o_flags, o_mode = ob(5), ob(6), ob(7)
        o_nin, o_nout = ob(8, 2), ob(10, 2)
        o_repeat, o_heads, o_block, o_variant = ob(12), ob(13), ob(14), ob(15)
        o_leak, o_width, o_curw, o_wbits = ob(16), ob(17), ob(18), ob(19)
        o_theta, o_vreset, o_v0 = ob(20, 4).as_signed(), ob(24, 4).as_signed(), ob(28, 4).as_signed()
        o_waddr, o_baddr = ob(32, 4), ob(36, 4)
        o_brows_raw, o_acc = ob(40), ob(41).as_signed()
        is_lin, is_att = o_op == Op.LINEAR, o_op == Op.ATTENTION
        is_add, is_ro = o_op == Op.ADD, o_op == Op.READOUT
        is_mat, has_lif = is_lin | is_ro, is_lin | is_att
        o_brows = Mux(o_flags[2], o_brows_raw, 0)
        arity = Mux(is_att, 3, Mux(is_add, 2, 1))
        used = [Const(1), o_nsrc >= 2, o_nsrc >= 3]
        lo_w, hi_w = signed_range(W)
        neurons = Signal(24)
        bi = [Signal(info_layout, name=f"bi{j}") for j in range(4)]   # src0..2, dst infos
        dinfo = bi[3]
        rd_i = Signal(3)
        sel = [Signal.like(o_dst, name=f"rd_sel{j}") for j in range(4)]   # info addresses,
        m.d.sync += [sel[j].eq(Mux(used[j], o_src[j], 0)) for j in range(3)]   # registered
        m.d.sync += sel[3].eq(o_dst)
        rd_addr = Signal.like(o_dst)          # the info read address: a register (O_MUL, O_READ)
        m.d.comb += info_r.addr.eq(rd_addr)

        # compares of descriptor fields, registered before the check flags that use them
        # (the descriptor is final 6 cycles before the first check)
        leak_bad = flag((o_leak != 0xFF) & (o_leak >= W), "leak_bad")
        theta_bad = flag((o_theta <= 0) | (o_theta > hi_w), "theta_bad")
        vr_bad = flag((o_vreset < lo_w) | (o_vreset > hi_w), "vr_bad")
        # the build's LIFs reset to 0: a reset-to-v_reset op with another v_reset is refused
        vreset_set = flag(o_vreset != 0, "vreset_set")
        v0_bad = flag((o_v0 < lo_w) | (o_v0 > hi_w), "v0_bad")
        waddr_bad = flag(o_waddr > h_blob, "waddr_bad")
        baddr_bad = flag(o_baddr > h_blob, "baddr_bad")
        lif_invalid = (o_width < 2) | ((o_width == W) &
                                       (leak_bad | theta_bad | vr_bad | (o_curw < 2)))
        reset_zero = o_flags[1]
        signed_f = o_flags[0]
        blocks_ok = [b for b in range(1, cfg.attn_max_block + 1) if T % b == 0]
        block_ok = Const(0)
        for b in blocks_ok:
            block_ok = block_ok | (o_block == b)
        src_kind_int = Const(0)
        src_unwritten = Const(0)
        for j in range(3):
            src_kind_int = src_kind_int | (used[j] & (bi[j].kind == BufKind.INT))
            src_unwritten = src_unwritten | (used[j] & ~(written >> o_src[j])[0])
        no_core = cfg.attn_tokens is None
        attn_tokens = cfg.attn_tokens or 0
        att_ch = Signal(16)                   # heads * attn_dim, registered (o_heads is final
        m.d.sync += att_ch.eq(o_heads * cfg.attn_dim)   # long before the op checks)
        checks_a = [
            (~((o_op >= 1) & (o_op <= 4)), Reason.OPCODE),
            (o_nsrc > 3, Reason.SOURCES),
            ((o_mode > 2) | (o_variant > 1), Reason.ATTN_MODE),
            (has_lif & lif_invalid, Reason.LIF),
            (has_lif & (o_width != W), Reason.LIF_BUILD),
            (o_nsrc != arity, Reason.SOURCES),
            ((o_dst >= h_nb) | (o_src[0] >= h_nb) | (used[1] & (o_src[1] >= h_nb)) |
             (used[2] & (o_src[2] >= h_nb)), Reason.BUFFER_ID),
            (is_att & Const(int(no_core)), Reason.NO_ATTENTION),
        ]
        ch = [x.channels for x in bi]
        tk = [x.tokens for x in bi]
        checks_b = [
            (~is_ro & ((tk[0] != tk[3]) | (used[1] & (tk[1] != tk[3])) |
                       (used[2] & (tk[2] != tk[3]))), Reason.SHAPE),
            (is_mat & ((ch[0] != o_nin) | (ch[3] != neurons)), Reason.SHAPE),
            (is_mat & (o_brows != 0) & (o_brows != 1) & (o_brows != tk[3]), Reason.BIAS_ROWS),
            (is_att & ((ch[0] != ch[3]) | (ch[1] != ch[3]) | (ch[2] != ch[3]) |
                       (o_heads == 0) | (ch[3] != att_ch) |
                       (tk[3] != attn_tokens)), Reason.ATTN_SHAPE),
            (is_att & ~block_ok, Reason.ATTN_BLOCK),
            (is_att & ((reset_zero != int(cfg.attn_reset == "zero")) | signed_f |
                       (reset_zero & vreset_set)), Reason.LIF_BUILD),
            (is_add & ((ch[0] != ch[3]) | (ch[1] != ch[3])), Reason.SHAPE),
            (src_kind_int, Reason.INT_READ),
            (src_unwritten, Reason.UNWRITTEN),
            ((dinfo.kind == BufKind.INT) != is_ro, Reason.INT_WRITE),
            (is_lin & ((reset_zero != int(cfg.reset == "zero")) |
                       (signed_f != int(cfg.signed_spikes)) | (o_curw > cfg.current_width) |
                       (reset_zero & vreset_set)), Reason.LIF_BUILD),
            (is_lin & v0_bad, Reason.V0),
            (is_lin & (o_repeat != 1) & ((o_repeat == 0) | (o_repeat[:lp] != 0)
                                          if lp else (o_repeat == 0)), Reason.REPEAT),
            (is_mat & ((o_nin > cfg.max_in) | (is_lin & (neurons > cfg.max_neurons)) |
                       (is_ro & (neurons > cfg.max_readout))), Reason.SIZE_LIMIT),
            (is_mat & ((o_wbits == 0) | (o_wbits > cfg.weight_width)), Reason.WEIGHT_BITS),
            (is_mat & (bi[0].planes > cfg.max_planes), Reason.PLANES),
            (is_mat & (waddr_bad | ((o_brows != 0) & baddr_bad)),
             Reason.BLOB_RANGE),
        ]
        self.op_check_cycles = len(checks_a) + len(checks_b)
        # every check is a registered flag, loaded into a check chain (below): the descriptor
        # is final 6 cycles before OA_CHECK is loaded; the infos and `neurons` two cycles
        # before OB_CHECK is (see O_READ)
        checks_a = [(flag(c, f"op_chk_a{k}"), code) for k, (c, code) in enumerate(checks_a)]
        checks_b = [(flag(c, f"op_chk_b{k}"), code) for k, (c, code) in enumerate(checks_b)]

        # ---------------------------------------------------------------- copy engine
        # A register walker (c_addr stepped, not recomputed) emits one slot a cycle into the
        # i_* stage; from there the out-of-blob compare decides the registered issue (p_*).
        wptr = Signal(bits_for(cfg.weight_words) + 1)
        bptr = Signal(bits_for(cfg.bias_words) + 1)
        c_bias = Signal()                     # copying biases (else weights)
        c_run = Signal()                      # the walker is emitting slots
        c_real, c_slots = Signal(24), Signal(24)
        col_left = Signal(16)                 # down counters (columns, slots, real elements)
        slot_left = Signal(24)
        real_left = Signal(24)
        # registered compares of the counters, kept in step with them (the walker's decisions
        # come from registers): real_left != 0, slot_left == 1, and their reload values
        c_realf, c_slot1 = Signal(), Signal()
        c_real_nz, c_slots1 = Signal(), Signal()
        c_nbytes = Signal(3)
        c_k, c_klast = Signal(2), Signal(2)
        c_stride, c_colstep = Signal(34), Signal(34)
        c_el, c_colbase, c_addr = Signal(34), Signal(34), Signal(34)
        c_lo, c_hi = Signal(signed(32)), Signal(signed(32))
        i_valid, i_pad, i_last, i_oob = Signal(), Signal(), Signal(), Signal()
        i_k = Signal(2)
        i_addr = Signal(34, reset_less=True)
        eb = Signal(24)                       # bytes 0..2 of the element being read
        value_q = Signal(signed(32))          # an assembled element (v_valid), or 0 for a pad
        v_valid = Signal()
        r_valid, r_bad = Signal(), Signal()   # value_q a cycle later, its range check done
        r_value = Signal(signed(32), reset_less=True)
        c_oob = Signal()                      # an element outside the blob: fail once drained
        w_full, b_full = Signal(), Signal()   # wptr >= weight_words, bptr >= bias_words
        m.d.sync += [v_valid.eq(0), r_valid.eq(0), i_valid.eq(0)]
        m.d.sync += [r_valid.eq(v_valid), r_value.eq(value_q),
                     r_bad.eq((value_q < c_lo) | (value_q > c_hi))]
        lanes_r = Signal(32 * E)
        lane_n = Signal(range(E))
        ngroups = Signal(24)
        groups, egroups = Signal(24), Signal(24)
        m.d.comb += [ngroups.eq((neurons + (P - 1)) >> lp),
                     groups.eq((o_nout + (P - 1)) >> lp),
                     egroups.eq((o_nout + (E - 1)) >> le)]
        # the weight range, registered (o_wbits is final long before a copy is set up)
        w_half = Signal(18)
        w_lo, w_hi = Signal(signed(32)), Signal(signed(32))
        m.d.sync += [w_half.eq(Const(1, 18) << (o_wbits - 1)[:5]),
                     w_lo.eq(-w_half.as_signed()), w_hi.eq(w_half - 1)]

        w_run = flag((o_nin != 0) & (o_nout != 0), "w_run")     # a copy has any slot
        b_run = flag((o_brows != 0) & (neurons != 0), "b_run")

        def copy_setup(bias):
            if bias:
                cols, real, slots, run = o_brows, neurons, ngroups << lp, b_run
                start = blob_start + o_baddr
                lo, hi = signed_range(cfg.bias_width)
                m.d.sync += [c_bias.eq(1), c_nbytes.eq(4), c_klast.eq(3), c_stride.eq(4),
                             c_colstep.eq(neurons << 2), c_lo.eq(lo), c_hi.eq(hi)]
            else:
                cols, real, slots, run = o_nin, o_nout, egroups << le, w_run
                start = blob_start + o_waddr
                wide = o_wbits > 8
                m.d.sync += [c_bias.eq(0), c_nbytes.eq(Mux(wide, 2, 1)), c_klast.eq(wide),
                             c_stride.eq(Mux(wide, o_nin << 1, o_nin)),
                             c_colstep.eq(Mux(wide, 2, 1)), c_lo.eq(w_lo), c_hi.eq(w_hi)]
            m.d.sync += [c_real.eq(real), c_slots.eq(slots), col_left.eq(cols),
                         slot_left.eq(slots), real_left.eq(real),
                         c_realf.eq(real != 0), c_real_nz.eq(real != 0),
                         c_slot1.eq(slots == 1), c_slots1.eq(slots == 1),
                         c_colbase.eq(start), c_el.eq(start), c_addr.eq(start),
                         c_run.eq(run),
                         c_k.eq(0), lane_n.eq(0), c_oob.eq(0)]

        # walker: slot order per column = `c_real` elements (c_nbytes bytes each, c_stride
        # apart), then padding up to `c_slots`; columns `c_colstep` apart
        with m.If(c_run):
            advance = Signal()
            m.d.sync += i_valid.eq(1)
            with m.If(c_realf):
                last = c_k == c_klast
                m.d.sync += [i_pad.eq(0), i_k.eq(c_k), i_last.eq(last), i_addr.eq(c_addr),
                             i_oob.eq(c_addr >= size)]
                with m.If(last):
                    m.d.sync += [c_k.eq(0), c_el.eq(c_el + c_stride), c_addr.eq(c_el + c_stride),
                                 real_left.eq(real_left - 1), c_realf.eq(real_left != 1)]
                    m.d.comb += advance.eq(1)
                with m.Else():
                    m.d.sync += [c_k.eq(c_k + 1), c_addr.eq(c_addr + 1)]
            with m.Else():
                m.d.sync += [i_pad.eq(1), i_last.eq(1)]
                m.d.comb += advance.eq(1)
            with m.If(advance):
                with m.If(c_slot1):
                    nxt = c_colbase + c_colstep
                    m.d.sync += [slot_left.eq(c_slots), real_left.eq(c_real),
                                 c_realf.eq(c_real_nz), c_slot1.eq(c_slots1),
                                 col_left.eq(col_left - 1), c_colbase.eq(nxt), c_el.eq(nxt),
                                 c_addr.eq(nxt)]
                    with m.If(col_left == 1):
                        m.d.sync += c_run.eq(0)
                with m.Else():
                    m.d.sync += [slot_left.eq(slot_left - 1), c_slot1.eq(slot_left == 2)]
        # i_* -> the registered issue: an element byte outside the blob stops the walker
        with m.If(i_valid & ~c_oob):
            with m.If(~i_pad & i_oob):
                m.d.sync += [c_oob.eq(1), c_run.eq(0)]
            with m.Else():
                m.d.sync += [p_valid.eq(1), p_pad.eq(i_pad), p_last.eq(i_last), p_k.eq(i_k),
                             prog_en.eq(~i_pad)]
        # the read address: the copy's (i_addr) or the fetch's (addr); only used with prog_en
        m.d.sync += prog_addr.eq(Mux(i_valid, i_addr, addr))

        crc_next = _crc32_byte(m, crc, Mux(q_zero, 0, byte_q))

        def fail(code):
            m.d.sync += reason.eq(code)
            m.next = "FAIL"

        def capture(raw, n):
            """The arriving byte (byte_q) into byte q_pos of `raw` (bytes n.. are dropped)."""
            with m.Switch(q_pos):
                for k in range(n):
                    with m.Case(k):
                        m.d.sync += raw[k * 8:k * 8 + 8].eq(byte_q)

        hchecks = [
            (magic != int.from_bytes(MAGIC, "little"), Reason.BAD_MAGIC),
            (version != VERSION, Reason.BAD_VERSION),
            (size != blob_end, Reason.BAD_SIZE),
            ((crc ^ 0xFFFFFFFF) != h_crc, Reason.BAD_CRC),
            (h_T != T, Reason.TIMESTEPS),
            (h_nb > cfg.max_buffers, Reason.TOO_MANY_BUFFERS),
            (h_no > cfg.max_ops, Reason.TOO_MANY_OPS),
            ((h_in >= h_nb) | (h_out >= h_nb), Reason.BUFFER_ID),
        ]
        # registered flags: the header and the CRC are final from H_WAIT0, so their flags are
        # valid from H_WAIT1; blob_start and blob_end settle a cycle each later, so the size
        # flag is valid in H_LOAD, where the chain is loaded
        hchecks = [(flag(c, f"hdr_chk{k}"), code) for k, (c, code) in enumerate(hchecks)]
        # registered flags: bytes 0..5 of the entry are final 2 cycles before B_KIND
        b_size_bad = flag((b_tokens > cfg.max_tokens) | (b_channels > cfg.max_channels) |
                          ((b_kind == BufKind.UINT) & (b_bits < 1)) |
                          ((b_kind == BufKind.INT) & ((b_bits < 2) | (b_bits > 32))),
                          "b_size_bad")
        b_in_int = flag((buf_i == h_in) & (b_kind == BufKind.INT), "b_in_int")
        act_sum = Signal.like(act_next)
        m.d.sync += act_sum.eq(act_next + mp)
        act_bad = flag(act_sum > cfg.act_words, "act_bad")

        # a check chain (header, op part A, op part B): its flags loaded into `pend` (with their
        # codes and a last-check marker) the cycle before, then one check a cycle in order,
        # each decided by a register bit
        n_chk = max(len(hchecks), len(checks_a), len(checks_b))
        pend, plast = Signal(n_chk), Signal(n_chk)
        pcode = Signal(8 * n_chk)

        def chain_load(checks):
            m.d.sync += [pend.eq(Cat(f for f, _ in checks)),
                         pcode.eq(Cat(Const(int(code), 8) for _, code in checks)),
                         plast.eq(1 << (len(checks) - 1))]

        def chain_state(name, then, on_pass=lambda: None):
            with m.State(name):
                m.d.sync += [pend.eq(pend >> 1), plast.eq(plast >> 1), pcode.eq(pcode >> 8)]
                with m.If(pend[0]):
                    fail(pcode[:8])
                with m.Elif(plast[0]):
                    on_pass()
                    m.next = then

        crc_left = Signal(32)                 # bytes of the CRC pass still to issue
        crc_more = Signal()                   # crc_left != 0

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [size.eq(self.size), reason.eq(0)]
                    m.next = "SIZE"
            with m.State("SIZE"):
                with m.If(size > cfg.program_bytes):
                    fail(Reason.TOO_LARGE)
                with m.Elif(size < HEADER.size):
                    fail(Reason.TOO_SHORT)
                with m.Else():
                    m.d.sync += [addr.eq(0), crc.eq(0xFFFFFFFF), crc_left.eq(size),
                                 crc_more.eq(1)]          # size >= HEADER.size here
                    m.next = "CRC"
            with m.State("CRC"):
                with m.If(crc_more):
                    issue()
                    m.d.sync += [addr.eq(addr + 1), crc_left.eq(crc_left - 1),
                                 crc_more.eq(crc_left != 1), p_pos.eq(addr[:5]),
                                 p_hdr.eq(addr < HEADER.size),
                                 p_zero.eq((addr >= HEADER.size - 4) & (addr < HEADER.size))]
                with m.Elif(~p_valid & ~a_valid & ~q_valid):
                    m.next = "H_WAIT0"
                with m.If(q_valid):
                    m.d.sync += crc.eq(crc_next)
                    with m.If(q_hdr):
                        capture(hdr, HEADER.size)
            # the header and the CRC are final here; their flags settle a cycle later,
            # blob_start/blob_end/the size flag a cycle each after that
            with m.State("H_WAIT0"):
                m.next = "H_WAIT1"
            with m.State("H_WAIT1"):
                m.next = "H_LOAD"
            with m.State("H_LOAD"):
                chain_load(hchecks)
                m.next = "H_CHECK"
            chain_state("H_CHECK", "B_START")
            with m.State("B_START"):
                m.d.sync += [addr.eq(HEADER.size), buf_i.eq(0), act_next.eq(0), cnt.eq(0),
                             written.eq((Const(1, cfg.max_buffers) << h_in)[:cfg.max_buffers]), readouts.eq(0), wptr.eq(0), bptr.eq(0),
                             w_full.eq(cfg.weight_words == 0), b_full.eq(cfg.bias_words == 0),
                             op_i.eq(0)]
                m.next = "B_FETCH"
            # ------------------------------------------------------------ buffer table
            with m.State("B_FETCH"):
                with m.If(buf_i == h_nb[:len(buf_i)]):    # h_nb <= max_buffers (H_5)
                    m.next = "O_FETCH"
                with m.Else():
                    with m.If(cnt < BUF_BYTES):
                        issue()
                        m.d.sync += [addr.eq(addr + 1), cnt.eq(cnt + 1), p_pos.eq(cnt)]
                    with m.If(q_valid):
                        capture(braw, 6)
                        with m.If(q_pos == BUF_BYTES - 1):
                            m.d.sync += cnt.eq(0)
                            m.next = "B_KIND"
            with m.State("B_KIND"):
                with m.If(b_kind > BufKind.INT):
                    fail(Reason.BUFFER_KIND)
                with m.Else():
                    m.next = "B_SIZE"
            with m.State("B_SIZE"):
                with m.If(b_size_bad):
                    fail(Reason.BUFFER_SIZE)
                with m.Else():
                    mul_start(cgroups, b_tokens)
                    m.next = "B_MUL1"
            tok_bits = bits_for(cfg.max_tokens)
            with m.State("B_MUL1"):
                mul_step(tok_bits, "B_MUL2S")
            with m.State("B_MUL2S"):
                mul_start(mp, planes)
                m.next = "B_MUL2"
            with m.State("B_MUL2"):
                mul_step(8, "B_SUM")
            with m.State("B_SUM"):                 # act_sum settles
                m.next = "B_SUM2"
            with m.State("B_SUM2"):                # act_bad settles
                m.next = "B_WRITE"
            with m.State("B_WRITE"):
                with m.If(act_bad):
                    fail(Reason.ACT_MEMORY)
                with m.Elif(b_in_int):
                    fail(Reason.INPUT_KIND)
                with m.Else():
                    m.d.sync += [
                        self.buf_en.eq(1), self.buf_addr.eq(buf_i),
                        self.buf_data.tokens.eq(b_tokens), self.buf_data.channels.eq(b_channels),
                        self.buf_data.kind.eq(b_kind), self.buf_data.bits.eq(b_bits),
                        self.buf_data.planes.eq(planes), self.buf_data.cgroups.eq(cgroups),
                        self.buf_data.base.eq(Mux(b_kind == BufKind.INT, 0, act_next)),
                        act_next.eq(act_sum), buf_i.eq(buf_i + 1)]
                    m.d.comb += [info_w.en.eq(1), info_w.addr.eq(buf_i),
                                 info_w.data.tokens.eq(b_tokens),
                                 info_w.data.channels.eq(b_channels),
                                 info_w.data.kind.eq(b_kind), info_w.data.planes.eq(planes)]
                    with m.If(buf_i == h_in):
                        m.d.sync += [info_in_tok.eq(b_tokens), info_in_ch.eq(b_channels)]
                    with m.If(buf_i == h_out):
                        m.d.sync += [self.header.info[3].eq(b_tokens),
                                     self.header.info[4].eq(b_channels), out_kind.eq(b_kind)]
                    m.next = "B_FETCH"
            # ------------------------------------------------------------ ops
            with m.State("O_FETCH"):
                with m.If(op_i == h_no[:len(op_i)]):      # h_no <= max_ops (H_6)
                    m.next = "FINAL"
                with m.Else():
                    with m.If(cnt < OP_BYTES):
                        issue()
                        m.d.sync += [addr.eq(addr + 1), cnt.eq(cnt + 1), p_pos.eq(cnt)]
                    with m.If(q_valid):
                        capture(oraw, OP_USED_BYTES)
                        with m.If(q_pos == OP_BYTES - 1):
                            m.d.sync += cnt.eq(0)
                            chain_load(checks_a)      # the flags settled long ago
                            m.next = "OA_CHECK"
            chain_state("OA_CHECK", "O_MUL",
                        lambda: mul_start(o_nout, Mux(is_lin, o_repeat, 1)))
            with m.State("O_MUL"):
                mul_step(8, "O_READ")
                m.d.sync += [rd_i.eq(0), rd_addr.eq(sel[0])]
            with m.State("O_READ"):
                # src0, src1, src2, dst infos through the synchronous read port
                with m.Switch(rd_i):
                    for j in range(3):
                        with m.Case(j):
                            m.d.sync += rd_addr.eq(sel[j + 1])
                with m.Switch(rd_i):
                    for j in range(1, 5):
                        with m.Case(j):
                            m.d.sync += bi[j - 1].eq(info_r.data)
                m.d.sync += [rd_i.eq(rd_i + 1), neurons.eq(mp)]
                with m.If(rd_i == 6):             # the last info's flags settle in cycle 6
                    chain_load(checks_b)
                    m.next = "OB_CHECK"
            chain_state("OB_CHECK", "O_WRITE")
            with m.State("O_WRITE"):
                d = self.op_data
                lif = [d.flags.eq(Cat(signed_f, reset_zero)), d.leak.eq(o_leak),
                       d.theta.eq(o_theta), d.v_reset.eq(o_vreset), d.cur_width.eq(o_curw)]
                m.d.sync += [self.op_en.eq(1), self.op_addr.eq(op_i), d.eq(0),
                             d.op.eq(o_op), d.n_src.eq(o_nsrc), d.dst.eq(o_dst),
                             d.leak.eq(0xFF), op_i.eq(op_i + 1),
                             written.eq(written | (Const(1, cfg.max_buffers) << o_dst)[:cfg.max_buffers])]
                for j in range(3):
                    m.d.sync += getattr(d, f"src{j}").eq(Mux(used[j], o_src[j], 0))
                with m.If(is_att):
                    m.d.sync += lif + [d.mode.eq(o_mode), d.variant.eq(o_variant),
                                       d.block.eq(o_block), d.heads.eq(o_heads)]
                with m.If(is_mat):
                    m.d.sync += [d.n_in.eq(o_nin), d.n_out.eq(o_nout),
                                 d.bias_rows.eq(o_brows), d.weight_bits.eq(o_wbits),
                                 d.groups.eq(groups), d.ngroups.eq(ngroups),
                                 d.egroups.eq(egroups),
                                 d.wbase.eq(wptr), d.bbase.eq(Mux(o_brows != 0, bptr, 0))]
                    copy_setup(bias=False)
                    m.next = "COPY"
                with m.Else():
                    m.next = "O_FETCH"
                with m.If(is_lin):
                    m.d.sync += lif + [d.flags.eq(Cat(signed_f, reset_zero, o_brows != 0)),
                                       d.repeat.eq(o_repeat), d.v0.eq(o_v0),
                                       d.acc_shift.eq(o_acc)]
                with m.If(is_ro):
                    m.d.sync += [d.flags.eq(Cat(Const(0, 2), o_brows != 0)),
                                 readouts.eq(Mux(readouts == 2, 2, readouts + 1))]
                    with m.If(o_dst != h_out):
                        m.d.sync += readouts.eq(2)    # a READOUT not into the output buffer
            # ------------------------------------------------------------ copies
            with m.State("COPY"):
                # walker (t) -> i_* (t+1) -> prog_addr/prog_en (t+2) -> prog_data (t+3) ->
                # byte_q: assemble into value_q (t+4) -> range check into r_bad (t+5) ->
                # lane packing or refusal (t+6)
                drain = i_valid | p_valid | a_valid | q_valid | v_valid | r_valid
                with m.If(c_oob):
                    # the elements before the one outside the blob are checked first
                    with m.If(~drain):
                        fail(Reason.BLOB_RANGE)
                with m.Elif(~c_run & ~drain):
                    with m.If(c_bias | (o_brows == 0)):
                        m.next = "O_FETCH"
                    with m.Else():
                        m.next = "BIAS"
                # stage 1 (byte_q): assemble the little-endian element into value_q
                with m.If(q_valid & ~q_pad & ~q_last):
                    with m.Switch(q_k):
                        for k in range(3):
                            with m.Case(k):
                                m.d.sync += eb[k * 8:k * 8 + 8].eq(byte_q)
                m.d.sync += [v_valid.eq(q_valid & q_last),
                             value_q.eq(Mux(q_pad, 0,
                                        Mux(c_nbytes == 1, byte_q.as_signed(),
                                        Mux(c_nbytes == 2, Cat(eb[:8], byte_q).as_signed(),
                                            Cat(eb, byte_q).as_signed()))))]
                # stage 3 (r_*): refuse out of range, else pack lanes, write a full word
                with m.If(r_valid):
                    with m.If(r_bad):
                        fail(Mux(c_bias, Reason.BIAS_RANGE, Reason.WEIGHT_RANGE))
                    with m.Else():
                        word = Cat(lanes_r[32:], r_value)
                        m.d.sync += [lanes_r.eq(word), lane_n.eq(lane_n + 1)]
                        # a word is full after P lanes (biases) or E (weights): its lanes
                        # are the top ones of the shift register
                        def lanes(n):
                            return [word[32 * (E - n + l):32 * (E - n + l) + 32]
                                    for l in range(n)]
                        with m.If(lane_n == Mux(c_bias, P - 1, E - 1)):
                            m.d.sync += lane_n.eq(0)
                            with m.If(c_bias):
                                with m.If(b_full):
                                    fail(Reason.BIAS_MEMORY)
                                with m.Else():
                                    m.d.sync += [self.b_en.eq(1), self.b_addr.eq(bptr),
                                                 bptr.eq(bptr + 1),
                                                 b_full.eq(bptr >= cfg.bias_words - 1)]
                                    m.d.sync += [self.b_data[l].eq(v)
                                                 for l, v in enumerate(lanes(P))]
                            with m.Else():
                                with m.If(w_full):
                                    fail(Reason.WEIGHT_MEMORY)
                                with m.Else():
                                    m.d.sync += [self.w_en.eq(1), self.w_addr.eq(wptr),
                                                 wptr.eq(wptr + 1),
                                                 w_full.eq(wptr >= cfg.weight_words - 1)]
                                    m.d.sync += [self.w_data[l].eq(v)
                                                 for l, v in enumerate(lanes(E))]
            with m.State("BIAS"):                  # the bias copy's setup: a state of its own
                copy_setup(bias=True)
                m.next = "COPY"
            # ------------------------------------------------------------ finish
            with m.State("FINAL"):
                with m.If((readouts != 1) | (out_kind != BufKind.INT)):
                    fail(Reason.OUTPUT)
                with m.Else():
                    hd = self.header
                    m.d.sync += [hd.timesteps.eq(h_T), hd.n_buffers.eq(h_nb), hd.n_ops.eq(h_no),
                                 hd.input_buffer.eq(h_in), hd.output_buffer.eq(h_out),
                                 hd.info[0].eq(h_T), hd.info[1].eq(info_in_tok),
                                 hd.info[2].eq(info_in_ch)]
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
            with m.State("FAIL"):
                m.d.comb += [self.done.eq(1), self.error.eq(1)]
                m.next = "IDLE"
        return m
