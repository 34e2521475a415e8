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

from operators.extract import extract_text  # noqa: E402
from operators.langid import BUNDLED_LID_MODEL, LanguageIdentifier  # noqa: E402
from operators.warc import read_warc_rows  # noqa: E402


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
    texts = [t for p in sorted(glob.glob(args.files)) for r in read_warc_rows(p)[0] if (t := extract_text(r.html))]
    print(f"{len(texts)} extracted page texts; one core, CPU time, best of {args.repeat}\n")

    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None
    bare = fasttext.load_model(BUNDLED_LID_MODEL)
    ident = LanguageIdentifier()
    rows = [
        ("fastText lid.176 predict, bare (newlines replaced)", lambda t: bare.predict(t.replace("\n", " "), k=1)),
        ("sift LanguageIdentifier (whitespace-normalised, capped)", ident),
    ]
    print(f"{'operator':<58} {'docs/s':>8}")
    rates = {}
    for name, fn in rows:
        rates[name] = best_rate(fn, texts, args.repeat)
        print(f"{name:<58} {rates[name]:8.0f}")


if __name__ == "__main__":
    main()
