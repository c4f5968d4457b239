"""`spikeforge report`: golden.json has the documented keys, agrees with the models it
summarizes, and the Markdown and PNG plots are written."""

import json

import pytest

from spikeforge.cli import main
from spikeforge.golden import transformer as tf
from spikeforge.golden.pinn import DEFAULT_TS


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    import spikeforge.cli as cli
    old, cli.REPORTS = cli.REPORTS, out
    try:
        assert main(["report"]) == 0
    finally:
        cli.REPORTS = old
    return out


def test_golden_json_has_the_documented_keys_and_consistent_values(report_dir):
    rep = json.loads((report_dir / "golden.json").read_text())
    images, labels = tf.digits_test_set()
    for mode in ("ssa", "sdsa", "statten"):
        r = rep["digits"][mode]
        imodel, _ = tf.load_int(tf.model_paths(mode)[1])
        assert r["int_acc"] == pytest.approx(tf.accuracy(imodel, images, labels))
        assert 0.0 <= r["float_acc"] <= 1.0
        assert r["drop_points"] == pytest.approx(100 * (r["float_acc"] - r["int_acc"]))
        assert set(r["quantizer_variants"]) == {"w8_m16", "w4_m16", "w8_m8"}
        assert r["quantizer_variants"]["w8_m16"] == pytest.approx(r["int_acc"])
        assert all(0.0 < r["layers"][n]["rate"] < 1.0 for n in ("emb", "attn", "fc2"))
    for problem in ("sin", "multi"):
        p = rep["pinn"][problem]
        assert p["float_rel_l2"] > 0
        for key in ("snn_rel_l2", "snn_rel_l2_uncalibrated"):
            assert list(p[key]) == [str(t) for t in DEFAULT_TS]
        errors = [p["snn_rel_l2"][str(t)] for t in DEFAULT_TS]
        assert errors[-1] < errors[0]
    sin = rep["pinn"]["sin"]
    assert sin["snn_rel_l2"]["64"] <= 5e-3 and sin["snn_rel_l2"]["16"] <= 1e-2
    assert min(sin["snn_rel_l2_uncalibrated"].values()) > 10 * max(sin["snn_rel_l2"].values())


def test_markdown_and_plots_are_written(report_dir):
    md = (report_dir / "golden.md").read_text()
    assert "| ssa |" in md and "integer SNN, uncalibrated" in md
    rep = json.loads((report_dir / "golden.json").read_text())
    assert {"pinn_error_vs_T.png", "digit_raster.png", "digits_accuracy.png",
            "pinn_solution_sin.png"} <= set(rep["plots"])
    for name in rep["plots"]:
        head = (report_dir / name).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n", name
    assert (report_dir / "summary.md").exists()


def test_report_without_golden_only_summarizes(tmp_path, monkeypatch):
    import spikeforge.cli as cli
    monkeypatch.setattr(cli, "REPORTS", tmp_path)
    (tmp_path / "synth-x.json").write_text(json.dumps(dict(
        top="core", board="icebreaker", device="iCE40UP5K", fmax_mhz=50.0, target_mhz=48,
        timing_met=True, luts=1, ffs=2, brams=3, dsps=0)))
    assert main(["report", "--no-golden"]) == 0
    assert not (tmp_path / "golden.json").exists()
    assert "| core | icebreaker | iCE40UP5K | 50.0 |" in (tmp_path / "summary.md").read_text()
