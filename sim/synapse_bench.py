"""cocotb bench for `SynapseEngine` against the golden `synapse_engine`, plus its launcher.

Host side: `build_synapse(n_in=, n_out=, ...)` builds the core once per simulator;
`run_synapse(build, cases, ...)` runs many random cases in one simulation. Bench side
(`synapse_cases`): per case, weights (and biases) are written through the `load` port at run
time, the event stream (events, explicit silent beats, out-of-range indices) is driven with
random gaps, the drained currents are checked beat by beat on an in-order scoreboard under
random backpressure, and the counters (events, skipped, index error) against the stimulus.
Busy cycles per case are recorded next to the ideal bound of `synapse_engine_cycles`.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, Event, RisingEdge

from ..golden.synapse import pack_spikes, synapse_engine, synapse_engine_cycles
from ..rtl.lif_array import LIFOp
from ..rtl.synapse_engine import LoadTarget, SynapseEngine
from .runner import RunResult, SimBuild, build_component, finish_cases, load_stimulus
from .streams import (Scoreboard, StreamDriver, StreamMonitor, StreamSink,
                      counter_mismatches, pack, read_counters, start_and_reset, wait_case)

TOPLEVEL = "synapse_engine"
CLOCK_NS = 10


def build_synapse(sim: str, **params) -> SimBuild:
    return build_component(SynapseEngine, params, toplevel=TOPLEVEL, sim=sim)


def run_synapse(build: SimBuild, cases: list[dict], *, gap_prob=0.0, backpressure_prob=0.0,
                bad_index_prob=0.0, silent_beat_prob=0.0, seed=0, corrupt_case=None,
                check=True) -> RunResult:
    """`cases`: dicts with `weights` [n_out, n_in], `spikes` [T, n_in] and optional `bias`.
    `corrupt_case` falsifies one expected current on purpose (proves the bench can fail)."""
    arrays = {}
    for k, case in enumerate(cases):
        for key, value in case.items():
            arrays[f"{key}{k}"] = np.asarray(value, dtype=np.int64)
    config = dict(core=build.params, n_cases=len(cases), gap_prob=gap_prob,
                  backpressure_prob=backpressure_prob, bad_index_prob=bad_index_prob,
                  silent_beat_prob=silent_beat_prob, seed=seed, corrupt_case=corrupt_case)
    return build.run(__name__, config, arrays, seed=seed, check=check)


def _load_beats(core: SynapseEngine, weights, bias) -> list[int]:
    """`load` payloads: lanes packed at weight_width (bias_width) stride."""
    def word(values, width):
        return sum((int(x) & ((1 << width) - 1)) << (width * lane)
                   for lane, x in enumerate(values))
    P, G = core.lanes, core.groups
    beats = [pack(core.load_layout, {"target": LoadTarget.WEIGHT, "addr": i * G + g,
                                     "data": word(weights[g * P:(g + 1) * P, i],
                                                  core.weight_width)})
             for i in range(core.n_in) for g in range(G)]
    if bias is not None:
        beats += [pack(core.load_layout, {"target": LoadTarget.BIAS, "addr": g,
                                          "data": word(bias[g * P:(g + 1) * P], core.bias_width)})
                  for g in range(G)]
    return beats


def _event_beats(core: SynapseEngine, spikes, rng, bad_index_prob, silent_beat_prob):
    """Events in index order, with explicit silent beats and out-of-range indices mixed in;
    the last beat carries `last`. Returns (payloads, n_events, n_silent, n_bad)."""
    words = pack_spikes(spikes)
    bad = range(core.n_in, 1 << core.index_width)
    items = []
    for i, w in enumerate(words):
        if bad and rng.random() < bad_index_prob:
            items.append((rng.choice(bad), rng.randrange(1, 1 << core.timesteps)))
        if w or rng.random() < silent_beat_prob:
            items.append((i, int(w)))
    if not items or items[-1][0] != core.n_in - 1:  # the stream always ends with `last`
        items.append((core.n_in - 1, 0))
    n_bad = sum(1 for i, _ in items if i >= core.n_in)
    n_events = sum(1 for i, w in items if i < core.n_in and w)
    n_silent = sum(1 for i, w in items if i < core.n_in and not w)
    payloads = [pack(core.i_layout, {"index": i, "spikes": w, "last": k == len(items) - 1})
                for k, (i, w) in enumerate(items)]
    return payloads, n_events, n_silent, n_bad


async def _send_all(driver: StreamDriver, beats: list[int], clk) -> None:
    for bits in beats:
        driver.send(bits)
    while not driver.done:
        await RisingEdge(clk)


@cocotb.test()
async def synapse_cases(dut):
    config, arrays = load_stimulus()
    core = SynapseEngine(**config["core"])
    rng = random.Random(config["seed"])
    T, G, P = core.timesteps, core.groups, core.lanes

    await start_and_reset(dut, (dut.i__valid, dut.o__ready, dut.load__valid,
                                dut.clear_counters), CLOCK_NS)

    events_in = StreamDriver(dut.clk, dut.i__valid, dut.i__ready, dut.i__payload,
                             gap_prob=config["gap_prob"], rng=random.Random(rng.random()))
    loads_in = StreamDriver(dut.clk, dut.load__valid, dut.load__ready, dut.load__payload,
                            rng=random.Random(rng.random()))
    sink = StreamSink(dut.clk, dut.o__ready, pause_prob=config["backpressure_prob"],
                      rng=random.Random(rng.random()))
    scoreboard = Scoreboard("SynapseEngine drain")
    received, case_done = [0], Event()

    def on_output(beat):
        scoreboard.receive(beat)
        received[0] += 1
        if received[0] == T * G:
            case_done.set()

    monitor = StreamMonitor(dut.clk, dut.o__valid, dut.o__ready, dut.o__payload,
                            core.o_layout, on_output)
    tasks = [cocotb.start_soon(x.run()) for x in (events_in, loads_in, sink, monitor)]

    counter_errors, per_case = [], []
    for k in range(config["n_cases"]):
        weights, spikes = arrays[f"weights{k}"], arrays[f"spikes{k}"]
        bias = arrays.get(f"bias{k}")
        expect = synapse_engine([(i, int(w)) for i, w in enumerate(pack_spikes(spikes)) if w],
                                weights, T, bias=bias, weight_width=core.weight_width,
                                bias_width=core.bias_width)
        if config["corrupt_case"] == k:
            expect[0, 0] += 1
        for t in range(T):
            for g in range(G):
                scoreboard.expect({"op": LIFOp.UPDATE, "index": g,
                                   "current": expect[t, g * P:(g + 1) * P].tolist()})
        beats, n_events, n_silent, n_bad = _event_beats(
            core, spikes, rng, config["bad_index_prob"], config["silent_beat_prob"])

        dut.clear_counters.value = 1
        await RisingEdge(dut.clk)
        dut.clear_counters.value = 0
        await _send_all(loads_in, _load_beats(core, weights, bias), dut.clk)
        received[0] = 0
        case_done.clear()
        await _send_all(events_in, beats, dut.clk)
        if not await wait_case(case_done, len(beats) * G + T * G, gap_prob=config["gap_prob"],
                               backpressure_prob=config["backpressure_prob"],
                               clock_ns=CLOCK_NS, margin_cycles=200):
            counter_errors.append(f"case {k}: drain incomplete ({received[0]} of {T * G})")
            break
        await ClockCycles(dut.clk, 2)
        want = {"events": n_events, "skipped": n_silent, "index_error": int(n_bad > 0)}
        got = read_counters(dut, [*want, "busy_cycles"])
        counter_errors += counter_mismatches(f"case {k}", got, want)
        per_case.append({"events": n_events, "silent": n_silent, "bad": n_bad,
                         "busy_cycles": got["busy_cycles"],
                         "ideal_cycles": synapse_engine_cycles(n_events, core.n_out, P, T)})
    finish_cases(scoreboard, counter_errors, per_case, tasks)
