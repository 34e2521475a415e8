"""`sift run`: every stage as one job on the bundled real sample, stages wired output to input, finished stages
skipped on rerun, changed settings refused, a deleted output redone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.config import parse_set, resolve
from pipelines.run import RunConfig, main, run_pipeline
from tests.conftest import REPO, SAMPLE

pytestmark = [pytest.mark.ray]

DEMO = REPO / "configs" / "run-demo.yaml"


def _small(out: Path, *extra: str) -> RunConfig:
    """The demo job on two sample files with a few training steps."""
    return resolve(RunConfig, str(DEMO), parse_set([
        f"output={out}",
        f"curate.input=[{SAMPLE / 'aeb-000.warc.gz'}, {SAMPLE / 'trafilatura-000.warc.gz'}]",
        "pretrain.steps=6", "pretrain.eval_every=3", "pretrain.context_length=32", "pretrain_cpus=1",
        "sweep.budgets=[2.0e+10, 5.0e+10]", "sweep.min_steps=5", "sweep.max_epochs=50.0",
        "align.sft_steps=3", "align.train_size=32", "align.eval_size=4", "align.max_new_tokens=4",
        "report=false", *extra]))


def test_run_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        resolve(RunConfig, None, parse_set(["stages=[curate, train]"]))
    with pytest.raises(ValueError, match="pipeline order"):
        resolve(RunConfig, None, parse_set(["stages=[dedup, curate]"]))
    with pytest.raises(ValueError, match="dedup.input is set by the pipeline"):
        resolve(RunConfig, None, parse_set(["dedup.input=elsewhere"]))
    with pytest.raises(ValueError, match="align_commands: unknown command 'rlhf'"):
        resolve(RunConfig, None, parse_set(["align_commands=[sft, rlhf]"]))
    with pytest.raises(ValueError, match="unknown config key 'pretrain.stepz'"):
        resolve(RunConfig, None, parse_set(["pretrain.stepz=3"]))
    # an object store holds the curation; training needs a local (or shared) folder
    with pytest.raises(ValueError, match="set train_output"):
        resolve(RunConfig, None, parse_set(["output=s3://bucket/run"])).stage_configs()
    cfg = resolve(RunConfig, None, parse_set(["output=s3://bucket/run", "train_output=/mnt/shared/run"]))
    wired = cfg.stage_configs()
    assert wired["tokenize"].output == "s3://bucket/run/tokens" and wired["pretrain"].shards == "/mnt/shared/run/tokens"
    assert wired["pretrain"].output == "/mnt/shared/run/model"
    # no input: an error before any work (and no Ray started)
    assert main(["--output", str(tmp_path / "x"), "--stages", "curate"]) == 2


def test_one_job_runs_every_stage_then_skips_them(ray_local, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = _small(out, "stages=[curate, dedup, tokenize, pretrain, sweep, align]")
    record = run_pipeline(cfg)
    stages = record["stages"]
    assert [s for s in stages] == list(cfg.stages) and all(s["status"] == "finished" for s in stages.values())
    # each stage read the one before it
    assert json.loads((out / "dedup" / "run.json").read_text())["input_run"].endswith("run/curate")
    assert json.loads((out / "tokens" / "run.json").read_text())["input_run"].endswith("run/dedup")
    kept = sum(pq.ParquetFile(p).metadata.num_rows for p in (out / "dedup" / "documents").glob("*.parquet"))
    assert stages["tokenize"]["summary"]["documents"] == kept == stages["dedup"]["summary"]["documents_out"] > 0
    assert stages["curate"]["summary"]["files"] == 2 and sum(stages["curate"]["summary"]["shards_per_node"].values()) == 2
    assert stages["pretrain"]["summary"]["steps"] == 6 and (out / "model" / "checkpoint.pt").exists()
    sweep = stages["sweep"]["summary"]
    assert sweep["runs"] + sweep["skipped"] == 6 and sweep["runs"] >= 4 and (out / "sweep" / "runs.parquet").exists()
    assert (out / "align" / "sft" / "checkpoint.pt").exists()
    sft_config = json.loads((out / "align" / "sft" / "done.json").read_text())
    assert sft_config  # the SFT step's summary, kept for the rerun
    assert json.loads((out / "pipeline.json").read_text())["stages"] == stages

    # a rerun does nothing, and says so
    capsys.readouterr()
    again = run_pipeline(cfg)
    log = capsys.readouterr().out
    assert all(f"== {s}: complete, skipped" in log for s in cfg.stages)
    assert again["stages"] == stages

    # changed settings of a finished stage: refused, naming the stage
    with pytest.raises(ValueError, match="stage pretrain finished in .* with other settings"):
        run_pipeline(replace(cfg, pretrain=replace(cfg.pretrain, max_lr=1e-2)))

    # a deleted output is redone, and only that stage
    (out / "model" / "checkpoint.pt").unlink()
    capsys.readouterr()
    run_pipeline(replace(cfg, stages=("curate", "dedup", "tokenize", "pretrain")))
    log = capsys.readouterr().out
    assert "== pretrain -> " in log and "== curate: complete, skipped" in log
    assert (out / "model" / "checkpoint.pt").exists()


def test_token_shards_are_copied_whole_for_training(tmp_path):
    """An object-store tokenize output is copied to train_output before training (here local to local, the same
    pyarrow copy), through a temporary folder renamed into place."""
    from pipelines.run import _localize_tokens

    src = tmp_path / "store"
    (src / "tokens" / "train").mkdir(parents=True)
    (src / "tokens" / "train" / "shard-00000.arrow").write_bytes(b"\x01\x02")
    (src / "tokens" / "_SUCCESS").write_bytes(b"")
    dst = tmp_path / "local"
    _localize_tokens(str(src), str(dst))
    assert (dst / "tokens" / "train" / "shard-00000.arrow").read_bytes() == b"\x01\x02"
    assert (dst / "tokens" / "_SUCCESS").exists() and not (dst / ".tokens.partial").exists()
    (src / "tokens" / "train" / "shard-00000.arrow").write_bytes(b"changed")
    _localize_tokens(str(src), str(dst))  # finished: not copied again
    assert (dst / "tokens" / "train" / "shard-00000.arrow").read_bytes() == b"\x01\x02"
