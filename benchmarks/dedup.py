"""Dedup benchmarks. (a) MinHash signature throughput vs datasketch, same run, one core.

    python benchmarks/dedup.py [--repeat 3]

(b) pair precision/recall on real pages with planted edits, vs datasketch MinHashLSH.
(c) with --scaling 1,4,16: the full `sift dedup` on 2 Ray workers as the corpus grows.
"""

from __future__ import annotations

import argparse
import glob
import os
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
    ap.add_argument("--pair-docs", type=int, default=400, help="real pages used for the planted-edit pair benchmark")
    ap.add_argument("--only-signatures", action="store_true", help="part (a) only")
    ap.add_argument("--scaling", default="", help="corpus factors for (c), e.g. 1,4,16 (off by default: minutes)")
    ap.add_argument("--only-scaling", action="store_true", help="part (c) only")
    ap.add_argument("--shuffle-strategies", default="sort_shuffle_pull_based",
                    help="(c): Ray Data shuffle strategies to compare, comma-separated ('' entry = Ray's default)")
    args = ap.parse_args()
    texts = [t for p in sorted(glob.glob(args.files)) for r in read_warc_rows(p)[0] if (t := extract_text(r.html))]
    if args.only_scaling:
        scaling_benchmark(texts, tuple(int(f) for f in (args.scaling or "1,4,16").split(",")),
                          tuple(args.shuffle_strategies.split(",")))
        return
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"{len(texts)} real page texts ({words:.0f} words each on average); 128 permutations, 5-word shingles; one core\n")
    ds = best(datasketch_default, texts, 1)
    ds_bulk = best(datasketch_bulk, texts, 1)
    signatures(texts[:2], MinHashConfig(), backend="numba")  # compile (or load the cached kernel) first
    ours = best(lambda t: signatures(t, MinHashConfig(), backend="numba"), texts, args.repeat)
    ours_np = best(lambda t: signatures(t, MinHashConfig(), backend="numpy"), texts, args.repeat)
    print(f"{'signatures':<62} {'docs/s':>8} {'x default':>10} {'x bulk':>8}")
    for name, rate in [
        ("datasketch MinHash, defaults (sha1, update per shingle)", ds),
        ("datasketch MinHash, sha1 + update_batch", ds_bulk),
        ("sift signatures, numpy backend", ours_np),
        ("sift signatures, numba kernel (default)", ours),
    ]:
        print(f"{name:<62} {rate:8.0f} {rate / ds:10.1f} {rate / ds_bulk:8.1f}")
    if args.only_signatures:
        return
    pair_benchmark(texts[: args.pair_docs])
    if args.scaling:
        scaling_benchmark(texts, tuple(int(f) for f in args.scaling.split(",")), tuple(args.shuffle_strategies.split(",")))




# ---------------------------------------------------------------------------------------------
# (b) pair precision / recall on real pages with planted edits at known Jaccard levels
# ---------------------------------------------------------------------------------------------


def planted_corpus(texts: list[str], seed: int = 0, per_text: int = 2):
    """Each real text plus `per_text` edited copies (random word replacements and deletions at
    rates from 0 to 8 %, words drawn from the other texts): with 5-word shingles each edit touches
    up to 5 shingles, so true Jaccards spread from about 0.5 to 1, around the 0.8 threshold."""
    import random

    rng = random.Random(seed)
    vocab = [w for t in texts[:50] for w in t.split()]
    docs, origin = [], []
    for k, text in enumerate(texts):
        docs.append(text)
        origin.append(k)
        words = text.split()
        for _ in range(per_text):
            rate = rng.uniform(0.0, 0.08)
            edited = []
            for w in words:
                r = rng.random()
                if r < rate / 2:
                    continue  # delete
                edited.append(rng.choice(vocab) if r < rate else w)
            docs.append(" ".join(edited))
            origin.append(k)
    return docs, origin


def pair_benchmark(texts: list[str], threshold: float = 0.8) -> None:
    from itertools import combinations

    from datasketch import MinHashLSH

    from operators.lsh import band_keys, candidate_pairs, jaccard, optimal_bands
    from operators.minhash import shingle_hash32

    docs, origin = planted_corpus(texts)
    sets = [set(shingles(normalize_text(d), 5)) for d in docs]
    # ground truth: exact Jaccard over all pairs within an origin group (pairs across groups are
    # checked below whenever either method reports them)
    truth = set()
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(origin):
        groups.setdefault(k, []).append(i)
    for members in groups.values():
        for i, j in combinations(members, 2):
            if jaccard(sets[i], sets[j]) >= threshold:
                truth.add((i, j))
    cfg = MinHashConfig()
    sigs, has = signatures(docs, cfg)
    bands, rows = optimal_bands(cfg.num_perm, threshold)
    t0 = time.process_time()
    cands = candidate_pairs(band_keys(s, bands, rows) if ok else [] for s, ok in zip(sigs, has))
    sift_pairs = {p for p in cands if jaccard(sets[p[0]], sets[p[1]]) >= threshold}
    sift_s = time.process_time() - t0
    lsh = MinHashLSH(threshold=threshold, num_perm=cfg.num_perm)
    t0 = time.process_time()
    mhs = []
    for i, d in enumerate(docs):
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=shingle_hash32)
        m.update_batch(shingles(normalize_text(d), 5))
        mhs.append(m)
        lsh.insert(i, m)
    ds_pairs = {tuple(sorted((i, j))) for i, m in enumerate(mhs) for j in lsh.query(m) if j != i}
    ds_s = time.process_time() - t0
    for pairs in (sift_pairs, ds_pairs):  # pairs reported across origin groups: check them exactly
        truth |= {p for p in pairs if origin[p[0]] != origin[p[1]] and jaccard(sets[p[0]], sets[p[1]]) >= threshold}

    def prf(found):
        tp = len(found & truth)
        p = tp / len(found) if found else 0.0
        r = tp / len(truth) if truth else 0.0
        return p, r, 2 * p * r / (p + r) if p + r else 0.0

    print(f"\n(b) {len(docs)} documents ({len(texts)} real pages + 2 planted edits each), {len(truth)} true pairs at Jaccard >= {threshold}")
    print(f"{'method':<62} {'P':>6} {'R':>6} {'F1':>6}")
    for name, found in [
        (f"sift: LSH ({bands} bands x {rows} rows) + exact Jaccard verification", sift_pairs),
        (f"datasketch MinHashLSH(threshold={threshold}) (no verification)", ds_pairs),
    ]:
        p, r, f = prf(found)
        print(f"{name:<62} {p:6.3f} {r:6.3f} {f:6.3f}")
    print(f"  (LSH + verification {sift_s:.2f} s; datasketch insert+query incl. its MinHash {ds_s:.2f} s)")



# ---------------------------------------------------------------------------------------------
# (c) full `sift dedup` on 2 Ray workers as the corpus grows 1x, 4x, 16x
# ---------------------------------------------------------------------------------------------


def _write_corpus(texts: list[str], copies: int, root: Path, shards: int = 8) -> int:
    """A curate-shaped output (documents/*.parquet + _SUCCESS) of the real texts plus planted-edit
    copies, so `sift dedup` runs on it unchanged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs, _ = planted_corpus(texts, seed=copies, per_text=copies - 1) if copies > 1 else (texts, None)
    (root / "documents").mkdir(parents=True)
    per = -(-len(docs) // shards)
    for s in range(shards):
        part = docs[s * per : (s + 1) * per]
        ids = [f"doc-{s}-{i}" for i in range(len(part))]
        pq.write_table(pa.table({
            "doc_id": ids, "source_file": [f"synthetic-{s}"] * len(part), "record_offset": list(range(len(part))),
            "text": part,
        }), root / "documents" / f"shard-{s}.parquet")
    (root / "documents" / "_SUCCESS").write_text("")
    return len(docs)


class DriverRSS:
    """Peak resident memory of this process (the dedup driver) above its level when the block starts."""

    def __init__(self, every: float = 0.2):
        import threading

        self.every, self.base, self.peak = every, self._rss(), 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self._rss())
            self.stop.wait(self.every)

    @property
    def growth_mb(self) -> float:
        return max(0, self.peak - self.base) / 2**20

    def __enter__(self):
        self.base = self._rss()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self._rss())


def scaling_benchmark(texts: list[str], factors=(1, 4, 16), strategies: tuple[str, ...] = ("sort_shuffle_pull_based",)) -> None:
    import tempfile

    import ray

    from benchmarks.memory_per_stage import RSSSampler

    from pipelines.dedup import DedupConfig
    from pipelines.dedup import run as dedup_run

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    print("\n(c) sift dedup (exact + fuzzy + lines) on an embedded Ray with 2 CPUs")
    print(f"{'corpus':>8} {'shuffle':>24} {'documents':>10} {'wall s':>8} {'docs/s':>8} {'peak worker RSS MB':>19} {'peak total RSS MB':>18}"
          f" {'peak worker private MB':>23} {'driver RSS growth MB':>21}")
    for factor in factors:
        with tempfile.TemporaryDirectory() as tmp:
            n = _write_corpus(texts, factor, Path(tmp) / "in")
            for strategy in strategies:
                with RSSSampler(every=0.2) as sampler, DriverRSS(every=0.2) as driver:
                    t0 = time.perf_counter()
                    # local_max_docs=0: the Ray Data path even for the small corpora (as on a cluster)
                    dedup_run(DedupConfig(input=str(Path(tmp) / "in"), output=str(Path(tmp) / f"out-{strategy}"),
                                          local_max_docs=0, shuffle_strategy=strategy))
                    wall = time.perf_counter() - t0
                peak = sampler.peak
                print(f"{str(factor) + 'x':>8} {strategy or 'Ray default':>24} {n:>10,} {wall:8.1f} {n / wall:8.0f} {peak['worker']:19.0f} {peak['workers']:18.0f}"
                      f" {peak['private']:23.0f} {driver.growth_mb:21.0f}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
