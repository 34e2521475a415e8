"""C4 and FineWeb line filters on real text, each rule on both sides of its threshold."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.linefilters import C4Config, FineWebConfig, c4_filter, fineweb_evidence, fineweb_reject_reason
from tests.conftest import FIXTURES

ADDRESS = (FIXTURES / "text" / "cs336-address.txt").read_text()
SENTENCES = [s.strip() + "." for s in ADDRESS.replace("\n", " ").split(".") if len(s.split()) >= 3]


def test_real_prose_passes_both():
    text, reason = c4_filter(ADDRESS)
    assert reason is None and text.split() == ADDRESS.split()
    assert fineweb_reject_reason(ADDRESS) is None


def test_c4_keeps_only_sentence_lines():
    page = "\n".join(["Home", "News | Sport | Weather", *SENTENCES[:6], "Share this", "We use cookies to improve this site.",
                      "Please enable JavaScript to view the comments."])
    text, reason = c4_filter(page)
    assert reason is None
    assert text.split("\n") == SENTENCES[:6]


@pytest.mark.parametrize("n, reason", [(5, None), (4, "too_few_sentences")])
def test_c4_min_sentences_both_sides(n, reason):
    assert c4_filter("\n".join(SENTENCES[:n]))[1] == reason


@pytest.mark.parametrize("extra, reason", [
    ("Lorem ipsum dolor sit amet.", "lorem_ipsum"),
    ("function f() { return 1; }", "curly_bracket"),
])
def test_c4_page_rules(extra, reason):
    assert c4_filter("\n".join(SENTENCES[:6] + [extra])) == ("", reason)
    disabled = C4Config(filter_lorem_ipsum=False, filter_curly_bracket=False)
    assert c4_filter("\n".join(SENTENCES[:6] + [extra]), disabled)[1] is None


def test_c4_citations_and_word_length():
    text, _ = c4_filter("\n".join(s.replace(".", "[12].", 1) for s in SENTENCES[:6]))
    assert "[12]" not in text
    long_word = SENTENCES[0][:-1] + " " + "x" * 1001 + "."
    text, _ = c4_filter("\n".join([long_word] + SENTENCES[1:7]))
    assert "x" * 1001 not in text


def test_fineweb_punctuation_ratio_both_sides():
    """8 lines: 1 ending in punctuation is 0.125 (kept, >= 0.12); none is 0 (dropped)."""
    bare = [s.rstrip(".") for s in SENTENCES[:8]]
    one = "\n".join([SENTENCES[0]] + bare[1:])
    assert fineweb_reject_reason(one, FineWebConfig(max_short_line_frac=1.0)) is None
    assert fineweb_reject_reason("\n".join(bare)) == "line_punct_ratio"
    assert fineweb_reject_reason("\n".join(bare), FineWebConfig(exclude_zero_punct=True)) is None


def test_fineweb_short_lines_both_sides():
    """3 lines, 2 short: 0.667 is not above 0.67 (kept); 3 of 4 short is (dropped)."""
    two_of_three = "\n".join([SENTENCES[0], "Four score.", "Seven years."])
    assert fineweb_reject_reason(two_of_three) is None
    assert fineweb_reject_reason(two_of_three + "\nOur fathers.") == "short_line_ratio"


def test_fineweb_duplicate_chars_and_lists():
    assert fineweb_reject_reason("\n".join(SENTENCES[:6] + [SENTENCES[0]])) == "char_dup_ratio"
    listy = "\n".join(f"{w} {w}." for w in ADDRESS.split()[:40])  # two words a line: 0.5 newlines a word
    assert fineweb_reject_reason(listy, FineWebConfig(max_short_line_frac=1.0, max_dup_line_char_frac=1.0)) == "list_ratio"
    assert fineweb_evidence(listy, "list_ratio") == {"value": 0.4875, "limit": 0.3}  # 39 breaks / 80 words


def test_fineweb_evidence_matches_the_rule():
    bare = "\n".join(s.rstrip(".") for s in SENTENCES[:8])
    assert fineweb_evidence(bare, "line_punct_ratio") == {"value": 0.0, "limit": 0.12}
    short = "\n".join([SENTENCES[0], "Four score.", "Seven years.", "Our fathers."])
    assert fineweb_evidence(short, "short_line_ratio") == {"value": 0.75, "limit": 0.67}
    dup = "\n".join(SENTENCES[:6] + [SENTENCES[0]])
    assert fineweb_evidence(dup, "char_dup_ratio")["value"] > 0.01


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=2000))
def test_total(text):
    new, reason = c4_filter(text)
    assert (reason is None) or new == ""
    assert fineweb_reject_reason(text) is None or isinstance(fineweb_reject_reason(text), str)
