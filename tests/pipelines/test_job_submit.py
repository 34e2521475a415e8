"""The users' main path: `ray job submit --working-dir . -- python -m pipelines.curate` against a
running Ray head, started here on loopback with free ports and stopped again (only ours)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.stats import balance_errors
from tests.conftest import REPO, SAMPLE, free_ports

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY_BIN = Path(sys.executable).parent / "ray"


def _start(cmd: list[str], log_path: Path, env: dict) -> subprocess.Popen:
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the node's own process group (`ray start --block` and everything it started), then SIGKILL."""
    proc.send_signal(signal.SIGINT)  # `ray start --block` stops what it started (SIGTERM: after 30 s)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _probe(cmd: list[str], env: dict, timeout: float = 30) -> subprocess.CompletedProcess | None:
    """One readiness probe; None when it hangs (a client attaching to a cluster that is still starting can block
    with no timeout of its own: the child is killed and the caller retries until its deadline)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _node_ports() -> list[str]:
    agent_grpc, agent_http, metrics, runtime_env, node_mgr, obj_mgr = free_ports(6)
    return [f"--dashboard-agent-grpc-port={agent_grpc}", f"--dashboard-agent-listen-port={agent_http}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
            f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
            "--min-worker-port=0", "--max-worker-port=0"]


@contextlib.contextmanager
def _ray_cluster(tmp_path: Path, head_cpus: int, worker_cpus: list[int]):
    """`ray start --head --block` (+ `ray start --address` per extra node), each in its own process group on
    loopback with free ports; terminating them stops their processes only. Yields the dashboard address, env and
    the node processes (head first; a test may kill a worker node's process group)."""
    if not RAY_BIN.exists():
        pytest.skip("ray CLI not found next to the interpreter")
    gcs, dash, client = free_ports(3)
    # Ray's temp dir path must stay short (unix socket path limit)
    temp_dir = Path("/tmp") / f"sift-ray-{os.getpid()}-{gcs}"
    # Ray 2.60 heads require token auth; the nodes and the client share a private token for this test
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    head = [str(RAY_BIN), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
            f"--num-cpus={head_cpus}", "--num-gpus=0", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}", f"--ray-client-server-port={client}", f"--temp-dir={temp_dir}",
            *_node_ports()]
    procs = [_start(head, tmp_path / "ray-head.log", env)]
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            if procs[0].poll() is not None:
                pytest.fail(f"ray head exited early:\n{(tmp_path / 'ray-head.log').read_text()[-3000:]}")
            ok = _probe([str(RAY_BIN), "job", "list", "--address", address], env)
            if ok is not None and ok.returncode == 0:
                break
            time.sleep(1)
        else:
            pytest.fail("ray head did not come up in 90 s")
        for i, cpus in enumerate(worker_cpus):
            node = [str(RAY_BIN), "start", "--block", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1",
                    f"--num-cpus={cpus}", "--num-gpus=0", f"--temp-dir={temp_dir}", *_node_ports()]
            procs.append(_start(node, tmp_path / f"ray-node{i + 1}.log", env))
        if worker_cpus:
            count = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                     "print(sum(n['Alive'] for n in ray.nodes()))")
            while time.time() < deadline + 60:
                alive = _probe([sys.executable, "-c", count, f"127.0.0.1:{gcs}"], env)
                if alive is not None and alive.stdout.strip() == str(1 + len(worker_cpus)):
                    break
                time.sleep(1)
            else:
                why = "the probe hung" if alive is None else f"{alive.stdout} {alive.stderr[-2000:]}"
                pytest.fail(f"worker nodes did not join: {why}")
        yield address, env, procs
    finally:
        for proc in reversed(procs):  # worker nodes first, then the head
            _stop(proc, timeout=10 if proc is not procs[0] else 30)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def ray_head(tmp_path):
    with _ray_cluster(tmp_path, 2, []) as (address, env, _):
        yield address, env


def test_ray_job_submit_curates_the_sample(ray_head, tmp_path):
    """A submitted job curates with the repo as its working dir, reaches SUCCEEDED and leaves the
    same output contract as a local run."""
    address, env = ray_head
    out = tmp_path / "job-out"
    inputs = [SAMPLE / "edge-cases.warc.gz", SAMPLE / "whirlwind.warc.gz"]
    cmd = [
        str(RAY_BIN), "job", "submit", "--address", address, "--working-dir", str(REPO),
        "--", sys.executable, "-m", "pipelines.curate",  # the driver runs on this node: use our env
        *[a for p in inputs for a in ("--input", str(p))], "--output", str(out), "--json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    (tmp_path / "job.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in (done.stdout + done.stderr).lower()
    stats = json.load(open(out / "stats.json"))["stats"]
    assert balance_errors(stats) == []
    assert stats["read/files"] == 2
    assert (out / "documents" / "_SUCCESS").exists()
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in (out / "documents").glob("*.parquet"))
    assert stats["extract/out"] > 10
    assert rows == stats["write/docs"] == stats["pii/out"] >= 1


def _rows(folder: Path) -> dict[str, list[dict]]:
    return {p.name: pq.read_table(p).to_pylist() for p in sorted(folder.glob("*.parquet"))}


def test_ray_job_submit_runs_the_demo_job_on_two_nodes(ray_local, tmp_path):
    """The whole demo job (`python -m pipelines.run`) submitted to a two-node cluster: curation work lands on
    both nodes, and the documents, dedup output and token shards equal a single-node run's."""
    from pipelines.config import parse_set, resolve
    from pipelines.run import RunConfig, run_pipeline

    # the same files for both runs (a job's relative paths resolve in its own copy of the working dir, and shard
    # names and source_file carry the path)
    sets = [f"curate.input=[{SAMPLE}]", "pretrain.steps=4", "pretrain.eval_every=2", "pretrain.context_length=32",
            "pretrain_cpus=1", "report=false"]
    out = tmp_path / "job-out"
    t0 = time.time()
    with _ray_cluster(tmp_path, 1, [1]) as (address, env, _):
        t1 = time.time()  # one CPU per node: two file workers, one per node
        cmd = [str(RAY_BIN), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
               sys.executable, "-m", "pipelines.run", "--config", "configs/run-demo.yaml", "--output", str(out),
               *[a for s in sets for a in ("--set", s)]]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
        t2 = time.time()
    print(f"cluster up {t1 - t0:.0f} s, job {t2 - t1:.0f} s, down {time.time() - t2:.0f} s")
    (tmp_path / "job.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "pipeline.json").read_text())
    assert {k: v["status"] for k, v in record["stages"].items()} == \
        dict.fromkeys(("curate", "dedup", "tokenize", "pretrain"), "finished")
    per_node = record["stages"]["curate"]["summary"]["shards_per_node"]
    assert len(per_node) == 2 and sum(per_node.values()) == 7, per_node
    assert (out / "model" / "checkpoint.pt").exists()

    ref = tmp_path / "single"
    cfg = resolve(RunConfig, str(REPO / "configs" / "run-demo.yaml"),
                  parse_set([f"output={ref}", "stages=[curate, dedup, tokenize]", *sets]))
    t3 = time.time()
    run_pipeline(cfg)
    print(f"single-node reference {time.time() - t3:.0f} s")
    for stage in ("curate", "dedup"):
        assert _rows(out / stage / "documents") == _rows(ref / stage / "documents"), stage
    manifests = [json.loads((d / "tokens" / "tokens" / "manifest.json").read_text()) for d in (out, ref)]
    assert manifests[0]["shards"] == manifests[1]["shards"]
