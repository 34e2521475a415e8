"""Per-document filter operators, docs/s on one core, on the extracted texts of the shared real pages,
next to the bare reference library in the same process. (Issue 3 adds rows as its operators land.)

    python benchmarks/filters.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from operators.blocklist import BlocklistConfig, URLBlocklist  # noqa: E402
from operators.classifier import BUNDLED_QUALITY_MODEL, FastTextClassifier  # noqa: E402
from operators.extract import extract_text  # noqa: E402
from operators.gopher import GopherConfig, gopher_reject_reason  # noqa: E402
from operators.langid import BUNDLED_LID_MODEL, LanguageIdentifier  # noqa: E402
from operators.linefilters import c4_filter, fineweb_reject_reason  # noqa: E402
from operators.pii import mask_pii  # noqa: E402
from operators.warc import read_warc_rows  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def best_rate(fn, texts: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for t in texts:
            fn(t)
        best = min(best, time.process_time() - t0)
    return len(texts) / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "warc" / "pages" / "*.warc.gz"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows_ = [r for p in sorted(glob.glob(args.files)) for r in read_warc_rows(p)[0]]
    texts = [t for r in rows_ if (t := extract_text(r.html))]
    urls = [r.url for r in rows_]
    print(f"{len(texts)} extracted page texts; one core, CPU time, best of {args.repeat}\n")

    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None
    bare = fasttext.load_model(BUNDLED_LID_MODEL)
    ident = LanguageIdentifier()
    rows = [
        ("fastText lid.176 predict, bare (newlines replaced)", lambda t: bare.predict(t.replace("\n", " "), k=1)),
        ("sift LanguageIdentifier, whole text (prefix_chars=0)", LanguageIdentifier(prefix_chars=0)),
        ("sift LanguageIdentifier (default: a confident 3,000-char prefix decides)", ident),
        ("sift Gopher rules, defaults (stop-word rule ends most non-English early)", gopher_reject_reason),
        ("sift Gopher rules, every rule evaluated (min_stop_words=0)", lambda t, c=GopherConfig(min_stop_words=0): gopher_reject_reason(t, c)),
        ("sift quality classifier (bundled fastText, normalise + predict)", FastTextClassifier(BUNDLED_QUALITY_MODEL).score),
        ("sift PII masking (e-mail, phone, IPv4/IPv6)", mask_pii),
        ("sift C4 line filters (optional stage)", c4_filter),
        ("sift FineWeb quality filter (optional stage)", fineweb_reject_reason),
    ]
    english = [t for t in texts if ident(t)[0] == "en"]
    print(f"{'operator':<72} {'docs/s':>8}")
    total_s = 0.0
    for name, fn in rows:
        rate = best_rate(fn, texts, args.repeat)
        if name.startswith("sift") and "every rule" not in name and "optional" not in name:
            total_s += 1 / rate
        print(f"{name:<72} {rate:8.0f}")
    print(f"{'sift filter chain (langid + Gopher + quality + PII), all docs through each':<72} {1 / total_s:8.0f}")
    rate = best_rate(gopher_reject_reason, english, args.repeat)
    print(f"{f'sift Gopher rules on the {len(english)} English pages (what it sees after langid)':<72} {rate:8.0f}")

    archive = Path(args.files).parents[2] / "blocklists" / "ut1-adult-blocklist.tar.gz"
    if archive.exists():
        import tempfile

        with tempfile.TemporaryDirectory() as cache:
            cfg = BlocklistConfig(domains_path=str(archive), cache_dir=cache)
            t0 = time.perf_counter()
            URLBlocklist(cfg)  # builds the hashed cache
            build = time.perf_counter() - t0
            rss0 = _rss_mb()
            t0 = time.perf_counter()
            bl = URLBlocklist(cfg)  # what each worker does: memory-map the cache
            load = time.perf_counter() - t0
            rate = best_rate(bl.reject_reason, urls, args.repeat)
            rss1 = _rss_mb()
        print(f"\nURL blocklist, UT1 adult ({len(bl.domains):,} domains, {len(bl.urls):,} URLs)")
        print(f"  first build {build:.1f} s; load per worker {load * 1e3:.1f} ms (memory-mapped, shared across workers)")
        print(f"  hashed arrays {(bl.domains.nbytes + bl.urls.nbytes) / 1e6:.1f} MB; worker RSS +{rss1 - rss0:.1f} MB after scoring")
        print(f"  {rate:,.0f} URLs/s per core ({len(urls)} real URLs)")



if __name__ == "__main__":
    main()
