"""cocotb bench that runs a host-link job (sim/link_jobs.py) through the real driver against a
device top with UART ports `rx` / `tx` (plus `clk` / `rst`). Host side: `link_runner`.

Config (`load_stimulus`): `divisor` (clock cycles per UART bit), `timeout_cycles` (see
`CocotbUartTransport`), `max_gap_cycles` + `seed` (random idle gaps between the bytes we send),
`job` ("module:function"), `args` (JSON keyword arguments), optional `progress_file`
(the job's progress lines go there, for the host to show while the simulation runs).
The job runs as `function(AcceleratorLink(transport), **args)` in a `cocotb.task.bridge`
thread; its (summary, arrays) are written with `write_results`. An exception in the job
(DeviceError, LinkTimeout, AssertionError, ...) fails the cocotb test with its type and message,
also written to results.json as "error" so the host can raise it verbatim.

`UartLoopback` is the tiny device of the transport's own tests: `tx` follows `rx` through a
register.
"""

import importlib
import inspect

import cocotb
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from cocotb.task import bridge
from cocotb.triggers import ClockCycles

from ..driver import AcceleratorLink
from .link_transport import CocotbUartTransport
from .runner import load_stimulus, write_results
from .streams import start_and_reset

CLOCK_NS = 10


class UartLoopback(wiring.Component):
    """`tx` = `rx` delayed by one register."""

    rx: In(1, init=1)
    tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.tx.eq(self.rx)
        return m


def resolve_job(spec: str):
    """"package.module:function" -> the function (ValueError naming what is missing)."""
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"job must be 'module:function', got {spec!r}")
    func = getattr(importlib.import_module(module_name), func_name, None)
    if not callable(func):
        raise ValueError(f"job {spec!r}: {module_name} has no function {func_name!r}")
    return func


def _progress_writer(path: str):
    def progress(msg: str) -> None:
        with open(path, "a") as f:
            f.write(msg + "\n")
    return progress


@cocotb.test()
async def link_job(dut):
    config, _ = load_stimulus()
    func = resolve_job(config["job"])
    args = dict(config.get("args", {}))
    if config.get("progress_file") and "progress" in inspect.signature(func).parameters:
        args["progress"] = _progress_writer(config["progress_file"])
    transport = CocotbUartTransport(dut, config["divisor"], config["timeout_cycles"],
                                    clock_ns=CLOCK_NS, max_gap_cycles=config.get("max_gap_cycles", 0),
                                    seed=config.get("seed", 0))
    await start_and_reset(dut, (), CLOCK_NS)   # rx is held high (idle) by the transport
    await ClockCycles(dut.clk, 2)
    transport.start()
    link = AcceleratorLink(transport)
    try:
        summary, arrays = await bridge(func)(link, **args)
    except Exception as e:                     # noqa: BLE001 - reported, then re-raised
        message = f"{type(e).__name__}: {e}"
        write_results({"error": message, "error_type": type(e).__name__,
                       "bytes_sent": transport.bytes_sent,
                       "bytes_received": transport.bytes_received})
        raise AssertionError(f"link job {config['job']} failed: {message}") from e
    finally:
        transport.stop()
    summary = dict(summary)
    summary["link"] = {"bytes_sent": transport.bytes_sent,
                       "bytes_received": transport.bytes_received,
                       "framing_errors": transport.framing_errors,
                       "sim_time_ns": int(cocotb.simtime.get_sim_time("ns"))}
    write_results(summary, **arrays)
