"""Bounded memory: a curate worker fed a file of hostile records (gzip and deflate bombs, a 50 MB one-line page, a
page just under the cap, a 1 TB declared length, nesting bombs, binary labelled text/html) between real pages
finishes under an RSS limit of 16 record caps above its warmed-up baseline, keeps every real page a clean run keeps,
and counts every hostile record once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pyarrow.parquet as pq
import pytest

from pipelines.curate import CurateConfig
from tests.conftest import REPO, SAMPLE
from tests.hostile import write_hostile_warc

CAP = 4 << 20
LIMIT = 16 * CAP

pytestmark = pytest.mark.slow


def test_curate_worker_stays_within_16_record_caps_on_hostile_input(tmp_path):
    src = tmp_path / "hostile.warc.gz"
    write_hostile_warc(src, CAP)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "tests.pipelines.memory_probe", str(src), str(out), str(CAP), str(LIMIT)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]  # 137: the watchdog saw the RSS limit exceeded
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["peak"] - report["baseline"] <= LIMIT
    stats = Counter(report["stats"])
    # every hostile record counted once, by the stage that stopped it
    assert stats["read/drop_html_too_large"] == 2  # the gzip and the deflate bomb, stopped at the cap
    assert stats["read/drop_record_too_large"] == 1  # the 50 MB line, skipped unread
    assert stats["read/drop_length_mismatch"] == 1  # the 1 TB length: its member ends, the records after are read
    assert stats["extract/drop_too_deeply_nested"] == 1
    assert stats["extract/drop_timeout"] == 1 and stats["extract/sandbox_restarts"] == 1
    assert stats["extract/drop_binary_content"] == 1

    # the real pages around them come out exactly as from the clean files
    from pipelines.curate import CurateShard
    from pipelines.io import OutputDir
    from pipelines.layout import DOCS_DIR, STATS_DIR
    from operators.extract import ExtractConfig
    from operators.warc import ReadConfig

    clean = tmp_path / "clean"
    for sub in (DOCS_DIR, STATS_DIR):
        OutputDir(str(clean)).makedirs(sub)
    worker = CurateShard(CurateConfig(output=str(clean), read=ReadConfig(max_record_bytes=CAP, max_html_bytes=CAP),
                                      extract=ExtractConfig(time_limit_s=2.0, max_text_chars=CAP // 2)))
    expected = []
    for name in ("aeb-000.warc.gz", "warcfile.warc.gz"):
        worker.process(str(SAMPLE / name), name.split(".")[0])
        expected += [(r["doc_id"], r["text"]) for r in pq.read_table(clean / DOCS_DIR / f"{name.split('.')[0]}.parquet").to_pylist()]
    got = [(r["doc_id"], r["text"]) for r in pq.read_table(out / DOCS_DIR / "hostile.parquet").to_pylist()
           if ".example/" not in r["url"]]
    assert got == expected
    assert stats["read/in"] == sum(Counter(json.loads((clean / STATS_DIR / f).read_text()))["read/in"]
                                   for f in os.listdir(clean / STATS_DIR)) + 8
