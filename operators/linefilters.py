"""Line-level heuristics: the C4 filters (Raffel et al. 2020, sec. 2.2) and FineWeb's quality
filter (Penedo et al. 2024, sec. 3.4). Both optional stages of the curate DAG.

`c4_filter(text, cfg) -> (text, reason)`: C4 rewrites a page (keeps only sentence-like lines) and
may reject it; the returned text is '' whenever `reason` is set.
`fineweb_reject_reason(text, cfg) -> reason | None`: page-level ratios over lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TERMINAL_PUNCT = (".", "!", "?", '"', "'", "”", "’", "…", "。", "！", "？")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?。！？]+[\"'”’)]*(?:\s|$)")


@dataclass(frozen=True)
class C4Config:
    enabled: bool = False
    """Run the C4 line filters (off by default: they remove lists, headings and tables)."""
    min_words_per_line: int = 3
    """Lines with fewer words are removed."""
    min_sentences: int = 5
    """Pages with fewer sentences left are dropped (`too_few_sentences`)."""
    max_word_length: int = 1000
    """Lines holding a longer 'word' are removed."""
    remove_citations: bool = True
    """Strip Wikipedia-style [1], [edit], [citation needed] markers."""
    filter_no_terminal_punct: bool = True
    """Remove lines that do not end in terminal punctuation."""
    filter_javascript: bool = True
    """Remove lines mentioning 'javascript'."""
    filter_lorem_ipsum: bool = True
    """Drop pages containing 'lorem ipsum' (`lorem_ipsum`)."""
    filter_curly_bracket: bool = True
    """Drop pages containing '{' (code, templates) (`curly_bracket`)."""
    filter_policy: bool = True
    """Remove lines about cookies, privacy and terms of use."""


def c4_filter(text: str, cfg: C4Config | None = None) -> tuple[str, str | None]:
    cfg = cfg or C4Config()
    lower = text.lower()
    if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
        return "", "lorem_ipsum"
    if cfg.filter_curly_bracket and "{" in text:
        return "", "curly_bracket"
    kept = []
    for raw in text.split("\n"):
        line = _CITATION.sub("", raw).strip() if cfg.remove_citations else raw.strip()
        if not line:
            continue
        words = line.split()
        if len(words) < cfg.min_words_per_line:
            continue
        if max(map(len, words)) > cfg.max_word_length:
            continue
        if cfg.filter_no_terminal_punct and not line.endswith(TERMINAL_PUNCT):
            continue
        low = line.lower()
        if cfg.filter_javascript and "javascript" in low:
            continue
        if cfg.filter_policy and any(p in low for p in _POLICY):
            continue
        kept.append(line)
    new_text = "\n".join(kept)
    if len(_SENTENCE_END.findall(new_text)) < cfg.min_sentences:
        return "", "too_few_sentences"
    return new_text, None


@dataclass(frozen=True)
class FineWebConfig:
    enabled: bool = False
    """Run FineWeb's quality filter (off by default)."""
    min_line_punct_frac: float = 0.12
    """Pages whose share of lines ending in punctuation is below are dropped (`line_punct_ratio`)."""
    exclude_zero_punct: bool = False
    """Do not drop pages with no punctuation-ended line at all (FineWeb's `line_punct_exclude_zero`)."""
    max_short_line_frac: float = 0.67
    """Pages with a larger share of lines under `short_line_chars` are dropped (`short_line_ratio`)."""
    short_line_chars: int = 30
    max_dup_line_char_frac: float = 0.01
    """Pages with a larger share of characters in duplicated lines are dropped (`char_dup_ratio`)."""
    max_newline_word_ratio: float = 0.3
    """Pages with more line breaks per word are dropped (`list_ratio`)."""


def fineweb_reject_reason(text: str, cfg: FineWebConfig | None = None) -> str | None:
    cfg = cfg or FineWebConfig()
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        return "empty"
    punct = sum(line.endswith(TERMINAL_PUNCT) for line in lines) / len(lines)
    if punct < cfg.min_line_punct_frac and not (cfg.exclude_zero_punct and punct == 0):
        return "line_punct_ratio"
    if sum(len(line) < cfg.short_line_chars for line in lines) / len(lines) > cfg.max_short_line_frac:
        return "short_line_ratio"
    seen: set[str] = set()
    dup_chars = 0
    for line in lines:
        if line in seen:
            dup_chars += len(line)
        seen.add(line)
    non_space = len(text.replace(" ", "").replace("\n", ""))
    if non_space and dup_chars / non_space > cfg.max_dup_line_char_frac:
        return "char_dup_ratio"
    words = text.split()
    if words and text.count("\n") / len(words) > cfg.max_newline_word_ratio:
        return "list_ratio"
    return None


def fineweb_evidence(text: str, reason: str, cfg: FineWebConfig | None = None) -> dict[str, float]:
    """`{"value": v, "limit": t}` behind a drop `reason` of `fineweb_reject_reason` (for removed pages)."""
    cfg = cfg or FineWebConfig()
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if reason == "empty":
        return {"value": 0.0, "limit": 1.0}
    if reason == "line_punct_ratio":
        value, limit = sum(line.endswith(TERMINAL_PUNCT) for line in lines) / len(lines), cfg.min_line_punct_frac
    elif reason == "short_line_ratio":
        value, limit = sum(len(line) < cfg.short_line_chars for line in lines) / len(lines), cfg.max_short_line_frac
    elif reason == "char_dup_ratio":
        seen: set[str] = set()
        dup_chars = 0
        for line in lines:
            dup_chars += len(line) if line in seen else 0
            seen.add(line)
        value = dup_chars / max(len(text.replace(" ", "").replace("\n", "")), 1)
        limit = cfg.max_dup_line_char_frac
    elif reason == "list_ratio":
        value, limit = text.count("\n") / max(len(text.split()), 1), cfg.max_newline_word_ratio
    else:
        raise ValueError(f"not a FineWeb drop reason: {reason!r}")
    return {"value": round(float(value), 6), "limit": float(limit)}
