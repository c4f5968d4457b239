"""The demo's pieces that run without a simulator (spikeforge/demo.py): the summary table,
the progress bars, argument checks. The simulated runs it makes are the ones
tests/test_device_cocotb.py proves."""

import pytest

from spikeforge.demo import _bar, _progress_lines, format_table, run_demo


def test_bar_fills_in_proportion():
    assert _bar(0, 10, width=10) == "[..........] 0/10"
    assert _bar(5, 10, width=10) == "[#####.....] 5/10"
    assert _bar(10, 10, width=10) == "[##########] 10/10"


def test_progress_lines_draw_bars_for_inference_counts():
    seen = []
    show = _progress_lines(seen.append)
    show("4/20 inferences")
    show("loaded digits-ssa: 11 ops")
    assert seen[0].endswith("inferences") and "4/20" in seen[0] and "#" in seen[0]
    assert seen[1] == "  loaded digits-ssa: 11 ops"


ROW = {"model": "digits-ssa", "build": "16 lanes", "inferences": 20,
       "quality": "accuracy 0.950", "golden_quality": "accuracy 0.950", "bit_identical": True,
       "cycles": 10_000, "cycles_vs_ideal": 1.09,
       "clock": {"board": "ulx3s", "mhz": 70, "met": True, "fmax": 120.0}}


def test_table_rates_at_the_board_clock_and_fmax():
    slow = {**ROW, "model": "pinn-sin", "build": "compact", "bit_identical": False,
            "clock": {"board": "icebreaker", "mhz": 18, "met": False, "fmax": 15.0}}
    lines = format_table([ROW, slow]).splitlines()
    assert "7,000" in lines[3] and "12,000 (120.0 MHz)" in lines[3]   # 70 and 120 MHz / 10k
    assert "NO" in lines[4] and "1.09x" in lines[3] and "icebreaker 18 MHz (NOT met)" in lines[4]
    assert "1,800" in lines[4] and "1,500 (15.0 MHz)" in lines[4]


def test_table_without_a_board_report_says_so():
    text = format_table([{**ROW, "clock": None}])
    assert "no report" in text and "n/a" in text


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        run_demo(images=0, synth=False)
    with pytest.raises(ValueError):
        run_demo(points=1, synth=False)


def test_sequence_forwards_progress_to_run_model():
    """The demo's bars come from run_model's progress inside a `sequence` job."""
    from spikeforge.driver import AcceleratorLink, GoldenTransport
    from spikeforge.sim.link_jobs import sequence
    lines = []
    result, _ = sequence(AcceleratorLink(GoldenTransport()),
                         [{"job": "ping"},
                          {"job": "run_model", "args": {"model": "pinn-sin", "count": 2}}],
                         progress=lines.append)
    assert result["steps"][1]["bit_identical_to_golden"]
    assert "2/2 inferences" in lines
