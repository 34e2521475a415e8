"""operators.sandbox: per-item time and memory limits in a child process, and the extract stage on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest

from operators.extract import ExtractConfig, Extractor, Rejected, estimate_nesting_depth
from operators.sandbox import Sandbox, SandboxRejected
from operators.warc import read_warc_rows
from pipelines.stages import ExtractStage

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
ROOT = Path(__file__).resolve().parents[2]


def misbehaving(config: dict):
    """A sandbox factory for these tests: each item names how to fail."""

    def fn(item: bytes) -> bytes:
        if item == b"reject":
            raise SandboxRejected("refused")
        if item == b"raise":
            raise KeyError("x")
        if item == b"alloc":
            return bytes(bytearray(config["alloc_mb"] << 20))
        if item == b"abort":
            os.abort()
        if item == b"sleep":
            time.sleep(60)
        if item == b"print":
            print("stray output must not corrupt the protocol")
        return item[::-1]

    return fn


def nesting_bomb(subtrees: int, depth: int = 2900) -> bytes:
    """Many subtrees each just under the nesting guard: main-content extraction is quadratic in
    depth per subtree, so this passes the cheap depth check and still takes seconds."""
    sub = "<div>" * depth + "deep text" + "</div>" * depth
    return ("<html><body>" + sub * subtrees + "</body></html>").encode()


def test_sandboxed_extraction_equals_in_process_on_real_pages():
    pages = [row.html for path in sorted(SAMPLE.glob("*.warc.gz")) for row in read_warc_rows(str(path))[0]]
    assert len(pages) > 100
    ex = Extractor()

    def local(html: bytes):
        try:
            return "ok", ex(html).encode("utf-8", "surrogatepass")
        except Rejected as r:
            return "rejected", r.reason.encode()

    box = Sandbox("operators.extract:sandboxed_extractor", asdict(ExtractConfig()), time_limit_s=30)
    try:
        assert box(pages) == [local(p) for p in pages]
        assert box.restarts == 0
    finally:
        box.close()


def test_a_page_past_the_time_limit_is_killed_and_the_next_pages_still_extract():
    bomb = nesting_bomb(60)
    assert estimate_nesting_depth(bomb) < ExtractConfig().max_nesting_depth  # the cheap guard lets it through
    t0 = time.perf_counter()
    Extractor()(nesting_bomb(3))
    per_subtree = (time.perf_counter() - t0) / 3
    assert per_subtree * 60 > 1.0  # in-process the bomb would take over a second (about 5 s here)
    box = Sandbox("operators.extract:sandboxed_extractor", asdict(ExtractConfig()), time_limit_s=0.5)
    t0 = time.perf_counter()
    out = box([b"<p>before the bomb</p>", bomb, b"<p>after the bomb</p>", bomb, b"<p>last</p>"])
    elapsed = time.perf_counter() - t0
    box.close()
    assert out == [("ok", b"before the bomb"), ("timeout", b""), ("ok", b"after the bomb"), ("timeout", b""), ("ok", b"last")]
    assert box.restarts == 2
    assert elapsed < 0.5 * 2 + 5  # two limits plus two restarts, not 2 x 5 s of extraction


def test_failures_are_statuses_never_exceptions():
    box = Sandbox("tests.operators.test_sandbox:misbehaving", {"alloc_mb": 4096}, time_limit_s=1.0, memory_limit_mb=512)
    try:
        out = box([b"abc", b"reject", b"raise", b"alloc", b"print", b"abort", b"xyz", b"sleep", b"ok"])
    finally:
        box.close()
    assert out == [
        ("ok", b"cba"), ("rejected", b"refused"), ("error", b"KeyError"), ("out_of_memory", b""),
        ("ok", b"tnirp"), ("crashed", b""), ("ok", b"zyx"), ("timeout", b""), ("ok", b"ko"),
    ]
    assert box.restarts == 2  # after the abort and after the sleep


def test_a_child_killed_between_items_is_replaced():
    box = Sandbox("tests.operators.test_sandbox:misbehaving", {}, time_limit_s=5)
    assert box.run_one(b"ab") == ("ok", b"ba")
    os.kill(box.proc.pid, signal.SIGKILL)
    box.proc.wait()
    assert box.run_one(b"cd") == ("ok", b"dc")
    box.close()


def test_a_child_that_cannot_start_is_a_clear_error():
    with pytest.raises(RuntimeError, match="failed to start.*ModuleNotFoundError"):
        Sandbox("no_such_module:f", {}, time_limit_s=1).run_one(b"x")
    with pytest.raises(ValueError, match="time_limit_s"):
        Sandbox("operators.extract:sandboxed_extractor", {}, time_limit_s=0)


def test_the_child_dies_with_its_parent():
    code = (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from operators.sandbox import Sandbox\n"
        "b = Sandbox('tests.operators.test_sandbox:misbehaving', {}, time_limit_s=5); b.run_one(b'x')\n"
        "print(b.proc.pid, flush=True); time.sleep(60)\n" % str(ROOT)
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"sandbox child {child} outlived its parent")


def test_extract_stage_counts_timeouts_with_evidence():
    rows, _ = read_warc_rows(str(SAMPLE / "warcfile.warc.gz"))
    docs = [row.as_dict() for row in rows[:3]]
    docs.insert(1, {**docs[0], "doc_id": "bomb", "html": nesting_bomb(60)})
    stage = ExtractStage(ExtractConfig(time_limit_s=0.5))
    stats, rejected = Counter(), []
    kept = stage(docs, stats, rejected)
    stage.sandbox.close()
    in_process = ExtractStage(ExtractConfig(time_limit_s=0))([{**d} for d in docs if d["doc_id"] != "bomb"], Counter())
    assert [d["text"] for d in kept] == [d["text"] for d in in_process]
    assert stats["extract/drop_timeout"] == 1 and stats["extract/sandbox_restarts"] == 1
    assert stats["extract/in"] == stats["extract/out"] + sum(v for k, v in stats.items() if k.startswith("extract/drop_"))
    (removed,) = [r for r in rejected if r["doc_id"] == "bomb"]
    assert removed["reason"] == "timeout"
    assert json.loads(removed["evidence"])["time_limit_s"] == 0.5
