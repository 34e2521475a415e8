"""Gopher quality and repetition rules (Rae et al. 2021, "Scaling Language Models: Methods,
Analysis & Insights from Training Gopher", appendix A.1.1-A.1.2), with the paper's thresholds.

`gopher_reject_reason(text, cfg)` returns None (keep) or the first rule broken, in the paper's
pipeline order: quality filters (A.1.1), then repetition removal (A.1.2). `gopher_quality_ok(text)`
applies only the four core quality rules of the CS336 assignment (word count, mean word length,
ellipsis lines, alphabetic words).
"""

from __future__ import annotations

import re
from itertools import filterfalse
from dataclasses import dataclass, field

import numpy as np

from operators import _gopher_kernel

STAGE = "gopher"

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "‣", "⁃", "◦", "∙", "·", "-", "*", "–", "—", "●", "▪", "►")
ELLIPSES = ("...", "…")

_LETTER = re.compile(r"[^\W\d_]")
_EDGE_PUNCT = ".,;:!?\"'()[]{}«»“”‘’"


def _count_words_with_letter(words: list[str]) -> int:
    """Words containing an alphabetic character; str.isalpha (C) settles most, regex the rest."""
    search = _LETTER.search
    return len(words) - sum(1 for w in filterfalse(str.isalpha, words) if search(w) is None)


def _stop_words_present(words: list[str]) -> int:
    found = STOP_WORDS.intersection(map(str.lower, words))
    if len(found) < len(STOP_WORDS):  # only then look behind punctuation ("the," "(and")
        found |= STOP_WORDS.intersection(w.lower().strip(_EDGE_PUNCT) for w in words)
    return len(found)


@dataclass(frozen=True)
class GopherConfig:
    enabled: bool = True
    """Run the Gopher rules as a filter stage."""
    min_words: int = 50
    """Fewer whitespace-separated words: `too_few_words`."""
    max_words: int = 100_000
    """More words: `too_many_words`."""
    min_mean_word_len: float = 3.0
    """Mean word length (characters) below: `mean_word_len_too_short`."""
    max_mean_word_len: float = 10.0
    """Mean word length above: `mean_word_len_too_long`."""
    max_symbol_word_ratio: float = 0.1
    """Ratio of '#' plus ellipsis occurrences to words above: `too_many_symbols`."""
    max_bullet_lines_frac: float = 0.9
    """Share of lines starting with a bullet above: `too_many_bullet_lines`."""
    max_ellipsis_lines_frac: float = 0.3
    """Share of lines ending with an ellipsis above: `too_many_ellipsis_lines`."""
    min_alpha_words_frac: float = 0.8
    """Share of words containing an alphabetic character below: `too_few_alpha_words`."""
    min_stop_words: int = 2
    """Fewer distinct stop words (the, be, to, of, and, that, have, with): `too_few_stop_words`."""
    max_dup_line_frac: float = 0.30
    """Share of lines that duplicate an earlier line above: `dup_line_frac`."""
    max_dup_para_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    """Share of characters in duplicated lines above: `dup_line_char_frac`."""
    max_dup_para_char_frac: float = 0.20
    max_top_ngram_char_frac: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    """n -> maximum share of characters covered by the most frequent n-gram: `top_<n>gram_char_frac`."""
    max_dup_ngram_char_frac: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    """n -> maximum share of characters in duplicated n-grams: `dup_<n>gram_char_frac`."""


def _dup_fracs(segments: list[str]) -> tuple[float, float]:
    """(share of segments that repeat an earlier one, share of characters in those repeats)."""
    if not segments:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_count = dup_chars = 0
    for seg in segments:
        if seg in seen:
            dup_count += 1
            dup_chars += len(seg)
        else:
            seen.add(seg)
    total_chars = sum(len(s) for s in segments)
    return dup_count / len(segments), dup_chars / total_chars if total_chars else 0.0


class _Words:
    """Word ids and lengths as arrays, with rolling 64-bit n-gram hashes (collisions ~2^-64).

    Repeated n-grams are found incrementally: an n-gram can only repeat where both of its
    (n-1)-gram halves repeat, so after one full sort for n = 1 every larger n sorts only those
    candidate positions (a small share of the page), and each repeated n-gram's every occurrence
    is among them.
    """

    _MULT = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, words: list[str]):
        # Python's string hash (cached on the str, consistent within a process) as the word id
        self.ids = np.fromiter(map(hash, words), np.int64, len(words)).view(np.uint64)
        self.lens = np.fromiter(map(len, words), np.int64, len(words))
        self.total_chars = int(self.lens.sum())
        self._hashes: dict[int, np.ndarray] = {1: self.ids + np.uint64(1)}
        self._dups: dict[int, tuple[np.ndarray, int, int]] = {}

    def ngram_hashes(self, n: int) -> np.ndarray:
        """hash of words[i:i+n] for every i (len(words) - n + 1 values)."""
        if n not in self._hashes:
            prev = self.ngram_hashes(n - 1)
            with np.errstate(over="ignore"):  # wrapping multiplication is the point
                self._hashes[n] = prev[:-1] * self._MULT + (self.ids[n - 1 :] + np.uint64(1))
        return self._hashes[n]

    def repeats(self, n: int) -> tuple[np.ndarray, int, int]:
        """(mask of positions whose n-gram occurs more than once, top count, first position of the
        most frequent n-gram; ties go to the one that occurs first)."""
        if n not in self._dups:
            h = self.ngram_hashes(n)
            if n == 1:
                positions = np.arange(len(h))
            else:
                prev = self.repeats(n - 1)[0]
                positions = np.flatnonzero(prev[:-1] & prev[1:])
            mask = np.zeros(len(h), bool)
            top_count, top_first = 0, -1
            if len(positions):
                _, first, inverse, counts = np.unique(h[positions], return_index=True, return_inverse=True, return_counts=True)
                repeated = counts[inverse] > 1
                mask[positions[repeated]] = True
                top_count = int(counts.max())
                if top_count >= 2:
                    top_first = int(positions[first[counts == top_count].min()])
            self._dups[n] = (mask, top_count, top_first)
        return self._dups[n]


def _as_words(words: list[str] | _Words) -> _Words:
    return words if isinstance(words, _Words) else _Words(words)


def top_ngram_char_frac(words: list[str] | _Words, n: int) -> float:
    """Characters of the most frequent n-gram (times its count) over all word characters."""
    w = _as_words(words)
    if len(w.ids) < n or not w.total_chars:
        return 0.0
    _, count, start = w.repeats(n)
    if count < 2:
        return 0.0
    return int(w.lens[start : start + n].sum()) * count / w.total_chars


def dup_ngram_char_frac(words: list[str] | _Words, n: int) -> float:
    """Share of word characters covered by n-grams that occur more than once (each word counted
    once even when several duplicated n-grams overlap it)."""
    w = _as_words(words)
    if len(w.ids) < n or not w.total_chars:
        return 0.0
    dup_start = w.repeats(n)[0]
    if not dup_start.any():
        return 0.0
    covered = np.convolve(dup_start.astype(np.int32), np.ones(n, np.int32))[: len(w.ids)] > 0
    return int(w.lens[covered].sum()) / w.total_chars


def repetition_reject_reason(text: str, words: list[str], cfg: GopherConfig) -> str | None:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    line_frac, line_char_frac = _dup_fracs(lines)
    para_frac, para_char_frac = _dup_fracs(paragraphs)
    if para_frac > cfg.max_dup_para_frac:
        return "dup_para_frac"
    if para_char_frac > cfg.max_dup_para_char_frac:
        return "dup_para_char_frac"
    if line_frac > cfg.max_dup_line_frac:
        return "dup_line_frac"
    if line_char_frac > cfg.max_dup_line_char_frac:
        return "dup_line_char_frac"
    arrays = _Words(words)
    top_frac, dup_frac = top_ngram_char_frac, dup_ngram_char_frac
    max_n = max((*cfg.max_top_ngram_char_frac, *cfg.max_dup_ngram_char_frac), default=0)
    if max_n and _gopher_kernel.available():  # every n at once, compiled; the same numbers as the numpy path
        tops, dups = _gopher_kernel.ngram_stats(arrays.ids, arrays.lens, max_n)
        top_frac, dup_frac = (lambda _, n: float(tops[n])), (lambda _, n: float(dups[n]))
    for n, limit in sorted(cfg.max_top_ngram_char_frac.items()):
        frac = top_frac(arrays, n)
        if frac > limit:
            return f"top_{n}gram_char_frac"
        if frac == 0.0:
            break  # no n-gram repeats, so no longer one does
    dup_limits = sorted(cfg.max_dup_ngram_char_frac.items())
    for i, (n, limit) in enumerate(dup_limits):
        frac = dup_frac(arrays, n)
        if frac > limit:
            return f"dup_{n}gram_char_frac"
        # words covered by repeated (n+1)-grams are a subset of those covered by repeated n-grams,
        # so once under every later limit, no later rule can fire
        if all(frac <= later for _, later in dup_limits[i + 1 :]):
            break
    return None


def quality_reject_reason(text: str, words: list[str], cfg: GopherConfig) -> str | None:
    n = len(words)
    if n < cfg.min_words:
        return "too_few_words"
    if n > cfg.max_words:
        return "too_many_words"
    mean_len = len("".join(words)) / n
    if mean_len < cfg.min_mean_word_len:
        return "mean_word_len_too_short"
    if mean_len > cfg.max_mean_word_len:
        return "mean_word_len_too_long"
    symbols = text.count("#") + sum(text.count(e) for e in ELLIPSES)
    if symbols / n > cfg.max_symbol_word_ratio:
        return "too_many_symbols"
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if lines:
        if sum(line.startswith(BULLETS) for line in lines) / len(lines) > cfg.max_bullet_lines_frac:
            return "too_many_bullet_lines"
        if sum(line.endswith(ELLIPSES) for line in lines) / len(lines) > cfg.max_ellipsis_lines_frac:
            return "too_many_ellipsis_lines"
    if _count_words_with_letter(words) / n < cfg.min_alpha_words_frac:
        return "too_few_alpha_words"
    if _stop_words_present(words) < cfg.min_stop_words:
        return "too_few_stop_words"
    return None


def gopher_reject_reason(text: str, cfg: GopherConfig | None = None) -> str | None:
    """None keeps `text`; otherwise the first Gopher rule it breaks (stable snake_case name)."""
    cfg = cfg or GopherConfig()
    words = text.split()
    if not words:
        return "too_few_words"
    return quality_reject_reason(text, words, cfg) or repetition_reject_reason(text, words, cfg)


_CORE = GopherConfig()


def gopher_quality_ok(text: str) -> bool:
    """The four core Gopher quality rules (CS336): 50-100,000 words, mean word length 3-10, at most
    30 % of lines ending with '...', at least 80 % of words with an alphabetic character."""
    words = text.split()
    n = len(words)
    if not _CORE.min_words <= n <= _CORE.max_words:
        return False
    mean_len = sum(len(w) for w in words) / n
    if not _CORE.min_mean_word_len <= mean_len <= _CORE.max_mean_word_len:
        return False
    lines = text.split("\n")
    if sum(line.rstrip().endswith("...") for line in lines) / len(lines) > _CORE.max_ellipsis_lines_frac:
        return False
    return _count_words_with_letter(words) / n >= _CORE.min_alpha_words_frac


def gopher_evidence(text: str, reason: str, cfg: GopherConfig | None = None) -> dict[str, float]:
    """The measured value behind a drop `reason` of `gopher_reject_reason` and the limit it broke.

    `{"value": v, "limit": t}`: the answer to "why was this removed?" with numbers. Computed only for
    removed documents (the rules themselves stop at the first failure and keep nothing).
    """
    cfg = cfg or GopherConfig()
    words = text.split()
    n = len(words)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    ngram = re.fullmatch(r"(top|dup)_(\d+)gram_char_frac", reason)
    if reason in ("too_few_words", "too_many_words"):
        value: float = n
        limit: float = cfg.min_words if reason == "too_few_words" else cfg.max_words
    elif reason.startswith("mean_word_len"):
        value = len("".join(words)) / n if n else 0.0
        limit = cfg.min_mean_word_len if reason.endswith("short") else cfg.max_mean_word_len
    elif reason == "too_many_symbols":
        value = (text.count("#") + sum(text.count(e) for e in ELLIPSES)) / max(n, 1)
        limit = cfg.max_symbol_word_ratio
    elif reason == "too_many_bullet_lines":
        value, limit = sum(line.startswith(BULLETS) for line in lines) / max(len(lines), 1), cfg.max_bullet_lines_frac
    elif reason == "too_many_ellipsis_lines":
        value, limit = sum(line.endswith(ELLIPSES) for line in lines) / max(len(lines), 1), cfg.max_ellipsis_lines_frac
    elif reason == "too_few_alpha_words":
        value, limit = _count_words_with_letter(words) / max(n, 1), cfg.min_alpha_words_frac
    elif reason == "too_few_stop_words":
        value, limit = _stop_words_present(words), cfg.min_stop_words
    elif reason in ("dup_line_frac", "dup_line_char_frac"):
        fracs = _dup_fracs(lines)
        value = fracs[0] if reason == "dup_line_frac" else fracs[1]
        limit = cfg.max_dup_line_frac if reason == "dup_line_frac" else cfg.max_dup_line_char_frac
    elif reason in ("dup_para_frac", "dup_para_char_frac"):
        fracs = _dup_fracs([p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()])
        value = fracs[0] if reason == "dup_para_frac" else fracs[1]
        limit = cfg.max_dup_para_frac if reason == "dup_para_frac" else cfg.max_dup_para_char_frac
    elif ngram:
        k = int(ngram.group(2))
        if ngram.group(1) == "top":
            value, limit = top_ngram_char_frac(words, k), cfg.max_top_ngram_char_frac[k]
        else:
            value, limit = dup_ngram_char_frac(words, k), cfg.max_dup_ngram_char_frac[k]
    else:
        raise ValueError(f"not a Gopher drop reason: {reason!r}")
    return {"value": round(float(value), 6), "limit": float(limit)}
