"""Cut the bundled demo sample (data/sample/) out of the real WARCs in ../shared/data/warc.

Each cut keeps the first records of a per-record-gzip WARC byte for byte (whole gzip members),
so every payload, header and digest is exactly as in the source file. Run from the repo root:

    python scripts/make_sample.py ../shared/data/warc data/sample
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from fastwarc.warc import ArchiveIterator

# (source file relative to shared/data/warc, number of page captures to keep; None = whole file)
CUTS = [
    ("pages/trafilatura-000.warc.gz", 40),
    ("pages/aeb-000.warc.gz", 25),
    ("pages/wceb2026-000.warc.gz", 20),
    ("edge-cases/edge-cases.warc.gz", None),
    ("edge-cases/edge-truncated.warc.gz", None),
    ("real/resiliparse-tests/warcfile.warc.gz", None),
    ("real/commoncrawl-whirlwind/whirlwind.warc.gz", None),
]


def cut(src: Path, dst: Path, captures: int | None) -> None:
    if captures is None:
        shutil.copyfile(src, dst)
        return
    with open(src, "rb") as f:
        positions = [r.stream_pos for r in ArchiveIterator(f, parse_http=False)]
    kept_records = 1 + 3 * captures  # warcinfo + (request, response, metadata) per capture
    end = positions[kept_records] if kept_records < len(positions) else src.stat().st_size
    dst.write_bytes(src.read_bytes()[:end])


def main(shared_warc: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for rel, captures in CUTS:
        src = Path(shared_warc) / rel
        dst = out / Path(rel).name
        cut(src, dst, captures)
        print(f"{dst}  {dst.stat().st_size:,} bytes  (from {rel}, {captures or 'all'} captures)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
