"""One real `sift run` job (curate with exclusions, dedup, tokenize) on three bundled WARC files, served by the tests
of this folder, and a copy of it made to look like a run in progress."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.config import parse_set, resolve
from pipelines.run import RunConfig, run_pipeline
from tests.conftest import REPO, SAMPLE

FILES = ("aeb-000.warc.gz", "edge-cases.warc.gz", "edge-truncated.warc.gz")  # edge-truncated repeats edge-cases pages


@pytest.fixture(scope="session")
def runs_root(ray_local, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("served") / "runs"
    cfg = resolve(RunConfig, str(REPO / "configs" / "run-demo.yaml"), parse_set([
        f"output={root / 'job'}", "stages=[curate, dedup, tokenize]", "report=false",
        f"curate.input=[{', '.join(str(SAMPLE / f) for f in FILES)}]",
    ]))
    record = run_pipeline(cfg)
    assert all(s["status"] == "finished" for s in record["stages"].values())
    return root


def make_live_copy(root: Path, name: str, shards_done: int) -> Path:
    """A copy of the job whose curate stage is still running with `shards_done` of its shards written."""
    live = root / name
    shutil.rmtree(live, ignore_errors=True)
    (live / "curate").mkdir(parents=True)
    src = root / "job" / "curate"
    meta = json.loads((src / "run.json").read_text())
    meta.update(status="running", pending=len(FILES) - shards_done)
    meta.pop("wall_seconds", None)
    (live / "curate" / "run.json").write_text(json.dumps(meta))
    (live / "curate" / "shard_stats").mkdir()
    for name_ in ("documents", "exclusions"):
        shutil.copytree(src / name_, live / "curate" / name_)
    for stats in sorted((src / "shard_stats").glob("*.json"))[:shards_done]:
        shutil.copy(stats, live / "curate" / "shard_stats" / stats.name)
    record = json.loads((root / "job" / "pipeline.json").read_text())
    record["stages"] = {"curate": {"status": "running", "output": str(live / "curate")}}
    record.pop("wall_seconds", None)
    (live / "pipeline.json").write_text(json.dumps(record))
    return live


def add_shard_stats(root: Path, live: Path, index: int) -> dict:
    """Finish one more shard of the live copy (its stats file, written last, is what marks it done)."""
    stats = sorted((root / "job" / "curate" / "shard_stats").glob("*.json"))[index]
    shutil.copy(stats, live / "curate" / "shard_stats" / stats.name)
    return json.loads(stats.read_text())
