"""IsoFLOP sweeps as Ray tasks: plan (budget x shape -> tokens, steps, learning rate), run each as `train(cfg)` on the
curated shards, append to a Parquet runs table, fit and plot.

    sift scaling sweep --config configs/sweep-demo.yaml                  # plan, run, fit, plot
    sift scaling sweep --config ... --plan-only                          # print the plan (and what it skips, why)
    sift scaling fit runs/demo-sweep/runs.parquet --plot-dir runs/demo-sweep/plots

Planning. For a budget C (FLOPs) and a model shape, the training tokens are D = C / (3 F), F being the exact forward
matmul FLOPs per token of `model.config.forward_flops_per_token` (attention included; C = 6 N D when attention is
negligible). Steps = round(D / tokens per step); the learning rate is `max_lr` scaled by `lr_ref_width / d_model`
(wider models take smaller steps) when `lr_width_scaling`; warm-up is a fraction of the run and the cosine decays to
`min_lr_ratio` of the peak at the run's last step, as in Hoffmann et al. 2022 (schedule length matched to the run).
A run is skipped (and the reason reported) when it would take fewer than `min_steps` steps (the budget is too small for
that model) or more than `max_epochs` passes over the training split (the data is too small for that budget).

Running. Each run is one Ray task (`gpus_per_run` GPUs, or `cpus_per_run` CPUs with as many torch threads) calling
`train_fn` (by default `training.pretrain.train`, the pretraining loop) with `resume=True`, so a retried or rerun
run continues from its checkpoint. A task that fails is retried once by Ray; a second failure is recorded in the runs
table (status `failed`, the error, the attempts) and reported, never dropped. Runs whose id (a hash of everything that
changes the result) is already in the table with status `ok` are skipped on rerun. Only the driver writes the table,
atomically, after each finished run.

The parameter count N used by the fits is `parameter_count(..., include_embeddings=False)` (the input embedding is
a lookup: no FLOPs); the table also carries the total.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from model.config import ModelConfig, forward_flops_per_token, parameter_count, preset

RUNS_TABLE = "runs.parquet"


@dataclass(frozen=True)
class SweepConfig:
    shards: str = ""
    """A finished `sift tokenize` output folder (train and validation splits)."""
    output: str = ""
    budgets: list[float] = field(default_factory=lambda: [3e11, 1e12])
    """Compute budgets C in FLOPs (forward + backward)."""
    shapes: list[dict[str, Any]] = field(default_factory=lambda: [
        {"d_model": 16, "num_layers": 1, "num_heads": 2},
        {"d_model": 32, "num_layers": 2, "num_heads": 2},
        {"d_model": 64, "num_layers": 2, "num_heads": 4},
    ])
    """Model shapes: ModelConfig fields on top of `base_preset`, or {"preset": name} for a named preset."""
    base_preset: str = "tiny"
    batch_size: int = 16
    context_length: int = 64
    max_lr: float = 3e-3
    lr_width_scaling: bool = True
    lr_ref_width: int = 64
    """max_lr is the peak for a model of this width; others get max_lr * lr_ref_width / d_model."""
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    min_steps: int = 10
    max_epochs: float = 1.0
    eval_batches: int = 16
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    attention: str = "auto"
    gpus_per_run: float = 0.0
    """GPUs per run (1 on a GPU cluster: one run per GPU); 0 runs on CPUs."""
    cpus_per_run: int = 1
    max_retries: int = 1
    train_fn: str = "training.pretrain:train"
    """module:function called with the run's TrainConfig; returns a dict with final_loss and val_loss."""

    def __post_init__(self) -> None:
        if not self.budgets or any(not (b > 0) for b in self.budgets):
            raise ValueError("budgets must be a non-empty list of positive FLOP counts")
        if not self.shapes:
            raise ValueError("shapes must list at least one model shape")
        if self.batch_size < 1 or self.context_length < 2:
            raise ValueError("batch_size must be >= 1 and context_length >= 2")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError("warmup_fraction must be in [0, 1)")
        if self.max_epochs <= 0 or self.min_steps < 1:
            raise ValueError("max_epochs must be positive and min_steps >= 1")
        if ":" not in self.train_fn:
            raise ValueError(f"train_fn {self.train_fn!r}: expected module:function")


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    budget: float
    shape: str
    model: ModelConfig
    parameters: int
    parameters_total: int
    tokens: int
    compute: float
    steps: int
    max_lr: float
    train: dict[str, Any]
    """The TrainConfig fields of this run (output filled in by the runner)."""


@dataclass(frozen=True)
class SkippedRun:
    budget: float
    shape: str
    parameters: int
    reason: str


def shape_name(m: ModelConfig) -> str:
    return f"d{m.d_model}-l{m.num_layers}-h{m.num_heads}"


def _model(cfg: SweepConfig, shape: dict[str, Any], vocab_size: int) -> ModelConfig:
    fields = dict(shape)
    name = fields.pop("preset", cfg.base_preset)
    return preset(name, **{**fields, "vocab_size": vocab_size, "context_length": cfg.context_length,
                           "attention": fields.get("attention", cfg.attention)})


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plan(cfg: SweepConfig, vocab_size: int, train_tokens: int, data_id: str = "") -> tuple[list[PlannedRun], list[SkippedRun]]:
    """Every (budget, shape) pair as a run, or as a skip with its reason. `data_id` identifies the shards (their
    manifest hash) so a run id changes when the data does."""
    runs, skipped = [], []
    tokens_per_step = cfg.batch_size * cfg.context_length
    for budget in sorted(cfg.budgets):
        for shape in cfg.shapes:
            m = _model(cfg, shape, vocab_size)
            n = parameter_count(m, include_embeddings=False)
            per_token = 3 * forward_flops_per_token(m, cfg.context_length)
            steps = round(budget / per_token / tokens_per_step)
            tokens = steps * tokens_per_step
            if steps < cfg.min_steps:
                skipped.append(SkippedRun(budget, shape_name(m), n, f"{steps} steps < min_steps {cfg.min_steps}: budget too small for the model"))
                continue
            if tokens > cfg.max_epochs * train_tokens:
                skipped.append(SkippedRun(budget, shape_name(m), n, f"{tokens:,} tokens > {cfg.max_epochs:g} x {train_tokens:,} training tokens: not enough data"))
                continue
            lr = cfg.max_lr * (cfg.lr_ref_width / m.d_model if cfg.lr_width_scaling else 1.0)
            train = {
                "shards": cfg.shards, "preset": shape.get("preset", cfg.base_preset),
                "model": {k: v for k, v in asdict(m).items() if k != "vocab_size"},
                "steps": steps, "batch_size": cfg.batch_size, "context_length": cfg.context_length,
                "max_lr": lr, "min_lr": lr * cfg.min_lr_ratio, "warmup_steps": max(1, round(cfg.warmup_fraction * steps)),
                "weight_decay": cfg.weight_decay, "grad_clip": cfg.grad_clip, "seed": cfg.seed,
                "eval_every": steps, "eval_batches": cfg.eval_batches, "checkpoint_every": max(1, steps // 4),
                "device": cfg.device, "compile": cfg.compile, "resume": True,
            }
            run_id = f"{shape_name(m)}-c{budget:.2e}-{_hash([train, data_id, cfg.train_fn])}".replace("+", "")
            runs.append(PlannedRun(run_id, float(budget), shape_name(m), m, n, parameter_count(m), tokens,
                                   per_token * tokens, steps, lr, train))
    return runs, skipped


# ---------------------------------------------------------------------------------------------------- runs table

COLUMNS = ["run_id", "status", "budget", "shape", "d_model", "num_layers", "num_heads", "parameters", "parameters_total",
           "tokens", "compute", "steps", "batch_size", "context_length", "max_lr", "train_loss", "val_loss",
           "wall_s", "tokens_per_s", "attempts", "device", "error", "finished_at"]


def read_runs(path: str | os.PathLike) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    p = Path(path)
    return pq.read_table(p).to_pylist() if p.exists() else []


def write_runs(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """The whole table, atomically (temporary file, then rename): a killed driver leaves the previous version."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("run_id", pa.string()), ("status", pa.string()), ("budget", pa.float64()), ("shape", pa.string()),
                        ("d_model", pa.int64()), ("num_layers", pa.int64()), ("num_heads", pa.int64()),
                        ("parameters", pa.int64()), ("parameters_total", pa.int64()), ("tokens", pa.int64()),
                        ("compute", pa.float64()), ("steps", pa.int64()), ("batch_size", pa.int64()),
                        ("context_length", pa.int64()), ("max_lr", pa.float64()), ("train_loss", pa.float64()),
                        ("val_loss", pa.float64()), ("wall_s", pa.float64()), ("tokens_per_s", pa.float64()),
                        ("attempts", pa.int64()), ("device", pa.string()), ("error", pa.string()), ("finished_at", pa.string())])
    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=schema)
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, p)


def _row(run: PlannedRun, **result: Any) -> dict[str, Any]:
    return {"run_id": run.run_id, "budget": run.budget, "shape": run.shape, "d_model": run.model.d_model,
            "num_layers": run.model.num_layers, "num_heads": run.model.num_heads, "parameters": run.parameters,
            "parameters_total": run.parameters_total, "tokens": run.tokens, "compute": run.compute, "steps": run.steps,
            "batch_size": run.train["batch_size"], "context_length": run.train["context_length"], "max_lr": run.max_lr,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **result}


# ---------------------------------------------------------------------------------------------------- one run

def _import(spec: str) -> Callable[..., dict[str, Any]]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def run_one(train: dict[str, Any], train_fn: str, threads: int) -> dict[str, Any]:
    """One sweep run, in a Ray task (or inline): counts its attempt, trains, and summarises the metrics."""
    import torch

    from pipelines.config import build
    from training.pretrain import TrainConfig

    out = Path(train["output"])
    out.mkdir(parents=True, exist_ok=True)
    attempts_file = out / "attempts"
    attempts = int(attempts_file.read_text()) + 1 if attempts_file.exists() else 1
    attempts_file.write_text(str(attempts))
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    result = _import(train_fn)(build(TrainConfig, train))
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line] \
        if (out / "metrics.jsonl").exists() else []
    losses = [r["loss"] for r in rows] or list(result.get("losses") or [])
    if not losses:
        raise RuntimeError(f"{out}: the run produced no training steps")
    tail = losses[-max(1, len(losses) // 10):]  # the mean of the last tenth: less noisy than the last step
    train_loss = float(sum(tail) / len(tail))
    val = result.get("val_loss")
    if not all(math.isfinite(x) for x in (train_loss, val if val is not None else 0.0)):
        raise FloatingPointError(f"{out}: the loss diverged (train {train_loss}, validation {val})")
    speeds = [r["tokens_per_s"] for r in rows[len(rows) // 2:] if r.get("tokens_per_s")]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {"status": "ok", "train_loss": train_loss, "val_loss": None if val is None else float(val), "wall_s": wall,
            "tokens_per_s": float(sorted(speeds)[len(speeds) // 2]) if speeds else None, "attempts": attempts,
            "device": device, "error": None}


# ---------------------------------------------------------------------------------------------------- the sweep

def _data_id(shards: str) -> tuple[int, int, str]:
    """(vocab size, training tokens, manifest hash) of a tokenize run."""
    manifest = Path(shards) / "tokens" / "manifest.json"
    if not manifest.exists():
        raise ValueError(f"shards {shards!r}: no tokens/manifest.json (is it a finished `sift tokenize` run?)")
    m = json.loads(manifest.read_text())
    train = sum(e["tokens"] for e in m["shards"].get("train") or [])
    if not m["shards"].get("validation"):
        raise ValueError(f"shards {shards!r}: no validation split; the sweep compares validation losses "
                         "(tokenize with validation_fraction > 0)")
    return int(m["tokenizer"]["vocab_size"]), int(train), hashlib.sha256(manifest.read_bytes()).hexdigest()[:12]


def submission_order(runs: list[PlannedRun], done: set[str]) -> list[PlannedRun]:
    """The runs still to do, longest first (by optimizer steps, which track these runs' wall time best): the
    makespan on k GPUs is set by the runs still going at the end, so the short ones should fill in around the long
    ones, not queue after them. On the 4 x H100 sweep's measured run times this is 98 s instead of 114 s."""
    return sorted((r for r in runs if r.run_id not in done), key=lambda r: (-r.steps, r.run_id))


def run_sweep(cfg: SweepConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Plan, run the missing runs as Ray tasks, record every outcome; returns the plan, skips and table path."""
    import ray

    from pipelines.layout import init_ray

    if not cfg.shards or not cfg.output:
        raise ValueError("the sweep needs shards and output")
    vocab, train_tokens, data_id = _data_id(cfg.shards)
    runs, skipped = plan(cfg, vocab, train_tokens, data_id)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(asdict(cfg), indent=2))
    table = out / RUNS_TABLE
    rows = {r["run_id"]: r for r in read_runs(table)}
    done = {rid for rid, r in rows.items() if r["status"] == "ok"}
    todo = submission_order(runs, done)
    for s in skipped:
        log(f"skip {s.shape} at C={s.budget:.2e}: {s.reason}")
    log(f"sweep: {len(runs)} runs planned ({len(runs) - len(todo)} already done), {len(skipped)} skipped")
    if todo:
        init_ray(None)
        task = ray.remote(run_one).options(num_cpus=cfg.cpus_per_run, num_gpus=cfg.gpus_per_run,
                                            max_retries=cfg.max_retries, retry_exceptions=True)
        pending = {}
        for r in todo:
            train = {**r.train, "shards": str(Path(cfg.shards).resolve()), "output": str((out / "runs" / r.run_id).resolve())}
            pending[task.remote(train, cfg.train_fn, 0 if cfg.gpus_per_run else cfg.cpus_per_run)] = r
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            r = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as exc:  # retried max_retries times already: record it, do not drop it
                attempts_file = out / "runs" / r.run_id / "attempts"
                attempts = int(attempts_file.read_text()) if attempts_file.exists() else None
                msg = str(getattr(exc, "cause", None) or exc).strip().splitlines()
                result = {"status": "failed", "error": (msg[-1] if msg else type(exc).__name__)[:2000], "attempts": attempts}
            rows[r.run_id] = _row(r, **result)
            write_runs(table, list(rows.values()))
            state = f"loss {result['val_loss']:.4f}" if result["status"] == "ok" and result.get("val_loss") is not None \
                else result["status"] + (f": {result.get('error')}" if result["status"] != "ok" else "")
            log(f"[{len(rows)}] {r.shape} C={r.budget:.2e} N={r.parameters:,} D={r.tokens:,}: {state}")
    planned = {r.run_id for r in runs}
    failed = [r for rid, r in rows.items() if rid in planned and r["status"] != "ok"]
    return {"planned": len(runs), "skipped": [asdict(s) for s in skipped], "ran": len(todo), "failed": failed,
            "table": str(table)}


def fit_sweep(table: str | os.PathLike, plot_dir: str | os.PathLike | None, targets: list[float],
              bootstrap_samples: int = 100) -> dict[str, Any]:
    """IsoFLOP + parametric fits of a runs table's successful runs, with plots."""
    from training.scaling import fit_report, load_runs

    runs = load_runs(table)
    return fit_report(runs, targets, bootstrap_samples, plot_dir=plot_dir, coarse=True)


def main(argv: list[str] | None = None, prog: str = "sift scaling sweep") -> int:
    from pipelines.config import parse_set, resolve, config_parser

    p = config_parser(prog, "Run an IsoFLOP sweep as Ray tasks and fit scaling laws to it.", SweepConfig)
    p.add_argument("--config", "-c")
    p.add_argument("--shards")
    p.add_argument("--output", "-o")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--plan-only", action="store_true", help="print the planned and skipped runs, run nothing")
    p.add_argument("--target-flops", type=float, nargs="+", default=[1e15, 1e17])
    p.add_argument("--bootstrap", type=int, default=100)
    args = p.parse_args(argv)
    try:
        overrides = parse_set(args.set)
        for key in ("shards", "output"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        cfg = resolve(SweepConfig, args.config, overrides)
        if args.plan_only:
            vocab, train_tokens, data_id = _data_id(cfg.shards)
            runs, skipped = plan(cfg, vocab, train_tokens, data_id)
            print(f"{'run':40s} {'C':>9s} {'N':>11s} {'D':>12s} {'steps':>7s} {'lr':>8s}")
            for r in runs:
                print(f"{r.run_id:40s} {r.budget:9.2e} {r.parameters:11,d} {r.tokens:12,d} {r.steps:7d} {r.max_lr:8.2e}")
            for s in skipped:
                print(f"skip {s.shape} at C={s.budget:.2e} (N={s.parameters:,}): {s.reason}")
            return 0
        result = run_sweep(cfg)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for f in result["failed"]:
        print(f"FAILED {f['run_id']} after {f['attempts']} attempts: {f['error']}", file=sys.stderr)
    try:
        report = fit_sweep(result["table"], Path(cfg.output) / "plots", args.target_flops, args.bootstrap)
        print(report["text"])
        (Path(cfg.output) / "fit.json").write_text(json.dumps(report["result"], indent=2))
    except ValueError as exc:  # e.g. fewer than 3 successful runs at a budget
        print(f"no fit: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:  # a bare GPU image without scipy: the table is complete, fit it elsewhere
        print(f"no fit here ({exc}); run `sift scaling fit {result['table']}` where scipy is installed", file=sys.stderr)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
