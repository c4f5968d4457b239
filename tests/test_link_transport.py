"""The cocotb UART transport of the host driver (sim/link_transport.py) on Verilator and Icarus.

A one-register loopback top checks byte round trips (random idle gaps, odd and even
divisors, every byte value), that a read on a silent line returns short after exactly
`timeout_cycles`, and that an exception inside a job fails the run with its message. A real
`HostLink` (rtl/host_link.py) with a small RTL memory as its device answers PING, WRITE/READ,
NACKs (DeviceError in the driver) and, hung, gives LinkTimeout. The CLI's `run --sim` path
is checked for a clear error while the RTL device top is missing.
"""

import sys

import numpy as np
import pytest

from spikeforge.sim.link_bench import UartLoopback
from spikeforge.sim.link_runner import LinkJobError, run_link_job
from spikeforge.sim.runner import SIMULATORS

cocotb = pytest.mark.cocotb      # the CLI tests at the end need no simulator
JOBS = "spikeforge.sim.link_jobs"


def loopback_job(sim, job, args, *, divisor=8, timeout_cycles=400, **kw):
    return run_link_job(UartLoopback, {}, toplevel="uart_loopback", sim=sim,
                        job=f"{JOBS}:{job}", args=args, divisor=divisor,
                        timeout_cycles=timeout_cycles, **kw)


@cocotb
@pytest.mark.parametrize("sim", SIMULATORS)
def test_loopback_round_trip_with_gaps(sim):
    rng = np.random.default_rng(11)
    data = bytes(range(256)) + rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
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
    steps = [{"job": "silent_read", "args": {"n": 3}},
             {"job": "echo", "args": {"data_hex": "5a"}},     # the line still works after
             {"job": "silent_read", "args": {"n": 1}}]
    summary, _ = loopback_job(sim, "sequence", {"steps": steps}, timeout_cycles=1234)
    first, echoed, second = summary["steps"]
    assert first == second == {"received": "", "waited_cycles": 1234}
    assert echoed["received"] == "5a"


@cocotb
@pytest.mark.parametrize("sim", SIMULATORS)
def test_job_error_fails_the_run_with_its_message(sim):
    with pytest.raises(LinkJobError, match="AssertionError: echo: 4 bytes back") as info:
        loopback_job(sim, "echo", {"data_hex": "a5000102", "expect_hex": "a5000103"})
    assert info.value.error_type == "AssertionError"


# --- a real HostLink behind the simulated UART, with a small RTL memory as its device ---

MOCK_SIZES = {"PROGRAM": 256, "INPUT": 64, "OUTPUT": 16}
MOCK_OUTPUT = bytes(range(0xF0, 0x100))           # what OUTPUT holds (read only)


def host_link_mock(divisor):
    """HostLink(divisor) + one 3 x 256-byte memory (space selects the page, OUTPUT preset),
    read data a cycle after `mem_re`; LOAD and RUN finish at once, RUN refused as
    NO_PROGRAM (a device error through the bench); RESET never finishes (a hung device)."""
    from amaranth import Cat, Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out

    from spikeforge.golden.host_link import Cmd, Error
    from spikeforge.rtl.host_link import HostLink

    class HostLinkMock(wiring.Component):
        rx: In(1, init=1)
        tx: Out(1, init=1)

        def elaborate(self, platform):
            m = Module()
            m.submodules.link = link = HostLink(divisor, addr_width=10)
            dev = link.dev
            init = [0] * 512 + list(MOCK_OUTPUT)
            m.submodules.mem = mem = Memory(shape=8, depth=768, init=init)
            wp, rp = mem.write_port(), mem.read_port()
            addr = Cat(dev.mem_addr[:8], dev.mem_space)
            done = Signal()
            m.d.sync += [dev.mem_rvalid.eq(dev.mem_re),
                         done.eq(dev.cmd_start & (dev.cmd != Cmd.RESET))]
            m.d.comb += [
                link.rx.eq(self.rx), self.tx.eq(link.tx),
                wp.addr.eq(addr), wp.data.eq(dev.mem_wdata), wp.en.eq(dev.mem_we),
                rp.addr.eq(addr), rp.en.eq(dev.mem_re), dev.mem_rdata.eq(rp.data),
                dev.program_size.eq(MOCK_SIZES["PROGRAM"]),
                dev.input_size.eq(MOCK_SIZES["INPUT"]),
                dev.output_size.eq(MOCK_SIZES["OUTPUT"]),
                dev.cmd_done.eq(done),
                dev.cmd_error.eq((dev.cmd == Cmd.RUN) * Error.NO_PROGRAM),
            ]
            return m

    return HostLinkMock()


def host_link_job(sim, job, args, divisor=6):
    pytest.importorskip("spikeforge.rtl.host_link", reason="rtl/host_link.py has not landed")
    return run_link_job(host_link_mock, {"divisor": divisor}, toplevel="host_link_mock",
                        sim=sim, job=f"{JOBS}:{job}", args=args, divisor=divisor,
                        timeout_cycles=20_000, max_gap_cycles=2 * divisor, seed=3)


@cocotb
@pytest.mark.parametrize("sim", SIMULATORS)
def test_host_link_ping_memory_and_refusals(sim):
    """One simulation: PING, a WRITE/READ round trip, a READ of preset OUTPUT bytes, then
    refusals (NACKs) reaching the driver as DeviceError and a hung device as LinkTimeout."""
    from spikeforge.golden.host_link import PROTOCOL_VERSION, Space
    data = np.random.default_rng(5).integers(0, 256, 200, dtype=np.uint8).tobytes()
    read_output = (bytes([Space.OUTPUT]) + (4).to_bytes(4, "little")
                   + (8).to_bytes(2, "little")).hex()
    steps = [
        {"job": "ping"},
        {"job": "write_read", "args": {"space": int(Space.PROGRAM), "addr": 17,
                                       "data_hex": data.hex()}},
        {"job": "command", "args": {"cmd": "READ", "payload_hex": read_output}},
        {"job": "command", "args": {"cmd": "RUN"}, "catch": True},
        {"job": "write_read", "args": {"space": int(Space.INPUT), "addr": MOCK_SIZES["INPUT"] - 2,
                                       "data_hex": "010203"}, "catch": True},
        {"job": "ping"},                                    # a refusal changed nothing
        {"job": "command", "args": {"cmd": "RESET"}, "catch": True},   # never finishes
    ]
    summary, _ = host_link_job(sim, "sequence", {"steps": steps})
    ping, round_trip, output, run, beyond, ping_again, reset = summary["steps"]
    assert ping["version"] == ping_again["version"] == PROTOCOL_VERSION
    assert bytes.fromhex(round_trip["read"]) == data
    assert bytes.fromhex(output["reply"]) == MOCK_OUTPUT[4:12]
    assert run["error"] == "DeviceError: device refused RUN: NO_PROGRAM"
    assert beyond["error"] == "DeviceError: device refused WRITE: BAD_ADDRESS"
    assert reset["error"].startswith("LinkTimeout: no answer from the device")
    assert "reply to RESET: got 0 of 1 bytes" in reset["error"]
    assert "within 20000 idle clock cycles (simulated)" in reset["error"]   # not seconds


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
    assert main(["run", "--model", "pinn-sin", "--count", "2"]) == 0    # x = 0, 1: u = 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert summary["rel_l2_vs_analytic"] is None and summary["max_abs_error_vs_analytic"] < 0.05
