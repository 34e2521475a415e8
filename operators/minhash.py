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

import re
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


# after NFD, combining accents are neither word characters nor space: one pass removes them with
# the punctuation
_NOT_WORD = re.compile(r"[^\w\s]|_")
_ASCII_PUNCT = str.maketrans("", "", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def normalize_text(text: str) -> str:
    """NFD, accents stripped, lower-case, punctuation removed, whitespace collapsed to single spaces."""
    if text.isascii():
        return " ".join(text.lower().translate(_ASCII_PUNCT).split())
    return " ".join(_NOT_WORD.sub("", unicodedata.normalize("NFD", text).lower()).split())


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
    words = normalized.split()
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


def shingle_hashes(normalized: str, ngram: int) -> np.ndarray:
    """All shingle hashes of one normalised text (uint32), equal to `shingle_hash32` per shingle."""
    data = normalized.encode()
    if not data:
        return np.empty(0, np.uint32)
    x = np.frombuffer(data, np.uint8)
    spaces = np.flatnonzero(x == 32)
    n_words = len(spaces) + 1
    if n_words < ngram:
        return np.array([shingle_hash32(data)], np.uint32)
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


def signatures(texts: list[str], cfg: MinHashConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(signatures uint32 (len(texts), num_perm), has_shingles bool (len(texts),)).

    Documents without a single word get an all-0xFFFFFFFF signature and `has_shingles=False`:
    callers must skip them, so two empty documents never look identical.
    """
    cfg = cfg or MinHashConfig()
    a, b = permutations(cfg.num_perm, cfg.seed)
    a_col, b_col = a[:, None], b[:, None]
    out = np.full((len(texts), cfg.num_perm), 0xFFFFFFFF, np.uint32)
    has = np.zeros(len(texts), bool)
    for k, text in enumerate(texts):
        hv = shingle_hashes(normalize_text(text), cfg.ngram)
        if not len(hv):
            continue
        has[k] = True
        # (num_perm, shingles): the minimum runs along contiguous rows (8x faster than axis 0)
        with np.errstate(over="ignore"):
            phv = np.multiply(a_col, _fmix32_array(hv)[None, :])  # uint32 wraps: mod 2^32
            phv += b_col
        out[k] = phv.min(axis=1)
    return out, has


def minhash_signature(text: str, cfg: MinHashConfig | None = None) -> np.ndarray | None:
    """Signature of one document, or None when it has no words."""
    sig, has = signatures([text], cfg)
    return sig[0] if has[0] else None
