"""The whole device (rtl/device.py: UART HostLink + Accelerator) in cocotb, driven by the real
host driver (`AcceleratorLink`) over a simulated UART: the same `run_model` as
`spikeforge run`. Verilator: refusals, then the shipped spiking PINN bit-identical to the
golden network on 32 grid points and a RESET sent mid-inference (the next inference is
exact), and one build for the three digits transformers (SSA,
SDSA, STAtten; the throughput build: 16 lanes, a 32-lane engine) on 20 held-out images each, bit-identical with the golden network:
the issue's end-to-end proof; the compact build (the iCE40UP5K's) with the PINN, the same
checks. Icarus (slow on a design this size): the refusals, both builds.
Per-op cycles come back through the LAYERS space; each is at least the golden ideal bound."""

import numpy as np
import pytest

from spikeforge.golden.accelerator import accelerator_cycles
from spikeforge.golden.compile import compile_pinn
from spikeforge.golden.host_link import State
from spikeforge.golden.pinn import convert, load_weights
from spikeforge.golden.program_loader import AcceleratorConfig
from spikeforge.rtl.device import COMPACT_BUILD, DIGITS_BUILD, PINN_BUILD, Device, device_params
from spikeforge.sim.link_jobs import prepare_model
from spikeforge.sim.link_runner import run_link_job

pytestmark = pytest.mark.cocotb

DIVISOR = 4          # UART bit time in clock cycles (HostLink's minimum: fastest simulation)
PINN_T = 16
PINN_POINTS = 32
DIGITS = ("digits-ssa", "digits-sdsa", "digits-statten")
DIGITS_IMAGES = 20
REFUSALS = [
    {"job": "ping"},
    {"job": "command", "args": {"cmd": "RUN"}, "catch": True},
    # a 40-byte image with a bad magic: the device's loader refuses it
    {"job": "load_image", "args": {"image_hex": "00" * 40}, "catch": True},
    {"job": "command", "args": {"cmd": "STATUS"}},
    {"job": "ping"},
]


def device_job(sim, steps, programs=None, build=PINN_BUILD):
    programs = programs or [compile_pinn(convert(load_weights("sin"), PINN_T, integer=True))]
    summary, _ = run_link_job(Device, device_params(*programs, divisor=DIVISOR, **build),
                              toplevel="device", sim=sim, job="spikeforge.sim.link_jobs:sequence",
                              args={"steps": steps}, divisor=DIVISOR, timeout_cycles=2_000_000)
    return summary["steps"]


def check_model_run(run, count, prepared, build, before=0):
    """Bit-identical, counters and status consistent, per-op cycles >= the ideal bound.
    `before`: inferences the device ran earlier (its counter counts since power-up)."""
    assert run["bit_identical_to_golden"] and run["mismatched_inferences"] == []
    assert run["inferences"] == count and run["counters"]["inferences"] == before + count
    assert run["status"]["state"] == "DONE"
    assert run["perf"]["cycles"] > 0 and run["perf"]["events"] > 0
    layers = run["layer_cycles"]
    assert len(layers) == len(prepared.program.ops) and sum(layers) < run["perf"]["cycles"]
    cfg = AcceleratorConfig.for_programs(prepared.program, **build)
    ideal = accelerator_cycles(prepared.program, prepared.inputs[-1], cfg)
    assert all(got >= bound for got, bound in zip(layers, ideal["ops"])), (layers, ideal)


def check_refusals(steps):
    ping, run, load, status, ping_again = steps
    assert ping["version"] == ping_again["version"] == 1
    assert run["error"] == "DeviceError: device refused RUN: NO_PROGRAM"
    assert load["error"] == "DeviceError: device refused LOAD: BAD_PROGRAM"
    state, last_error = bytes.fromhex(status["reply"])[:2]
    assert state == State.ERROR and last_error == 6          # BAD_PROGRAM


def check_reset_mid_run(got):
    """The RESET stopped the RUN part way (fewer cycles than a whole run), left the device
    READY without error, and the next run took the whole run's cycles with golden output."""
    assert got["stopped"] is True
    assert got["status_after_reset"]["state"] == "READY"
    assert got["status_after_reset"]["last_error"] is None
    cycles = got["cycles"]
    assert 0 < cycles["stopped"] < cycles["full"] == cycles["after"], cycles
    assert got["first_bit_identical"] and got["after_reset_bit_identical"]


def test_device_verilator_refusals_then_pinn_bit_identical_and_reset_mid_run():
    steps = device_job("verilator", REFUSALS + [
        {"job": "run_model", "args": {"model": "pinn-sin", "count": PINN_POINTS,
                                      "timesteps": PINN_T}},
        {"job": "reset_mid_run", "args": {"model": "pinn-sin", "timesteps": PINN_T}}])
    check_refusals(steps[:5])
    check_model_run(steps[5], PINN_POINTS, prepare_model("pinn-sin", PINN_POINTS, PINN_T),
                    PINN_BUILD)
    assert steps[5]["max_abs_error_vs_analytic"] < 0.02
    check_reset_mid_run(steps[6])


def test_compact_device_verilator_refusals_then_pinn_bit_identical_and_reset_mid_run():
    """The compact build (rtl/compact.py, the iCE40UP5K's): the same driver, jobs and checks."""
    steps = device_job("verilator", REFUSALS + [
        {"job": "run_model", "args": {"model": "pinn-sin", "count": PINN_POINTS,
                                      "timesteps": PINN_T}},
        {"job": "reset_mid_run", "args": {"model": "pinn-sin", "timesteps": PINN_T}}],
        build=COMPACT_BUILD)
    check_refusals(steps[:5])
    check_model_run(steps[5], PINN_POINTS, prepare_model("pinn-sin", PINN_POINTS, PINN_T),
                    COMPACT_BUILD)
    assert steps[5]["max_abs_error_vs_analytic"] < 0.02
    check_reset_mid_run(steps[6])


def test_device_verilator_digits_every_attention_bit_identical():
    prepared = [prepare_model(m, DIGITS_IMAGES) for m in DIGITS]
    steps = device_job("verilator", [
        {"job": "run_model", "args": {"model": m, "count": DIGITS_IMAGES}} for m in DIGITS],
        programs=[p.program for p in prepared], build=DIGITS_BUILD)
    for k, (run, prep) in enumerate(zip(steps, prepared)):
        check_model_run(run, DIGITS_IMAGES, prep, DIGITS_BUILD, before=k * DIGITS_IMAGES)
        want = np.asarray(prep.golden).argmax(axis=1)
        assert run["predictions"] == " ".join(map(str, want))     # the golden's predictions
        assert run["accuracy"] >= 0.8


@pytest.mark.parametrize("build", [PINN_BUILD, COMPACT_BUILD], ids=["pinn", "compact"])
def test_device_icarus_refusals(build):
    check_refusals(device_job("icarus", REFUSALS, build=build))
