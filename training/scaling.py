"""Scaling-law fits: the IsoFLOP method and the parametric Chinchilla law, with bootstrap intervals.

    runs = load_runs("../shared/data/scaling/isoflops_curves.json")   # (parameters N, compute C, loss L) rows
    iso = isoflop_fit(runs)            # per-budget parabola in log N -> N_opt(C) = k·C^a, D_opt = C / (6 N_opt)
    par = parametric_fit(N, D, L)      # L = E + A/N^α + B/D^β, Huber(δ=1e-3) on log residuals, L-BFGS from a grid
    sift scaling fit RUNS.json --target-flops 1e23 1e24 [--plot-dir DIR]

(a) IsoFLOP (Hoffmann et al. 2022, approach 2): for each budget, a parabola in log N through that budget's runs;
its vertex is the loss-optimal N; N_opt = k·C^a and D_opt = k'·C^b by least squares in log space (D = C / 6N).
(b) Parametric (approach 3, as replicated by Besiroglu et al. 2024): minimise Σ Huber_δ(LSE(a - α log N, b - β log D,
e) - log L) over (a, b, e, α, β) with E = exp(e), A = exp(a), B = exp(b), from a grid of starting points.
(c) Bootstrap: resample runs with replacement, refit, report 2.5/97.5 percentiles of every parameter and of the
predictions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber, logsumexp


def load_runs(path: str | Path) -> list[dict]:
    """Rows with parameters, compute_budget (or tokens) and final_loss, from JSON (a list) or CSV."""
    p = Path(path)
    if p.suffix == ".csv":
        import csv

        with open(p) as f:
            rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    else:
        rows = json.loads(p.read_text())
    out = []
    for r in rows:
        n = float(r["parameters"])
        c = float(r["compute_budget"]) if "compute_budget" in r else 6 * n * float(r["tokens"])
        out.append({"parameters": n, "compute_budget": c, "final_loss": float(r["final_loss"])})
    if not out:
        raise ValueError(f"{path}: no runs")
    return out


@dataclass
class IsoFlopFit:
    budgets: np.ndarray
    n_opt: np.ndarray  # per budget
    loss_opt: np.ndarray
    a: float  # N_opt = k_n · C^a
    k_n: float
    b: float  # D_opt = k_d · C^b
    k_d: float

    def predict(self, c: float) -> tuple[float, float]:
        return self.k_n * c**self.a, self.k_d * c**self.b


def isoflop_fit(runs: list[dict]) -> IsoFlopFit:
    budgets = np.array(sorted({r["compute_budget"] for r in runs}))
    n_opt, l_opt = [], []
    for c in budgets:
        pts = [(r["parameters"], r["final_loss"]) for r in runs if r["compute_budget"] == c]
        if len(pts) < 3:
            raise ValueError(f"budget {c:.3g} has {len(pts)} runs: a parabola needs at least 3")
        x = np.log([p[0] for p in pts])
        y = np.array([p[1] for p in pts])
        mid = x.mean()  # centred: a well-conditioned fit
        a2, a1, a0 = np.polyfit(x - mid, y, 2)
        if a2 <= 0:  # no minimum inside: take the best run
            i = int(np.argmin(y))
            n_opt.append(float(np.exp(x[i])))
            l_opt.append(float(y[i]))
        else:
            xv = -a1 / (2 * a2)
            n_opt.append(float(np.exp(xv + mid)))
            l_opt.append(float(a0 + a1 * xv + a2 * xv**2))
    n_opt_a, logc = np.array(n_opt), np.log(budgets)
    a, log_kn = np.polyfit(logc, np.log(n_opt_a), 1)
    d_opt = budgets / (6 * n_opt_a)
    b, log_kd = np.polyfit(logc, np.log(d_opt), 1)
    return IsoFlopFit(budgets, n_opt_a, np.array(l_opt), float(a), float(np.exp(log_kn)), float(b), float(np.exp(log_kd)))


@dataclass
class ParametricFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float

    def loss(self, n, d):
        return self.E + self.A / np.asarray(n, float) ** self.alpha + self.B / np.asarray(d, float) ** self.beta

    def optimum(self, c: float) -> tuple[float, float]:
        """Compute-optimal (N, D) for C = 6 N D: N = G (C/6)^(β/(α+β)), G = (αA / βB)^(1/(α+β))."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        n = g * (c / 6) ** (self.beta / (self.alpha + self.beta))
        return float(n), float(c / (6 * n))


def _objective(x, log_n, log_d, log_l, delta):
    a, b, e, alpha, beta = x
    pred = logsumexp(np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)]), axis=0)
    return float(np.sum(huber(delta, pred - log_l)))


COARSE_GRID = {"a": [0, 10, 20], "b": [0, 10, 20], "e": [-0.5, 0.5], "alpha": [0.2, 0.8], "beta": [0.2, 0.8]}


def parametric_fit(n, d, loss, delta: float = 1e-3, grid: dict | None = None) -> ParametricFit:
    """Huber fit of L(N, D) = E + A/N^α + B/D^β on log-loss residuals, L-BFGS from every grid start; best kept."""
    log_n, log_d, log_l = np.log(np.asarray(n, float)), np.log(np.asarray(d, float)), np.log(np.asarray(loss, float))
    grid = grid or {"a": [0, 5, 10, 15, 20], "b": [0, 5, 10, 15, 20], "e": [-1, -0.5, 0, 0.5, 1],
                    "alpha": [0.0, 0.5, 1.0, 1.5], "beta": [0.0, 0.5, 1.0, 1.5]}
    best = None
    for x0 in itertools.product(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"]):
        res = minimize(_objective, np.array(x0, float), args=(log_n, log_d, log_l, delta), method="L-BFGS-B")
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = best.x
    return ParametricFit(float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), float(alpha), float(beta), float(best.fun))


def bootstrap(runs: list[dict], targets: list[float], samples: int = 200, seed: int = 0) -> dict:
    """Percentile intervals (2.5, 97.5) of the IsoFLOP exponents and predictions under resampling of the runs
    within each budget (so every budget keeps enough points for its parabola)."""
    rng = np.random.default_rng(seed)
    by_budget: dict[float, list[dict]] = {}
    for r in runs:
        by_budget.setdefault(r["compute_budget"], []).append(r)
    draws: dict[str, list[float]] = {"a": [], "b": []}
    for c in targets:
        draws[f"n_opt@{c:.0e}"], draws[f"d_opt@{c:.0e}"] = [], []
    for _ in range(samples):
        sample = [rr for group in by_budget.values() for rr in (group[i] for i in rng.integers(0, len(group), len(group)))]
        try:
            fit = isoflop_fit(sample)
        except ValueError:
            continue
        draws["a"].append(fit.a)
        draws["b"].append(fit.b)
        for c in targets:
            n, d = fit.predict(c)
            draws[f"n_opt@{c:.0e}"].append(n)
            draws[f"d_opt@{c:.0e}"].append(d)
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in draws.items() if v}


def main(argv: list[str] | None = None, prog: str = "sift scaling") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Fit scaling laws to training runs.")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="IsoFLOP and parametric fits of a runs table (JSON list or CSV)")
    f.add_argument("runs")
    f.add_argument("--target-flops", type=float, nargs="+", default=[1e23, 1e24])
    f.add_argument("--bootstrap", type=int, default=200)
    f.add_argument("--json", action="store_true")
    f.add_argument("--coarse", action="store_true", help="a smaller grid of starting points (faster)")
    args = p.parse_args(argv)
    try:
        runs = load_runs(args.runs)
        iso = isoflop_fit(runs)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ci = bootstrap(runs, args.target_flops, args.bootstrap)
    n = np.array([r["parameters"] for r in runs])
    c = np.array([r["compute_budget"] for r in runs])
    par = parametric_fit(n, c / (6 * n), [r["final_loss"] for r in runs], grid=COARSE_GRID if args.coarse else None)
    result = {
        "runs": len(runs), "budgets": len(iso.budgets),
        "isoflop": {"a": iso.a, "k_n": iso.k_n, "b": iso.b, "k_d": iso.k_d, "a_ci": ci["a"], "b_ci": ci["b"]},
        "parametric": vars(par),
        "predictions": [{"flops": t, "n_opt": iso.predict(t)[0], "d_opt": iso.predict(t)[1],
                         "n_opt_ci": ci[f"n_opt@{t:.0e}"], "d_opt_ci": ci[f"d_opt@{t:.0e}"],
                         "parametric_n_opt": par.optimum(t)[0], "parametric_loss": float(par.loss(*par.optimum(t)))}
                        for t in args.target_flops],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{len(runs)} runs at {len(iso.budgets)} budgets")
    print(f"IsoFLOP:    N_opt = {iso.k_n:.3g} · C^{iso.a:.3f}  (95% CI of the exponent {ci['a'][0]:.3f}–{ci['a'][1]:.3f});  "
          f"D_opt = {iso.k_d:.3g} · C^{iso.b:.3f}  ({ci['b'][0]:.3f}–{ci['b'][1]:.3f})")
    print(f"Parametric: L = {par.E:.3f} + {par.A:.3g}/N^{par.alpha:.3f} + {par.B:.3g}/D^{par.beta:.3f}  (Huber δ=1e-3)")
    for r in result["predictions"]:
        print(f"  C = {r['flops']:.0e}: N_opt {r['n_opt']:.3g} [{r['n_opt_ci'][0]:.3g}, {r['n_opt_ci'][1]:.3g}], "
              f"D_opt {r['d_opt']:.3g} [{r['d_opt_ci'][0]:.3g}, {r['d_opt_ci'][1]:.3g}] tokens; parametric N_opt "
              f"{r['parametric_n_opt']:.3g}, loss {r['parametric_loss']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
