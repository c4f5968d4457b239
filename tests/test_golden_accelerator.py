"""Golden ideal cycle bound of the accelerator (golden/accelerator.py) on programs small enough
to count by hand; that the RTL never beats it is tested in test_accelerator.py and
test_device_cocotb.py."""

import numpy as np
import pytest

from spikeforge.golden.accelerator import PIPELINE_FILL, accelerator_cycles, linear_events
from spikeforge.golden.compile import BufKind, Op, _Builder
from spikeforge.golden.lif import LIFParams
from spikeforge.golden.program_loader import AcceleratorConfig

T = 2


def tiny_program():
    """UINT2 [1 token, 4 channels] -> LINEAR 4 units (spikes) -> READOUT 2."""
    b = _Builder(T)
    x = b.buffer(1, 4, BufKind.UINT, 2)
    h = b.buffer(1, 4, BufKind.SPIKES)
    out = b.buffer(1, 2, BufKind.INT, 32)
    b.matrix_op(Op.LINEAR, x, h, np.eye(4, dtype=int) * 3, None, 8,
                lif=LIFParams(theta=2, width=16, reset="zero"))
    b.matrix_op(Op.READOUT, h, out, np.ones((2, 4), dtype=int), None, 8)
    return b.program(x, out)


def test_linear_events_counts_live_channel_planes():
    # [T=2, tokens=1, channels=4], UINT2: plane 0 live on ch 0 and 3, plane 1 on ch 2 and 3
    x = np.array([[[1, 0, 2, 3]], [[0, 0, 0, 1]]])
    assert linear_events(x, BufKind.UINT, 2).tolist() == [4]
    spikes = np.array([[[1, 0], [0, 0]], [[1, 0], [0, 1]]])       # [T, 2 tokens, 2 ch]
    assert linear_events(spikes, BufKind.SPIKES, 1).tolist() == [1, 1]
    signed = np.array([[[1, -1, 0]], [[-1, 0, 0]]])
    assert linear_events(signed, BufKind.SIGNED_SPIKES, 1).tolist() == [3]


def test_tiny_program_bound_by_hand():
    prog = tiny_program()
    cfg = AcceleratorConfig.for_programs(prog, lanes=4)
    x = np.array([[[1, 0, 2, 3]], [[0, 0, 0, 1]]])
    got = accelerator_cycles(prog, x, cfg)
    assert got["encode"] == T * 4                # one read per input element
    # LINEAR: reads 1 group x 2 planes x T = 4, events 4 x 1 unit group, drain T x 1 group
    assert got["ops"][0] == max(4, 4) + T + PIPELINE_FILL
    assert got["total"] == got["encode"] + sum(got["ops"])


def test_more_spikes_cost_more_and_lanes_cost_less():
    prog = tiny_program()
    quiet = np.zeros((T, 1, 4), dtype=int)
    busy = np.full((T, 1, 4), 3)
    cfg4 = AcceleratorConfig.for_programs(prog, lanes=4)
    assert (accelerator_cycles(prog, busy, cfg4)["total"] >
            accelerator_cycles(prog, quiet, cfg4)["total"])
    cfg1 = AcceleratorConfig.for_programs(prog, lanes=1)
    assert (accelerator_cycles(prog, busy, cfg1)["ops"][0] >
            accelerator_cycles(prog, busy, cfg4)["ops"][0])


def test_bad_input_shape_is_refused():
    prog = tiny_program()
    with pytest.raises(ValueError):
        accelerator_cycles(prog, np.zeros((T, 1, 5), dtype=int),
                           AcceleratorConfig.for_programs(prog))
