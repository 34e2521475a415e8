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
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber, logsumexp


def load_runs(path: str | Path) -> list[dict]:
    """Rows with parameters, compute_budget (or tokens) and final_loss (optionally tokens), from JSON (a list), CSV,
    or a sweep's runs table (Parquet: its successful runs, validation loss where measured, else training loss)."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{path}: no such file")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = [{"parameters": r["parameters"], "compute_budget": r["budget"], "tokens": r["tokens"],
                 "final_loss": r["val_loss"] if r["val_loss"] is not None else r["train_loss"]}
                for r in pq.read_table(p).to_pylist() if r["status"] == "ok"]
    elif p.suffix == ".csv":
        import csv

        with open(p) as f:
            rows = [{k: float(v) for k, v in r.items() if v not in (None, "")} for r in csv.DictReader(f)]
    else:
        rows = json.loads(p.read_text())
    out = []
    for r in rows:
        try:
            n = float(r["parameters"])
            c = float(r["compute_budget"]) if "compute_budget" in r else 6 * n * float(r["tokens"])
            row = {"parameters": n, "compute_budget": c, "final_loss": float(r["final_loss"])}
        except KeyError as exc:
            raise ValueError(f"{path}: a run lacks {exc.args[0]!r} (need parameters, compute_budget or tokens, "
                             "final_loss)") from None
        row["tokens"] = float(r["tokens"]) if r.get("tokens") is not None else c / (6 * n)
        out.append(row)
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
    bracketed: np.ndarray | None = None
    """Per budget: did the parabola's minimum fall inside the sampled sizes? False: the best run is at the edge of
    the grid (the minimum is taken there, and the sweep should extend its shapes that way)."""

    def predict(self, c: float) -> tuple[float, float]:
        """N_opt, D_opt at compute c (inf where a degenerate fit overflows, e.g. in a bootstrap draw)."""
        with np.errstate(over="ignore"):
            c = np.float64(c)
            return float(self.k_n * c**self.a), float(self.k_d * c**self.b)


def isoflop_fit(runs: list[dict]) -> IsoFlopFit:
    budgets = np.array(sorted({r["compute_budget"] for r in runs}))
    n_opt, l_opt, inside = [], [], []
    for c in budgets:
        pts = [(r["parameters"], r["final_loss"]) for r in runs if r["compute_budget"] == c]
        if len(pts) < 3:
            raise ValueError(f"budget {c:.3g} has {len(pts)} runs: a parabola needs at least 3")
        x = np.log([p[0] for p in pts])
        y = np.array([p[1] for p in pts])
        mid = x.mean()  # centred: a well-conditioned fit
        if len(np.unique(x)) < 3:  # a bootstrap draw repeating sizes: no parabola (LAPACK would get a zero column)
            a2 = a1 = a0 = 0.0
        else:
            with warnings.catch_warnings():  # a draw may repeat one point: rank-deficient but usable
                warnings.simplefilter("ignore", np.exceptions.RankWarning)
                a2, a1, a0 = np.polyfit(x - mid, y, 2)
        xv = -a1 / (2 * a2) if a2 > 0 else np.nan
        if a2 > 0 and x.min() - mid <= xv <= x.max() - mid:
            n_opt.append(float(np.exp(xv + mid)))
            l_opt.append(float(a0 + a1 * xv + a2 * xv**2))
            inside.append(True)
        else:  # no minimum, or one outside the sampled sizes (an extrapolation): take the best run
            i = int(np.argmin(y))
            n_opt.append(float(np.exp(x[i])))
            l_opt.append(float(y[i]))
            inside.append(False)
    n_opt_a, logc = np.array(n_opt), np.log(budgets)
    if len(budgets) < 2:
        raise ValueError("power laws in C need runs at two budgets or more")
    a, log_kn = np.polyfit(logc, np.log(n_opt_a), 1)
    d_opt = budgets / (6 * n_opt_a)
    b, log_kd = np.polyfit(logc, np.log(d_opt), 1)
    return IsoFlopFit(budgets, n_opt_a, np.array(l_opt), float(a), float(np.exp(log_kn)), float(b), float(np.exp(log_kd)),
                      np.array(inside))


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
        if not (self.alpha > 0 and self.beta > 0):  # the fitted law has no finite compute-optimal allocation
            return float("nan"), float("nan")
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
    return _percentiles(draws)


def _percentiles(draws: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    """2.5 and 97.5 percentiles; a draw that overflowed (inf, nan) counts at the top (it is one of the extremes)."""
    out = {}
    for k, v in draws.items():
        if v:
            a = np.nan_to_num(np.asarray(v, float), nan=np.inf)
            out[k] = (float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5)))
    return out


def parametric_bootstrap(runs: list[dict], fit: ParametricFit, targets: list[float], samples: int = 100,
                         seed: int = 0, delta: float = 1e-3) -> dict:
    """Percentile intervals (2.5, 97.5) of E, A, B, α, β and of the parametric optimum N at each target, refitting
    resampled runs from the full fit's solution (a warm start: the full grid for every sample would cost minutes)."""
    rng = np.random.default_rng(seed)
    n = np.array([r["parameters"] for r in runs], float)
    d = np.array([r["tokens"] for r in runs], float)
    l = np.array([r["final_loss"] for r in runs], float)
    x0 = np.array([np.log(fit.A), np.log(fit.B), np.log(fit.E), fit.alpha, fit.beta])
    draws: dict[str, list[float]] = {k: [] for k in ("E", "A", "B", "alpha", "beta")}
    for c in targets:
        draws[f"n_opt@{c:.0e}"], draws[f"loss@{c:.0e}"] = [], []
    for _ in range(samples):
        i = rng.integers(0, len(n), len(n))
        res = minimize(_objective, x0, args=(np.log(n[i]), np.log(d[i]), np.log(l[i]), delta), method="L-BFGS-B")
        a, b, e, alpha, beta = res.x
        f = ParametricFit(float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), float(alpha), float(beta), float(res.fun))
        if not (f.alpha > 0 and f.beta > 0):  # no optimum defined for this draw
            continue
        for k in ("E", "A", "B", "alpha", "beta"):
            draws[k].append(getattr(f, k))
        for c in targets:
            nn, dd = f.optimum(c)
            draws[f"n_opt@{c:.0e}"].append(nn)
            draws[f"loss@{c:.0e}"].append(float(f.loss(nn, dd)))
    return _percentiles(draws)


def fit_report(runs: list[dict], targets: list[float], bootstrap_samples: int = 200, plot_dir: str | Path | None = None,
               coarse: bool = False) -> dict:
    """Both fits, their bootstrap intervals and predictions at `targets`: {"result": JSON-able dict, "text": str}.
    With `plot_dir`, also isoflop.png, power_laws.png and parametric.png there."""
    iso = isoflop_fit(runs)
    ci = bootstrap(runs, targets, bootstrap_samples)
    n = np.array([r["parameters"] for r in runs])
    d = np.array([r["tokens"] for r in runs])
    par = parametric_fit(n, d, [r["final_loss"] for r in runs], grid=COARSE_GRID if coarse else None)
    pci = parametric_bootstrap(runs, par, targets, bootstrap_samples)
    na = (float("nan"), float("nan"))
    result = {
        "runs": len(runs), "budgets": len(iso.budgets),
        "isoflop": {"a": iso.a, "k_n": iso.k_n, "b": iso.b, "k_d": iso.k_d, "a_ci": ci.get("a", na), "b_ci": ci.get("b", na),
                    "per_budget": [{"flops": float(c), "n_opt": float(nn), "loss": float(ll), "bracketed": bool(br)}
                                   for c, nn, ll, br in zip(iso.budgets, iso.n_opt, iso.loss_opt, iso.bracketed)]},
        "parametric": {**vars(par), **{f"{k}_ci": pci.get(k, na) for k in ("E", "A", "B", "alpha", "beta")}},
        "predictions": [{"flops": t, "n_opt": iso.predict(t)[0], "d_opt": iso.predict(t)[1],
                         "n_opt_ci": ci.get(f"n_opt@{t:.0e}", na), "d_opt_ci": ci.get(f"d_opt@{t:.0e}", na),
                         "parametric_n_opt": par.optimum(t)[0], "parametric_d_opt": par.optimum(t)[1],
                         "parametric_n_opt_ci": pci.get(f"n_opt@{t:.0e}", na),
                         "parametric_loss": float(par.loss(*par.optimum(t))), "parametric_loss_ci": pci.get(f"loss@{t:.0e}", na)}
                        for t in targets],
    }
    lines = [f"{len(runs)} runs at {len(iso.budgets)} budgets",
             f"IsoFLOP:    N_opt = {iso.k_n:.3g} · C^{iso.a:.3f}  (95% CI of the exponent {result['isoflop']['a_ci'][0]:.3f}–"
             f"{result['isoflop']['a_ci'][1]:.3f});  D_opt = {iso.k_d:.3g} · C^{iso.b:.3f}  "
             f"({result['isoflop']['b_ci'][0]:.3f}–{result['isoflop']['b_ci'][1]:.3f})",
             f"Parametric: L = {par.E:.3f} + {par.A:.3g}/N^{par.alpha:.3f} + {par.B:.3g}/D^{par.beta:.3f}  (Huber δ=1e-3; "
             f"α CI {result['parametric']['alpha_ci'][0]:.3f}–{result['parametric']['alpha_ci'][1]:.3f}, "
             f"β CI {result['parametric']['beta_ci'][0]:.3f}–{result['parametric']['beta_ci'][1]:.3f})"]
    for c, br in zip(iso.budgets, iso.bracketed):
        if not br:
            lines.append(f"  warning: at C = {c:.2e} the loss minimum is not inside the sampled sizes (the best run is "
                         "at the edge of the grid): N_opt there is a bound, not an estimate; extend the shapes")
    for r in result["predictions"]:
        lines.append(f"  C = {r['flops']:.0e}: N_opt {r['n_opt']:.3g} [{r['n_opt_ci'][0]:.3g}, {r['n_opt_ci'][1]:.3g}], "
                     f"D_opt {r['d_opt']:.3g} [{r['d_opt_ci'][0]:.3g}, {r['d_opt_ci'][1]:.3g}] tokens; parametric N_opt "
                     f"{r['parametric_n_opt']:.3g} [{r['parametric_n_opt_ci'][0]:.3g}, {r['parametric_n_opt_ci'][1]:.3g}], "
                     f"loss {r['parametric_loss']:.3f} [{r['parametric_loss_ci'][0]:.3f}, {r['parametric_loss_ci'][1]:.3f}]")
    if plot_dir is not None:
        written = plot_fits(runs, iso, par, targets, Path(plot_dir))
        if written:
            lines.append("plots: " + ", ".join(str(w) for w in written))
    return {"result": result, "text": "\n".join(lines)}


def plot_fits(runs: list[dict], iso: IsoFlopFit, par: ParametricFit, targets: list[float], out: Path) -> list[Path]:
    """isoflop.png (loss against N per budget, the parabolas and their minima), power_laws.png (N_opt and D_opt
    against C with the fitted lines extrapolated to the targets) and parametric.png (contours of the fitted
    L(N, D) with the runs, the IsoFLOP lines and the compute-optimal frontier)."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    cmap = plt.get_cmap("viridis")
    colours = {c: cmap(i / max(1, len(iso.budgets) - 1)) for i, c in enumerate(iso.budgets)}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, n_opt, l_opt in zip(iso.budgets, iso.n_opt, iso.loss_opt):
        pts = sorted((r["parameters"], r["final_loss"]) for r in runs if r["compute_budget"] == c)
        x = np.log([p[0] for p in pts])
        y = np.array([p[1] for p in pts])
        ax.scatter(np.exp(x), y, color=colours[c], s=18, label=f"C = {c:.1e}")
        coef = np.polyfit(x - x.mean(), y, 2)
        grid = np.linspace(x.min(), x.max(), 100)
        ax.plot(np.exp(grid), np.polyval(coef, grid - x.mean()), color=colours[c], lw=1)
        ax.plot([n_opt], [l_opt], "x", color="crimson", ms=9, mew=2)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss")
    ax.set_title("IsoFLOP profiles (x: fitted minimum)")
    ax.legend(fontsize=7)
    paths = [out / "isoflop.png"]
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    span = np.logspace(np.log10(iso.budgets.min()), np.log10(max(max(targets, default=0), iso.budgets.max())), 50)
    d_opt = iso.budgets / (6 * iso.n_opt)
    for ax, y, k, e, name in ((axes[0], iso.n_opt, iso.k_n, iso.a, "N_opt"), (axes[1], d_opt, iso.k_d, iso.b, "D_opt")):
        ax.loglog(iso.budgets, y, "o", color="C0", label="IsoFLOP minima")
        ax.loglog(span, k * span**e, "--", color="C1", label=f"{name} = {k:.3g}·C^{e:.3f}")
        for t in targets:
            ax.plot([t], [k * t**e], "*", color="crimson", ms=11)
            ax.annotate(f"{k * t**e:.3g}", (t, k * t**e), textcoords="offset points", xytext=(-10, 8), fontsize=8)
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(name + (" (parameters)" if name == "N_opt" else " (tokens)"))
        ax.legend(fontsize=8)
    paths.append(out / "power_laws.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    n = np.array([r["parameters"] for r in runs])
    d = np.array([r["tokens"] for r in runs])
    ln, ld = np.log10(n), np.log10(d)
    gn, gd = np.meshgrid(np.linspace(ln.min() - 0.3, ln.max() + 0.3, 120), np.linspace(ld.min() - 0.3, ld.max() + 0.3, 120))
    fig, ax = plt.subplots(figsize=(7, 5))
    cs = ax.contourf(gn, gd, par.loss(10**gn, 10**gd), levels=20, cmap="magma_r")
    fig.colorbar(cs, ax=ax, label="fitted loss")
    ax.scatter(ln, ld, c="white", edgecolors="black", s=22, label="runs")
    for c in iso.budgets:  # C = 6 N D is a line of slope -1 in log space
        ax.plot(gn[0], np.log10(c / 6) - gn[0], ":", color="white", lw=0.8)
    if par.alpha > 0 and par.beta > 0:  # else the law has no compute-optimal allocation
        opt = np.array([par.optimum(c) for c in 6 * np.logspace(gn.min() + gd.min(), gn.max() + gd.max(), 100)])
        ax.plot(np.log10(opt[:, 0]), np.log10(opt[:, 1]), color="cyan", lw=1.5, label="compute-optimal frontier")
    ax.set_xlim(gn.min(), gn.max())
    ax.set_ylim(gd.min(), gd.max())
    ax.set_xlabel("log10 parameters N")
    ax.set_ylabel("log10 tokens D")
    ax.set_title(f"L = {par.E:.2f} + {par.A:.3g}/N^{par.alpha:.2f} + {par.B:.3g}/D^{par.beta:.2f}")
    ax.legend(fontsize=8, loc="upper right")
    paths.append(out / "parametric.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None, prog: str = "sift scaling") -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "sweep":
        from training.sweep import main as sweep_main

        return sweep_main(argv[1:], prog=f"{prog} sweep")
    p = argparse.ArgumentParser(prog=prog, description="Fit scaling laws to training runs, or run a sweep of them.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sweep", help="plan and run an IsoFLOP sweep as Ray tasks on curated shards, then fit it")
    f = sub.add_parser("fit", help="IsoFLOP and parametric fits of a runs table (JSON list, CSV or a sweep's runs.parquet)")
    f.add_argument("runs")
    f.add_argument("--target-flops", type=float, nargs="+", default=[1e23, 1e24])
    f.add_argument("--bootstrap", type=int, default=200)
    f.add_argument("--json", action="store_true")
    f.add_argument("--coarse", action="store_true", help="a smaller grid of starting points (faster)")
    f.add_argument("--plot-dir", help="write isoflop.png, power_laws.png and parametric.png here")
    args = p.parse_args(argv)
    try:
        report = fit_report(load_runs(args.runs), args.target_flops, args.bootstrap, args.plot_dir, args.coarse)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report["result"], indent=2) if args.json else report["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
