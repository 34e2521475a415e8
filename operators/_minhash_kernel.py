"""Compiled (numba) MinHash kernel: byte rules, word and n-gram hashes and the permutations in one pass.

It computes exactly what the numpy path of `operators.minhash` computes (the tests hold them equal and equal
to datasketch): for the prepared UTF-8 bytes of a batch (documents separated by NUL),

- each byte's action from the byte table; a lead byte marked LOOKUP is resolved against the sorted table of
  2/3-byte sequences (a hit deletes the continuation bytes too; a miss keeps the byte);
- a word is a maximal run of kept bytes between spaces; deleted bytes join their neighbours;
  word hash h = h * WORD_BASE + byte + 1 (mod 2^64);
- a shingle hash is the Horner combination of n consecutive word hashes with NGRAM_BASE, a document of
  1..n-1 words gets one shingle of all its words; then fmix64, low 32 bits, fmix32;
- datasketch's affine32 permutations: min over shingles of (a * x + b) mod 2^32.

Compiled on first use and cached on disk (numba `cache=True`); `available()` is False where numba is missing,
and callers fall back to numpy.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a declared dependency; this keeps sift importable without it
    numba = None

KEEP, SPACE, DELETE, LOOKUP, DOC_END = 0, 1, 2, 3, 4


def available() -> bool:
    return numba is not None


def _kernel(data, byte_action, seq_keys, seq_actions, a, b, ngram, out, has, sh_out, sh_doc, sh_n):  # pragma: no cover
    # with a non-empty `sh_out`, each shingle's 32-bit hash (and its document in `sh_doc`) is stored instead of
    # being permuted into `out`; sh_n[0] counts them
    num_perm = a.shape[0]
    n = data.shape[0]
    n_keys = seq_keys.shape[0]
    word_base = np.uint64(0x100000001B3)
    ngram_base = np.uint64(0x9E3779B97F4A7C15)
    m32 = np.uint64(0xFFFFFFFF)
    a64 = a.astype(np.uint64)
    b64 = b.astype(np.uint64)
    ring = np.zeros(ngram, np.uint64)  # the last `ngram` word hashes; ring[pos] is the oldest once full
    pos = 0
    top = np.uint64(1)  # NGRAM_BASE^(ngram-1): the oldest word's weight in the window's Horner sum
    for _ in range(ngram - 1):
        top = top * ngram_base
    g = np.uint64(0)  # Horner sum of the window (rolled: drop the oldest word, shift, add the new one)
    doc = 0
    words = 0  # words finished in this document
    h = np.uint64(0)
    in_word = False
    table = byte_action.copy()
    table[0] = DOC_END
    i = 0
    while i <= n:
        if i == n:
            c = np.uint64(0)
            act = DOC_END
        else:
            c = np.uint64(data[i])
            act = table[c]
            if act == KEEP:  # the hot path: a byte of a word
                h = h * word_base + c + np.uint64(1)
                in_word = True
                i += 1
                continue
        step = 1
        if act == LOOKUP:
            b1 = np.uint64(data[i + 1]) if i + 1 < n else np.uint64(0)
            if c >= 0xE0:
                b2 = np.uint64(data[i + 2]) if i + 2 < n else np.uint64(0)
                key = np.int64((c << np.uint64(16)) | (b1 << np.uint64(8)) | b2)
                length = 3
            else:
                key = np.int64((c << np.uint64(8)) | b1)
                length = 2
            lo, hi = 0, n_keys
            while lo < hi:  # binary search of the sorted sequence keys
                mid = (lo + hi) // 2
                if seq_keys[mid] < key:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < n_keys and seq_keys[lo] == key:
                act = seq_actions[lo]
                step = length
            else:
                act = KEEP
        if act == KEEP:
            h = h * word_base + c + np.uint64(1)
            in_word = True
        elif act == SPACE or act == DOC_END:
            if in_word:  # close the word; emit the n-gram ending with it
                if words >= ngram:
                    g = g - ring[pos] * top
                g = g * ngram_base + h
                ring[pos] = h
                pos += 1
                if pos == ngram:
                    pos = 0
                words += 1
                h = np.uint64(0)
                in_word = False
                if words >= ngram:
                    _emit(g, a64, b64, num_perm, m32, out, doc, sh_out, sh_doc, sh_n)
                    has[doc] = True
            if act == DOC_END:  # end of document: a short document is one shingle of all its words
                if 0 < words < ngram:
                    _emit(g, a64, b64, num_perm, m32, out, doc, sh_out, sh_doc, sh_n)
                    has[doc] = True
                doc += 1
                words = 0
                pos = 0
                g = np.uint64(0)
        # DELETE: nothing (the word, if any, continues across the deleted bytes)
        i += step


def _emit(g, a64, b64, num_perm, m32, out, doc, sh_out, sh_doc, sh_n):  # pragma: no cover - compiled
    # fmix64, low 32 bits: the shingle's hash (shingle_hash32)
    g ^= g >> np.uint64(33)
    g *= np.uint64(0xFF51AFD7ED558CCD)
    g ^= g >> np.uint64(33)
    g *= np.uint64(0xC4CEB9FE1A85EC53)
    g ^= g >> np.uint64(33)
    x = g & m32
    if sh_out.shape[0]:
        k = sh_n[0]
        sh_out[k] = np.uint32(x)
        sh_doc[k] = doc
        sh_n[0] = k + 1
        return
    # fmix32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(2246822507)) & m32
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(3266489909)) & m32
    x ^= x >> np.uint64(16)
    row = out[doc]
    for p in range(num_perm):
        v = np.uint32((a64[p] * x + b64[p]) & m32)
        if v < row[p]:
            row[p] = v


def _unique_per_doc(values, docs, out, counts):  # pragma: no cover - compiled
    # documents are contiguous runs of `docs`: each run sorted on its own (short sorts of 32-bit keys, not one sort
    # of the batch's 64-bit (document, hash) keys), its distinct values appended to `out`, their number to `counts`
    n = values.shape[0]
    w = 0
    i = 0
    while i < n:
        d = docs[i]
        j = i + 1
        while j < n and docs[j] == d:
            j += 1
        seg = np.sort(values[i:j])
        prev = seg[0]
        out[w] = prev
        w += 1
        c = 1
        for k in range(1, seg.shape[0]):
            v = seg[k]
            if v != prev:
                out[w] = v
                w += 1
                c += 1
                prev = v
        counts[d] = c
        i = j
    return w


if numba is not None:
    _emit = numba.njit(cache=True, nogil=True, inline="always")(_emit)
    _kernel = numba.njit(cache=True, nogil=True)(_kernel)
    _unique_per_doc = numba.njit(cache=True, nogil=True)(_unique_per_doc)


def unique_per_doc(values: np.ndarray, docs: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(each document's distinct values, sorted, concatenated; their count per document) for `values` grouped by
    document (`docs` non-decreasing, as `shingle_batch` returns them); None when `docs` is not grouped."""
    if len(docs) > 1 and bool((docs[1:] < docs[:-1]).any()):
        return None
    out = np.empty(len(values), np.uint32)
    counts = np.zeros(n_docs, np.int64)
    w = _unique_per_doc(values, docs, out, counts)
    return out[:w], counts


def minhash_batch(data: bytes, n_docs: int, byte_action: np.ndarray, seq_keys: np.ndarray, seq_actions: np.ndarray,
                  a: np.ndarray, b: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Signatures (n_docs, num_perm) uint32 and has-shingles flags of NUL-separated prepared documents."""
    out = np.full((n_docs, len(a)), 0xFFFFFFFF, np.uint32)
    has = np.zeros(n_docs, np.bool_)
    none = np.zeros(0, np.uint32)
    _kernel(np.frombuffer(data, np.uint8), byte_action, seq_keys.astype(np.int64), seq_actions.astype(np.int8),
            a, b, int(ngram), out, has, none, np.zeros(0, np.int64), np.zeros(1, np.int64))
    return out, has


def shingle_batch(data: bytes, n_docs: int, byte_action: np.ndarray, seq_keys: np.ndarray, seq_actions: np.ndarray,
                  ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(shingle hashes uint32, document index int64) of NUL-separated prepared documents, in document order: the
    same pass as `minhash_batch`, keeping each shingle's hash instead of permuting it."""
    x = np.frombuffer(data, np.uint8)
    cap = len(x) // 2 + n_docs + 2  # a shingle ends a word of >= 1 byte plus a separator, or ends a short document
    sh_out, sh_doc, sh_n = np.empty(cap, np.uint32), np.empty(cap, np.int64), np.zeros(1, np.int64)
    empty = np.zeros(0, np.uint32)
    _kernel(x, byte_action, seq_keys.astype(np.int64), seq_actions.astype(np.int8), empty, empty, int(ngram),
            np.zeros((n_docs, 0), np.uint32), np.zeros(n_docs, np.bool_), sh_out, sh_doc, sh_n)
    return sh_out[: sh_n[0]], sh_doc[: sh_n[0]]
