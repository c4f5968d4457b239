"""Board flow: report parsing (fast) and a real iCEBreaker build as a smoke test (marker
`synth`): a bitstream and a report with positive numbers."""

import json

import pytest

from spikeforge.boards.flow import count_flip_flops, parse_nextpnr_report, synth_board
from spikeforge.boards.registry import get_board


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown board 'nope'.*icebreaker"):
        get_board("nope")


def test_parse_nextpnr_report_takes_slowest_clock_and_family_cells():
    report = {"fmax": {"clk_a": {"achieved": 80.0, "constraint": 48.0},
                       "clk_b": {"achieved": 40.0, "constraint": 48.0}},
              "utilization": {"ICESTORM_LC": {"used": 123, "available": 5280},
                              "ICESTORM_RAM": {"used": 2, "available": 30},
                              "ICESTORM_DSP": {"used": 0, "available": 8},
                              "SB_IO": {"used": 3, "available": 39}}}
    r = parse_nextpnr_report(report, "ice40")
    assert (r["fmax_mhz"], r["constraint_mhz"], r["timing_met"]) == (40.0, 48.0, False)
    assert (r["luts"], r["lcs"], r["brams"], r["dsps"]) == (123, 123, 2, 0)
    with pytest.raises(ValueError, match="fmax"):
        parse_nextpnr_report({"utilization": {}}, "ice40")


def test_count_flip_flops_reads_the_hierarchy_total_only():
    log = """2.50. Printing statistics.
=== top ===
       40   SB_DFF
      108   SB_DFFESR
        9   SB_LUT4
=== design hierarchy ===
       40   SB_DFF
      108   SB_DFFESR
        1   SB_DFFSR
"""
    assert count_flip_flops(log) == 149
    assert count_flip_flops("Printing statistics.\n=== top ===\n     SB_DFFE      7\n") == 7


@pytest.mark.synth
def test_icebreaker_build_makes_a_bitstream_and_report(tmp_path):
    r = synth_board("icebreaker", build_dir=str(tmp_path), progress=lambda msg: None)
    bitstream = tmp_path / "boards" / "icebreaker" / "top.bin"
    assert bitstream.is_file() and bitstream.stat().st_size > 0
    saved = json.loads((tmp_path / "reports" / "synth-icebreaker.json").read_text())
    assert saved == r
    assert r["board"] == "icebreaker" and r["device"] == "iCE40UP5K-SG48"
    for key in ("fmax_mhz", "target_mhz", "luts", "ffs", "brams"):
        assert r[key] > 0, key
    assert r["dsps"] >= 0 and isinstance(r["timing_met"], bool)
    assert r["ffs"] <= r["lcs"], "every iCE40 flip-flop sits in a logic cell"


@pytest.mark.synth
def test_arty_a7_estimate_counts_cells(tmp_path):
    from spikeforge.boards.flow import estimate_xilinx
    r = estimate_xilinx("lif", build_dir=str(tmp_path), progress=lambda msg: None)
    assert r["fmax_mhz"] is None and r["estimate"]
    assert r["luts"] > 0 and r["ffs"] > 0
    log = (tmp_path / "boards" / "lif-arty_a7" / "synth.log").read_text()
    assert "synth_xilinx" in log or "LUT" in log
    with pytest.raises(ValueError, match="estimate only"):
        synth_board("arty_a7", build_dir=str(tmp_path))
