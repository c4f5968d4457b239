"""Train the float PINNs that `golden/pinn.py` converts to spiking networks (design.md §7).

    python -m spikeforge.golden.train_pinn            # both problems -> golden/data/pinn_*.npz
    python -m spikeforge.golden.train_pinn --problem sin

Problem: -u''(x) = f(x) on [0, 1], u(0) = u(1) = 0, with an analytic solution
(`PROBLEMS` in golden/pinn.py):
    sin   : u = sin(pi x)
    multi : u = sin(pi x) + 0.25 sin(4 pi x) + 0.1 sin(8 pi x)

Network: MLP 1 -> H -> H -> 1 with tanh (H = 32 by default), trained in float64 on the
physics residual alone (u'' from autograd) plus a soft boundary penalty; the analytic
solution is used only to report the error. Recipe: Adam with a cosine learning-rate decay,
then L-BFGS (strong-Wolfe line search) to convergence. Fixed seeds; collocation points
are a fixed, seeded set; a tiny L2 penalty (1e-6) on the output-layer weights
discourages large cancelling output weights. Training is reproducible bit for bit on
one CPU thread (about 25 s per problem).

torch is imported only here (the `train` extra): the golden model, demo and tests run
from the shipped `.npz` with NumPy alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .pinn import DATA_DIR, PROBLEMS, WEIGHTS_VERSION, float_forward, rel_l2, save_weights


def train(problem: str, hidden=(32, 32), seed: int = 0, adam_steps: int = 6000,
          lbfgs_iters: int = 6000, n_colloc: int = 256, out_l2: float = 1e-6,
          verbose: bool = True) -> dict:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    torch.set_default_dtype(torch.float64)
    prob = PROBLEMS[problem]
    rng = np.random.default_rng(seed)

    sizes = (1, *hidden, 1)
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    for lin in layers:  # Xavier init, zero bias
        torch.nn.init.xavier_normal_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    model = torch.nn.ModuleList(layers)

    def net(x):
        h = 2.0 * x - 1.0  # input normalisation to [-1, 1]; folded into W1, b1 on export
        for lin in model[:-1]:
            h = torch.tanh(lin(h))
        return model[-1](h)

    # Collocation: uniform grid plus seeded jitter (interior), and the two boundary points.
    grid = (np.arange(n_colloc) + rng.uniform(0.05, 0.95, n_colloc)) / n_colloc
    xc = torch.tensor(grid[:, None], requires_grad=True)
    fc = torch.tensor(prob.f(grid)[:, None])
    xb = torch.tensor([[0.0], [1.0]])
    f_scale = float(np.mean(prob.f(grid) ** 2))

    def loss_fn():
        u = net(xc)
        du = torch.autograd.grad(u.sum(), xc, create_graph=True)[0]
        d2u = torch.autograd.grad(du.sum(), xc, create_graph=True)[0]
        res = torch.mean((d2u + fc) ** 2) / f_scale
        bc = torch.mean(net(xb) ** 2)
        reg = out_l2 * torch.sum(model[-1].weight ** 2)
        return res + 100.0 * bc + reg

    x_eval = np.linspace(0.0, 1.0, 1001)

    def err():
        with torch.no_grad():
            u = net(torch.tensor(x_eval[:, None])).numpy()[:, 0]
        return rel_l2(u, prob.u(x_eval))

    t0 = time.monotonic()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, adam_steps, eta_min=1e-5)
    for step in range(adam_steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        sched.step()
        if verbose and (step % 1000 == 0 or step == adam_steps - 1):
            print(f"[{problem}] adam {step:5d} loss {loss.item():.3e} rel_l2 {err():.3e}",
                  flush=True)
    t_adam = time.monotonic() - t0

    lbfgs = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=lbfgs_iters,
                              max_eval=int(lbfgs_iters * 1.25), history_size=100,
                              tolerance_grad=1e-14, tolerance_change=1e-16,
                              line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    lbfgs.step(closure)
    final_loss = loss_fn().item()
    elapsed = time.monotonic() - t0
    if verbose:
        print(f"[{problem}] lbfgs loss {final_loss:.3e} rel_l2 {err():.3e} "
              f"({elapsed:.0f} s, adam {t_adam:.0f} s)", flush=True)

    # Export: fold the input normalisation h = 2x - 1 into the first layer.
    ws = [lin.weight.detach().numpy().copy() for lin in model]
    bs = [lin.bias.detach().numpy().copy() for lin in model]
    bs[0] = bs[0] - ws[0][:, 0]
    ws[0] = 2.0 * ws[0]
    params = {"problem": problem, "weights": ws, "biases": bs, "activation": "tanh"}
    u_np = float_forward(params, x_eval)
    meta = dict(seed=seed, adam_steps=adam_steps, lbfgs_iters=lbfgs_iters,
                n_colloc=n_colloc, out_l2=out_l2, train_seconds=round(elapsed, 1),
                final_loss=final_loss, rel_l2=rel_l2(u_np, prob.u(x_eval)))
    params["meta"] = meta
    return params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", choices=sorted(PROBLEMS), action="append")
    ap.add_argument("--hidden", type=int, nargs="+", default=[32, 32])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adam-steps", type=int, default=6000)
    ap.add_argument("--lbfgs-iters", type=int, default=6000)
    ap.add_argument("--out-dir", type=Path, default=DATA_DIR)
    args = ap.parse_args(argv)
    for problem in args.problem or sorted(PROBLEMS):
        params = train(problem, hidden=tuple(args.hidden), seed=args.seed,
                       adam_steps=args.adam_steps, lbfgs_iters=args.lbfgs_iters)
        path = args.out_dir / f"pinn_{problem}.npz"
        save_weights(path, params)
        print(f"[{problem}] saved {path} ({path.stat().st_size} bytes), "
              f"rel L2 {params['meta']['rel_l2']:.2e}, version {WEIGHTS_VERSION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
