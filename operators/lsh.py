"""LSH banding, candidate verification and union-find: the pure parts of fuzzy dedup.

Band keys are BLAKE2b hashes of each band's signature bytes (stable across processes), so the
pipeline can shuffle them by hash range on Ray. Candidates from shared buckets are only linked
after their true Jaccard similarity (of shingle sets) is checked, which is what keeps unrelated
documents out of a cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a declared dependency; this keeps sift importable without it
    numba = None


def optimal_bands(num_perm: int, threshold: float, fp_weight: float = 0.1, fn_weight: float = 0.9) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted areas of false positives
    and false negatives under the S-curve 1 - (1 - s^r)^b around `threshold` (datasketch's
    MinHashLSH criterion, which weighs both 0.5). sift verifies every candidate pair, so a false
    positive costs one Jaccard check while a false negative loses a duplicate: misses weigh 9x."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"jaccard threshold must be in (0, 1), got {threshold}")

    def area(f, lo, hi, steps=200):
        xs = np.linspace(lo, hi, steps)
        return float(np.trapezoid(f(xs), xs))

    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = area(lambda s: 1 - (1 - s ** r) ** b, 0.0, threshold)
            fn = area(lambda s: (1 - s ** r) ** b, threshold, 1.0)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[int]:
    """One 64-bit key per band (the band index is mixed in, so equal slices of different bands differ)."""
    sig = np.ascontiguousarray(signature[: bands * rows], dtype=np.uint32).reshape(bands, rows)
    return [
        int.from_bytes(hashlib.blake2b(band.tobytes(), digest_size=8, salt=i.to_bytes(2, "little")).digest(), "little", signed=True)
        for i, band in enumerate(sig)
    ]


def candidate_pairs(keys_per_doc: Iterable[list[int]]) -> set[tuple[int, int]]:
    """Pairs (i, j), i < j, of documents sharing at least one band key."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for doc, keys in enumerate(keys_per_doc):
        for band, key in enumerate(keys):
            buckets.setdefault((band, key), []).append(doc)
    pairs = set()
    for members in buckets.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                pairs.add((members[a], members[b]))
    return pairs


def jaccard(a: set, b: set) -> float:
    """Jaccard similarity; two empty sets are 0 (never duplicates)."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def _set_scores(values, offsets, rows_a, rows_b, out, sorted_sets):  # pragma: no cover - compiled when numba is there
    # sorted_sets: |A & B| of two sorted unique arrays by one merge; else the positions where A and B agree
    for k in range(rows_a.shape[0]):
        i, i_end = offsets[rows_a[k]], offsets[rows_a[k] + 1]
        j, j_end = offsets[rows_b[k]], offsets[rows_b[k] + 1]
        count = 0
        if sorted_sets:
            while i < i_end and j < j_end:
                x, y = values[i], values[j]
                if x == y:
                    count += 1
                    i += 1
                    j += 1
                elif x < y:
                    i += 1
                else:
                    j += 1
        elif i_end - i == j_end - j:
            for t in range(i_end - i):
                count += values[i + t] == values[j + t]
        out[k] = count


if numba is not None:
    _set_scores = numba.njit(cache=True, nogil=True)(_set_scores)


def set_similarities(values: np.ndarray, offsets: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray,
                     estimate: bool = False) -> np.ndarray:
    """Similarity of many pairs of sets stored as one flat array (set i = values[offsets[i]:offsets[i + 1]]), in
    one compiled pass: the Jaccard of sorted unique arrays (|A & B| by a merge, so the sets must be sorted, over
    |A| + |B| - |A & B|), or with `estimate` the MinHash estimate of two signatures (the share of equal
    positions). 0.0 where a set is empty, or for signatures of different lengths. Same float64 values as the plain
    numpy definitions."""
    rows_a, rows_b = np.asarray(rows_a, np.int64), np.asarray(rows_b, np.int64)
    counts = np.zeros(len(rows_a), np.int64)
    offsets = np.asarray(offsets, np.int64)
    if numba is not None:
        _set_scores(values, offsets, rows_a, rows_b, counts, not estimate)
    else:
        for k, (a, b) in enumerate(zip(rows_a, rows_b)):
            x, y = values[offsets[a]: offsets[a + 1]], values[offsets[b]: offsets[b + 1]]
            if not estimate:
                counts[k] = len(np.intersect1d(x, y, assume_unique=True))
            elif len(x) == len(y):
                counts[k] = int(np.count_nonzero(x == y))
    len_a, len_b = offsets[rows_a + 1] - offsets[rows_a], offsets[rows_b + 1] - offsets[rows_b]
    if estimate:
        ok = (len_a > 0) & (len_a == len_b)
        denominator = len_a
    else:
        ok = (len_a > 0) & (len_b > 0)
        denominator = len_a + len_b - counts
    out = np.zeros(len(rows_a), np.float64)
    np.divide(counts, denominator, out=out, where=ok)
    return out


class UnionFind:
    """Disjoint sets with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def components(self) -> list[list[int]]:
        groups: dict[int, list[int]] = {}
        for x in range(len(self.parent)):
            groups.setdefault(self.find(x), []).append(x)
        return sorted(groups.values())


def expected_candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that two documents of this Jaccard similarity share a bucket."""
    return 1 - (1 - similarity**rows) ** bands

