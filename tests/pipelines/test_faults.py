"""Fault injection: a worker node dies in the middle of a curate job (as a preempted spot machine does). The job
still succeeds, and its output equals a clean run's: no document lost, none doubled, stats not double-counted."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.stats import balance_errors
from tests.conftest import REPO, SAMPLE
from tests.pipelines.test_job_submit import RAY_BIN, _ray_cluster

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _documents(folder: Path) -> dict[str, list[tuple]]:
    return {p.name: [(r["doc_id"], r["record_offset"], r["text"]) for r in pq.read_table(p).to_pylist()]
            for p in sorted(folder.glob("*.parquet"))}


def test_worker_node_killed_mid_curate(ray_local, tmp_path):
    from pipelines.curate import CurateConfig, run

    files = sorted(SAMPLE.glob("*.warc.gz"))
    clean = tmp_path / "clean"
    run(CurateConfig(input=tuple(str(f) for f in files), output=str(clean)))

    out = tmp_path / "faulty"
    with _ray_cluster(tmp_path, 1, [1]) as (address, env, procs):
        cmd = [str(RAY_BIN), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
               sys.executable, "-m", "pipelines.curate", *[a for f in files for a in ("--input", str(f))],
               "--output", str(out)]
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        stats_dir = out / "shard_stats"
        deadline = time.time() + 240
        while time.time() < deadline and not (stats_dir.exists() and any(stats_dir.glob("*.json"))):
            assert job.poll() is None, job.stdout.read()[-3000:]
            time.sleep(0.05)
        done_at_kill = len(list(stats_dir.glob("*.json")))
        worker = procs[1]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)  # the whole node at once: raylet, its workers, its agents
        worker.wait()
        killed_at = time.time()
        try:
            log, _ = job.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            job.kill()
            pytest.fail("the job hung after its worker node died")
        recovery = time.time() - killed_at
    (tmp_path / "job.log").write_text(log)
    assert done_at_kill < len(files), "the node died after the work was done: nothing was tested"
    assert job.returncode == 0, log[-3000:]
    stats = json.loads((out / "stats.json").read_text())["stats"]
    assert balance_errors(stats) == []
    assert stats == json.loads((clean / "stats.json").read_text())["stats"]  # counted once per shard
    assert _documents(out / "documents") == _documents(clean / "documents")
    assert not [p for p in (out / "documents").iterdir() if p.name.startswith(".tmp-")]
    print(f"worker node killed with {done_at_kill}/{len(files)} shards done; job finished {recovery:.1f} s later")
