"""Run one curate worker (the code a Ray actor runs) over a file under an RSS limit, and report its memory.

    python -m tests.pipelines.memory_probe INPUT OUTPUT CAP_BYTES LIMIT_BYTES

The worker is built and warmed up on a real sample file first (models loaded, caches filled); its RSS then is the
baseline. A watchdog thread samples the RSS every 2 ms and kills the process (exit 137, as an OOM killer would)
once it exceeds baseline + LIMIT_BYTES. At the end it prints one JSON line: baseline, peak (getrusage, which
also catches what the sampler missed), the extraction child's peak, and the shard's stats.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from operators.extract import ExtractConfig
from operators.warc import ReadConfig
from pipelines.curate import CurateConfig, CurateShard
from pipelines.io import OutputDir
from pipelines.layout import DOCS_DIR, STATS_DIR
from tests.conftest import SAMPLE

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def main(src: str, out: str, cap: int, limit: int) -> None:
    cfg = CurateConfig(output=out, read=ReadConfig(max_record_bytes=cap, max_html_bytes=cap),
                       batch_max_bytes=cap, extract=ExtractConfig(time_limit_s=2.0, max_text_chars=cap // 2))
    for folder in (out, str(Path(out) / "warmup")):
        for sub in (DOCS_DIR, STATS_DIR):
            OutputDir(folder).makedirs(sub)
    warm = CurateShard(replace(cfg, output=str(Path(out) / "warmup")))
    warm.process(str(SAMPLE / "warcfile.warc.gz"), "warmup")
    worker = CurateShard(cfg)
    worker.stages = warm.stages  # the same loaded models and the running extraction child
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    baseline = max(baseline, rss())

    def watchdog() -> None:
        while True:
            if rss() > baseline + limit:
                sys.stderr.write(f"memory limit exceeded: rss {rss()} > {baseline} + {limit}\n")
                os._exit(137)
            time.sleep(0.002)

    threading.Thread(target=watchdog, daemon=True).start()
    stats = worker.process(src, "hostile")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    extract = next(s for s in worker.stages if s.name == "extract")
    extract.sandbox.close()
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"baseline": baseline, "peak": peak, "child_peak": child_peak, "stats": dict(stats)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
