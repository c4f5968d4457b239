"""The whole device (rtl/device.py: UART HostLink + Accelerator) in cocotb, driven by the real
host driver (`AcceleratorLink`) over a simulated UART: the same `run_model` as
`spikeforge run`. Verilator: refusals, then the shipped spiking PINN bit-identical to the
golden network. Icarus (slow on a design this size): the refusals only.
The digits transformers on the device are long runs: `spikeforge run --sim verilator`."""

import pytest

from spikeforge.golden.compile import compile_pinn
from spikeforge.golden.host_link import State
from spikeforge.golden.pinn import convert, load_weights
from spikeforge.rtl.device import Device, device_params
from spikeforge.sim.link_runner import run_link_job

pytestmark = pytest.mark.cocotb

DIVISOR = 4          # UART bit time in clock cycles (HostLink's minimum: fastest simulation)
PINN_T = 16
REFUSALS = [
    {"job": "ping"},
    {"job": "command", "args": {"cmd": "RUN"}, "catch": True},
    # a 40-byte image with a bad magic: the device's loader refuses it
    {"job": "load_image", "args": {"image_hex": "00" * 40}, "catch": True},
    {"job": "command", "args": {"cmd": "STATUS"}},
    {"job": "ping"},
]


def device_job(sim, steps):
    program = compile_pinn(convert(load_weights("sin"), PINN_T, integer=True))
    summary, _ = run_link_job(Device, device_params(program, divisor=DIVISOR),
                              toplevel="device", sim=sim, job="spikeforge.sim.link_jobs:sequence",
                              args={"steps": steps}, divisor=DIVISOR, timeout_cycles=2_000_000)
    return summary["steps"]


def check_refusals(steps):
    ping, run, load, status, ping_again = steps
    assert ping["version"] == ping_again["version"] == 1
    assert run["error"] == "DeviceError: device refused RUN: NO_PROGRAM"
    assert load["error"] == "DeviceError: device refused LOAD: BAD_PROGRAM"
    state, last_error = bytes.fromhex(status["reply"])[:2]
    assert state == State.ERROR and last_error == 6          # BAD_PROGRAM


def test_device_verilator_refusals_then_pinn_bit_identical():
    steps = device_job("verilator", REFUSALS + [
        {"job": "run_model", "args": {"model": "pinn-sin", "count": 3, "timesteps": PINN_T}}])
    check_refusals(steps[:5])
    run = steps[5]
    assert run["bit_identical_to_golden"] and run["mismatched_inferences"] == []
    assert run["inferences"] == 3 and run["counters"]["inferences"] == 3
    assert run["status"]["state"] == "DONE"
    assert run["perf"]["cycles"] > 0 and run["perf"]["events"] > 0


def test_device_icarus_refusals():
    check_refusals(device_job("icarus", REFUSALS))
