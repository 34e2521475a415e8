"""curate -> dedup -> tokenize -> stats with every input and output on S3: a moto S3 server on loopback stands in
for the object store (pyarrow's S3 filesystem reaches it through AWS_ENDPOINT_URL), and the stages run as the
`sift` command in their own processes, each with its own local Ray, as a user would run them. The documents must
equal a local run's, byte for byte in their text."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.dataset as pads
import pytest

from tests.conftest import REPO, SAMPLE

INPUTS = sorted(p.name for p in SAMPLE.glob("*.warc.gz"))  # the demo's seven files


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server with one bucket holding the real sample WARCs; yields the environment to reach it."""
    server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    srv = server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "PYTHONPATH": str(REPO)}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket="crawl")
    for name in INPUTS:
        client.upload_file(str(SAMPLE / name), "crawl", f"warcs/{name}")
    yield env
    srv.stop()


def _sift(env, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _texts(fs, path) -> dict[str, str]:
    table = pads.dataset(path, format="parquet", filesystem=fs).to_table(columns=["doc_id", "text"])
    return dict(zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()))


@pytest.mark.ray
@pytest.mark.slow
def test_curate_dedup_tokenize_stats_on_s3_equal_a_local_run(s3, tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(key, s3[key])
    _sift(s3, "curate", "--input", "s3://crawl/warcs/", "--output", "s3://crawl/runs/curate")
    _sift(s3, "curate", *[a for n in INPUTS for a in ("--input", str(SAMPLE / n))], "--output", str(tmp_path / "curate"))
    again = _sift(s3, "curate", "--input", "s3://crawl/warcs/", "--output", "s3://crawl/runs/curate")
    assert f"{len(INPUTS)} input files (0 processed now)" in again.stdout  # a rerun on the object store skips finished shards
    _sift(s3, "dedup", "--input", "s3://crawl/runs/curate", "--output", "s3://crawl/runs/dedup")
    # incremental: the same crawl against the first run's index on S3 keeps nothing new
    _sift(s3, "dedup", "--input", "s3://crawl/runs/curate", "--output", "s3://crawl/runs/dedup-again",
          "--set", "index=s3://crawl/runs/dedup")
    # the same dedup as Ray Data shuffles (what a cluster runs) instead of in-process
    _sift(s3, "dedup", "--input", "s3://crawl/runs/curate", "--output", "s3://crawl/runs/dedup-ray",
          "--set", "local_max_docs=0")
    _sift(s3, "tokenize", "--input", "s3://crawl/runs/dedup", "--output", "s3://crawl/runs/tokens",
          "--set", "shard_tokens=20000", "--set", "validation_fraction=0.1")
    stats = json.loads(_sift(s3, "stats", "s3://crawl/runs/tokens", "--json").stdout)

    fs, _ = pafs.FileSystem.from_uri("s3://crawl/runs")
    remote = _texts(fs, "crawl/runs/curate/documents")
    local = _texts(pafs.LocalFileSystem(), str(tmp_path / "curate" / "documents"))
    assert remote == local and len(remote) > 20
    kept = _texts(fs, "crawl/runs/dedup/documents")
    assert set(kept) < set(remote)  # the sample holds exact duplicates
    assert _texts(fs, "crawl/runs/dedup-ray/documents") == kept
    assert _texts(fs, "crawl/runs/dedup-again/documents") == {}
    names = {info.path.rsplit("/", 1)[-1] for info in fs.get_file_info(pafs.FileSelector("crawl/runs/tokens/tokens", recursive=True))}
    assert {"manifest.json", "_SUCCESS"} <= names and any(n.endswith(".arrow") for n in names)
    assert not any(n.startswith(".tmp-") for n in names)  # every file committed under its final name
    assert [r["kind"] for r in stats["runs"]] == ["curate", "dedup", "tokenize"]
    assert stats["documents"] == len(kept) and stats["tokens"] > 10_000 and stats["input_files"] == len(INPUTS)
