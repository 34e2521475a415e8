"""Fault injection: a worker node dies in the middle of a curate, dedup or tokenize job (as a preempted spot machine
does), or the driver dies. The job still succeeds (or its rerun does), and its output equals a clean run's: no
document lost, none doubled, stats not double-counted."""

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


def _submit_then_wait_for_first(address: str, env: dict, module_args: list[str], done_dir: Path) -> subprocess.Popen:
    """`ray job submit` a module; return once the first unit is finished (a file in `done_dir`)."""
    cmd = [str(RAY_BIN), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
           sys.executable, "-m", *module_args]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    deadline = time.time() + 240
    while time.time() < deadline and not (done_dir.exists() and any(done_dir.glob("*.json"))):
        assert job.poll() is None, job.stdout.read()[-3000:]
        time.sleep(0.02)
    return job


def _kill_node_then_wait(job: subprocess.Popen, node: subprocess.Popen, what: str) -> tuple[str, float]:
    """SIGKILL the worker node (raylet, its workers and agents at once), then wait for the job: (log, seconds from
    the kill to the job's end)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGKILL)
    node.wait()
    killed_at = time.time()
    try:
        log, _ = job.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        job.kill()
        pytest.fail(f"the {what} job hung after its worker node died")
    return log, time.time() - killed_at


def test_worker_node_killed_mid_curate(ray_local, tmp_path):
    from pipelines.curate import CurateConfig, run

    files = sorted(SAMPLE.glob("*.warc.gz"))
    clean = tmp_path / "clean"
    run(CurateConfig(input=tuple(str(f) for f in files), output=str(clean)))

    out = tmp_path / "faulty"
    with _ray_cluster(tmp_path, 1, [1]) as (address, env, procs):
        stats_dir = out / "shard_stats"
        job = _submit_then_wait_for_first(address, env, ["pipelines.curate", *[a for f in files for a in ("--input", str(f))],
                                                         "--output", str(out)], stats_dir)
        done_at_kill = len(list(stats_dir.glob("*.json")))
        log, recovery = _kill_node_then_wait(job, procs[1], "curate")
    (tmp_path / "job.log").write_text(log)
    assert done_at_kill < len(files), "the node died after the work was done: nothing was tested"
    assert job.returncode == 0, log[-3000:]
    stats = json.loads((out / "stats.json").read_text())["stats"]
    assert balance_errors(stats) == []
    assert stats == json.loads((clean / "stats.json").read_text())["stats"]  # counted once per shard
    assert _documents(out / "documents") == _documents(clean / "documents")
    assert not [p for p in (out / "documents").iterdir() if p.name.startswith(".tmp-")]
    print(f"worker node killed with {done_at_kill}/{len(files)} shards done; job finished {recovery:.1f} s later")


def _removed(folder: Path) -> list[tuple]:
    return sorted((r["doc_id"], r["stage"], r["reason"], r["kept_doc_id"])
                  for p in sorted(folder.glob("*.parquet")) for r in pq.read_table(p).to_pylist())


def test_worker_node_killed_during_the_dedup_shuffle(ray_local, tmp_path):
    """On a cluster dedup runs as Ray Data shuffles; a node dying in the middle of them loses nothing: the job
    completes with the same documents, removals and stats as a clean (in-process) run."""
    from pipelines import dedup
    from pipelines.curate import CurateConfig
    from pipelines.curate import run as curate

    curated = tmp_path / "curate"
    curate(CurateConfig(input=tuple(str(SAMPLE / f) for f in ("aeb-000.warc.gz", "edge-cases.warc.gz",
                                                              "edge-truncated.warc.gz", "wceb2026-000.warc.gz")),
                        output=str(curated)))
    clean = tmp_path / "clean"
    dedup.run(dedup.DedupConfig(input=str(curated), output=str(clean)))

    out = tmp_path / "faulty"
    with _ray_cluster(tmp_path, 1, [1]) as (address, env, procs):
        cmd = [str(RAY_BIN), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
               sys.executable, "-m", "pipelines.dedup", "--input", str(curated), "--output", str(out)]
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        # the shuffles start once the job's driver has read its input; kill the worker node a few seconds in,
        # before any deduplicated shard is written
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "run.json").exists():
            time.sleep(0.05)
        time.sleep(4)
        running = job.poll() is None and not any((out / "shard_stats").glob("*.json"))
        log, _ = _kill_node_then_wait(job, procs[1], "dedup")
    (tmp_path / "job.log").write_text(log)
    assert running, "the node was killed after the shuffles: nothing was tested"
    assert job.returncode == 0, log[-3000:]
    assert json.loads((out / "stats.json").read_text())["stats"] == json.loads((clean / "stats.json").read_text())["stats"]
    assert _documents(out / "documents") == _documents(clean / "documents")
    assert _removed(out / "dedup_removed") == _removed(clean / "dedup_removed")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_worker_node_killed_mid_tokenize(ray_local, tmp_path):
    """Tokenize on a cluster (an actor pool over the input shards, then packing): a node dying while the shards are
    being tokenized loses nothing; the token shards and document maps are byte-identical to a clean run's."""
    from pipelines import tokenize
    from pipelines.curate import CurateConfig
    from pipelines.curate import run as curate

    files = sorted(SAMPLE.glob("*.warc.gz"))
    curated = tmp_path / "curate"
    curate(CurateConfig(input=tuple(str(f) for f in files), output=str(curated)))
    clean = tmp_path / "clean"
    tokenize.run(tokenize.TokenizeConfig(input=str(curated), output=str(clean), shard_tokens=20_000))

    out = tmp_path / "faulty"
    with _ray_cluster(tmp_path, 1, [1]) as (address, env, procs):
        parts = out / tokenize.PART_STATS_DIR
        job = _submit_then_wait_for_first(address, env, ["pipelines.tokenize", "--input", str(curated), "--output",
                                                         str(out), "--set", "shard_tokens=20000"], parts)
        done_at_kill = len(list(parts.glob("*.json")))
        log, recovery = _kill_node_then_wait(job, procs[1], "tokenize")
    (tmp_path / "job.log").write_text(log)
    assert done_at_kill < len(files), "the node died after every shard was tokenized: nothing was tested"
    assert job.returncode == 0, log[-3000:]
    assert json.loads((out / "stats.json").read_text())["stats"] == json.loads((clean / "stats.json").read_text())["stats"]
    tokens, expected = _files(out / tokenize.TOKENS_DIR), _files(clean / tokenize.TOKENS_DIR)
    manifest, clean_manifest = json.loads(tokens.pop("manifest.json")), json.loads(expected.pop("manifest.json"))
    assert manifest["shards"] == clean_manifest["shards"]  # each shard's counts and sha256 (the rest holds timings)
    assert len(tokens) > 3 and tokens == expected  # token shards, document maps, _SUCCESS
    print(f"worker node killed with {done_at_kill}/{len(files)} input shards tokenized; job finished {recovery:.1f} s later")


def test_driver_killed_mid_run_then_rerun_resumes(tmp_path):
    """The driver (and its embedded Ray) SIGKILLed after the first shard: a rerun redoes only what was missing and
    ends equal to a clean run."""
    files = sorted(SAMPLE.glob("*.warc.gz"))
    args = [sys.executable, "-m", "pipelines.curate", *[a for f in files for a in ("--input", str(f))], "--num-cpus", "1"]
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS", None)
    clean = tmp_path / "clean"
    subprocess.run([*args, "--output", str(clean)], check=True, capture_output=True, env=env, cwd=REPO, timeout=300)
    out = tmp_path / "killed"
    first = subprocess.Popen([*args, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=env, cwd=REPO, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any((out / "shard_stats").glob("*.json")):
        assert first.poll() is None, "the first run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the driver, its raylet and workers: nothing gets to clean up
    first.wait()
    time.sleep(2)  # a worker outside the process group may still finish its shard (atomically) before it notices
    done = {p.name: p.stat().st_mtime_ns for p in (out / "shard_stats").glob("*.json")}
    assert 0 < len(done) < len(files)
    rerun = subprocess.run([*args, "--output", str(out), "--json"], check=True, capture_output=True, text=True,
                           env=env, cwd=REPO, timeout=300)
    summary = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert summary["files_processed_now"] == len(files) - len(done)  # only the missing shards were made
    assert all((out / "shard_stats" / n).stat().st_mtime_ns == t for n, t in done.items())  # finished ones untouched
    assert json.loads((out / "stats.json").read_text())["stats"] == json.loads((clean / "stats.json").read_text())["stats"]
    assert _documents(out / "documents") == _documents(clean / "documents")


def test_only_system_failures_are_retried():
    """Lost nodes, workers and objects are retried (also when Ray Data hands them over as text); bugs are not."""
    import ray.exceptions as rx

    from pipelines.layout import is_system_failure, retry_system_failures

    assert is_system_failure(rx.ActorDiedError())
    assert is_system_failure(rx.NodeDiedError("node gone"))
    try:
        try:
            raise rx.ObjectLostError("abc", "owner", "call site")
        except rx.ObjectLostError as inner:
            raise RuntimeError("while reading the shuffle output") from inner
    except RuntimeError as wrapped:
        assert is_system_failure(wrapped)
    text_only = type("UnserializableException", (Exception,), {})(
        "Original exception:\nray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.")
    assert is_system_failure(text_only)
    assert not is_system_failure(ValueError("dedup would remove more than 90 % of the documents"))
    assert not is_system_failure(type("RayTaskError", (Exception,), {})("ray::Map() ZeroDivisionError"))

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise rx.ActorDiedError()
        return "plan"

    assert retry_system_failures(flaky, attempts=3, what="test") == "plan" and len(calls) == 3
    calls.clear()
    with pytest.raises(rx.ActorDiedError):
        retry_system_failures(flaky, attempts=2, what="test")  # out of attempts: the failure surfaces
    bugs = []

    def buggy():
        bugs.append(1)
        raise KeyError("place")

    with pytest.raises(KeyError):
        retry_system_failures(buggy, attempts=3, what="test")
    assert len(bugs) == 1  # a bug fails at once
