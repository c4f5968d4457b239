"""The cocotb UART transport of the host driver (sim/link_transport.py) on Verilator and Icarus.

A one-register loopback top checks byte round trips (random idle gaps, odd and even
divisors, every byte value); a top that never answers checks that a read returns short after
exactly `timeout_cycles` and that the driver's `ping()` fails with LinkTimeout through the
bench; a wrong expectation inside a job fails the run. The CLI's `run --sim` path is checked
for a clear error while the RTL device top is missing.
"""

import sys

import numpy as np
import pytest

from spikeforge.sim.link_bench import UartLoopback
from spikeforge.sim.link_runner import LinkJobError, run_link_job
from spikeforge.sim.runner import SIMULATORS

cocotb = pytest.mark.cocotb      # the CLI tests at the end need no simulator
JOBS = "spikeforge.sim.link_jobs"


def loopback_job(sim, job, args, *, echo=True, divisor=8, timeout_cycles=400, **kw):
    return run_link_job(UartLoopback, {"echo": echo}, toplevel=f"uart_{'loop' if echo else 'dead'}",
                        sim=sim, job=f"{JOBS}:{job}", args=args, divisor=divisor,
                        timeout_cycles=timeout_cycles, **kw)


@cocotb
@pytest.mark.parametrize("sim", SIMULATORS)
def test_loopback_round_trip_with_gaps(sim):
    rng = np.random.default_rng(11)
    data = bytes(range(256)) + rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    for divisor, gaps in ((8, 24), (5, 7), (3, 0)):
        summary, _ = loopback_job(sim, "echo", {"data_hex": data.hex()}, divisor=divisor,
                                  max_gap_cycles=gaps, seed=divisor)
        assert bytes.fromhex(summary["received"]) == data, (divisor, gaps)
        link = summary["link"]
        assert link["bytes_sent"] == link["bytes_received"] == len(data)
        assert link["framing_errors"] == 0
        # 10 bit times per byte plus the gaps: the line really ran at `divisor` per bit
        bits_ns = 10 * divisor * 10 * len(data)
        assert bits_ns <= link["sim_time_ns"] <= bits_ns + len(data) * gaps * 10 + 10_000


@cocotb
@pytest.mark.parametrize("sim", SIMULATORS)
def test_silent_line_returns_short_after_timeout_cycles(sim):
    summary, _ = loopback_job(sim, "silent_read", {"n": 3}, echo=False, timeout_cycles=1234)
    assert summary["received"] == ""
    assert summary["waited_cycles"] == 1234


@cocotb
@pytest.mark.parametrize("sim", SIMULATORS)
def test_ping_on_a_silent_device_raises_link_timeout(sim):
    with pytest.raises(LinkJobError, match=r"LinkTimeout: no answer from the device.*"
                                           r"got 0 of 1 bytes") as info:
        loopback_job(sim, "ping", {}, echo=False, timeout_cycles=500)
    assert info.value.error_type == "LinkTimeout"


@cocotb
@pytest.mark.parametrize("sim", SIMULATORS)
def test_job_assertion_fails_the_run(sim):
    with pytest.raises(LinkJobError, match="AssertionError: echo: 4 bytes back"):
        loopback_job(sim, "echo", {"data_hex": "a5000102", "expect_hex": "a5000103"})


def test_cli_sim_without_rtl_device_is_a_clear_error(monkeypatch, capsys):
    from spikeforge.cli import main
    monkeypatch.setitem(sys.modules, "spikeforge.rtl.device", None)   # import fails
    assert main(["run", "--model", "pinn-sin", "--count", "2", "--sim", "icarus"]) == 2
    assert "the RTL accelerator top is not available" in capsys.readouterr().err


def test_cli_golden_run_reports_pinn_error_counters_and_status(capsys):
    """The golden path runs the shared `run_model`: outputs bit-identical, PINN error
    against the analytic solution recomputed here from the golden network."""
    import json

    from spikeforge.cli import main
    from spikeforge.golden.pinn import (PROBLEMS, convert, eval_grid, load_weights, rel_l2,
                                        snn_predict_int)
    assert main(["run", "--model", "pinn-sin", "--count", "6", "--timesteps", "8"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    snn = convert(load_weights("sin"), 8, integer=True)
    x = eval_grid(6)
    want = rel_l2(snn_predict_int(snn, x), PROBLEMS["sin"].u(x))
    assert summary["bit_identical_to_golden"] and summary["mismatched_inferences"] == []
    assert summary["rel_l2_vs_analytic"] == pytest.approx(want, rel=1e-3)
    assert summary["counters"]["inferences"] == 6 == summary["status"]["inferences"]
    assert summary["status"]["state"] == "DONE"
