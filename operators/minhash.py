"""MinHash signatures, vectorised over a batch of documents, equal to datasketch's.

Pipeline per document: normalise (NFD, strip accents, lower-case, drop punctuation, collapse
whitespace) -> word n-gram shingles -> 32-bit shingle hashes -> datasketch's `affine32` scheme
(MurmurHash3 fmix32, then `a * h + b mod 2^32` per permutation, minimum over shingles).

The shingle hash is defined on the shingle's bytes (`shingle_hash32`, the scalar reference), so
`datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash32)` fed the same shingles gives the same
signature; the test suite checks it. The batch path computes the identical hash without a Python
loop over shingles: a polynomial hash of every word at once from one prefix sum over the batch's
bytes (multiplying by powers of the inverse base, which exists mod 2^64 because the base is odd),
then a Horner combination of n consecutive word hashes.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

STAGE = "minhash"
MASK64 = (1 << 64) - 1
WORD_BASE = 0x100000001B3  # odd: invertible mod 2^64
NGRAM_BASE = 0x9E3779B97F4A7C15
_WORD_BASE_INV = pow(WORD_BASE, -1, 1 << 64)


@dataclass(frozen=True)
class MinHashConfig:
    num_perm: int = 128
    """Permutations (signature length)."""
    ngram: int = 5
    """Words per shingle."""
    seed: int = 1
    """Permutation seed (datasketch's default)."""


# Byte-level normalisation of the lower-cased NFD UTF-8 text, all in numpy:
#   ASCII letters and digits stay; ASCII whitespace becomes a space; other ASCII (punctuation, '_',
#   control) goes. Combining accents U+0300-U+036F go (that is "strip accents" after NFD).
#   C1 controls go; Unicode spaces (U+0085, U+00A0, U+1680, U+2000-U+200B, U+2028, U+2029, U+205F,
#   U+3000) become a space. Punctuation and symbols
#   go: Latin-1 U+00A1-U+00BF (but not ª ² ³ µ ¹ º ¼ ½ ¾), General Punctuation U+200C-U+206F, CJK
#   punctuation U+3001-U+303F, full-width punctuation (U+FF01-U+FF0F, U+FF1A-U+FF20, U+FF3B-U+FF40,
#   U+FF5B-U+FF65). Runs of spaces collapse to one; no leading or trailing space.
KEEP, SPACE, DELETE = 0, 1, 2
_BYTE_ACTION = np.full(256, KEEP, np.int8)
_BYTE_ACTION[:128] = DELETE
for _c in b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    _BYTE_ACTION[_c] = KEEP
for _c in b" \t\n\r\x0b\x0c":
    _BYTE_ACTION[_c] = SPACE
LOOKUP = 3  # lead byte of a multi-byte sequence that some rule may touch
_BYTE_ACTION[[0xC2, 0xCC, 0xCD, 0xE1, 0xE2, 0xE3, 0xEF]] = LOOKUP
_LATIN1_KEEP = {0xAA, 0xB2, 0xB3, 0xB5, 0xB9, 0xBA, 0xBC, 0xBD, 0xBE}


def _code_point_actions() -> dict[int, int]:
    """Action for each non-ASCII code point that the rules touch."""
    table: dict[int, int] = {cp: DELETE for cp in range(0x80, 0xA0)}  # C1 controls
    table.update({0x85: SPACE, 0xA0: SPACE, 0x1680: SPACE, 0x2028: SPACE, 0x2029: SPACE, 0x205F: SPACE, 0x3000: SPACE})
    table.update({cp: DELETE for cp in range(0xA1, 0xC0) if cp not in _LATIN1_KEEP})
    table.update({cp: DELETE for cp in range(0x300, 0x370)})
    table.update({cp: SPACE for cp in range(0x2000, 0x200C)})
    table.update({cp: DELETE for cp in range(0x200C, 0x2070) if cp not in (0x2028, 0x2029, 0x205F)})
    table.update({cp: DELETE for cp in range(0x3001, 0x3040)})
    for lo, hi in ((0xFF01, 0xFF0F), (0xFF1A, 0xFF20), (0xFF3B, 0xFF40), (0xFF5B, 0xFF65)):
        table.update({cp: DELETE for cp in range(lo, hi + 1)})
    return table


# keyed by the code point's UTF-8 bytes packed big-endian into an int: 0xC2A0, 0xE28093 ...
_SEQ_KEYS, _SEQ_ACTIONS = map(np.array, zip(*sorted(
    (int.from_bytes(chr(cp).encode(), "big"), act) for cp, act in _code_point_actions().items()
)))


def _prepare(text: str) -> bytes:
    """Lower-case, NFD for non-ASCII, UTF-8 (lone surrogates replaced)."""
    text = text.lower()
    if not text.isascii():
        text = unicodedata.normalize("NFD", text)
    return text.encode("utf-8", "replace")


def _apply_rules(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(bytes after the rules, index of each surviving byte in `data`); spaces not yet collapsed."""
    x = np.frombuffer(data, np.uint8)
    action = _BYTE_ACTION[x]
    lead = np.flatnonzero(action == LOOKUP)
    if len(lead):
        padded = np.frombuffer(data + b"\0\0", np.uint8)
        b0, b1, b2 = padded[lead].astype(np.int64), padded[lead + 1].astype(np.int64), padded[lead + 2].astype(np.int64)
        three = b0 >= 0xE0
        key = np.where(three, (b0 << 16) | (b1 << 8) | b2, (b0 << 8) | b1)
        pos = np.minimum(np.searchsorted(_SEQ_KEYS, key), len(_SEQ_KEYS) - 1)
        hit = _SEQ_KEYS[pos] == key
        action[lead[~hit]] = KEEP
        lead, three, act = lead[hit], three[hit], _SEQ_ACTIONS[pos[hit]]
        action[lead] = act
        action[lead + 1] = DELETE
        action[lead[three] + 2] = DELETE
    kept = np.flatnonzero(action != DELETE)
    return np.where(action[kept] == SPACE, np.uint8(32), x[kept]), kept


def normalize_bytes(text: str) -> np.ndarray:
    """Normalised UTF-8 bytes (uint8 array) of `text`: see the rules above."""
    y, _ = _apply_rules(_prepare(text))
    if not len(y):
        return y
    is_space = y == 32
    keep = ~is_space
    keep[1:] |= ~is_space[:-1]  # a space survives only after a non-space
    y = y[keep]
    if len(y) and y[-1] == 32:
        y = y[:-1]
    return y


def normalize_text(text: str) -> str:
    """NFD, accents stripped, lower-case, punctuation removed, whitespace collapsed to single spaces."""
    return normalize_bytes(text).tobytes().decode("utf-8", "replace")


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK64
    return h ^ (h >> 33)


def shingle_hash32(shingle: bytes) -> int:
    """Reference 32-bit hash of one shingle (its words joined by single spaces)."""
    g = 0
    for word in shingle.split(b" "):
        h = 0
        for byte in word:
            h = (h * WORD_BASE + byte + 1) & MASK64
        g = (g * NGRAM_BASE + h) & MASK64
    return _fmix64(g) & 0xFFFFFFFF


def shingles(normalized: str, ngram: int) -> list[bytes]:
    """Word n-grams of normalised text (one shingle of all words when there are fewer than n)."""
    words = normalized.split(" ") if normalized else []
    if not words:
        return []
    if len(words) < ngram:
        return [" ".join(words).encode()]
    return [" ".join(words[i : i + ngram]).encode() for i in range(len(words) - ngram + 1)]


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a odd) for this seed."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


class _Powers:
    """Cached powers of the word base and of its inverse, mod 2^64, grown on demand."""

    def __init__(self) -> None:
        self.pw = np.ones(1, np.uint64)
        self.ipw = np.ones(1, np.uint64)

    @staticmethod
    def _steps(size: int, base: int) -> np.ndarray:
        steps = np.full(size, base, np.uint64)
        steps[0] = 1
        return steps

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pw) < n:
            size = max(n, 2 * len(self.pw))
            with np.errstate(over="ignore"):
                self.pw = np.cumprod(self._steps(size, WORD_BASE), dtype=np.uint64)
                self.ipw = np.cumprod(self._steps(size, _WORD_BASE_INV), dtype=np.uint64)
        return self.pw[:n], self.ipw[:n]


_POWERS = _Powers()


def _fmix64_array(h: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> np.uint64(33))


def _fmix32_array(h: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(2246822507)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(3266489909)
        return h ^ (h >> np.uint32(16))


def shingle_hashes(normalized: str | np.ndarray, ngram: int) -> np.ndarray:
    """All shingle hashes of one normalised text (uint32), equal to `shingle_hash32` per shingle."""
    x = np.frombuffer(normalized.encode(), np.uint8) if isinstance(normalized, str) else normalized
    if not len(x):
        return np.empty(0, np.uint32)
    spaces = np.flatnonzero(x == 32)
    n_words = len(spaces) + 1
    if n_words < ngram:
        return np.array([shingle_hash32(x.tobytes())], np.uint32)
    starts = np.concatenate([[0], spaces + 1])
    ends = np.concatenate([spaces, [len(x)]])  # exclusive
    pw, ipw = _POWERS.upto(len(x))
    with np.errstate(over="ignore"):
        prefix = np.cumsum((x.astype(np.uint64) + np.uint64(1)) * ipw, dtype=np.uint64)
        before = np.where(starts > 0, prefix[starts - 1], np.uint64(0))
        words = (prefix[ends - 1] - before) * pw[ends - 1]
        g = np.zeros(n_words - ngram + 1, np.uint64)
        for j in range(ngram):  # Horner: g = g * NGRAM_BASE + word_{i+j}
            g = g * np.uint64(NGRAM_BASE) + words[j : j + len(g)]
    return (_fmix64_array(g) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _batch_shingle_hashes(texts: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of many documents at once: (hashes uint32, document index of each), in
    document order. Equal to `shingle_hashes(normalize_bytes(t), ngram)` per document.

    The documents are joined with a space (words never span two of them), the byte rules, word
    hashes and n-gram Horner run once over the whole batch, and n-grams that would straddle two
    documents are dropped.
    """
    data = _prepare_batch(texts)
    bounds = np.flatnonzero(np.frombuffer(data, np.uint8) == 0)  # end of each document but the last
    y, kept = _apply_rules(data.replace(b"\0", b" ") + b" ")
    # words: maximal runs of non-space bytes
    non_space = y != 32
    edges = np.diff(np.concatenate([[False], non_space, [False]]).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return np.empty(0, np.uint32), np.empty(0, np.int64)
    word_doc = np.searchsorted(bounds, kept[starts], side="right")
    pw, ipw = _POWERS.upto(len(y))
    with np.errstate(over="ignore"):
        prefix = np.cumsum((y.astype(np.uint64) + np.uint64(1)) * ipw[: len(y)], dtype=np.uint64)
        before = np.where(starts > 0, prefix[starts - 1], np.uint64(0))
        words = (prefix[ends - 1] - before) * pw[ends - 1]
        count = len(words) - ngram + 1
        hashes, docs = [], []
        if count > 0:
            g = np.zeros(count, np.uint64)
            for j in range(ngram):  # Horner: g = g * NGRAM_BASE + word_{i+j}
                g = g * np.uint64(NGRAM_BASE) + words[j : j + count]
            inside = word_doc[:count] == word_doc[ngram - 1 :]
            hashes.append((_fmix64_array(g[inside]) & np.uint64(0xFFFFFFFF)).astype(np.uint32))
            docs.append(word_doc[:count][inside])
    # documents with 1..ngram-1 words: one shingle of all their words (rare: reference path)
    words_per_doc = np.bincount(word_doc, minlength=len(texts))
    for d in np.flatnonzero((words_per_doc > 0) & (words_per_doc < ngram)):
        hashes.append(np.array([shingle_hash32(normalize_bytes(texts[d]).tobytes())], np.uint32))
        docs.append(np.array([d]))
    hv, dv = np.concatenate(hashes), np.concatenate(docs)
    order = np.argsort(dv, kind="stable")
    return hv[order], dv[order]


def _use_kernel(backend: str) -> bool:
    """True for the compiled kernel: "numba", or "auto" where numba is installed; False for "numpy"."""
    from operators import _minhash_kernel as kernel

    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be auto, numba or numpy, not {backend!r}")
    return backend == "numba" or (backend == "auto" and kernel.available())


def shingle_sets(texts: list[str], ngram: int, batch_bytes: int = 1 << 20,
                 backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Every document's set of shingle hashes, sorted: (values uint32, offsets int64 of length len(texts) + 1), so
    document i's set is values[offsets[i]:offsets[i + 1]], equal to `np.unique(shingle_hashes(normalize_bytes(t),
    ngram))`. Batched like `signatures` (one pass of the byte rules and word hashes per ~`batch_bytes` of text),
    with the same compiled kernel when `backend` allows ("auto", "numba" or "numpy")."""
    from operators import _minhash_kernel as kernel

    compiled = _use_kernel(backend)
    values, counts = [], np.zeros(len(texts), np.int64)
    for start, stop in _batches(texts, batch_bytes):
        if compiled:
            hv, dv = kernel.shingle_batch(_prepare_batch(texts[start:stop]), stop - start, _BYTE_ACTION, _SEQ_KEYS,
                                          _SEQ_ACTIONS, ngram)
            grouped = kernel.unique_per_doc(hv, dv, stop - start)  # a sort per document, compiled
            if grouped is not None:
                values.append(grouped[0])
                counts[start:stop] = grouped[1]
                continue
        else:
            hv, dv = _batch_shingle_hashes(texts[start:stop], ngram)
        key = (dv.astype(np.uint64) << np.uint64(32)) | hv  # by document, then hash: one sort of 64-bit keys
        key.sort()
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        key = key[first]
        values.append((key & np.uint64(0xFFFFFFFF)).astype(np.uint32))
        counts[start:stop] = np.bincount((key >> np.uint64(32)).astype(np.int64), minlength=stop - start)
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return (np.concatenate(values) if values else np.zeros(0, np.uint32)), offsets


def _prepare_batch(texts: list[str]) -> bytes:
    """The batch's documents lower-cased, NFD (when not ASCII), UTF-8, joined by NUL.

    No document keeps a NUL of its own (the rules delete control bytes anyway)."""
    parts = []
    for t in texts:  # per document: most are Latin-1 or UCS-2 strings, a joined batch would be as wide as its widest
        if "\0" in t:
            t = t.replace("\0", "")
        t = t.lower()
        if not t.isascii():
            t = unicodedata.normalize("NFD", t)
        parts.append(t.encode("utf-8", "replace"))
    return b"\0".join(parts)


def _batches(texts: list[str], batch_bytes: int):
    start = 0
    while start < len(texts):  # batches of about `batch_bytes` of text
        stop, size = start, 0
        while stop < len(texts) and (stop == start or size + len(texts[stop]) <= batch_bytes):
            size += len(texts[stop])
            stop += 1
        yield start, stop
        start = stop


def signatures(
    texts: list[str], cfg: MinHashConfig | None = None, batch_bytes: int = 1 << 20, chunk_shingles: int = 16384,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """(signatures uint32 (len(texts), num_perm), has_shingles bool (len(texts),)).

    Documents without a single word get an all-0xFFFFFFFF signature and `has_shingles=False`:
    callers must skip them, so two empty documents never look identical.

    `backend`: "numba" (the compiled one-pass kernel of `operators._minhash_kernel`), "numpy", or "auto"
    (numba when installed). Both give identical signatures.
    """
    from operators import _minhash_kernel as kernel

    cfg = cfg or MinHashConfig()
    a, b = permutations(cfg.num_perm, cfg.seed)
    if _use_kernel(backend):
        out = np.empty((len(texts), cfg.num_perm), np.uint32)
        has = np.zeros(len(texts), bool)
        for start, stop in _batches(texts, batch_bytes):
            out[start:stop], has[start:stop] = kernel.minhash_batch(
                _prepare_batch(texts[start:stop]), stop - start, _BYTE_ACTION, _SEQ_KEYS, _SEQ_ACTIONS, a, b, cfg.ngram)
        return out, has
    a_col, b_col = a[:, None], b[:, None]
    out = np.full((len(texts), cfg.num_perm), 0xFFFFFFFF, np.uint32)
    has = np.zeros(len(texts), bool)
    for start, stop in _batches(texts, batch_bytes):
        hv, dv = _batch_shingle_hashes(texts[start:stop], cfg.ngram)
        mixed = _fmix32_array(hv)
        bounds = np.flatnonzero(np.diff(dv)) + 1
        seg_starts = np.concatenate([[0], bounds]) if len(dv) else np.empty(0, np.int64)
        seg_docs = dv[seg_starts]
        has[start + seg_docs] = True
        # permutations over chunks of whole documents: (num_perm, shingles) matrices, minimum per
        # document along contiguous rows
        i = 0
        while i < len(seg_starts):
            j = i + 1
            while j < len(seg_starts) and seg_starts[j] - seg_starts[i] < chunk_shingles:
                j += 1
            lo = seg_starts[i]
            hi = seg_starts[j] if j < len(seg_starts) else len(dv)
            with np.errstate(over="ignore"):
                phv = np.multiply(a_col, mixed[None, lo:hi])  # uint32 wraps: mod 2^32
                phv += b_col
            mins = np.minimum.reduceat(phv, seg_starts[i:j] - lo, axis=1)  # (num_perm, documents)
            out[start + seg_docs[i:j]] = mins.T
            i = j
    return out, has


def minhash_signature(text: str, cfg: MinHashConfig | None = None) -> np.ndarray | None:
    """Signature of one document, or None when it has no words."""
    sig, has = signatures([text], cfg)
    return sig[0] if has[0] else None
