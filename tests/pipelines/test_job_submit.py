"""The users' main path: `ray job submit --working-dir . -- python -m pipelines.curate` against a
running Ray head, started here on loopback with free ports and stopped again (only ours)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.stats import balance_errors
from tests.conftest import REPO, SAMPLE

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY_BIN = Path(sys.executable).parent / "ray"


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def ray_head(tmp_path):
    """`ray start --head --block` in its own process group; terminating it stops its processes only."""
    if not RAY_BIN.exists():
        pytest.skip("ray CLI not found next to the interpreter")
    gcs, dash, client, agent_grpc, agent_http, metrics, runtime_env, node_mgr, obj_mgr = _free_ports(9)
    # Ray's temp dir path must stay short (unix socket path limit)
    temp_dir = Path("/tmp") / f"sift-ray-{os.getpid()}-{gcs}"
    # Ray 2.60 heads require token auth; head and client share a private token for this test
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(RAY_BIN), "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=2", "--num-gpus=0",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--dashboard-agent-listen-port={agent_http}", f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}", f"--node-manager-port={node_mgr}",
        f"--object-manager-port={obj_mgr}", f"--temp-dir={temp_dir}",
        "--min-worker-port=0", "--max-worker-port=0",
    ]
    log = open(tmp_path / "ray-head.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"ray head exited early:\n{(tmp_path / 'ray-head.log').read_text()[-3000:]}")
            ok = subprocess.run(
                [str(RAY_BIN), "job", "list", "--address", address], capture_output=True, text=True, env=env
            )
            if ok.returncode == 0:
                break
            time.sleep(1)
        else:
            pytest.fail("ray head did not come up in 90 s")
        yield address, env
    finally:
        proc.send_signal(signal.SIGTERM)  # --block: tears down the processes this head started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


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
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in (done.stdout + done.stderr).lower()
    stats = json.load(open(out / "stats.json"))["stats"]
    assert balance_errors(stats) == []
    assert stats["read/files"] == 2
    assert (out / "documents" / "_SUCCESS").exists()
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in (out / "documents").glob("*.parquet"))
    assert stats["extract/out"] > 10
    assert rows == stats["write/docs"] == stats["pii/out"] >= 1
