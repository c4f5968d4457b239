"""cocotb bench for `LIFArray` against the golden `lif_array` (the spec), plus its host-side launcher.

Host side: `build_lif(params, n, lanes, sim)` builds the core once; `run_lif(build, currents, ...)`
runs one stimulus. Bench side (`lif_layer`, inside the simulator): optional LOAD beats for `v0`,
UPDATE beats t = 0..T-1, groups g = 0..G-1 (lanes packed), out-of-range index beats mixed in,
then READ beats; every output beat (spikes and membrane per lane), the final membranes,
`sat_count` and the sticky flags are checked against golden.
"""

from __future__ import annotations

import dataclasses
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, Event, SimTimeoutError, with_timeout

from ..golden.lif import LIFParams, lif_array, signed_range
from ..rtl.lif_array import LIFArray, LIFOp
from .runner import RunResult, SimBuild, build_component, load_stimulus, write_results
from .streams import (Scoreboard, StreamDriver, StreamMonitor, StreamSink, pack,
                      start_and_reset)

TOPLEVEL = "lif_array"
CLOCK_NS = 10


def build_lif(params: LIFParams, n: int, lanes: int, sim: str) -> SimBuild:
    return build_component(LIFArray, {"n": n, "lanes": lanes, **dataclasses.asdict(params)},
                           toplevel=TOPLEVEL, sim=sim)


def run_lif(build: SimBuild, currents, *, v0=None, gap_prob=0.0, backpressure_prob=0.0,
            bad_index_prob=0.0, seed=0, corrupt_beat=None, check=True) -> RunResult:
    """Run `currents` [T, N] through the built core. `corrupt_beat` falsifies one expected
    output beat on purpose (proves the bench can fail)."""
    config = dict(core=build.params, gap_prob=gap_prob, backpressure_prob=backpressure_prob,
                  bad_index_prob=bad_index_prob, seed=seed, corrupt_beat=corrupt_beat)
    arrays = {"currents": np.asarray(currents)} | ({} if v0 is None else {"v0": np.asarray(v0)})
    for name, value in arrays.items():
        if not np.issubdtype(value.dtype, np.integer):  # like golden: never round silently
            raise TypeError(f"{name} must be an integer array, got dtype {value.dtype}")
    return build.run(__name__, config, arrays, seed=seed, check=check)


def _plan(core: LIFArray, currents, v0, gold, rng: random.Random, bad_index_prob: float):
    """Input beats, expected output beats and their (kind, t, g) tags, in stream order."""
    P, G = core.lanes, core.groups
    zeros = [0] * P
    lo, hi = signed_range(core.in_width)
    bad_indices = range(G, 1 << core.index_width)  # empty when G fills the index field
    beats, expected, tags = [], [], []

    def beat(op, g, current, spikes=zeros, membrane=None):
        beats.append(pack(core.i_layout, {"op": op, "index": g, "current": current}))
        if membrane is not None:
            expected.append({"op": op, "index": g, "spikes": list(spikes),
                             "membrane": list(membrane)})

    lanes_of = [slice(g * P, (g + 1) * P) for g in range(G)]
    if v0 is not None:
        for g, sl in enumerate(lanes_of):
            beat(LIFOp.LOAD, g, v0[sl].tolist(), membrane=v0[sl].tolist())
            tags.append(("load", None, g))
    for t in range(currents.shape[0]):
        for g, sl in enumerate(lanes_of):
            if bad_indices and rng.random() < bad_index_prob:
                # Must be dropped without touching any neuron; extreme currents make harm visible.
                beat(rng.choice(list(LIFOp)), rng.choice(bad_indices),
                     [rng.choice((lo, hi)) for _ in range(P)])
            beat(LIFOp.UPDATE, g, currents[t, sl].tolist(), gold.spikes[t, sl].tolist(),
                 gold.membranes[t, sl].tolist())
            tags.append(("update", t, g))
    for g, sl in enumerate(lanes_of):
        beat(LIFOp.READ, g, zeros, membrane=gold.v[sl].tolist())
        tags.append(("read", None, g))
    return beats, expected, tags


@cocotb.test()
async def lif_layer(dut):
    """One stimulus from `run_lif`: every output beat, final membrane, counter and flag vs golden."""
    config, arrays = load_stimulus()
    core = LIFArray(**config["core"])
    params = LIFParams(**{f.name: config["core"][f.name] for f in dataclasses.fields(LIFParams)})
    currents, v0 = arrays["currents"], arrays.get("v0")
    gold = lif_array(currents, params, v0=v0, record_membranes=True)
    rng = random.Random(config["seed"])
    beats, expected, tags = _plan(core, currents, v0, gold, rng, config["bad_index_prob"])
    n_bad = len(beats) - len(expected)
    if config["corrupt_beat"] is not None:
        expected[config["corrupt_beat"]]["membrane"][0] += 1

    scoreboard = Scoreboard("LIFArray output")
    for item in expected:
        scoreboard.expect(item)
    outputs, all_out = [], Event()

    def on_output(beat):
        scoreboard.receive(beat)
        outputs.append(beat)
        if len(outputs) == len(expected):
            all_out.set()

    await start_and_reset(dut, (dut.i__valid, dut.o__ready, dut.cfg__we, dut.cfg__theta,
                                dut.cfg__leak_en, dut.cfg__leak_shift, dut.clear_flags), CLOCK_NS)

    driver = StreamDriver(dut.clk, dut.i__valid, dut.i__ready, dut.i__payload,
                          gap_prob=config["gap_prob"], rng=random.Random(rng.random()))
    sink = StreamSink(dut.clk, dut.o__ready, pause_prob=config["backpressure_prob"],
                      rng=random.Random(rng.random()))
    monitor = StreamMonitor(dut.clk, dut.o__valid, dut.o__ready, dut.o__payload,
                            core.o_layout, on_output)
    for bits in beats:
        driver.send(bits)
    tasks = [cocotb.start_soon(x.run()) for x in (driver, sink, monitor)]
    # Generous bound: a beat needs a free input and output cycle, and up to 3 cycles when
    # one or two groups make back-to-back beats wait for their own write-back.
    slack = (1 - config["gap_prob"]) * (1 - config["backpressure_prob"])
    budget = int(8 * len(beats) / max(slack, 0.05)) + 200
    try:
        await with_timeout(all_out.wait(), budget * CLOCK_NS, "ns")
    except SimTimeoutError:
        pass  # the scoreboard reports the missing beats
    await ClockCycles(dut.clk, 4)  # extra beats (none expected) and final counter values
    for task in tasks:
        task.cancel()

    sat_count, index_error = dut.sat_count.value.to_unsigned(), int(dut.index_error.value)
    flags = {"saturated": (int(dut.saturated.value), int(gold.sat_count > 0)),
             "sat_count": (sat_count, gold.sat_count),
             "index_error": (index_error, int(n_bad > 0)),
             "cfg_error": (int(dut.cfg_error.value), 0)}
    flag_errors = [f"{k}: got {got}, expected {want}" for k, (got, want) in flags.items()
                   if got != want]

    spikes = np.zeros_like(gold.spikes)
    v = np.zeros_like(gold.v)
    for (kind, t, g), beat in zip(tags, outputs):
        sl = slice(g * core.lanes, (g + 1) * core.lanes)
        if kind == "update":
            spikes[t, sl] = beat["spikes"]
        elif kind == "read":
            v[sl] = beat["membrane"]
    write_results({
        "matched": scoreboard.passed and not flag_errors,
        "mismatches": scoreboard.errors + len(scoreboard.expected),
        "first_mismatches": scoreboard.mismatches + flag_errors,
        "cycles": round((monitor.last_transfer - driver.first_transfer) / CLOCK_NS) + 1
                  if monitor.last_transfer is not None else None,
        "beats_in": driver.sent, "beats_out": len(outputs), "bad_index_beats": n_bad,
        "updates": sum(core.lanes for kind, _, _ in tags[:len(outputs)] if kind == "update"),
        "sat_count": sat_count, "golden_sat_count": gold.sat_count,
    }, spikes=spikes, v=v)
    scoreboard.check()
    assert not flag_errors, "; ".join(flag_errors)
