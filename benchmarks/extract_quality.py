"""Extraction quality against gold annotations of real pages, sift vs trafilatura, same run.

Scores on shared/data/warc/pages (986 annotated real pages):
  * with_found:     share of `with` snippets (text a good extraction must contain) found
  * without_absent: share of `without` snippets (boilerplate) absent
  * P / R / F1:     word-level precision/recall/F1 (bag of lower-cased \\w+ tokens) against gold
                    article bodies (AEB `articleBody`, wceb2026 `main_content`), macro-averaged
  * docs/s:         single core, extraction only (decoding included), on the same pages

    python benchmarks/extract_quality.py [--shared ../shared/data] [--no-trafilatura] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from operators.extract import ExtractConfig, Extractor, decode_html  # noqa: E402
from operators.warc import read_warc_rows  # noqa: E402

WORD = re.compile(r"\w+", re.UNICODE)


def norm(text: str) -> str:
    return " ".join(text.split()).lower()


def load_pages(shared: Path, limit: int | None) -> list[dict]:
    pages_dir = shared / "warc" / "pages"
    annotations = {}
    for manifest in sorted(pages_dir.glob("manifest-*.jsonl")):
        for line in manifest.read_text().splitlines():
            m = json.loads(line)
            if m.get("annotations"):
                annotations[m["record_id"]] = m
    pages = []
    for path in sorted(pages_dir.glob("*.warc.gz")):
        rows, _ = read_warc_rows(str(path))
        for row in rows:
            if row.doc_id in annotations:
                pages.append({"html": row.html, "url": row.url, "m": annotations[row.doc_id]})
    return pages[:limit] if limit else pages


def gold_body(m: dict) -> str | None:
    a = m["annotations"]
    return a.get("articleBody") or a.get("main_content") or None


def word_prf(pred: str, gold: str) -> tuple[float, float, float]:
    p, g = Counter(WORD.findall(pred.lower())), Counter(WORD.findall(gold.lower()))
    overlap = sum((p & g).values())
    if not p or not g or not overlap:
        return 0.0, 0.0, 0.0
    prec, rec = overlap / sum(p.values()), overlap / sum(g.values())
    return prec, rec, 2 * prec * rec / (prec + rec)


def score(texts: list[str], pages: list[dict]) -> dict[str, float]:
    with_hits = with_total = without_absent = without_total = 0
    prf = []
    for text, page in zip(texts, pages):
        a = page["m"]["annotations"]
        t = norm(text)
        for s in a.get("with") or []:
            with_total += 1
            with_hits += norm(s) in t
        for s in a.get("without") or []:
            without_total += 1
            without_absent += norm(s) not in t
        gold = gold_body(page["m"])
        if gold:
            prf.append(word_prf(text, gold))
    n = max(len(prf), 1)
    return {
        "with_found": with_hits / max(with_total, 1),
        "without_absent": without_absent / max(without_total, 1),
        "P": sum(x[0] for x in prf) / n,
        "R": sum(x[1] for x in prf) / n,
        "F1": sum(x[2] for x in prf) / n,
        "gold_pages": len(prf),
    }


def run_extractor(name: str, fn, pages: list[dict]) -> dict:
    texts = []
    t0 = time.process_time()
    for page in pages:
        try:
            texts.append(fn(page) or "")
        except Exception:
            texts.append("")
    cpu = time.process_time() - t0
    return {"name": name, **score(texts, pages), "docs_per_s": len(pages) / cpu, "texts": texts}


def sift_variant(cfg: ExtractConfig):
    ex = Extractor(cfg)
    return lambda page: ex(page["html"])


def trafilatura_default(page: dict) -> str:
    import trafilatura

    return trafilatura.extract(decode_html(page["html"]), url=page["url"]) or ""


VARIANTS = {
    "sift default": ExtractConfig(),
    "sift, no UI-line filter": ExtractConfig(drop_ui_lines=False),
    "sift, no full-text fallback": ExtractConfig(fallback_max_words=0),
    "resiliparse main_content=True, alt/bullets/comments/meta off": ExtractConfig(fallback_max_words=0, drop_ui_lines=False),
    "resiliparse main_content=True, library defaults": ExtractConfig(
        fallback_max_words=0, drop_ui_lines=False, alt_texts=True, list_bullets=True, comments=True, post_meta=True
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("SIFT_SHARED_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--limit", type=int)
    ap.add_argument("--no-trafilatura", action="store_true")
    ap.add_argument("--json", help="also write results here")
    args = ap.parse_args()
    pages = load_pages(Path(args.shared), args.limit)
    print(f"{len(pages)} annotated real pages from {args.shared}/warc/pages (1 core, CPU time)\n")
    results = [run_extractor(name, sift_variant(cfg), pages) for name, cfg in VARIANTS.items()]
    if not args.no_trafilatura:
        results.append(run_extractor("trafilatura 2.3.1 extract() default", trafilatura_default, pages))
    header = f"{'extractor':<58} {'F1':>6} {'P':>6} {'R':>6} {'with':>6} {'w/o':>6} {'docs/s':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['name']:<58} {r['F1']:6.3f} {r['P']:6.3f} {r['R']:6.3f} {r['with_found']:6.3f} {r['without_absent']:6.3f} {r['docs_per_s']:8.1f}")
    if not args.no_trafilatura:
        ours, ref = results[0], results[-1]
        print(f"\nsift default vs trafilatura: F1 {ours['F1'] - ref['F1']:+.3f}, speed x{ours['docs_per_s'] / ref['docs_per_s']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "texts"} for r in results], indent=2))


if __name__ == "__main__":
    main()
