"""Build the real-text training corpus for the GPU pretraining run (issue 7): the English pages sift curates from
`shared/data/warc/pages` plus the WikiText-2 valid/test articles, as one curate-shaped documents folder that
`sift dedup` and `sift tokenize` then process like any crawl.

    python -m pipelines.curate --config configs/demo.yaml --set "input=[../shared/data/warc/pages]" \\
        --set output=runs/shared-curate
    python benchmarks/shared_corpus.py --curated runs/shared-curate --shared ../shared/data --output runs/shared-docs
    sift dedup --input runs/shared-docs --output runs/shared-dedup
    sift tokenize --input runs/shared-dedup --output runs/shared-tokens --shard-tokens 1000000 --set validation_fraction=0.05
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq


def wikitext_articles(path: Path) -> list[str]:
    """Split a WikiText-2 file into articles at its top-level ` = Title = ` headings."""
    text = path.read_text(encoding="utf-8")
    parts = re.split(r"\n (?== [^=].* = \n)", text)
    return [p.strip() for p in parts if len(p.split()) > 50]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--curated", required=True)
    p.add_argument("--shared", required=True)
    p.add_argument("--output", required=True)
    args = p.parse_args()
    out = Path(args.output) / "documents"
    out.mkdir(parents=True, exist_ok=True)
    pages = pads.dataset(Path(args.curated) / "documents", format="parquet").to_table(
        columns=["doc_id", "url", "domain", "source_file", "record_offset", "text", "lang", "quality_score"])
    pq.write_table(pages, out / "pages.parquet")
    for name in ("wikitext-2-valid.txt", "wikitext-2-test.txt"):
        src = Path(args.shared) / "text" / "lm" / name
        arts = wikitext_articles(src)
        pq.write_table(pa.table({
            "doc_id": [f"{name}#{i}" for i in range(len(arts))], "url": [None] * len(arts), "domain": ["wikipedia.org"] * len(arts),
            "source_file": [str(src)] * len(arts), "record_offset": pa.array(range(len(arts)), pa.int64()), "text": arts,
            "lang": ["en"] * len(arts), "quality_score": pa.array([None] * len(arts), pa.float32()),
        }), out / f"{name}.parquet")
    (out / "_SUCCESS").write_text("")
    n = sum(pq.read_metadata(f).num_rows for f in out.glob("*.parquet"))
    print(f"{n} documents -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
