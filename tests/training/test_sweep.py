"""IsoFLOP sweep: the planner's arithmetic and skips, and a real 2 budget x 3 size sweep on tokenized real text as
Ray tasks (runs table, rerun skipping, retry then report, fits and plots)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from model.config import forward_flops_per_token, parameter_count
from training.scaling import load_runs
from training.sweep import SweepConfig, main, plan, read_runs, run_sweep, submission_order

SHAPES = [{"d_model": 16, "num_layers": 1, "num_heads": 2},
          {"d_model": 32, "num_layers": 2, "num_heads": 2},
          {"d_model": 64, "num_layers": 2, "num_heads": 4}]


def _cfg(shards, out, **kw) -> SweepConfig:
    base = dict(shards=str(shards), output=str(out), budgets=[1.5e10, 4e10], shapes=SHAPES, batch_size=8,
                context_length=32, max_lr=3e-3, lr_ref_width=32, min_steps=10, max_epochs=4.0, eval_batches=8,
                attention="reference", device="cpu")
    return SweepConfig(**{**base, **kw})


def test_plan_arithmetic_and_skips():
    cfg = SweepConfig(shards="x", output="y", budgets=[1e9, 1e11, 1e13], shapes=SHAPES, batch_size=8, context_length=32,
                      lr_ref_width=32, min_steps=10, max_epochs=1.0)
    runs, skipped = plan(cfg, vocab_size=1000, train_tokens=1_000_000)
    for r in runs:
        per_token = 3 * forward_flops_per_token(r.model, 32)
        assert r.steps == round(r.budget / per_token / 256) and r.tokens == r.steps * 256
        assert r.compute == pytest.approx(r.budget, rel=0.5 / r.steps + 1e-12)  # rounding to whole steps only
        assert r.parameters == parameter_count(r.model, include_embeddings=False) < r.parameters_total
        assert r.max_lr == pytest.approx(3e-3 * 32 / r.model.d_model)
        assert r.train["min_lr"] == pytest.approx(0.1 * r.max_lr) and r.train["eval_every"] == r.steps
        assert r.train["warmup_steps"] == max(1, round(0.05 * r.steps))
    # 1e9: 4 steps for the largest shape (< min_steps); 1e13: more than one pass over 1M tokens for every shape
    assert [(s.budget, s.shape) for s in skipped] == [(1e9, "d64-l2-h4")] + [(1e13, r.shape) for r in runs[2:]]
    assert "min_steps" in skipped[0].reason and all("not enough data" in s.reason for s in skipped[1:])
    assert [r.budget for r in runs] == [1e9] * 2 + [1e11] * 3 and len({r.run_id for r in runs}) == 5
    assert [r.steps for r in runs] == [32, 12, 3159, 1194, 373]
    # the run id changes with anything that changes the result, here the data and the learning rate
    assert plan(cfg, 1000, 1_000_000, "other-data")[0][0].run_id != runs[0].run_id
    assert plan(replace(cfg, max_lr=1e-3), 1000, 1_000_000)[0][0].run_id != runs[0].run_id
    # submitted longest first, finished runs left out
    order = submission_order(runs, done={runs[2].run_id})
    assert [r.steps for r in order] == [1194, 373, 32, 12]


def test_bad_sweep_configs():
    with pytest.raises(ValueError, match="budgets"):
        SweepConfig(budgets=[])
    with pytest.raises(ValueError, match="budgets"):
        SweepConfig(budgets=[-1.0])
    with pytest.raises(ValueError, match="train_fn"):
        SweepConfig(train_fn="no_colon")
    assert main(["--shards", "/nonexistent", "--output", "/tmp/x", "--plan-only"]) == 2


def test_sweep_runs_as_ray_tasks_and_fits(ray_local, shards, tmp_path, capsys):
    out = tmp_path / "sweep"
    cfg = _cfg(shards, out)
    result = run_sweep(cfg)
    assert result["planned"] == 6 and result["ran"] == 6 and not result["failed"] and not result["skipped"]
    rows = read_runs(out / "runs.parquet")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"} and {r["attempts"] for r in rows} == {1}
    for r in rows:
        metrics = [json.loads(line) for line in (out / "runs" / r["run_id"] / "metrics.jsonl").read_text().splitlines()]
        assert len(metrics) == r["steps"] and metrics[-1]["tokens"] == r["tokens"]
        assert 0 < r["val_loss"] < 7.0  # below uniform over 1,000 tokens (6.91): every run learned something
    # the same model trained on more tokens (the larger budget) reaches a lower validation loss
    for d in (16, 32, 64):
        small, large = sorted((r["budget"], r["val_loss"]) for r in rows if r["d_model"] == d)
        assert large[1] < small[1]
    # the table feeds the fits directly
    runs = load_runs(out / "runs.parquet")
    assert len(runs) == 6 and all(r["tokens"] > 0 for r in runs)
    # a rerun does nothing; the CLI fits and plots the finished table
    assert run_sweep(cfg)["ran"] == 0
    capsys.readouterr()
    code = main(["--shards", str(shards), "--output", str(out), "--bootstrap", "10", "--target-flops", "1e12",
                 *[f"--set={k}={json.dumps(v)}" for k, v in
                   dict(budgets=cfg.budgets, shapes=SHAPES, batch_size=8, context_length=32, lr_ref_width=32,
                        max_epochs=4.0, eval_batches=8, attention="reference", device="cpu").items()]])
    text = capsys.readouterr().out
    assert code == 0 and "6 runs planned (6 already done)" in text
    assert "IsoFLOP:" in text and "Parametric:" in text
    for name in ("isoflop.png", "power_laws.png", "parametric.png"):
        assert (out / "plots" / name).stat().st_size > 10_000
    fit = json.loads((out / "fit.json").read_text())
    assert fit["runs"] == 6 and fit["budgets"] == 2


_FLAKY_MARK = "flaky-first-attempt"


def flaky_train(cfg):
    """Fails the first attempt of each run (as a preempted or OOM-killed run would), then trains."""
    from training.pretrain import train

    if Path(cfg.output, "attempts").read_text() == "1":
        raise RuntimeError(_FLAKY_MARK)
    return train(cfg)


def broken_train(cfg):
    raise RuntimeError(f"broken run {Path(cfg.output).name}")


def test_failed_runs_are_retried_once_then_reported(ray_local, shards, tmp_path):
    one = dict(budgets=[1.5e10], shapes=SHAPES[:1])
    out = tmp_path / "flaky"
    res = run_sweep(_cfg(shards, out, train_fn="tests.training.test_sweep:flaky_train", **one))
    row, = read_runs(out / "runs.parquet")
    assert not res["failed"] and row["status"] == "ok" and row["attempts"] == 2 and row["val_loss"] > 0

    out = tmp_path / "broken"
    cfg = _cfg(shards, out, train_fn="tests.training.test_sweep:broken_train", **one)
    res = run_sweep(cfg)
    row, = read_runs(out / "runs.parquet")
    assert row["status"] == "failed" and row["attempts"] == 2 and "broken run" in row["error"]
    assert [f["run_id"] for f in res["failed"]] == [row["run_id"]]
    # not dropped, and tried again on the next invocation (the table keeps one row per run)
    assert run_sweep(cfg)["ran"] == 1 and len(read_runs(out / "runs.parquet")) == 1
    with pytest.raises(ValueError, match="no runs"):
        load_runs(out / "runs.parquet")  # failed runs never reach a fit
