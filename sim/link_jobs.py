"""Host-link jobs: functions `job(link, **args) -> (summary: dict, arrays: dict)` that run on an
`AcceleratorLink`, whatever is behind it. `spikeforge run` calls them in-process on the golden
reference device or a board; `link_bench` calls the same functions in a cocotb bridge thread
against simulated RTL (`link_runner.run_link_job(..., job="spikeforge.sim.link_jobs:ping")`).
The summary must be JSON-able; arrays are NumPy arrays.

- `echo` / `silent_read`: raw transport round trips (loopback tests);
- `ping`, `command`, `write_read`: single commands; `sequence`: several in one run;
- `run_model`: the one implementation of `spikeforge run` (compile a shipped model, load it,
  infer held-out digits / PINN grid points, compare with the golden network bit for bit);
- `reset_mid_run`: RESET sent during an inference, then the next inference is exact.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import numpy as np

from ..driver import DeviceError
from ..golden.host_link import Cmd, Error, Space

MODELS = ("digits-ssa", "digits-sdsa", "digits-statten", "pinn-sin", "pinn-multi")


def _quiet(msg: str) -> None:
    pass


# --- raw transport and single commands ---

def echo(link, data_hex: str, expect_hex: str | None = None):
    """Write raw bytes, read as many back; with `expect_hex`, assert they are those bytes."""
    data = bytes.fromhex(data_hex)
    link.transport.write(data)
    got = link.transport.read(len(data), link.timeout_s)
    if expect_hex is not None:
        want = bytes.fromhex(expect_hex)
        assert got == want, (f"echo: {len(got)} bytes back, first difference at byte "
                             f"{next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))}"
                             f": got {got[:16].hex()}..., expected {want[:16].hex()}...")
    return {"sent": data.hex(), "received": got.hex()}, {}


def silent_read(link, n: int = 1):
    """Read `n` bytes without sending anything: what arrives and how long the read waited."""
    got = link.transport.read(n, link.timeout_s)
    return {"received": got.hex(), "waited_cycles": getattr(link.transport,
                                                            "last_wait_cycles", None)}, {}


def ping(link):
    return {"version": link.ping()}, {}


def command(link, cmd: str, payload_hex: str = ""):
    """One raw command by name (`Cmd` member); returns the ACK payload. NACK -> DeviceError."""
    return {"reply": link.command(Cmd[cmd], bytes.fromhex(payload_hex)).hex()}, {}


def write_read(link, space: int, addr: int, data_hex: str):
    """WRITE `data_hex` at `addr` of `space`, READ it back."""
    data = bytes.fromhex(data_hex)
    link.write(Space(space), addr, data)
    back = link.read(Space(space), addr, len(data))
    return {"written": data.hex(), "read": back.hex()}, {}


def load_image(link, image_hex: str):
    """WRITE an image (any bytes) to PROGRAM and LOAD it; returns the LOAD reply."""
    link.load_program(bytes.fromhex(image_hex))
    return {"loaded": True}, {}


def sequence(link, steps: list, progress=_quiet):
    """Several jobs of this module on one link, in one simulation: `steps` is a list of
    {"job": name, "args": {...}, "catch": bool}. A step with `catch` records its exception
    as "ExceptionType: message" under "error" instead of ending the run. `progress` goes
    to the steps that report progress (run_model)."""
    results, arrays = [], {}
    for k, step in enumerate(steps):
        func = globals().get(step["job"])
        if func is None or step["job"] in ("sequence", "prepare_model") or step["job"][0] == "_":
            raise ValueError(f"step {k}: {step['job']!r} is not a job of {__name__}")
        args = dict(step.get("args", {}))
        if "progress" in inspect.signature(func).parameters:
            args.setdefault("progress", progress)
        try:
            summary, out = func(link, **args)
        except Exception as e:                 # noqa: BLE001 - only when the step asks
            if not step.get("catch"):
                raise
            results.append({"error": f"{type(e).__name__}: {e}"})
            continue
        results.append(summary)
        arrays.update({f"{k}_{name}": value for name, value in out.items()})
    return {"steps": results}, arrays


# --- a shipped network end to end ---

@dataclass
class ModelRun:
    """What a `run_model` needs besides the link: the compiled program, the encoded inputs,
    the golden network's outputs, and what to score the outputs against."""
    model: str
    family: str                 # "digits" | "pinn"
    program: object             # golden.compile.Program
    inputs: np.ndarray          # [count, T, tokens, channels]
    golden: np.ndarray          # [count, out_channels] int64
    labels: np.ndarray | None = None            # digits
    exact: np.ndarray | None = None             # PINN: analytic u at the grid points
    readout_scale: float | None = None          # PINN: u = output * readout_scale


def prepare_model(model: str, count: int, timesteps: int = 16) -> ModelRun:
    """Compile a shipped model and its held-out inputs (digits test images / PINN grid)."""
    from ..golden.compile import compile_pinn, compile_transformer, pinn_input

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: one of {', '.join(MODELS)}")
    if count < 1:
        raise ValueError(f"--count must be positive, got {count}")
    family, name = model.split("-", 1)
    if family == "digits":
        from ..golden import transformer as tf
        net, _ = tf.load_int(tf.model_paths(name)[1])
        images, labels = tf.digits_test_set()
        images, labels = images[:count], labels[:count]
        enc = tf.encode_input(images, net.cfg)
        return ModelRun(model, family, compile_transformer(net), enc,
                        np.asarray(net.run(enc).logits, dtype=np.int64), labels=labels)
    from ..golden.pinn import PROBLEMS, convert, eval_grid, load_weights, snn_output_int
    params = load_weights(name)
    snn = convert(params, timesteps, integer=True)
    x = eval_grid(count)
    return ModelRun(model, family, compile_pinn(snn), pinn_input(snn, x),
                    snn_output_int(snn, x)[:, None].astype(np.int64),
                    exact=PROBLEMS[params["problem"]].u(x),
                    readout_scale=2.0 ** -snn.out_shift / snn.T)


def run_model(link, model: str, count: int = 20, timesteps: int = 16, *,
              device: str = "the device", progress=_quiet, prepared: ModelRun | None = None):
    """Load `model` over `link`, run `count` inferences, compare every output with the golden
    network. Returns (summary, arrays): summary has bit_identical_to_golden, mismatches,
    accuracy + predictions (digits) or the error vs the analytic solution (PINN), the device's
    counters and status, its perf counters when the driver and device have PERF, and
    layer_cycles (cycles per op of the last inference; None from a device without LAYERS)."""
    from ..golden.pinn import rel_l2

    run = prepared or prepare_model(model, count, timesteps)
    progress(f"host link to {device}: protocol version {link.ping()}")
    t0 = time.monotonic()
    link.load_program(run.program)
    progress(f"loaded {model}: {len(run.program.ops)} ops, T={run.program.timesteps}, "
             f"input {link.input_shape} ({len(run.program.to_bytes())} bytes in "
             f"{time.monotonic() - t0:.1f} s)")
    t0 = time.monotonic()
    outputs = []
    n = len(run.inputs)
    for k in range(n):
        outputs.append(link.infer(run.inputs[k])[0])
        if (k + 1) % max(1, n // 10) == 0 or k + 1 == n:
            progress(f"{k + 1}/{n} inferences")
    outputs = np.array(outputs, dtype=np.int64).reshape(run.golden.shape)
    wrong = np.flatnonzero((outputs != run.golden).any(axis=1))
    summary = {"model": model, "device": device, "inferences": n,
               "bit_identical_to_golden": not len(wrong),
               "mismatched_inferences": [int(k) for k in wrong[:10]],
               "seconds": round(time.monotonic() - t0, 2)}
    arrays = {"outputs": outputs, "golden": run.golden}
    if run.family == "digits":
        pred = outputs.argmax(axis=1)
        summary["predictions"] = " ".join(map(str, pred))
        summary["accuracy"] = round(float(np.mean(pred == run.labels)), 4)
        arrays["predictions"] = pred
    else:
        u = outputs[:, 0] * run.readout_scale
        summary["max_abs_error_vs_analytic"] = float(f"{np.max(np.abs(u - run.exact)):.4g}")
        # relative L2 is meaningless where u vanishes everywhere (count 2: x = 0 and 1)
        summary["rel_l2_vs_analytic"] = (float(f"{rel_l2(u, run.exact):.4g}")
                                         if np.linalg.norm(run.exact) > 1e-9 else None)
        arrays["u"] = u
    summary["counters"] = link.counters()
    summary["status"] = link.status()
    perf = _optional(link, "perf", Error.UNKNOWN_CMD)
    if isinstance(perf, dict):     # JSON-able for the bench's results file
        perf = {k: int(v) if isinstance(v, (int, np.integer)) else v for k, v in perf.items()}
    if perf is not None:
        summary["perf"] = perf
    # an older device has no LAYERS space: its READ is refused as out of range
    summary["layer_cycles"] = _optional(link, "layer_cycles", Error.BAD_ADDRESS)
    return summary, arrays


def reset_mid_run(link, model: str = "pinn-sin", timesteps: int = 16,
                  reset_after_s: float = 40e-6, prepared: ModelRun | None = None):
    """RESET in the middle of an inference, then the next one is exact: load `model`, run
    its first input to the end, run it again and RESET `reset_after_s` after sending the RUN,
    then run it once more. Summary: whether the RESET stopped the RUN, the status after it,
    PERF cycles of the full, the stopped and the final run, and whether both finished
    outputs equal the golden network's."""
    run = prepared or prepare_model(model, 1, timesteps)
    link.load_program(run.program)
    first = link.infer(run.inputs[0])[0]
    full = _optional(link, "perf", Error.UNKNOWN_CMD)
    link.start_run(run.inputs[0])
    link.transport.pause(reset_after_s)
    stopped = link.reset()
    status = link.status()
    cut = _optional(link, "perf", Error.UNKNOWN_CMD)
    again = link.infer(run.inputs[0])[0]
    final = _optional(link, "perf", Error.UNKNOWN_CMD)
    golden = run.golden[0]
    return {"model": model, "stopped": stopped, "status_after_reset": status,
            "cycles": {"full": full and full["cycles"], "stopped": cut and cut["cycles"],
                       "after": final and final["cycles"]},
            "first_bit_identical": bool((first == golden).all()),
            "after_reset_bit_identical": bool((again == golden).all())}, {"output": again}


def _optional(link, name: str, refused: Error):
    """`link.<name>()` if the driver has it; None if it does not or the device refuses it
    with `refused` (a device older than the command)."""
    if not hasattr(link, name):
        return None
    try:
        return getattr(link, name)()
    except DeviceError as e:
        if e.code == refused:
            return None
        raise
