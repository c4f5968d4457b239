"""Train the spiking transformer of `golden/transformer.py` on scikit-learn's digits.

    python -m spikeforge.golden.train_transformer                 # ssa, sdsa, statten
    python -m spikeforge.golden.train_transformer --attention sdsa --epochs 60

Data: the 1797 8×8 digits (pixels 0..16), a fixed stratified split (seed 0) holding out
one fifth (360 images); the held-out images are shipped as golden/data/digits_test.npz so
the golden model, tests and reports never need scikit-learn.

Training: the float model of golden/transformer.py in PyTorch with BatchNorm after every
spiking linear (folded into weights and biases at export), multi-step LIF with an arctan
surrogate gradient (β = 1 − 2^-k, hard reset, threshold 1), attention as golden's float
path, the head on the mean of the residual stream over T and tokens. AdamW with a cosine
schedule, label smoothing, one-pixel shifts of half the images as augmentation. After export the
NumPy float model is re-run on the held-out set (it must agree with torch in eval mode),
then quantized (8-bit weights, 16-bit membrane) and both are saved:
golden/data/digits_<attention>_{float,int}.npz.

torch and scikit-learn are imported only here (the `train` extra).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .transformer import (DATA, LAYERS, FloatTransformer, TransformerConfig, accuracy,
                          encode_input, quantize, save_float)

PRESETS = {
    "ssa": TransformerConfig(attention="ssa"),
    "sdsa": TransformerConfig(attention="sdsa", attn_scale=0.25, attn_theta=0.5),
    "statten": TransformerConfig(attention="statten", block=2, attn_scale=0.0625),
}


def digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x, y = d.images.reshape(len(d.images), 64).astype(np.int64), d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def build_torch_model(cfg: TransformerConfig):
    import torch
    from torch import nn

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x >= 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            alpha = 2.0
            return grad * alpha / 2 / (1 + (torch.pi / 2 * alpha * x) ** 2)

    def lif(currents, theta):
        """[B, T, ...] currents -> spikes, the float LIF of golden/lif.py (reset to zero)."""
        v = torch.zeros_like(currents[:, 0])
        out = []
        for t in range(currents.shape[1]):
            h = cfg.beta * v + currents[:, t]
            s = Spike.apply(h - theta)
            v = h * (1 - s) if cfg.reset == "zero" else h - s * theta
            out.append(s)
        return torch.stack(out, 1)

    class LinearBN(nn.Module):
        def __init__(self, n_in, n_out):
            super().__init__()
            self.fc = nn.Linear(n_in, n_out)
            self.bn = nn.BatchNorm1d(n_out)

        def forward(self, x):
            shape = x.shape
            y = self.bn(self.fc(x.reshape(-1, shape[-1])))
            return y.reshape(shape[:-1] + (y.shape[-1],))

        def folded(self):
            bn = self.bn
            g = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
            w = self.fc.weight.detach() * g[:, None]
            b = (self.fc.bias.detach() - bn.running_mean) * g + bn.bias.detach()
            return w.double().numpy(), b.double().numpy()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            c = cfg
            shapes = c.shapes()
            self.lin = nn.ModuleDict({name: LinearBN(shapes[name][1], shapes[name][0])
                                      for name in LAYERS[:-1]})
            self.pos = nn.Parameter(torch.zeros(c.tokens, c.dim))
            self.head = nn.Linear(c.dim, c.classes)

        def heads(self, x):
            B, T, N, D = x.shape
            return x.reshape(B, T, N, cfg.heads, D // cfg.heads).permute(0, 3, 1, 2, 4)

        def attention(self, q, k, v):
            c = cfg
            q, k, v = self.heads(q), self.heads(k), self.heads(v)      # [B, H, T, N, d]
            B, H, T, N, d = q.shape
            if c.attention == "sdsa":
                a, b = (k, v) if c.sdsa_variant == "reference" else (q, k)
                col = (a * b).sum(-2) * c.attn_scale                       # [B, H, T, d]
                mask = lif(col.reshape(B * H, T, d), c.attn_theta).reshape(B, H, T, 1, d)
                y = (q if c.sdsa_variant == "reference" else v) * mask
            else:
                nb, blk = T // c.block, (B, H, T // c.block, c.block * N, d)
                kv = k.reshape(blk).transpose(-1, -2) @ v.reshape(blk)
                y = (q.reshape(blk) @ kv).reshape(B, H, T, N, d) * c.attn_scale
                y = lif(y.permute(0, 1, 2, 3, 4).reshape(B * H, T, N, d), c.attn_theta)
                y = y.reshape(B, H, T, N, d)
            return y.permute(0, 2, 3, 1, 4).reshape(B, T, N, H * d)

        def forward(self, x):
            c = cfg
            sl = lambda name, inp: lif(self.lin[name](inp), c.theta)  # noqa: E731
            s0 = lif(self.lin["emb"](x) + self.pos, c.theta)
            a = self.attention(sl("q", s0), sl("k", s0), sl("v", s0))
            x1 = s0 + sl("proj", a)
            x2 = x1 + sl("fc2", sl("fc1", x1))
            return self.head(x2.mean(dim=(1, 2)))

        def export(self) -> dict:
            params = {}
            for name in LAYERS[:-1]:
                params[name + ".w"], params[name + ".b"] = self.lin[name].folded()
            params["emb.b"] = params["emb.b"][None, :] + self.pos.detach().double().numpy()
            params["head.w"] = self.head.weight.detach().double().numpy()
            params["head.b"] = self.head.bias.detach().double().numpy()
            return params

    return Net()


def _shift_augment(images, rng):
    """Shift half of the 8×8 images by one pixel in y and/or x (zero fill)."""
    out = np.zeros_like(images).reshape(-1, 8, 8)
    src = images.reshape(-1, 8, 8)
    shifts = rng.integers(-1, 2, size=(len(images), 2)) * (rng.random((len(images), 1)) < 0.5)
    for i, (dy, dx) in enumerate(shifts):
        ys, yd = (slice(0, 8 - dy), slice(dy, 8)) if dy >= 0 else (slice(-dy, 8), slice(0, 8 + dy))
        xs, xd = (slice(0, 8 - dx), slice(dx, 8)) if dx >= 0 else (slice(-dx, 8), slice(0, 8 + dx))
        out[i, yd, xd] = src[i, ys, xs]
    return out.reshape(images.shape)


def train(cfg: TransformerConfig, epochs: int = 150, seed: int = 0, batch: int = 64,
          lr: float = 2e-3, verbose: bool = True):
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x_train, x_test, y_train, y_test = digits_split()
    net = build_torch_model(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x_train) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    to_input = lambda imgs, s: torch.tensor(  # noqa: E731
        encode_input(imgs, cfg, seed=s) / 2.0 ** cfg.input_shift, dtype=torch.float32)
    start = time.time()
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(len(x_train))
        imgs = _shift_augment(x_train[order], rng)
        total = 0.0
        for lo in range(0, len(order), batch):
            logits = net(to_input(imgs[lo:lo + batch], seed * 100003 + epoch * 1000 + lo))
            loss = loss_fn(logits, torch.tensor(y_train[order][lo:lo + batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(logits)
        if verbose and (epoch % 10 == 9 or epoch == epochs - 1):
            net.eval()
            with torch.no_grad():
                acc = float((net(to_input(x_test, 0)).argmax(1).numpy() == y_test).mean())
            print(f"[{cfg.attention}] epoch {epoch + 1}/{epochs} loss {total / len(order):.4f} "
                  f"held-out acc {acc:.4f} ({time.time() - start:.0f} s)", flush=True)
    net.eval()
    with torch.no_grad():
        torch_acc = float((net(to_input(x_test, 0)).argmax(1).numpy() == y_test).mean())
    return FloatTransformer(cfg, net.export()), torch_acc, (x_test, y_test), time.time() - start


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attention", choices=sorted(PRESETS), action="append")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coding", choices=("direct", "rate", "temporal"), default="direct")
    ap.add_argument("--out-dir", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: reproducible bit for bit)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.attention or ["ssa", "sdsa", "statten"]:
        cfg = replace(PRESETS[name], coding=args.coding)
        model, torch_acc, (x_test, y_test), seconds = train(cfg, args.epochs, args.seed)
        float_acc = accuracy(model, x_test, y_test)
        int_model = quantize(model)
        int_acc = accuracy(int_model, x_test, y_test)
        meta = dict(seed=args.seed, epochs=args.epochs, torch=torch.__version__,
                    torch_acc=torch_acc, float_acc=float_acc, int_acc=int_acc,
                    train_seconds=round(seconds, 1))
        suffix = "" if args.coding == "direct" else f"_{args.coding}"
        fpath = args.out_dir / f"digits_{name}{suffix}_float.npz"
        ipath = args.out_dir / f"digits_{name}{suffix}_int.npz"
        save_float(fpath, model, **meta)
        int_model.save(ipath, **meta)
        np.savez_compressed(args.out_dir / "digits_test.npz", images=x_test.astype(np.uint8),
                            labels=y_test.astype(np.uint8))
        print(f"[{name}] torch {torch_acc:.4f}  float golden {float_acc:.4f}  "
              f"int golden {int_acc:.4f}  -> {fpath.name} ({fpath.stat().st_size} B), "
              f"{ipath.name} ({ipath.stat().st_size} B)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
