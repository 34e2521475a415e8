"""`sift run`: every stage as one job on the bundled real sample, stages wired output to input, finished stages
skipped on rerun, changed settings written to new hash-named folders, a deleted output redone."""

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
    tokens = wired["tokenize"].output
    assert tokens.startswith("s3://bucket/run/tokens-") and wired["pretrain"].shards == "/mnt/shared/run/" + tokens[16:]
    assert wired["pretrain"].output.startswith("/mnt/shared/run/model-")
    # no input: an error before any work (and no Ray started)
    assert main(["--output", str(tmp_path / "x"), "--stages", "curate"]) == 2


def test_one_job_runs_every_stage_then_skips_them(ray_local, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = _small(out, "stages=[curate, dedup, tokenize, pretrain, sweep, align]")
    record = run_pipeline(cfg)
    stages = record["stages"]
    assert [s for s in stages] == list(cfg.stages) and all(s["status"] == "finished" for s in stages.values())
    # each stage read the one before it, in a folder named by its settings hash; <output>/<stage> links to it
    plans = cfg.plan()
    for name, link in (("curate", "curate"), ("dedup", "dedup"), ("tokenize", "tokens"), ("pretrain", "model")):
        assert stages[name]["output"] == plans[name].output == str(out / f"{link}-{plans[name].hash[:8]}")
        assert (out / link).is_symlink() and (out / link).resolve() == Path(plans[name].output)
        assert json.loads((out / link / "stage.json").read_text()) == stages[name]
    assert json.loads((out / "dedup" / "run.json").read_text())["input_run"] == plans["curate"].output
    assert json.loads((out / "tokens" / "run.json").read_text())["input_run"] == plans["dedup"].output
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

    # changed settings of a finished stage: that stage (and what reads it) goes to a new folder, the rest is reused,
    # the old folder stays, and switching back reuses it
    old_model = (out / "model").resolve()
    changed = replace(cfg, stages=("curate", "dedup", "tokenize", "pretrain"),
                      pretrain=replace(cfg.pretrain, max_lr=1e-2))
    capsys.readouterr()
    run_pipeline(changed)
    log = capsys.readouterr().out
    assert "== tokenize: complete, skipped" in log and "== pretrain -> " in log
    new_model = (out / "model").resolve()
    assert new_model != old_model and (new_model / "checkpoint.pt").exists() and (old_model / "checkpoint.pt").exists()
    capsys.readouterr()
    run_pipeline(cfg)
    log = capsys.readouterr().out
    assert all(f"== {s}: complete, skipped" in log for s in cfg.stages)
    assert (out / "model").resolve() == old_model

    # a deleted output is redone, and only that stage
    (out / "model" / "checkpoint.pt").unlink()
    capsys.readouterr()
    run_pipeline(replace(cfg, stages=("curate", "dedup", "tokenize", "pretrain")))
    log = capsys.readouterr().out
    assert "== pretrain -> " in log and "== curate: complete, skipped" in log
    assert (out / "model" / "checkpoint.pt").exists()


def test_stage_hashes_chain_through_the_stages_that_read_them():
    base = resolve(RunConfig, str(DEMO), parse_set(["output=/tmp/r", "stages=[curate, dedup, tokenize, pretrain, sweep, align]"]))

    def hashes(*sets: str) -> dict[str, str]:
        cfg = resolve(RunConfig, str(DEMO), parse_set(["output=/tmp/r", "stages=[curate, dedup, tokenize, pretrain, sweep, align]", *sets]))
        return {name: p.hash for name, p in cfg.plan().items()}

    h0 = {name: p.hash for name, p in base.plan().items()}
    assert hashes() == h0  # stable
    # where it runs and how fast: no new folders
    assert hashes("num_cpus=1", "output=/elsewhere", "curate.extract.time_limit_s=3") == h0
    changed = hashes("curate.gopher.min_words=10")  # a curate filter: every stage after it is new
    assert all(changed[s] != h0[s] for s in h0)
    changed = hashes("dedup.jaccard_threshold=0.9")
    assert changed["curate"] == h0["curate"] and all(changed[s] != h0[s] for s in h0 if s != "curate")
    changed = hashes("pretrain.max_lr=0.01")  # the sweep reads the tokens, not the model
    assert {s for s in h0 if changed[s] != h0[s]} == {"pretrain", "align"}
    # a stage this run leaves out is read where the run's record says it was written
    record = {"stages": {"dedup": {"output": "/tmp/r/dedup-0123abcd", "hash": "0123abcd0000"}}}
    only = resolve(RunConfig, str(DEMO), parse_set(["output=/tmp/r", "stages=[dedup, tokenize]"]))
    assert only.plan(record)["dedup"].config.input == "/tmp/r/curate"  # nothing recorded: the pointer
    record["stages"]["curate"] = {"output": "/tmp/r/curate-0123abcd", "hash": "0123abcd0000"}
    assert only.plan(record)["dedup"].config.input == "/tmp/r/curate-0123abcd"
    assert only.plan(record)["dedup"].hash != h0["dedup"]  # it reads another curate output


def test_stage_link_replaces_itself_and_moves_an_old_folder_aside(tmp_path):
    from pipelines.run import _point

    (tmp_path / "curate").mkdir()  # a run from before hashed stage folders
    (tmp_path / "curate" / "x").write_text("old")
    logs: list[str] = []
    _point(str(tmp_path), "curate", str(tmp_path / "curate-aaaaaaaa"), logs.append)
    assert (tmp_path / "curate-unhashed" / "x").read_text() == "old" and "older layout" in logs[0]
    assert (tmp_path / "curate").is_symlink() and str((tmp_path / "curate").readlink()) == "curate-aaaaaaaa"
    _point(str(tmp_path), "curate", str(tmp_path / "curate-bbbbbbbb"), logs.append)
    assert str((tmp_path / "curate").readlink()) == "curate-bbbbbbbb" and len(logs) == 1
    _point("s3://bucket/run", "curate", "s3://bucket/run/curate-aaaaaaaa", logs.append)  # no links in object stores


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
