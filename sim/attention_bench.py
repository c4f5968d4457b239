"""cocotb bench for `AttentionCore` against the golden attention, plus its launcher.

Host side: `build_attention(sim, n=, d=, ...)` builds the core once per simulator;
`run_attention(build, cases, ...)` runs many random cases in one simulation. Each case
carries Q, K, V [T, N, D] and its run-time settings (mode, block, SDSA variant, order, θ,
leak), written through `cfg` / `lif_cfg` between inferences. Bench side (`attention_cases`):
rows are driven with random gaps, every output beat (kind, neuron group, spikes, membranes)
is checked in order on a scoreboard under random backpressure against
`golden.attention_core.attention_core_outputs`, and the counters (stored / skipped key rows,
accumulate ops, saturations) against the golden schedule. Busy cycles per case are recorded
next to the ideal bound of `attention_core_cycles`.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, Event, RisingEdge

from ..golden.attention_core import (attention_core_cycles, attention_core_inputs,
                                     attention_core_ops, attention_core_outputs,
                                     attention_core_sat_count)
from ..golden.lif import LIFParams
from ..rtl.attention_core import MODE_OF, ORDER_OF, VARIANT_OF, AttentionCore, OutKind
from .runner import RunResult, SimBuild, build_component, finish_cases, load_stimulus
from .streams import (Scoreboard, StreamDriver, StreamMonitor, StreamSink,
                      counter_mismatches, pack, read_counters, start_and_reset, wait_case)

TOPLEVEL = "attention_core"
CLOCK_NS = 10
SETTING_KEYS = ("mode", "block", "variant", "order", "theta", "leak_shift")


def build_attention(sim: str, **params) -> SimBuild:
    return build_component(AttentionCore, params, toplevel=TOPLEVEL, sim=sim)


def run_attention(build: SimBuild, cases: list[dict], *, gap_prob=0.0, backpressure_prob=0.0,
                  seed=0, corrupt_case=None, check=True) -> RunResult:
    """`cases`: dicts with `q`, `k`, `v` [T, N, D] and the settings of SETTING_KEYS
    (`leak_shift` None = no leak). `corrupt_case` falsifies one expected membrane on
    purpose (proves the bench can fail)."""
    arrays, settings = {}, []
    for n, case in enumerate(cases):
        for key in "qkv":
            arrays[f"{key}{n}"] = np.asarray(case[key], dtype=np.int64)
        settings.append({key: case[key] for key in SETTING_KEYS})
    config = dict(core=build.params, settings=settings, gap_prob=gap_prob,
                  backpressure_prob=backpressure_prob, seed=seed, corrupt_case=corrupt_case)
    return build.run(__name__, config, arrays, seed=seed, check=check)


@cocotb.test()
async def attention_cases(dut):
    config, arrays = load_stimulus()
    core = AttentionCore(**config["core"])
    rng = random.Random(config["seed"])
    await start_and_reset(dut, (dut.i__valid, dut.o__ready, dut.cfg__we, dut.lif_cfg__we,
                                dut.clear_counters), CLOCK_NS)
    rows_in = StreamDriver(dut.clk, dut.i__valid, dut.i__ready, dut.i__payload,
                           gap_prob=config["gap_prob"], rng=random.Random(rng.random()))
    sink = StreamSink(dut.clk, dut.o__ready, pause_prob=config["backpressure_prob"],
                      rng=random.Random(rng.random()))
    scoreboard = Scoreboard("AttentionCore output")
    received, case_done, target = [0], Event(), [0]

    def on_output(beat):
        scoreboard.receive(beat)
        received[0] += 1
        if received[0] == target[0]:
            case_done.set()

    monitor = StreamMonitor(dut.clk, dut.o__valid, dut.o__ready, dut.o__payload,
                            core.o_layout, on_output)
    tasks = [cocotb.start_soon(x.run()) for x in (rows_in, sink, monitor)]

    errors, per_case = [], []
    for n, setting in enumerate(config["settings"]):
        q, k, v = (arrays[f"{key}{n}"] for key in "qkv")
        T, N, D = q.shape
        lif = LIFParams(theta=setting["theta"], leak_shift=setting["leak_shift"],
                        width=core.width, current_width=core.acc_width + 1)
        expect = attention_core_outputs(q, k, v, lif, mode=setting["mode"],
                                        block=setting["block"], variant=setting["variant"],
                                        lanes=core.lanes)
        if config["corrupt_case"] == n:
            kind, index, spikes, membranes = expect[0]
            expect[0] = (kind, index, spikes, [membranes[0] + 1] + membranes[1:])
        for kind, index, spikes, membranes in expect:
            scoreboard.expect({"kind": OutKind[kind.upper()], "index": index,
                               "spikes": spikes, "membrane": membranes})

        while str(dut.busy.value) == "1":          # settings change between inferences
            await RisingEdge(dut.clk)
        dut.cfg__mode.value = MODE_OF[setting["mode"]].value
        dut.cfg__block.value = setting["block"]
        dut.cfg__variant.value = VARIANT_OF[setting["variant"]].value
        dut.cfg__order.value = ORDER_OF[setting["order"]].value
        dut.lif_cfg__theta.value = setting["theta"]
        dut.lif_cfg__leak_en.value = int(setting["leak_shift"] is not None)
        dut.lif_cfg__leak_shift.value = setting["leak_shift"] or 0
        dut.cfg__we.value = dut.lif_cfg__we.value = dut.clear_counters.value = 1
        await RisingEdge(dut.clk)
        dut.cfg__we.value = dut.lif_cfg__we.value = dut.clear_counters.value = 0

        received[0], target[0] = 0, len(expect)
        case_done.clear()
        for row in attention_core_inputs(q, k, v):
            rows_in.send(pack(core.i_layout, row))
        ideal = attention_core_cycles(q, k, v, mode=setting["mode"], block=setting["block"],
                                      variant=setting["variant"], order=setting["order"],
                                      lanes=core.lanes)
        if not await wait_case(case_done, ideal, gap_prob=config["gap_prob"],
                               backpressure_prob=config["backpressure_prob"],
                               clock_ns=CLOCK_NS, margin_cycles=500):
            errors.append(f"case {n}: {received[0]} of {len(expect)} output beats")
            break
        await ClockCycles(dut.clk, 3)
        counts = attention_core_ops(q, k, v, mode=setting["mode"], block=setting["block"],
                                    variant=setting["variant"], order=setting["order"])
        want = {**counts, "cfg_error": 0, "busy": 0,
                "sat_count": attention_core_sat_count(q, k, v, lif, mode=setting["mode"],
                                                      block=setting["block"],
                                                      variant=setting["variant"])}
        got = read_counters(dut, [*want, "busy_cycles"])
        errors += counter_mismatches(f"case {n} ({setting['mode']})", got, want)
        per_case.append({**setting, "n": N, "d": D, "t": T,
                         "sparsity": float(1 - (q.mean() + k.mean() + v.mean()) / 3),
                         "busy_cycles": got["busy_cycles"], "ideal_cycles": ideal, **counts})
    finish_cases(scoreboard, errors, per_case, tasks)
