"""boards/timing_estimate.py on small hand-built ECP5 netlists: arrival times add up along the
path, block-RAM outputs start late, in-slice wires cost no routing, loops are cut, and only
endpoints over the period are listed, grouped by the register they end in."""

import json

import pytest

from spikeforge.boards import timing_estimate as te


def netlist(cells, names):
    return {"modules": {"top": {
        "cells": {name: {"type": kind, "port_directions": dirs, "connections": conns}
                  for name, (kind, dirs, conns) in cells.items()},
        "netnames": {name: {"bits": bits, "hide_name": 0} for name, bits in names.items()}}}}


FF_DIRS = {"CLK": "input", "DI": "input", "Q": "output"}
LUT_DIRS = {"A": "input", "B": "input", "Z": "output"}


def ff(di, q):
    return ("TRELLIS_FF", FF_DIRS, {"CLK": [1], "DI": [di], "Q": [q]})


def lut(a, z, b=None):
    return ("LUT4", LUT_DIRS, {"A": [a], "B": [b if b is not None else "0"], "Z": [z]})


CELLS = {
    "src": ff(20, 2), "l1": lut(2, 3), "l2": lut(3, 4), "near": ff(4, 5),
    "ram": ("DP16KD", {"CLKB": "input", "DOB0": "output"}, {"CLKB": [1], "DOB0": [6]}),
    "l3": lut(6, 7), "far": ff(7, 8),
    "lo": lut(2, 9), "mux": ("PFUMX", {"ALUT": "input", "BLUT": "input", "C0": "input",
                                      "Z": "output"},
                             {"ALUT": [9], "BLUT": [9], "C0": [2], "Z": [10]}),
    "via_mux": ff(10, 11),
}
NAMES = {"clk": [1], "a": [2], "n1": [3], "n2": [4], "near_q": [5], "ram_do": [6], "n3": [7],
         "far_q": [8], "lo": [9], "muxed": [10], "via_mux_q": [11], "loop_in": [20]}


def ends_by_register(cells=CELLS):
    loaded = netlist(cells, NAMES)["modules"]["top"]
    names = {}
    for name, net in loaded["netnames"].items():
        names[net["bits"][0]] = (name, 0)
    ends, _ = te.analyse(loaded["cells"], names)
    return {cname: t for t, cname, port, _ in ends if port == "DI"}


def test_arrival_adds_cell_and_net_delays():
    ends = ends_by_register()
    route = te.ROUTE + 0.05          # one sink per net
    a_net = te.ROUTE + 0.05 * 3      # `a` drives l1, lo and the mux select
    assert ends["near"] == pytest.approx(
        te.CLK_TO_Q["TRELLIS_FF"] + a_net + te.COMB["LUT4"] + route + te.COMB["LUT4"] + route)
    assert ends["far"] == pytest.approx(te.CLK_TO_Q["DP16KD"] + route + te.COMB["LUT4"] + route)
    assert ends["far"] > ends["near"]        # a block RAM's output starts the path late


def test_in_slice_mux_inputs_have_no_routing():
    ends = ends_by_register()
    a_net = te.ROUTE + 0.05 * 3
    through_lut = te.CLK_TO_Q["TRELLIS_FF"] + a_net + te.COMB["LUT4"]   # LUT -> ALUT: 0 ns
    through_select = te.CLK_TO_Q["TRELLIS_FF"] + a_net                 # C0 is routed
    assert ends["via_mux"] == pytest.approx(max(through_lut, through_select)
                                            + te.COMB["PFUMX"] + te.ROUTE + 0.05)


def test_a_combinational_loop_is_cut_not_recursed_forever():
    cells = dict(CELLS, l1=lut(2, 3, b=4))     # n2 feeds back into l1
    ends = ends_by_register(cells)
    assert ends["near"] > 0


def test_report_lists_only_endpoints_over_the_period(tmp_path, capsys):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(netlist(CELLS, NAMES)))
    near_ns = ends_by_register()["near"]
    te.main([str(path), "--mhz", str(1000 / (near_ns + 0.5))])   # period between the two
    out = capsys.readouterr().out
    assert "far_q" in out and "near_q" not in out
    assert "1 over" in out
    te.main([str(path), "--detail", "far_q"])
    detail = capsys.readouterr().out
    assert "ram_do" in detail and "n3" in detail
