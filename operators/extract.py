"""HTML bytes -> main-content plain text, with resiliparse.

Decoding: strict UTF-8 first (most of the web, and a valid UTF-8 byte string is almost never
another encoding), else the page's `<meta charset>`, else uchardet detection; the HTTP header's
charset is not trusted (it lies on real pages; see tests/fixtures and warc/edge-cases).

After resiliparse's main-content extraction come two measured corrections: a fallback to the
whole visible text when main-content kept almost nothing (listing and shop pages), and removal
of short interface-label lines. Defaults were chosen by `benchmarks/extract_quality.py` against
the gold annotations of real pages (see benchmarks/RESULTS.md), not by taste.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree

STAGE = "extract"


@dataclass(frozen=True)
class ExtractConfig:
    main_content: bool = True
    """Keep only the main content (resiliparse's heuristics); False keeps all visible text."""
    alt_texts: bool = False
    """Include image alt texts (mostly captions and icons: off scores better on the gold set)."""
    list_bullets: bool = False
    """Prefix list items with bullets."""
    comments: bool = False
    """Treat comment sections as main content."""
    post_meta: bool = False
    """Keep blog-post meta data (author, date lines) in the main content."""
    fallback_max_words: int = 50
    """If main-content extraction keeps fewer words than this *and* under `fallback_max_share` of the
    page's visible text, it has missed the content (listing, category and shop pages): use the whole
    visible text instead. 0 disables. Measured: F1 0.844 -> 0.863 on the gold set (RESULTS.md)."""
    fallback_max_share: float = 0.1
    drop_ui_lines: bool = True
    """Drop short lines that start like interface labels ('Share', 'Subscribe', 'Related', '©' ...)."""
    max_nesting_depth: int = 3000
    """Pages whose tag nesting (estimated from the bytes) is deeper are rejected as
    `too_deeply_nested`: main-content heuristics are quadratic in depth (a 100k-deep page takes
    minutes). The deepest of the 1,082 real benchmark pages estimates at 1,450."""
    max_text_chars: int = 2_000_000
    """Extracted text longer than this is cut at a line boundary (counted as `extract/truncated_text`)."""
    time_limit_s: float = 10.0
    """Per-page time limit. Extraction then runs in a child process (`operators.sandbox`) that is
    killed and restarted when a page runs past it (dropped as `timeout`); 0 extracts in-process with
    no limit. The slowest of the 1,082 real benchmark pages takes well under 0.1 s."""
    memory_limit_mb: int = 2048
    """Address-space cap of the extraction child process (pages that need more are dropped as
    `out_of_memory`); only with `time_limit_s` > 0."""


def decode_html(html: bytes) -> str:
    """Decode an HTML byte string to text (see module docstring for the order of evidence)."""
    try:
        text = html.decode("utf-8")
    except UnicodeDecodeError:
        encoding = detect_encoding(html, from_html_meta=True)
        return bytes_to_str(html, encoding, errors="replace")
    return text[1:] if text.startswith("\ufeff") else text


class Rejected(Exception):
    """The page cannot be extracted safely; `reason` becomes the drop counter."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# two-letter starts of void or usually-unclosed elements (br, img, meta, link, li, input, hr, p,
# td, th, option, ...) and of comments/doctype: they open no nesting level in the estimate.
# OPENS[c1 * 256 + c2] is 1 where '<c1c2' opens a level (c1 a letter, not one of those starts).
_FLAT_TAG_STARTS = [b"br", b"im", b"me", b"li", b"in", b"hr", b"wb", b"so", b"ar", b"ba", b"co", b"em",
                    b"pa", b"tr", b"p>", b"p ", b"!-", b"!d", b"td", b"th", b"op"]
_OPENS = np.zeros(256 * 256, np.int8)
for _c1 in range(256):
    if chr(_c1).isascii() and chr(_c1).isalpha():
        _OPENS[_c1 * 256 : _c1 * 256 + 256] = 1
for _start in _FLAT_TAG_STARTS:
    for _a in {_start[0], _start[0] ^ 0x20 if chr(_start[0]).isalpha() else _start[0]}:
        for _b in {_start[1], _start[1] ^ 0x20 if chr(_start[1]).isalpha() else _start[1]}:
            _OPENS[_a * 256 + _b] = 0
for _b in range(256):
    _OPENS[ord("/") * 256 + _b] = -1


def estimate_nesting_depth(html: bytes, stop_below: int = 0) -> int:
    """Estimate of the maximum tag nesting depth, vectorised over the bytes (~50 us per page).

    Returns early (with the tag count) when the page has no more than `stop_below` tags.
    """
    a = np.frombuffer(html, np.uint8)
    if len(a) < 3:
        return 0
    lt = np.flatnonzero(a[:-2] == 0x3C)  # '<'
    if len(lt) <= stop_below:
        return len(lt)
    step = _OPENS[a[lt + 1].astype(np.int32) * 256 + a[lt + 2]]
    return int(np.cumsum(step, dtype=np.int64).max(initial=0))


_TEXT_BYTES = bytes([9, 10, 13, *range(32, 256)])


def looks_binary(html: bytes, sample: int = 4096, max_share: float = 0.05) -> bool:
    """Bytes whose head is more than 5 % C0 control bytes are binary junk (an image or archive served
    as text/html), not text in any ASCII-compatible encoding."""
    head = html[:sample]
    return len(head.translate(None, _TEXT_BYTES)) > max_share * len(head)


_UI_LINE = re.compile(
    r"(?im)^[ \t]*(?:share|tweet|subscribe|sign up|sign in|log in|advertisement|related|read more|more from|"
    r"follow us|copyright|©|all rights reserved|cookie|privacy policy|terms of|click here|newsletter|"
    r"comments?\b|leave a (?:comment|reply)|previous|next|tags?:|categories|posted in|filed under)[^\n]*\n?"
)
UI_LINE_MAX_WORDS = 15


def _drop_if_short(match: re.Match) -> str:
    return "" if len(match.group(0).split()) < UI_LINE_MAX_WORDS else match.group(0)


def drop_ui_lines(text: str) -> str:
    """Remove short lines that begin like a site's interface labels rather than like prose."""
    return _UI_LINE.sub(_drop_if_short, text)


class Extractor:
    """Callable HTML -> text with one config; safe to build once per worker."""

    def __init__(self, cfg: ExtractConfig | None = None):
        self.cfg = cfg or ExtractConfig()

    def _extract(self, tree: HTMLTree, main_content: bool) -> str:
        cfg = self.cfg
        return extract_plain_text(
            tree,
            main_content=main_content,
            alt_texts=cfg.alt_texts,
            list_bullets=cfg.list_bullets,
            comments=cfg.comments,
            post_meta=cfg.post_meta,
        )

    def __call__(self, html: bytes) -> str:
        """Extracted text ('' if the page has none); raises Rejected for pages unsafe to extract."""
        cfg = self.cfg
        # a page shorter than 3 bytes per level ('<a>') cannot nest that deep
        depth_limit = cfg.max_nesting_depth
        if len(html) > 3 * depth_limit and estimate_nesting_depth(html, stop_below=depth_limit) > depth_limit:
            raise Rejected("too_deeply_nested")
        if looks_binary(html):
            raise Rejected("binary_content")
        tree = HTMLTree.parse(decode_html(html))
        text = self._extract(tree, cfg.main_content)
        if cfg.main_content and cfg.fallback_max_words:
            n_words = len(text.split())
            if n_words < cfg.fallback_max_words:  # cheap test first; the full pass is rare
                full = self._extract(tree, main_content=False)
                if n_words < cfg.fallback_max_share * len(full.split()):
                    text = full
        if cfg.drop_ui_lines:
            text = drop_ui_lines(text)
        if len(text) > cfg.max_text_chars:
            cut = text.rfind("\n", 0, cfg.max_text_chars)
            text = text[: cut if cut > 0 else cfg.max_text_chars]
        return text.strip()


def sandboxed_extractor(config: dict) -> Callable[[bytes], bytes]:
    """The `operators.sandbox` factory: ExtractConfig fields -> (HTML bytes -> UTF-8 text bytes)."""
    extractor = Extractor(ExtractConfig(**config))
    return lambda html: extractor(html).encode("utf-8", "surrogatepass")


_DEFAULT = Extractor()


def extract_text(html: bytes) -> str:
    """Main-content text of an HTML page with the default settings; '' when nothing is extractable
    (including pages rejected as unsafe to extract)."""
    try:
        return _DEFAULT(html)
    except Rejected:
        return ""
