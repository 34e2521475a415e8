"""Determinism: the same inputs and config give byte-identical outputs whatever the parallelism.

`sift run` (curate -> dedup -> tokenize, dedup and tokenize forced onto their Ray Data paths) is run twice in
fresh processes, with an embedded Ray of 1 and of 2 CPUs (`--num-cpus`), and every data file is compared
byte for byte: document shards, exclusions, dedup removals and index, token shards and their doc maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLE

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FILES = ("aeb-000.warc.gz", "edge-cases.warc.gz", "warcfile.warc.gz")


def _run(out: Path, num_cpus: int) -> dict:
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS", None)
    inputs = "[" + ",".join(str(SAMPLE / f) for f in FILES) + "]"
    cmd = [sys.executable, "-m", "pipelines.run", "--config", "configs/run-demo.yaml", "--num-cpus", str(num_cpus),
           "--set", f"output={out}", "--set", "stages=[curate,dedup,tokenize]", "--set", "report=false",
           "--set", f"curate.input={inputs}", "--set", "dedup.local_max_docs=0", "--set", "tokenize.local_max_docs=0",
           "--set", "tokenize.shard_tokens=5000"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "pipeline.json").read_text())


def _data_files(root: Path) -> dict[str, str]:
    """sha256 of every output file except run records and reports (they hold timings)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix not in (".json", ".html", ".png")}


def _counts(root: Path) -> dict[str, dict]:
    """Per-unit stats files: counts only, so they must match too."""
    return {str(p.relative_to(root)): json.loads(p.read_text())
            for d in ("shard_stats", "part_stats") for p in sorted(root.rglob(f"{d}/*.json"))}


def test_one_and_two_workers_give_byte_identical_outputs(tmp_path):
    one, two = tmp_path / "cpus1", tmp_path / "cpus2"
    _run(one, 1)
    _run(two, 2)
    files = _data_files(one)  # stage folders are <stage>-<settings hash>: the same in both runs
    assert any(re.match(r"curate-[0-9a-f]{8}/documents/", k) for k in files)
    assert any(re.match(r"dedup-[0-9a-f]{8}/dedup_removed/", k) for k in files)
    assert sum(bool(re.match(r"tokens-[0-9a-f]{8}/tokens/train/.*\.arrow$", k)) for k in files) >= 2
    assert files == _data_files(two)
    assert _counts(one) == _counts(two)
    # the stage summaries agree on every count (they differ only in timings)
    for stage in ("curate", "dedup", "tokens"):
        a, b = (json.loads((r / stage / "stats.json").read_text())["stats"] for r in (one, two))
        assert a == b, stage
