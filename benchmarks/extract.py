"""WARC read and read+extract throughput per core: sift vs warcio/FastWARC (+resiliparse) loops.

All rows run in this process on the same files (default: the 8 real-page WARC.gz files of
shared/data/warc/pages, 39.9 MB); CPU time of one core, best of `--repeat`. The last rows run the
real `sift curate` pipeline on an embedded Ray with one worker and report MB per second of file-task
time (the framework's per-document cost) and of wall time (incl. Ray start).

    python benchmarks/extract.py [--files 'glob'] [--repeat 2] [--no-pipeline]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from operators.extract import ExtractConfig, Extractor  # noqa: E402
from operators.sandbox import Sandbox  # noqa: E402
from operators.warc import ReadConfig, iter_warc  # noqa: E402


def warcio_read(path: str) -> int:
    from warcio.archiveiterator import ArchiveIterator

    n = 0
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f):
            if rec.rec_type == "response":
                rec.content_stream().read()
                n += 1
    return n


def fastwarc_read(path: str) -> int:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n = 0
    for rec in ArchiveIterator(path, record_types=WarcRecordType.response, parse_http=True):
        rec.reader.read()
        n += 1
    return n


def sift_read(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in iter_warc(f, path, ReadConfig(), Counter()))


def _bare_extract(html: bytes) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    return extract_plain_text(bytes_to_str(html, detect_encoding(html)), main_content=True)


def warcio_resiliparse(path: str) -> int:
    from warcio.archiveiterator import ArchiveIterator

    n = 0
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f):
            if rec.rec_type == "response" and "html" in (rec.http_headers.get_header("Content-Type") or ""):
                _bare_extract(rec.content_stream().read())
                n += 1
    return n


def fastwarc_resiliparse(path: str) -> int:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n = 0
    for rec in ArchiveIterator(path, record_types=WarcRecordType.response, parse_http=True):
        if "html" in (rec.http_content_type or ""):
            _bare_extract(rec.reader.read())
            n += 1
    return n


_EXTRACTOR = Extractor(ExtractConfig())


def sift_read_extract(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        for row in iter_warc(f, path, ReadConfig(), Counter()):
            _EXTRACTOR(row.html)
            n += 1
    return n


_SANDBOX = None


def sift_read_extract_sandboxed(path: str) -> int:
    """The same, with extraction in the time-limited child process (`extract.time_limit_s`, the default)."""
    global _SANDBOX
    if _SANDBOX is None:
        _SANDBOX = Sandbox("operators.extract:sandboxed_extractor", asdict(ExtractConfig()), ExtractConfig().time_limit_s)
        _SANDBOX.run_one(b"<p>warm up</p>")
    n = 0
    with open(path, "rb") as f:
        for row in iter_warc(f, path, ReadConfig(), Counter()):
            _SANDBOX.run_one(row.html)
            n += 1
    return n


def _cpu() -> float:
    """This process's CPU time plus the extraction child's."""
    return time.process_time() + (_SANDBOX.cpu_seconds() if _SANDBOX is not None else 0.0)


def bench(fn, files: list[str], repeat: int) -> tuple[float, int]:
    best, docs = float("inf"), 0
    for _ in range(repeat):
        t0 = _cpu()
        docs = sum(fn(p) for p in files)
        best = min(best, _cpu() - t0)
    return best, docs


def pipeline_row(files: list[str], time_limit_s: float = ExtractConfig().time_limit_s) -> tuple[float, float, int]:
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    from operators.blocklist import BlocklistConfig
    from operators.classifier import ClassifierConfig
    from operators.gopher import GopherConfig
    from operators.langid import LangIDConfig
    from operators.pii import PIIConfig
    from pipelines.curate import CurateConfig, run

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        # the read+extract stage only: the filters are measured by filters.py
        cfg = CurateConfig(
            input=tuple(files), output=out, num_cpus=1,
            blocklist=BlocklistConfig(enabled=False), langid=LangIDConfig(enabled=False),
            gopher=GopherConfig(enabled=False), quality=ClassifierConfig(enabled=False), pii=PIIConfig(enabled=False),
            extract=ExtractConfig(time_limit_s=time_limit_s),
        )
        summary = run(cfg)
        wall = time.perf_counter() - t0
    return summary["task_cpu_seconds"], wall, summary["stats"]["extract/in"]


def main() -> None:
    default = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "warc" / "pages" / "*.warc.gz")
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", default=os.environ.get("SIFT_BENCH_FILES", default))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-pipeline", action="store_true")
    args = ap.parse_args()
    files = sorted(glob.glob(args.files))
    if not files:
        sys.exit(f"no files match {args.files}")
    mb = sum(os.path.getsize(p) for p in files) / 1e6
    print(f"{len(files)} files, {mb:.1f} MB of WARC; one core; CPU seconds, best of {args.repeat}\n")
    rows = [
        ("read: warcio", warcio_read),
        ("read: FastWARC", fastwarc_read),
        ("read: sift iter_warc (FastWARC + own HTTP/decoding)", sift_read),
        ("read+extract: warcio + resiliparse (bare loop)", warcio_resiliparse),
        ("read+extract: FastWARC + resiliparse (bare loop)", fastwarc_resiliparse),
        ("read+extract: sift operators (default extraction)", sift_read_extract),
        ("read+extract: sift operators, extraction in the sandbox", sift_read_extract_sandboxed),
    ]
    print(f"{'what':<58} {'MB/s':>7} {'docs/s':>8} {'docs':>6}")
    results = {}
    for name, fn in rows:
        secs, docs = bench(fn, files, args.repeat)
        results[name] = mb / secs
        print(f"{name:<58} {mb / secs:7.1f} {docs / secs:8.1f} {docs:6d}")
    if not args.no_pipeline:
        task_s, wall, docs = pipeline_row(files)
        results["pipeline"] = mb / task_s
        print(f"{'sift curate on Ray, 1 worker (per task CPU-second)':<58} {mb / task_s:7.1f} {docs / task_s:8.1f} {docs:6d}")
        print(f"{'sift curate on Ray, 1 worker (per wall-second, incl. start)':<58} {mb / wall:7.1f} {docs / wall:8.1f} {docs:6d}")
        task_s0, _, _ = pipeline_row(files, time_limit_s=0)
        print(f"{'  the same, extraction in-process (extract.time_limit_s=0)':<58} {mb / task_s0:7.1f} {docs / task_s0:8.1f} {docs:6d}")
        bare = results["read+extract: FastWARC + resiliparse (bare loop)"]
        print(f"\nsift pipeline / bare FastWARC+resiliparse loop: {results['pipeline'] / bare:.2f} "
              f"(in-process extraction: {mb / task_s0 / bare:.2f})")


if __name__ == "__main__":
    main()
