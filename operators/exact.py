"""Exact duplicates: stable 64-bit hashes of normalised documents and of lines, and line removal.

Hashes are BLAKE2b (not Python's `hash`, which differs between processes), so every worker of a
Ray cluster computes the same key for the same text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container

import numpy as np

from operators.minhash import normalize_bytes


def _h64(data: bytes) -> int:
    # signed, so it fits Arrow's int64 columns
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def document_hash(text: str) -> int:
    """Hash of the normalised text (case, accents, punctuation and spacing ignored); texts with no
    words at all hash to 0 and must not be treated as duplicates of each other."""
    normalized = normalize_bytes(text)
    return _h64(normalized.tobytes()) if len(normalized) else 0


def line_hash(line: str) -> int:
    """Hash of one line exactly as written (surrounding whitespace ignored)."""
    return _h64(line.strip().encode("utf-8", "surrogatepass"))


def line_hashes(text: str) -> list[int]:
    """Hashes of the non-blank lines of `text`, in order (a line repeated in a text counts twice)."""
    return [line_hash(line) for line in text.split("\n") if line.strip()]


class SortedHashes(Container[int]):
    """A set of int64 hashes held as one sorted numpy array: 8 bytes a hash (a Python set of ints takes ~10 times
    that), and shared zero-copy by every worker of a node when it comes from Ray's object store (pass such an
    already sorted, unique array with `sorted_unique=True`, so that it is not copied)."""

    def __init__(self, hashes: np.ndarray, *, sorted_unique: bool = False):
        self.hashes = hashes if sorted_unique else np.unique(np.asarray(hashes, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.hashes)

    def contains_many(self, hs: np.ndarray) -> np.ndarray:
        if not len(self.hashes):
            return np.zeros(len(hs), bool)
        i = np.searchsorted(self.hashes, hs)
        i[i == len(self.hashes)] = 0
        return self.hashes[i] == hs

    def __contains__(self, h: object) -> bool:
        return bool(self.contains_many(np.array([h], np.int64))[0])


def remove_lines(text: str, duplicated: Container[int]) -> tuple[str, int]:
    """`text` without its lines whose hash is in `duplicated`; (new text, lines removed)."""
    lines = text.split("\n")
    idx = [i for i, line in enumerate(lines) if line.strip()]
    hashes = [line_hash(lines[i]) for i in idx]
    if isinstance(duplicated, SortedHashes):  # one vectorised lookup for the whole text
        hit = duplicated.contains_many(np.array(hashes, np.int64))
    else:
        hit = [h in duplicated for h in hashes]
    drop = {i for i, h in zip(idx, hit) if h}
    return "\n".join(line for i, line in enumerate(lines) if i not in drop), len(drop)
