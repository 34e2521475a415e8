"""Extraction on real pages: decoding, main content, fallbacks, hostile markup, and quality on the
gold set (the numbers the defaults were chosen by)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from operators.extract import (
    ExtractConfig,
    Extractor,
    Rejected,
    decode_html,
    drop_ui_lines,
    estimate_nesting_depth,
    extract_text,
)
from operators.warc import ReadConfig, read_warc_rows
from tests.conftest import FIXTURES, SAMPLE


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


@pytest.fixture(scope="module")
def edge_pages() -> dict[str, bytes]:
    expectations = [json.loads(line) for line in (FIXTURES / "edge-cases.jsonl").read_text().splitlines()]
    by_id = {r.doc_id: r.html for r in read_warc_rows(str(SAMPLE / "edge-cases.warc.gz"))[0]}
    return {e["name"]: by_id[e["record_id"]] for e in expectations if e.get("record_id") in by_id}


def test_lying_charset_header_is_not_trusted(edge_pages):
    """Header says UTF-8, bytes are ISO-8859-1: decoding follows the bytes and the <meta> tag."""
    text = decode_html(edge_pages["charset-header-lies"])
    assert "\ufffd" not in text
    assert "ö" in text or "ü" in text or "ä" in text


def test_gb2312_page_decodes_to_chinese(edge_pages):
    text = extract_text(edge_pages["gb2312-no-header-charset"])
    assert "\ufffd" not in text
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) > 200


def test_undeclared_non_utf8_page_is_detected(edge_pages):
    text = extract_text(edge_pages["no-charset-anywhere"])
    assert text and "\ufffd" not in text


def test_same_page_same_text_whatever_the_framing(edge_pages):
    """plain-200 and html-labelled-text-plain carry the same bytes and must extract identically."""
    assert extract_text(edge_pages["plain-200"]) == extract_text(edge_pages["html-labelled-text-plain"])
    assert "maudlin" in extract_text(edge_pages["plain-200"]).lower()


def test_sample_snippets():
    """On the 38 annotated trafilatura pages of the sample, most `with` snippets are found and most
    `without` (boilerplate) snippets are absent."""
    ann = {}
    for line in (FIXTURES / "sample-trafilatura-annotations.jsonl").read_text().splitlines():
        a = json.loads(line)
        ann[a["record_id"]] = a
    found = total = absent = total_wo = 0
    for row in read_warc_rows(str(SAMPLE / "trafilatura-000.warc.gz"))[0]:
        if row.doc_id not in ann:
            continue
        text = _norm(extract_text(row.html))
        for s in ann[row.doc_id]["with"]:
            total += 1
            found += _norm(s) in text
        for s in ann[row.doc_id]["without"]:
            total_wo += 1
            absent += _norm(s) not in text
    assert total > 80 and total_wo > 80
    assert found / total >= 0.75
    assert absent / total_wo >= 0.75


@pytest.mark.parametrize("html", [b"", b"   ", b"<html><body></body></html>", b"<html><script>x=1</script></html>"])
def test_nothing_to_extract_gives_empty_text(html):
    assert extract_text(html) == ""


def test_binary_junk_is_rejected(edge_pages):
    """Bytes that are not text (here: random-looking binary) are rejected, not turned into mojibake."""
    junk = bytes(range(256)) * 16
    with pytest.raises(Rejected, match="binary_content"):
        Extractor()(junk)
    png = [r.html for r in read_warc_rows(str(SAMPLE / "edge-cases.warc.gz"), ReadConfig(html_mime_types=("image/png",)))[0]]
    assert len(png) == 1  # the real PNG of the edge cases, read as if it were HTML
    with pytest.raises(Rejected, match="binary_content"):
        Extractor()(png[0])


def test_deeply_nested_bomb_is_rejected_fast():
    """100,000 nested <div>s would take minutes in main-content extraction (quadratic in depth)."""
    bomb = b"<html><body>" + b"<div>" * 100_000 + b"text" + b"</div>" * 100_000 + b"</body></html>"
    assert estimate_nesting_depth(bomb) >= 100_000
    with pytest.raises(Rejected, match="too_deeply_nested"):
        Extractor()(bomb)
    assert extract_text(bomb) == ""


def test_real_pages_are_not_mistaken_for_bombs():
    for path in sorted(SAMPLE.glob("*.warc.gz")):
        for row in read_warc_rows(str(path))[0]:
            assert estimate_nesting_depth(row.html) < ExtractConfig().max_nesting_depth


def test_ui_lines_dropped_prose_kept():
    text = "Share this article\nThe council voted on Tuesday to share the cost.\n© 2024 Example News\nRelated"
    assert drop_ui_lines(text).strip() == "The council voted on Tuesday to share the cost."


def test_max_text_chars_cuts_at_a_line(edge_pages):
    ex = Extractor(ExtractConfig(max_text_chars=500))
    text = ex(edge_pages["charset-header-lies"])
    assert 0 < len(text) <= 500
    assert text == extract_text(edge_pages["charset-header-lies"])[: len(text)]


# ------------------------------------------------------------------ the gold set (shared data)


@pytest.fixture(scope="module")
def gold_pages(shared_data: Path):
    sys_path = str(Path(__file__).resolve().parents[2])
    import sys

    if sys_path not in sys.path:
        sys.path.insert(0, sys_path)
    from benchmarks.extract_quality import load_pages

    return load_pages(shared_data, None)


@pytest.mark.shared_data
def test_quality_on_gold_set_beats_the_recorded_baselines(gold_pages):
    """The default extraction keeps its measured quality (RESULTS.md): word F1 >= 0.86 against gold
    bodies (trafilatura: 0.855) and >= 0.90 of `with` snippets found."""
    from benchmarks.extract_quality import score

    texts = [extract_text(p["html"]) for p in gold_pages]
    s = score(texts, gold_pages)
    assert s["gold_pages"] >= 250
    assert s["F1"] >= 0.86, s
    assert s["with_found"] >= 0.90, s


@pytest.mark.shared_data
def test_listing_page_falls_back_to_full_text(gold_pages):
    """A category page where main-content keeps almost nothing gets its full visible text."""
    page = next(p for p in gold_pages if p["url"] == "https://appleinsider.com/topic/headphones")
    main_only = Extractor(ExtractConfig(fallback_max_words=0))(page["html"])
    assert len(main_only.split()) < 50
    assert len(extract_text(page["html"]).split()) > 150
