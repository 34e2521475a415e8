"""One job, every stage: WARC -> curate -> dedup -> tokenize (+ stats report) -> pretrain -> [scaling sweep] ->
[alignment], the form users `ray job submit`:

    sift run --config configs/run-demo.yaml                     # embedded local Ray, CPU, minutes
    ray job submit --address http://<head>:8265 --working-dir . -- \\
        python -m pipelines.run --config configs/run-cluster.yaml  # a Common Crawl dump, GPU training

Each stage writes `<output>/<stage>-<hash>` (curate, dedup, tokens, model, sweep, align/<command>), reading the
one before; the hash covers the stage's output-changing settings and its input's hash, so changing a setting gives
that stage and every later one fresh folders, and the old ones stay for a switch back. `<output>/<stage>` is a
symlink to the latest (local outputs), so `runs/demo/model/checkpoint.pt` stays one path. A finished stage leaves
`stage.json` (status, hash, seconds, summary) in its folder; `<output>/pipeline.json` records the whole run,
rewritten atomically after each stage. A rerun skips every stage whose folder is finished and still in place, and
inside an unfinished stage that stage's own resume applies (finished shards, the pretraining checkpoint, finished
sweep runs).

Training stages (pretrain, sweep, align) run as Ray tasks or Ray Train workers with the resources asked for here,
so on a cluster they land on GPU workers, not the head; they read and write local paths (`train_output`, a shared
filesystem on a multi-node cluster). When `output` is an object store, the token shards are copied to
`<train_output>/tokens` first.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines.config import config_hash, parse_set, resolve
from pipelines.curate import CurateConfig
from pipelines.dedup import DedupConfig
from pipelines.io import OutputDir
from pipelines.layout import PIPELINE_FILE
from pipelines.tokenize import TokenizeConfig
from training.configs import ALIGN_COMMANDS, AlignConfig, TrainConfig  # torch-free: a curation driver needs no torch
from training.sweep import SweepConfig

STAGES = ("curate", "dedup", "tokenize", "pretrain", "sweep", "align")


@dataclass(frozen=True)
class RunConfig:
    output: str = "runs/pipeline"
    """Where every stage writes (`<output>/<stage>-<hash>`): a local folder or an object store URI."""
    train_output: str = ""
    """Where the training stages write (local or a shared filesystem); default `output` when that is local."""
    stages: tuple[str, ...] = ("curate", "dedup", "tokenize", "pretrain")
    """Which stages run, in pipeline order; add `sweep` and/or `align` for those."""
    num_cpus: int | None = None
    """Size of the embedded local Ray (ignored under RAY_ADDRESS / ray job submit)."""
    report: bool = True
    """Write the stats report (`<output>/tokens/report.html` and the tables) after tokenize."""
    curate: CurateConfig = field(default_factory=CurateConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    pretrain_workers: int = 1
    """Data-parallel workers: > 1 runs Ray Train (the project's DDP), 1 runs one Ray task."""
    pretrain_gpus: float = 0.0
    """GPUs per pretraining worker (0: CPU)."""
    pretrain_cpus: int = 1
    """CPUs per pretraining worker (and its torch threads when on CPU)."""
    sweep: SweepConfig = field(default_factory=SweepConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    align_commands: tuple[str, ...] = ("sft",)
    """Alignment steps in order, each starting from the previous one's checkpoint (the first from pretraining's)."""
    align_gpus: float = 0.0
    align_cpus: int = 1

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"stages: unknown stage {unknown[0]!r}; known: {', '.join(STAGES)}")
        order = [STAGES.index(s) for s in self.stages]
        if order != sorted(order) or len(set(order)) != len(order):
            raise ValueError(f"stages must be in pipeline order without repeats: {', '.join(STAGES)}")
        bad = [c for c in self.align_commands if c not in ALIGN_COMMANDS]
        if bad:
            raise ValueError(f"align_commands: unknown command {bad[0]!r}; known: {', '.join(ALIGN_COMMANDS)}")
        if self.pretrain_workers < 1 or self.pretrain_cpus < 1 or self.align_cpus < 1:
            raise ValueError("pretrain_workers, pretrain_cpus and align_cpus must be at least 1")
        # the pipeline wires stage inputs and outputs itself: a stage-level path would be silently overridden
        for name, cfg, fields in (("curate", self.curate, ("output",)), ("dedup", self.dedup, ("input", "output")),
                                  ("tokenize", self.tokenize, ("input", "output")),
                                  ("pretrain", self.pretrain, ("shards", "output")),
                                  ("sweep", self.sweep, ("shards", "output")),
                                  ("align", self.align, ("output",))):
            default = type(cfg)()
            for f in fields:
                if getattr(cfg, f) != getattr(default, f):
                    raise ValueError(f"{name}.{f} is set by the pipeline (<output>/<stage>-<hash>); set `output` instead")

    # ---- where each stage reads and writes
    def _train_root(self) -> str:
        if self.train_output:
            return self.train_output
        if "://" in self.output:
            raise ValueError("output is an object store: set train_output to a local or shared-filesystem folder "
                             "for the training stages")
        return self.output

    def plan(self, record: dict[str, Any] | None = None) -> dict[str, "StagePlan"]:
        """Every stage's config with its input and output wired, its settings hash and its folder.

        A stage's hash covers its own output-changing settings and the hash of the stage it reads (for curate: its
        WARC input), so a changed setting gives that stage and every later one new folders
        (`<output>/<name>-<hash[:8]>`) and leaves the old ones in place for a switch back. A stage this run does
        not include is read from its folder for these settings if finished there, else where `record` (the run's
        pipeline.json) says it was last written, else at its pointer `<output>/<name>`."""
        record = record or {"stages": {}}
        o = self.output.rstrip("/")
        t = self._train_root().rstrip("/") if any(s in self.stages for s in TRAIN_STAGES) else o
        cpus = {"num_cpus": self.num_cpus} if self.num_cpus is not None else {}
        plans: dict[str, StagePlan] = {}

        def upstream(name: str) -> tuple[str, str]:
            """(folder, hash) of the stage `name`: the one this config describes when this run makes it or it is
            finished, else where the run's record says it was last written, else its pointer."""
            plan = plans[name]
            if name in self.stages or _read_marker(OutputDir(plan.output)).get("hash") == plan.hash:
                return plan.output, plan.hash
            prev = record.get("stages", {}).get(name) or {}
            folder = prev.get("output") or f"{o}/{STAGE_DIRS[name]}"
            return folder, prev.get("hash") or folder

        def add(name: str, root: str, cfg: Any, own: Any, reads: str) -> None:
            h = config_hash({"stage": name, "settings": own, "reads": reads})
            plans[name] = StagePlan(name, cfg, h, f"{root}/{STAGE_DIRS[name]}-{h[:8]}")

        add("curate", o, replace(self.curate, **cpus), self.curate.output_hash(), self.curate.input)
        plans["curate"] = wired_plan(plans["curate"], output=plans["curate"].output)
        src, src_hash = upstream("curate")
        add("dedup", o, self.dedup, self.dedup.output_hash(), src_hash)
        plans["dedup"] = wired_plan(plans["dedup"], input=src, output=plans["dedup"].output, **cpus)
        src, src_hash = upstream("dedup" if "dedup" in self.stages else "curate")
        add("tokenize", o, self.tokenize, self.tokenize.output_hash(), src_hash)
        plans["tokenize"] = wired_plan(plans["tokenize"], input=src, output=plans["tokenize"].output, **cpus)
        tokens, tokens_hash = upstream("tokenize")
        if "://" in tokens:  # training memory-maps local files: a remote tokenize output is copied next to them
            tokens = f"{t}/{posixpath.basename(tokens)}"
        add("pretrain", t, self.pretrain, _settings(self.pretrain, workers=self.pretrain_workers), tokens_hash)
        plans["pretrain"] = wired_plan(plans["pretrain"], shards=tokens, output=plans["pretrain"].output, resume=True)
        add("sweep", t, self.sweep, _settings(self.sweep), tokens_hash)
        plans["sweep"] = wired_plan(plans["sweep"], shards=tokens, output=plans["sweep"].output)
        if self.align.checkpoint or "pretrain" not in self.stages:
            checkpoint, reads = self.align.checkpoint, self.align.checkpoint
        else:
            checkpoint, reads = f"{plans['pretrain'].output}/checkpoint.pt", plans["pretrain"].hash
        align = replace(self.align, tokenizer=self.align.tokenizer or self.tokenize.tokenizer)
        add("align", t, align, _settings(align, commands=list(self.align_commands)), reads)
        plans["align"] = wired_plan(plans["align"], output=plans["align"].output, checkpoint=checkpoint)
        return plans

    def stage_configs(self, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every stage's own config, with inputs and outputs wired (the run's num_cpus where a stage has one)."""
        return {name: p.config for name, p in self.plan(record).items()}


TRAIN_STAGES = ("pretrain", "sweep", "align")
# a `sift run` job's stage folders are <output>/<name>-<hash>; <output>/<name> points at the latest one (locally)
STAGE_DIRS = {"curate": "curate", "dedup": "dedup", "tokenize": "tokens", "pretrain": "model", "sweep": "sweep",
              "align": "align"}
STAGE_FILE = "stage.json"  # in a stage folder, written when the stage finished: {"status", "hash", "summary", ...}


@dataclass(frozen=True)
class StagePlan:
    name: str
    config: Any
    hash: str
    output: str


def wired_plan(plan: StagePlan, **fields: Any) -> StagePlan:
    return replace(plan, config=replace(plan.config, **fields))


def _settings(cfg: Any, **extra: Any) -> dict[str, Any]:
    """The settings of a training stage that change its result (not where it reads or writes, or resumption)."""
    d = asdict(cfg)
    for volatile in ("resume", "stop_after", "output", "shards", "device", "use_ray", "checkpoint"):
        d.pop(volatile, None)
    return {**d, **extra}


# ---- the training stages, as Ray tasks (on a cluster they go to the nodes with the resources asked for)

def _train_task(cfg_dict: dict[str, Any], threads: int) -> dict[str, Any]:
    import torch

    from pipelines.config import build
    from training.pretrain import TrainConfig, train

    torch.set_num_threads(threads)
    return train(build(TrainConfig, cfg_dict))


def _align_task(cfg_dict: dict[str, Any], command: str, threads: int) -> dict[str, Any]:
    import torch

    from pipelines.config import build
    from training.align.grpo import COMMANDS, AlignConfig

    torch.set_num_threads(threads)
    result = COMMANDS[command](build(AlignConfig, cfg_dict))
    return {k: v for k, v in result.items() if not isinstance(v, list)}


def _remote(fn: Callable, cpus: int, gpus: float):
    import importlib

    import ray

    # by reference to the importable module (under `python -m pipelines.run` this file is __main__)
    fn = getattr(importlib.import_module("pipelines.run"), fn.__name__)
    # one retry for a lost worker or node; the stage resumes from its own checkpoint
    return ray.remote(fn).options(num_cpus=cpus, num_gpus=gpus, max_retries=1)


def _localize_tokens(src: str, dst: str) -> None:
    """Copy a remote tokenize output's tokens/ folder to a local one (training memory-maps local files)."""
    import pyarrow.fs as pafs

    final = Path(dst, "tokens")
    if (final / "_SUCCESS").exists():
        return
    tmp = Path(dst, ".tokens.partial")  # renamed into place when whole: an interrupted copy is never used
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pafs.copy_files(f"{src.rstrip('/')}/tokens", str(tmp), use_threads=True)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _pretrain(cfg: TrainConfig, run: RunConfig) -> dict[str, Any]:
    from pipelines.layout import init_ray

    init_ray(run.num_cpus)
    if run.pretrain_workers > 1:
        from training.pretrain import launch

        result = launch(cfg, run.pretrain_workers, run.pretrain_gpus > 0)
    else:
        import ray

        task = _remote(_train_task, run.pretrain_cpus, run.pretrain_gpus)
        cfg = replace(cfg, output=str(Path(cfg.output).resolve()), shards=str(Path(cfg.shards).resolve()))
        result = ray.get(task.remote(asdict(cfg), run.pretrain_cpus))
    result.pop("losses", None)
    return result


def _sweep(cfg: SweepConfig, run: RunConfig) -> dict[str, Any]:
    from pipelines.layout import init_ray
    from training.sweep import run_sweep

    init_ray(run.num_cpus)
    result = run_sweep(cfg)
    failed = result.get("failed") or []
    if failed:
        raise RuntimeError(f"sweep: {len(failed)} run(s) failed; see {cfg.output}/runs.parquet")
    from training.scaling import isoflop_fit, load_runs

    runs = load_runs(Path(cfg.output) / "runs.parquet")  # its finished runs (a failure raised above)
    summary: dict[str, Any] = {"runs": len(runs), "skipped": len(result.get("skipped") or [])}
    try:  # the fit needs >= 3 runs at >= 2 budgets; a small sweep still finishes, with the reason recorded
        fit = isoflop_fit(runs)
        summary.update(n_opt_exponent=fit.a, d_opt_exponent=fit.b)
    except ValueError as exc:
        summary["fit"] = f"not fitted: {exc}"
    return summary


def _align(cfg: AlignConfig, run: RunConfig) -> dict[str, Any]:
    import ray

    from pipelines.layout import init_ray

    init_ray(run.num_cpus)
    task = _remote(_align_task, run.align_cpus, run.align_gpus)
    results, checkpoint = {}, cfg.checkpoint
    for command in run.align_commands:
        out = Path(cfg.output) / command
        step = replace(cfg, output=str(out.resolve()), checkpoint=str(Path(checkpoint).resolve()) if checkpoint else "",
                       use_ray=False)
        if (out / "checkpoint.pt").exists() and (out / "done.json").exists():
            results[command] = json.loads((out / "done.json").read_text())
        else:
            results[command] = ray.get(task.remote(asdict(step), command, run.align_cpus))
            (out / "done.json").write_text(json.dumps(results[command], default=str))
        checkpoint = str(out / "checkpoint.pt")
    return results


# ---- the pipeline

def _load_record(out: OutputDir) -> dict[str, Any]:
    return out.read_json(PIPELINE_FILE) if out.exists(PIPELINE_FILE) else {"stages": {}}


def _complete(plan: StagePlan, run: RunConfig) -> bool:
    """Did the stage finish in its folder (its marker says so and its output is still in place)?"""
    cfg, out = plan.config, OutputDir(plan.output)
    marker = _read_marker(out)
    if marker.get("status") != "finished" or marker.get("hash") != plan.hash:
        return False
    if plan.name in ("curate", "dedup"):
        return out.exists("documents", "_SUCCESS")
    if plan.name == "tokenize":
        return out.exists("tokens", "_SUCCESS")
    if plan.name == "pretrain":
        return Path(cfg.output, "checkpoint.pt").exists()
    if plan.name == "sweep":
        return Path(cfg.output, "runs.parquet").exists()
    return all(Path(cfg.output, c, "done.json").exists() for c in run.align_commands)


def _read_marker(out: OutputDir) -> dict[str, Any]:
    try:
        return out.read_json(STAGE_FILE) if out.exists(STAGE_FILE) else {}
    except (OSError, ValueError):
        return {}


def _point(output: str, name: str, folder: str, log: Callable[[str], None]) -> None:
    """Make `<output>/<name>` a relative symlink to the stage folder `folder` (local outputs only), so the latest
    outputs keep one stable path (`runs/demo/model/checkpoint.pt`). Replaced atomically; a real folder of that name
    (a run from before stage folders were hashed) is moved aside to `<name>-unhashed`, never deleted."""
    if "://" in output:
        return
    link = Path(output, name)
    if link.exists() and not link.is_symlink():
        aside = link.with_name(f"{name}-unhashed")
        if aside.exists():
            raise ValueError(f"{link} is a folder, not the link to the latest {name} output, and {aside} exists: "
                             f"move one of them away")
        link.rename(aside)
        log(f"   {link} was a folder (older layout): moved to {aside}")
    tmp = link.with_name(f".{name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(posixpath.basename(folder.rstrip("/")), target_is_directory=True)
    os.replace(tmp, link)


def run_pipeline(run: RunConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    from pipelines import curate, dedup, tokenize

    t0 = time.perf_counter()
    if "curate" in run.stages and not run.curate.input:
        raise ValueError("curate.input: no WARC input given (a file, folder, glob or warc.paths listing)")
    out = OutputDir(run.output)
    out.check_writable()
    record = _load_record(out)
    plans = run.plan(record)
    record.update(config=json.loads(json.dumps(asdict(run), default=list)), stages_requested=list(run.stages))
    runners: dict[str, Callable[[Any], dict[str, Any]]] = {
        "curate": curate.run, "dedup": dedup.run, "tokenize": tokenize.run,
        "pretrain": lambda c: _pretrain(c, run), "sweep": lambda c: _sweep(c, run), "align": lambda c: _align(c, run),
    }
    for name in run.stages:
        plan = plans[name]
        cfg, folder = plan.config, plan.output
        root = run._train_root() if name in TRAIN_STAGES else run.output
        if _complete(plan, run):
            record["stages"][name] = _read_marker(OutputDir(folder))
            _point(root, STAGE_DIRS[name], folder, log)
            out.write_json(record, PIPELINE_FILE)
            log(f"== {name}: complete, skipped ({folder})")
            continue
        if name in ("pretrain", "sweep") and "://" in plans["tokenize"].output:
            _localize_tokens(plans["tokenize"].output, cfg.shards)
        log(f"== {name} -> {folder}")
        if "://" not in folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
        _point(root, STAGE_DIRS[name], folder, log)
        record["stages"][name] = {"status": "running", "hash": plan.hash, "output": folder}
        out.write_json(record, PIPELINE_FILE)
        s0 = time.perf_counter()
        try:
            result = runners[name](cfg)
        except BaseException as exc:
            record["stages"][name].update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            out.write_json(record, PIPELINE_FILE)
            raise
        seconds = time.perf_counter() - s0
        record["stages"][name] = {"status": "finished", "hash": plan.hash, "output": folder,
                                  "seconds": round(seconds, 3), "summary": _brief(name, result)}
        OutputDir(folder).write_json(record["stages"][name], STAGE_FILE)
        out.write_json(record, PIPELINE_FILE)
        log(f"   {name}: {seconds:.1f} s  {json.dumps(record['stages'][name]['summary'], default=str)[:300]}")
        if name == "tokenize" and run.report:
            _report(cfg.output, log)
    record["wall_seconds"] = round(time.perf_counter() - t0, 3)
    out.write_json(record, PIPELINE_FILE)
    return record


def _brief(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """The few numbers of a stage's result worth keeping in pipeline.json (the stage's own files hold the rest)."""
    stats = result.get("stats") or {}
    if name == "curate":
        return {"files": result.get("files"), "documents": stats.get("write/docs"),
                "shards_per_node": result.get("shards_per_node", {})}
    if name == "dedup":
        return {"shards": result.get("shards"), "documents_in": stats.get("exact_dedup/in"),
                "documents_out": stats.get("line_dedup/out")}
    if name == "tokenize":
        return {k: result[k] for k in ("documents", "tokens", "input_shards") if k in result}
    return {k: v for k, v in result.items() if not isinstance(v, (list,))}


def _report(tokens_dir: str, log: Callable[[str], None]) -> None:
    from pipelines.report import collect, print_report, write_html

    try:
        rep = collect(tokens_dir)
        print_report(rep)
        if "://" not in tokens_dir:
            log(f"   HTML report: {write_html(rep, Path(tokens_dir) / 'report.html')}")
    except Exception as exc:  # noqa: BLE001 - the report must not fail a finished curation
        log(f"   report not written: {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None, prog: str = "python -m pipelines.run") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Every stage in one job: curate, dedup, tokenize, pretrain, "
                                                       "and optionally a scaling sweep and alignment.")
    p.add_argument("--config", "-c", help="a run YAML (configs/run-demo.yaml)")
    p.add_argument("--output", "-o")
    p.add_argument("--stages", help="comma-separated subset, e.g. curate,dedup,tokenize")
    p.add_argument("--num-cpus", type=int, help="size of the embedded local Ray")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="STAGE.FIELD=VALUE, e.g. pretrain.steps=200 (each stage's fields: sift <stage> --help)")
    p.add_argument("--json", action="store_true", help="print pipeline.json at the end")
    args = p.parse_args(argv)
    try:
        overrides = parse_set(args.set)
        if args.output:
            overrides["output"] = args.output
        if args.stages:
            overrides["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
        if args.num_cpus is not None:
            overrides["num_cpus"] = args.num_cpus
        cfg = resolve(RunConfig, args.config, overrides)
        record = run_pipeline(cfg)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(record, indent=2, default=str))
    else:
        done = ", ".join(f"{k} {record['stages'][k].get('seconds', 0):.0f} s" for k in cfg.stages)
        print(f"sift run: finished in {record['wall_seconds']:.0f} s ({done}); record: {cfg.output}/{PIPELINE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
