"""Scaling-law fits: known laws recovered from noisy synthetic runs, the Huber fit robust to an outlier, and the
IsoFLOP fit of the 72 real runs (CS336 isoflops_curves.json)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.scaling import COARSE_GRID, isoflop_fit, load_runs, main, parametric_fit
from tests.conftest import FIXTURES

REAL = FIXTURES / "scaling" / "isoflops_curves.json"
CHINCHILLA = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def _law(n, d, p=CHINCHILLA):
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def _synthetic(noise=0.005, seed=0):
    rng = np.random.default_rng(seed)
    n, d = np.meshgrid(np.logspace(7, 10, 8), np.logspace(9, 12, 8))
    n, d = n.ravel(), d.ravel()
    return n, d, _law(n, d) * np.exp(rng.normal(0, noise, n.shape))


def test_parametric_fit_recovers_a_known_law():
    n, d, loss = _synthetic()
    fit = parametric_fit(n, d, loss, grid=COARSE_GRID)
    assert fit.alpha == pytest.approx(0.34, abs=0.04) and fit.beta == pytest.approx(0.28, abs=0.04)
    assert fit.E == pytest.approx(1.69, abs=0.1)
    # the fitted law predicts held-out points within the noise
    assert np.allclose(fit.loss(3e9, 6e10), _law(3e9, 6e10), rtol=0.02)


def test_huber_fit_is_robust_to_an_outlier():
    n, d, loss = _synthetic(noise=0.002, seed=1)
    loss = loss.copy()
    loss[5] *= 1.6  # one broken run
    robust = parametric_fit(n, d, loss, delta=1e-3, grid=COARSE_GRID)
    squared = parametric_fit(n, d, loss, delta=10.0, grid=COARSE_GRID)  # a huge delta is plain least squares
    err_r = abs(robust.alpha - 0.34) + abs(robust.beta - 0.28)
    err_s = abs(squared.alpha - 0.34) + abs(squared.beta - 0.28)
    assert err_r < 0.05 and err_r < err_s


def test_isoflop_recovers_the_optimal_exponent():
    """Runs on IsoFLOP profiles of a known law: N_opt ∝ C^(β/(α+β))."""
    runs = []
    for c in np.logspace(18, 21, 5):
        for n in np.logspace(np.log10(c) / 2 - 2.5, np.log10(c) / 2 - 0.5, 9):
            runs.append({"parameters": n, "compute_budget": c, "final_loss": float(_law(n, c / (6 * n)))})
    fit = isoflop_fit(runs)
    assert fit.a == pytest.approx(0.28 / 0.62, abs=0.02) and fit.a + fit.b == pytest.approx(1.0, abs=1e-9)


def test_isoflop_fit_on_the_real_runs(capsys):
    runs = load_runs(REAL)
    fit = isoflop_fit(runs)
    assert len(runs) == 72 and len(fit.budgets) == 9
    assert 0.45 < fit.a < 0.6
    n23, d23 = fit.predict(1e23)
    assert 3e10 < n23 < 3e11 and n23 * d23 * 6 == pytest.approx(1e23, rel=1e-6)
    assert main(["fit", str(REAL), "--target-flops", "1e23", "1e24", "--bootstrap", "20", "--coarse", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    lo, hi = out["isoflop"]["a_ci"]
    assert lo <= out["isoflop"]["a"] <= hi
    assert [p["flops"] for p in out["predictions"]] == [1e23, 1e24]


def test_bad_runs(tmp_path):
    bad = tmp_path / "runs.json"
    bad.write_text(json.dumps([{"parameters": 1e6, "compute_budget": 1e15, "final_loss": 5.0}]))
    with pytest.raises(ValueError, match="at least 3"):
        isoflop_fit(load_runs(bad))
    assert main(["fit", str(bad)]) == 2


def test_isoflop_fit_of_a_draw_repeating_one_size_takes_the_best_run(capfd):
    """A bootstrap draw can pick the same run three times: no parabola is fitted (LAPACK used to print
    'DLASCL parameter number 4 had an illegal value' here) and the budget falls back to its best run."""
    runs = [{"parameters": 1e6, "compute_budget": 1e15, "final_loss": 3.0}] * 3 + [
        {"parameters": n, "compute_budget": 1e16, "final_loss": l} for n, l in ((1e6, 3.0), (3e6, 2.8), (1e7, 2.9))]
    fit = isoflop_fit(runs)
    out = capfd.readouterr()
    assert "DLASCL" not in out.out + out.err
    assert fit.n_opt[0] == pytest.approx(1e6) and not fit.bracketed[0] and fit.bracketed[1]
    assert np.isfinite(fit.a)
