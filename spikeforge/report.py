"""Golden-model report: digits accuracy per attention type, spike sparsity and synaptic
operations per layer, golden speed, spiking-PINN error tables, and plots.

Writes build/reports/golden.json, golden.md and PNG plots (matplotlib, Agg backend):
pinn_solution_<problem>.png, pinn_error_vs_T.png, digit_raster.png, digits_accuracy.png.
Everything is computed from the shipped model files in golden/data with NumPy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .golden import transformer as tf
from .golden.attention import MODES
from .golden.pinn import DEFAULT_TS, PROBLEMS, pinn_report

# Quantizer variants reported beside the shipped 8-bit-weight / 16-bit-membrane model.
VARIANTS = {"w8_m16": (8, 16), "w4_m16": (4, 16), "w8_m8": (8, 8)}
RASTER_LAYERS = ("emb", "q", "k", "v", "attn", "proj", "fc1", "fc2")


def digits_section(progress) -> tuple[dict, dict]:
    """({attention: results}, {attention: (int model, trace of the first test image)})."""
    images, labels = tf.digits_test_set()
    out, traces = {}, {}
    for mode in MODES:
        fpath, ipath = tf.model_paths(mode)
        fmodel, _ = tf.load_float(fpath)
        imodel, meta = tf.load_int(ipath)
        float_acc = tf.accuracy(fmodel, images, labels)
        start = time.perf_counter()
        tr = imodel.run(tf.encode_input(images, imodel.cfg))
        seconds = time.perf_counter() - start
        int_acc = float(np.mean(tr.predictions() == labels))
        variants = {name: tf.accuracy(tf.quantize(fmodel, wq, w), images, labels)
                    for name, (wq, w) in VARIANTS.items()}
        out[mode] = {
            "float_acc": float_acc, "int_acc": int_acc, "drop_points": 100 * (float_acc - int_acc),
            "n_test": int(len(images)), "int_seconds": seconds,
            "images_per_second": len(images) / seconds, "sat_count": tr.sat_count,
            "layers": tf.layer_stats(imodel, tr), "quantizer_variants": variants,
            "config": {"attention": mode, "block": imodel.cfg.block,
                       "residual": imodel.cfg.residual, "coding": imodel.cfg.coding,
                       "timesteps": imodel.cfg.timesteps, "dim": imodel.cfg.dim,
                       "heads": imodel.cfg.heads},
            "trained": {k: meta[k] for k in ("epochs", "seed", "torch_acc") if k in meta}}
        traces[mode] = (imodel, imodel.run(tf.encode_input(images[:1], imodel.cfg)),
                        int(labels[0]))
        progress(f"digits {mode}: float {float_acc:.4f}, integer {int_acc:.4f} "
                 f"({len(images)} images in {seconds:.2f} s)")
    return out, traces


def pinn_section(progress) -> tuple[dict, dict]:
    out, preds = {}, {}
    for problem in sorted(PROBLEMS):
        rep = pinn_report(problem, predictions=True)
        preds[problem] = rep.pop("predictions")
        # JSON keys are strings; T stays readable as "8", "16", ...
        out[problem] = {k: ({str(t): e for t, e in v.items()} if isinstance(v, dict) else v)
                        for k, v in rep.items()}
        progress(f"pinn {problem}: float {rep['float_rel_l2']:.2e}, integer SNN "
                 + ", ".join(f"T={t} {e:.2e}" for t, e in rep["snn_rel_l2"].items()))
    return out, preds


def markdown(report: dict) -> str:
    md = ["# spikeforge golden-model report", "",
          "## Digits (scikit-learn, held-out fifth), spiking transformer, T = 4", "",
          "| attention | float acc | integer acc | drop (points) | 4-bit weights | 8-bit membrane "
          "| images/s (integer golden) |", "|---|---|---|---|---|---|---|"]
    for mode, r in report["digits"].items():
        v = r["quantizer_variants"]
        md.append(f"| {mode} | {r['float_acc']:.2%} | {r['int_acc']:.2%} | "
                  f"{r['drop_points']:.2f} | {v['w4_m16']:.2%} | {v['w8_m8']:.2%} | "
                  f"{r['images_per_second']:.0f} |")
    md += ["", "Firing rate per layer (fraction of neuron-timesteps that spike; "
           "x2 is the residual stream) and synaptic operations per inference:", "",
           "| attention | " + " | ".join(RASTER_LAYERS) + " | synops/inference |",
           "|---|" + "---|" * (len(RASTER_LAYERS) + 1)]
    for mode, r in report["digits"].items():
        layers = r["layers"]
        synops = sum(s.get("synops", 0.0) for s in layers.values())
        md.append(f"| {mode} | " + " | ".join(f"{layers[n]['rate']:.3f}" for n in RASTER_LAYERS)
                  + f" | {synops:,.0f} |")
    md += ["", "## Spiking PINN: relative L2 error vs the analytic solution", ""]
    for problem, r in report["pinn"].items():
        Ts = list(r["snn_rel_l2"])
        md += [f"### {problem}: {r['solution']}", "",
               f"Float ANN: {r['float_rel_l2']:.2e}", "",
               "| | " + " | ".join(f"T={t}" for t in Ts) + " |", "|---|" + "---|" * len(Ts),
               "| integer SNN, calibrated | " + " | ".join(
                   f"{r['snn_rel_l2'][t]:.2e}" for t in Ts) + " |",
               "| float SNN, calibrated | " + " | ".join(
                   f"{r['snn_float_rel_l2'][t]:.2e}" for t in Ts) + " |",
               "| integer SNN, uncalibrated | " + " | ".join(
                   f"{r['snn_rel_l2_uncalibrated'][t]:.2e}" for t in Ts) + " |", ""]
    md += ["Plots: " + ", ".join(report["plots"]), ""]
    return "\n".join(md)


def plots(out_dir: Path, report: dict, traces: dict, preds: dict) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        files.append(name)

    for problem, p in preds.items():
        fig, (ax, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
        ax.plot(p["x"], p["exact"], "k-", lw=2, label="analytic")
        ax.plot(p["x"], p["ann"], "k--", lw=1, label="float ANN")
        for T, u in p["int"].items():
            ax.plot(p["x"], u, lw=1, label=f"integer SNN T={T}")
            ax_err.semilogy(p["x"], np.abs(u - p["exact"]) + 1e-12, lw=1, label=f"T={T}")
        ax.set(title=f"PINN {problem}: u(x)", xlabel="x")
        ax_err.set(title="|u_SNN − u_exact|", xlabel="x")
        ax.legend(fontsize=7)
        ax_err.legend(fontsize=7)
        save(fig, f"pinn_solution_{problem}.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for problem, r in report["pinn"].items():
        Ts = [int(t) for t in r["snn_rel_l2"]]
        ax.loglog(Ts, list(r["snn_rel_l2"].values()), "o-", label=f"{problem} calibrated")
        ax.loglog(Ts, list(r["snn_rel_l2_uncalibrated"].values()), "x--",
                  label=f"{problem} uncalibrated")
        ax.axhline(r["float_rel_l2"], ls=":", lw=1, color=ax.lines[-1].get_color())
    ax.set(xlabel="timesteps T", ylabel="relative L2 error", title="Spiking PINN (integer)")
    ax.legend(fontsize=7)
    save(fig, "pinn_error_vs_T.png")

    imodel, tr, label = traces["ssa"]
    fig, axes = plt.subplots(1, len(RASTER_LAYERS), figsize=(16, 3.5), sharey=False)
    for ax, name in zip(axes, RASTER_LAYERS):
        s = tr.values[name][0]                          # [T, N, D]
        T, N, D = s.shape
        grid = s.transpose(1, 0, 2).reshape(N * T, D)   # rows: token-major, then t
        ax.imshow(grid != 0, aspect="auto", cmap="Greys", interpolation="nearest")
        ax.set(title=f"{name} ({np.mean(s != 0):.0%})", xlabel="channel",
               ylabel="token × t" if name == "emb" else None)
    fig.suptitle(f"Spike raster of one test digit (label {label}, predicted "
                 f"{tr.predictions()[0]}) through the SSA transformer")
    save(fig, "digit_raster.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    modes = list(report["digits"])
    x = np.arange(len(modes))
    for i, key in enumerate(("float_acc", "int_acc")):
        ax.bar(x + (i - 0.5) * 0.35, [report["digits"][m][key] for m in modes], 0.35,
               label=key.replace("_acc", ""))
    ax.set(xticks=x, xticklabels=modes, ylim=(0.8, 1.0), ylabel="held-out accuracy",
           title="Digits accuracy per attention type")
    ax.axhline(0.95, ls=":", color="k", lw=1)
    ax.legend()
    save(fig, "digits_accuracy.png")
    return files


def golden_report(out_dir: Path, progress=print) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    digits, traces = digits_section(progress)
    pinn, preds = pinn_section(progress)
    report = {"digits": digits, "pinn": pinn, "pinn_timesteps": list(DEFAULT_TS)}
    report["plots"] = plots(out_dir, report, traces, preds)
    (out_dir / "golden.json").write_text(json.dumps(report, indent=2))
    (out_dir / "golden.md").write_text(markdown(report))
    progress(f"wrote {out_dir / 'golden.json'}, {out_dir / 'golden.md'} and "
             f"{len(report['plots'])} plots")
    return report
