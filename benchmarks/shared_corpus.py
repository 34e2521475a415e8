"""Build the real-text training corpus for the GPU pretraining run (issue 7): the English pages sift curates from
`shared/data/warc/pages` plus the WikiText-2 valid/test articles, as one curate-shaped documents folder that
`sift dedup` and `sift tokenize` then process like any crawl.

    python -m pipelines.curate --config configs/demo.yaml --set "input=[../shared/data/warc/pages]" \\
        --set output=runs/shared-curate
    python benchmarks/shared_corpus.py --curated runs/shared-curate --shared ../shared/data --output runs/shared-docs
    sift dedup --input runs/shared-docs --output runs/shared-dedup
    sift tokenize --input runs/shared-dedup --output runs/shared-tokens --shard-tokens 1000000 --set validation_fraction=0.05

With --all-text (the scaling sweep's corpus, ~10 MB of text): also Tiny Shakespeare, the quality seed set, the CCNet
documents and corpus.en; then a 4,096-token BPE trained on it:
    python benchmarks/shared_corpus.py ... --all-text --output runs/sweep-docs
    sift dedup --input runs/sweep-docs --output runs/sweep-dedup
    sift train-tokenizer --input runs/sweep-dedup --vocab-size 4096 --output runs/sweep-tok4k
    sift tokenize --input runs/sweep-dedup --output runs/sweep-tokens --tokenizer runs/sweep-tok4k \
        --set validation_fraction=0.05
"""

from __future__ import annotations

import argparse
import json
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
    p.add_argument("--all-text", action="store_true", help="also Tiny Shakespeare, the quality seed set (169 edited "
                   "articles, 697 raw Common Crawl WET pages), the CCNet documents and cs336 corpus.en")
    args = p.parse_args()
    out = Path(args.output) / "documents"
    out.mkdir(parents=True, exist_ok=True)
    pages = pads.dataset(Path(args.curated) / "documents", format="parquet").to_table(
        columns=["doc_id", "url", "domain", "source_file", "record_offset", "text", "lang", "quality_score"])
    pq.write_table(pages, out / "pages.parquet")
    def write(name: str, src: Path, texts: list[str], domain: str | None, urls: list | None = None) -> None:
        pq.write_table(pa.table({
            "doc_id": [f"{name}#{i}" for i in range(len(texts))], "url": urls or [None] * len(texts), "domain": [domain] * len(texts),
            "source_file": [str(src)] * len(texts), "record_offset": pa.array(range(len(texts)), pa.int64()), "text": texts,
            "lang": ["en"] * len(texts), "quality_score": pa.array([None] * len(texts), pa.float32()),
        }), out / f"{name}.parquet")

    lm = Path(args.shared) / "text" / "lm"
    for name in ("wikitext-2-valid.txt", "wikitext-2-test.txt"):
        write(name, lm / name, wikitext_articles(lm / name), "wikipedia.org")
    if args.all_text:
        # Tiny Shakespeare in ~20 kB documents cut at speaker turns (blank lines)
        turns, docs, cur = (lm / "tinyshakespeare.txt").read_text().split("\n\n"), [], []
        for t in turns:
            cur.append(t)
            if sum(map(len, cur)) > 20_000:
                docs.append("\n\n".join(cur))
                cur = []
        docs += ["\n\n".join(cur)] if cur else []
        write("tinyshakespeare.txt", lm / "tinyshakespeare.txt", docs, None)
        write("cs336-corpus.en", lm / "cs336-corpus.en", [(lm / "cs336-corpus.en").read_text()], None)
        for src in [Path(args.shared) / "text" / "quality" / "quality_seed.jsonl",
                    *sorted((Path(args.shared) / "text" / "cc").glob("*.jsonl"))]:
            rows = [json.loads(line) for line in src.read_text().split("\n") if line.strip()]
            write(src.name, src, [r["text"] for r in rows], None, [r.get("url") for r in rows])
    (out / "_SUCCESS").write_text("")
    n = sum(pq.read_metadata(f).num_rows for f in out.glob("*.parquet"))
    print(f"{n} documents -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
