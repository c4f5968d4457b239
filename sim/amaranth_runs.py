"""Drive cores in Amaranth's simulator (fast, pure Python): stream put/get with random gaps
and stalls, and runners shared by the unit tests and `spikeforge bench`."""

import random
import sys

import numpy as np
from amaranth.sim import Simulator


def run_testbenches(dut, *testbenches, vcd=None):
    """Simulate `dut` with a clock and the given async testbenches until they all return."""
    # The simulator compiles a bit-replicating expression per bit of a signal; Python's
    # compiler recurses per term, beyond the default limit for words of ~3000 bits (the
    # engine's accumulator word at T=16 and 8 engine lanes).
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in testbenches:
        sim.add_testbench(bench)
    if vcd is None:
        sim.run()
    else:
        with sim.write_vcd(vcd):
            sim.run()


async def stream_put(ctx, stream, payload, rng=None, gap=0.0):
    """Offer `payload` on `stream` (after random idle cycles) until it is accepted."""
    while rng is not None and rng.random() < gap:
        await ctx.tick()
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, rng=None, stall=0.0, timeout=10_000):
    """Take one payload from `stream`, holding `ready` low on random cycles.
    Returns (payload, cycles waited)."""
    for cycles in range(1, timeout + 1):
        ready = rng is None or rng.random() >= stall
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if valid and ready:
            ctx.set(stream.ready, 0)
            return payload, cycles
    raise AssertionError(f"no output within {timeout} cycles: the core stopped producing")


def run_lif_array(dut, beats, *, gap=0.0, stall=0.0, seed=0):
    """Drive (op, group, currents) beats into a LIFArray; collect one output per in-range
    beat. Returns (output payloads, {sat_count, index_error, cycles})."""
    rng = random.Random(seed)
    out, state = [], {}

    async def source(ctx):
        for op, g, cur in beats:
            await stream_put(ctx, dut.i, {"op": op, "index": g,
                                          "current": [int(c) for c in cur]}, rng, gap)

    async def sink(ctx):
        expected_beats = sum(1 for _, g, _ in beats if g < dut.groups)
        cycles = 0
        while len(out) < expected_beats:
            payload, waited = await stream_get(ctx, dut.o, rng, stall)
            out.append(payload)
            cycles += waited
        state.update(sat_count=ctx.get(dut.sat_count), index_error=ctx.get(dut.index_error),
                     cycles=cycles)

    run_testbenches(dut, source, sink)
    return out, state


def run_synapse_engine(dut, inferences, *, gap=0.0, stall=0.0, seed=0, loads=(),
                       active_groups=None):
    """Each inference is a list of events, (index, word) or payload dicts, the last one
    flagged `last`. `loads` are (addr, LoadTarget, packed data) writes done first;
    `active_groups` is set for a row-addressed engine. Returns the drained currents per
    inference ([T, n_out] each) and the counters at the end."""
    rng = random.Random(seed)
    T, P = dut.timesteps, dut.lanes
    G = dut.groups if active_groups is None else active_groups
    results, counters = [], {}

    async def source(ctx):
        if active_groups is not None:
            ctx.set(dut.active_groups, active_groups)
        for addr, target, words in loads:
            await stream_put(ctx, dut.load, {"target": target, "addr": addr, "data": words})
        for beats in inferences:
            for k, beat in enumerate(beats):
                if not isinstance(beat, dict):
                    beat = {"index": beat[0], "spikes": beat[1]}
                await stream_put(ctx, dut.i, {**beat, "last": k == len(beats) - 1}, rng, gap)

    async def sink(ctx):
        for _ in inferences:
            cur = np.zeros((T, dut.n_out), dtype=np.int64)
            for beat in range(T * G):
                payload, _ = await stream_get(ctx, dut.o, rng, stall)
                t, g = divmod(beat, G)
                assert payload.index == g, "drain must be timestep-major, groups in order"
                cur[t, g * P:(g + 1) * P] = [int(c) for c in payload.current]
            results.append(cur)
        counters.update(events=ctx.get(dut.events), skipped=ctx.get(dut.skipped),
                        busy_cycles=ctx.get(dut.busy_cycles),
                        index_error=ctx.get(dut.index_error))

    run_testbenches(dut, source, sink)
    return results, counters


def event_beats(spikes) -> list[tuple[int, int]]:
    """The events of `spikes` [T, N_in]; a silent beat for the last neuron carries `last`
    when that neuron did not fire (the stream must always end with a `last` beat)."""
    from ..golden.synapse import spike_events
    events = spike_events(spikes)
    n_in = spikes.shape[1]
    if not events or events[-1][0] != n_in - 1:
        events.append((n_in - 1, 0))
    return events


def run_attention_core(dut, inferences, *, configs=None, gap=0.0, stall=0.0, seed=0,
                       timeout=100_000):
    """Each inference is (q, k, v) binary [T, N, D] arrays; `configs` (one per inference,
    or None) are dicts of `cfg` / `lif_cfg` fields written before it. Returns the output beats
    per inference as golden `attention_core_outputs` lists them ("attn" / "mask" / "gated",
    index, spikes, membranes) and the counters at the end."""
    from ..golden.attention_core import attention_core_inputs
    from ..rtl.attention_core import AttnMode
    rng = random.Random(seed)
    results, counters = [], {}
    configs = configs or [None] * len(inferences)
    n_out = [None] * len(inferences)
    mode = dut.mode

    async def source(ctx):
        nonlocal mode
        for n, ((q, k, v), cfg) in enumerate(zip(inferences, configs)):
            if cfg is not None:
                while ctx.get(dut.busy):
                    await ctx.tick()
                for port in (dut.cfg, dut.lif_cfg):   # lif_cfg: theta, leak_en, leak_shift
                    fields = {name: value for name, value in cfg.items()
                              if name in port.signature.members}
                    if fields:
                        for name, value in fields.items():
                            target = getattr(port, name)
                            if type(value) is int and hasattr(target, "as_value"):
                                target = target.as_value()    # raw bits, e.g. a bad enum
                            ctx.set(target, value)
                        ctx.set(port.we, 1)
                        await ctx.tick()
                        ctx.set(port.we, 0)
                if "mode" in cfg:
                    mode = "sdsa" if cfg["mode"] == AttnMode.SDSA else "ssa"
            n_out[n] = dut.outputs_per_inference(mode)
            for row in attention_core_inputs(q, k, v):
                await stream_put(ctx, dut.i, row, rng, gap)

    async def sink(ctx):
        for n in range(len(inferences)):
            while n_out[n] is None:
                await ctx.tick()
            beats = []
            for _ in range(n_out[n]):
                payload, _ = await stream_get(ctx, dut.o, rng, stall, timeout)
                beats.append((payload.kind.name.lower(), int(payload.index),
                              [int(s) for s in payload.spikes],
                              [int(x) for x in payload.membrane]))
            results.append(beats)
        for _ in range(3):
            await ctx.tick()
        counters.update({name: ctx.get(getattr(dut, name)) for name in
                         ("busy_cycles", "events", "skipped", "ops", "sat_count",
                          "cfg_error", "busy")})

    run_testbenches(dut, source, sink)
    return results, counters


class AcceleratorHost:
    """The host side of an `Accelerator`'s device port in Amaranth's simulator (what HostLink
    does after a frame checked out): byte writes and reads per space, LOAD / RUN / RESET.
    Methods are async and take the testbench context."""

    def __init__(self, dut, timeout=2_000_000):
        self.dut, self.dev, self.timeout = dut, dut.dev, timeout

    async def write(self, ctx, space, addr, data: bytes):
        dev = self.dev
        ctx.set(dev.mem_space, int(space))
        for k, byte in enumerate(data):
            ctx.set(dev.mem_addr, addr + k)
            ctx.set(dev.mem_wdata, byte)
            ctx.set(dev.mem_we, 1)
            await ctx.tick()
        ctx.set(dev.mem_we, 0)
        if int(space) == 0:
            ctx.set(dev.program_written, 1)
            await ctx.tick()
            ctx.set(dev.program_written, 0)

    async def read(self, ctx, space, addr, count) -> bytes:
        dev, out = self.dev, bytearray()
        ctx.set(dev.mem_space, int(space))
        for k in range(count):
            ctx.set(dev.mem_addr, addr + k)
            ctx.set(dev.mem_re, 1)
            await ctx.tick()
            ctx.set(dev.mem_re, 0)
            byte, = await ctx.tick().sample(dev.mem_rdata).until(dev.mem_rvalid)
            out.append(byte)
        return bytes(out)

    async def start(self, ctx, cmd, load_size=0):
        """Pulse cmd_start for LOAD / RUN / RESET."""
        dev = self.dev
        ctx.set(dev.cmd, int(cmd))
        ctx.set(dev.load_size, load_size)
        ctx.set(dev.cmd_start, 1)
        await ctx.tick()
        ctx.set(dev.cmd_start, 0)

    async def register(self, ctx, name) -> int:
        """A register of the device's map (host_link.REGISTERS), read as HostLink does."""
        from ..rtl.host_link import REG_OFFSET, REGISTERS
        n, value = dict(REGISTERS)[name], 0
        for k in range(n):
            ctx.set(self.dev.reg_addr, REG_OFFSET[name] + k)
            await ctx.tick()
            await ctx.tick()
            value |= ctx.get(self.dev.reg_data) << (8 * k)
        return value

    async def command(self, ctx, cmd, load_size=0) -> tuple[int, int]:
        """(error code, cycles) of LOAD / RUN / RESET; error 0 = ACK."""
        dev = self.dev
        await self.start(ctx, cmd, load_size)
        for cycles in range(self.timeout):
            if ctx.get(dev.cmd_done):
                error = ctx.get(dev.cmd_error)
                await ctx.tick()
                return error, cycles
            await ctx.tick()
        raise AssertionError(f"command {cmd!r}: no cmd_done within {self.timeout} cycles")


def run_accelerator(dut, image: bytes, inputs, *, abort_after=None, seed=0):
    """Load `image`, run every input [T, tokens, channels] (int16 elements) and read the
    outputs back. Returns {"load": error, "runs": [(error, cycles, outputs int32 array)],
    "counters": {...}}. `abort_after` = (run index, cycles): raise `abort` mid-run."""
    from ..golden.host_link import Cmd, Space
    host, result = AcceleratorHost(dut), {"runs": []}

    async def bench(ctx):
        await host.write(ctx, Space.PROGRAM, 0, image)
        result["load"], result["load_cycles"] = await host.command(ctx, Cmd.LOAD, len(image))
        for k, x in enumerate(inputs):
            await host.write(ctx, Space.INPUT, 0,
                             np.asarray(x, dtype="<i2").tobytes())
            if abort_after is not None and abort_after[0] == k:
                await host.start(ctx, Cmd.RUN)
                await ctx.tick().repeat(abort_after[1])
                ctx.set(dut.abort, 1)        # held until the answer, as HostLink's abort
                error, = await ctx.tick().sample(host.dev.cmd_error).until(host.dev.cmd_done)
                ctx.set(dut.abort, 0)
                result["runs"].append((error, None, None))
                continue
            error, cycles = await host.command(ctx, Cmd.RUN)
            run_ops = await host.register(ctx, "run_ops")
            layers = await host.read(ctx, Space.LAYERS, 0, 4 * run_ops)
            result.setdefault("layer_cycles", []).append(
                np.frombuffer(layers, dtype="<u4").tolist())
            size = ctx.get(host.dev.output_size)
            out = await host.read(ctx, Space.OUTPUT, 0, size)
            result["runs"].append((error, cycles, np.frombuffer(out, dtype="<i4").copy()))
        result["counters"] = {name: await host.register(ctx, name) for name in
                              ("inferences", "ops_total", "sats_total", "perf_cycles",
                               "perf_events", "perf_skipped")}
        result["counters"]["state"] = ctx.get(host.dev.state)

    run_testbenches(dut, bench)
    return result


def run_loads(dut, images) -> list[tuple[int, int]]:
    """LOAD each image in turn on one simulated accelerator with a `reason` port (the compact
    build's): [(error code, loader reason)] per image."""
    from ..golden.host_link import Cmd, Space
    host, out = AcceleratorHost(dut), []

    async def bench(ctx):
        for image in images:
            await host.write(ctx, Space.PROGRAM, 0, image)
            error, _ = await host.command(ctx, Cmd.LOAD, len(image))
            out.append((error, ctx.get(dut.reason)))

    run_testbenches(dut, bench)
    return out


def check_runs(got: dict, prog, inputs, cfg):
    """An accelerator's `run_accelerator` result against the golden interpreter: LOADed,
    every run exact, its per-op cycles (LAYERS) and total at least the golden ideal bound,
    the counters consistent. Returns the golden ProgramRun."""
    from ..golden.accelerator import accelerator_cycles
    from ..golden.compile import run_program
    from ..golden.host_link import State
    assert got["load"] == 0, f"LOAD refused with error {got['load']}"
    want = run_program(prog, np.stack(inputs))
    for k, (error, cycles, out) in enumerate(got["runs"]):
        assert error == 0, f"run {k}: error {error}"
        assert out.tolist() == want.output[k].reshape(-1).tolist(), f"run {k} output differs"
        ideal = accelerator_cycles(prog, inputs[k], cfg)
        layers = got["layer_cycles"][k]
        assert len(layers) == len(prog.ops) and cycles >= ideal["total"]
        assert all(m >= i for m, i in zip(layers, ideal["ops"])), (layers, ideal["ops"])
    c = got["counters"]
    assert c["inferences"] == len(inputs) and c["ops_total"] == len(inputs) * len(prog.ops)
    assert c["sats_total"] == sum(want.sat_counts) and c["state"] == State.DONE
    return want
