"""HTML bytes -> main-content plain text, with resiliparse.

Decoding: strict UTF-8 first (most of the web, and a valid UTF-8 byte string is almost never
another encoding), else the page's `<meta charset>`, else uchardet detection; the HTTP header's
charset is not trusted (it lies on real pages; see tests/fixtures and warc/edge-cases).

Defaults were chosen by `benchmarks/extract_quality.py` against the gold annotations of 986 real
pages (see benchmarks/RESULTS.md), not by taste.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    drop_boilerplate_lines: bool = True
    """Second pass over the extracted lines: drop short link-like / navigation lines
    (see `is_boilerplate_line`). Measured to raise F1 on the gold set; see RESULTS.md."""
    min_line_words: int = 3
    """With `drop_boilerplate_lines`: lines with fewer words are dropped unless they end like a
    sentence or head a following paragraph."""
    max_text_chars: int = 2_000_000
    """Extracted text longer than this is cut at a line boundary (counted as `extract/truncated_text`)."""


def decode_html(html: bytes) -> str:
    """Decode an HTML byte string to text (see module docstring for the order of evidence)."""
    try:
        text = html.decode("utf-8")
    except UnicodeDecodeError:
        encoding = detect_encoding(html, from_html_meta=True)
        return bytes_to_str(html, encoding, errors="replace")
    return text[1:] if text.startswith("\ufeff") else text


_SENTENCE_END = re.compile(r"[.!?:;\"'”’)\]…。！？]\s*$")


def is_boilerplate_line(line: str, next_line: str | None, min_words: int) -> bool:
    """A short line that is neither a sentence nor a heading of a following paragraph.

    Navigation labels, share buttons, tag lists and 'Read more' links survive main-content
    extraction as short standalone lines; body text is sentences, and headings are followed by
    a longer paragraph.
    """
    words = line.split()
    if len(words) >= min_words:
        return False
    if _SENTENCE_END.search(line) and len(words) > 1:
        return False
    if next_line is not None and len(next_line.split()) >= 2 * min_words + 4:
        return False  # a heading: keep it with its paragraph
    return True


def drop_boilerplate_lines(text: str, min_words: int) -> str:
    lines = [line for line in (raw.strip() for raw in text.split("\n")) if line]
    kept = [
        line
        for i, line in enumerate(lines)
        if not is_boilerplate_line(line, lines[i + 1] if i + 1 < len(lines) else None, min_words)
    ]
    return "\n".join(kept)


class Extractor:
    """Callable HTML -> text with one config; safe to build once per worker."""

    def __init__(self, cfg: ExtractConfig | None = None):
        self.cfg = cfg or ExtractConfig()

    def __call__(self, html: bytes) -> str:
        cfg = self.cfg
        tree = HTMLTree.parse(decode_html(html))
        text = extract_plain_text(
            tree,
            main_content=cfg.main_content,
            alt_texts=cfg.alt_texts,
            list_bullets=cfg.list_bullets,
            comments=cfg.comments,
            post_meta=cfg.post_meta,
        )
        if cfg.drop_boilerplate_lines:
            text = drop_boilerplate_lines(text, cfg.min_line_words)
        if len(text) > cfg.max_text_chars:
            cut = text.rfind("\n", 0, cfg.max_text_chars)
            text = text[: cut if cut > 0 else cfg.max_text_chars]
        return text.strip()


_DEFAULT = Extractor()


def extract_text(html: bytes) -> str:
    """Main-content text of an HTML page with the default settings; '' when nothing is extractable."""
    return _DEFAULT(html)
