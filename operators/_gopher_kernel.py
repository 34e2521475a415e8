"""Compiled (numba) n-gram repetition statistics of the Gopher rules, all n in one call.

For a page's word ids (64-bit hashes) and word lengths it computes, for every n = 1..max_n, exactly what
`operators.gopher` computes with numpy (the tests hold them equal):

- `top[n]`: characters of the most frequent n-gram (ties: the one that occurs first) times its count, over
  all word characters; 0 when no n-gram occurs twice;
- `dup[n]`: characters of the words covered by n-grams that occur more than once, over all word characters.

n-grams are compared by the same rolling 64-bit hashes (h_n[i] = h_{n-1}[i] * MULT + id[i+n-1] + 1, wrapping),
and, as there, an n-gram is only looked at where both of its (n-1)-gram halves repeat. The numpy path makes
about nine sorts with their Python calls per page (~0.5 ms); this is one call (~0.05 ms).

Compiled on first use and cached on disk (numba `cache=True`); `available()` is False where numba is missing,
and callers keep the numpy path.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a declared dependency; this keeps sift importable without it
    numba = None

MULT = 0x9E3779B97F4A7C15


def available() -> bool:
    return numba is not None


def _ngram_stats(ids, lens, max_n, top, dup):  # pragma: no cover - compiled; tested through ngram_stats
    n_words = ids.shape[0]
    total = np.int64(0)
    for i in range(n_words):
        total += lens[i]
    mult = np.uint64(MULT)
    one = np.uint64(1)
    h = ids + one  # h[i]: hash of the n-gram starting at word i (n = 1 first)
    rep = np.ones(n_words, np.bool_)  # rep[i]: the (n-1)-gram at i repeats (all True before n = 1)
    cover = np.zeros(n_words + 1, np.int64)
    for n in range(1, max_n + 1):
        m = n_words - n + 1  # n-grams on the page
        if m <= 0 or total == 0:
            break
        if n > 1:
            for i in range(m):
                h[i] = h[i] * mult + (ids[i + n - 1] + one)
        # candidates: every position for n = 1, else those whose two (n-1)-gram halves both repeat
        cand = np.empty(m, np.int64)
        k = 0
        for i in range(m):
            if n == 1 or (rep[i] and rep[i + 1]):
                cand[k] = i
                k += 1
        new_rep = np.zeros(n_words, np.bool_)
        if k == 0:
            break  # no n-gram repeats, so no longer one does: the rest stay 0
        keys = np.empty(k, np.uint64)
        for j in range(k):
            keys[j] = h[cand[j]]
        order = np.argsort(keys, kind="mergesort")  # stable: within a run, positions ascend
        top_count, top_first = 0, -1
        s = 0
        while s < k:
            e = s + 1
            while e < k and keys[order[e]] == keys[order[s]]:
                e += 1
            c = e - s
            if c > 1:
                for j in range(s, e):
                    new_rep[cand[order[j]]] = True
                first = cand[order[s]]
                if c > top_count or (c == top_count and first < top_first):
                    top_count, top_first = c, first
            s = e
        if top_count >= 2:
            chars = np.int64(0)
            for i in range(top_first, top_first + n):
                chars += lens[i]
            top[n] = (chars * top_count) / total
        # words covered by a repeated n-gram: a running count of the windows open at each word
        for i in range(n_words + 1):
            cover[i] = 0
        any_rep = False
        for i in range(m):
            if new_rep[i]:
                cover[i] += 1
                cover[i + n] -= 1
                any_rep = True
        if any_rep:
            run = np.int64(0)
            chars = np.int64(0)
            for i in range(n_words):
                run += cover[i]
                if run > 0:
                    chars += lens[i]
            dup[n] = chars / total
        rep = new_rep
        if top_count < 2:
            break


if numba is not None:
    _ngram_stats = numba.njit(cache=True, nogil=True)(_ngram_stats)


def ngram_stats(ids: np.ndarray, lens: np.ndarray, max_n: int) -> tuple[np.ndarray, np.ndarray]:
    """(top, dup): float64 arrays indexed by n (0..max_n; index 0 unused) for uint64 word ids and int64 lengths."""
    top = np.zeros(max_n + 1, np.float64)
    dup = np.zeros(max_n + 1, np.float64)
    _ngram_stats(np.ascontiguousarray(ids, np.uint64), np.ascontiguousarray(lens, np.int64), int(max_n), top, dup)
    return top, dup
