"""Language ID with the bundled lid.176: real texts, thresholds on both sides, hostile text, bad models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from operators.extract import extract_text
from operators.langid import LangIDConfig, LanguageIdentifier, identify_language, language_reject_reason
from operators.warc import read_warc_rows
from tests.conftest import REPO, SAMPLE


@pytest.fixture(scope="module")
def real_texts(shared_data: Path) -> dict[str, str]:
    lm = shared_data / "text" / "lm"
    return {
        "de": (lm / "cs336-german.txt").read_text(),
        "en": (lm / "cs336-address.txt").read_text(),
    }


@pytest.mark.shared_data
def test_real_texts(real_texts):
    lang, score = identify_language(real_texts["de"])
    assert lang == "de" and score > 0.95
    lang, score = identify_language(real_texts["en"])
    assert lang == "en" and score > 0.9


def test_sample_pages_agree_with_manifest_languages():
    """On the sample's annotated pages, our language matches the fixture builder's lid.176 label
    (computed on resiliparse text) for nearly all pages."""
    manifest = {}
    for line in (REPO / "tests" / "fixtures" / "sample-langs.jsonl").read_text().splitlines():
        m = json.loads(line)
        manifest[m["record_id"]] = m["lang_auto"]
    agree = total = 0
    for name in ("trafilatura-000", "aeb-000", "wceb2026-000"):
        for row in read_warc_rows(str(SAMPLE / f"{name}.warc.gz"))[0]:
            text = extract_text(row.html)
            if row.doc_id in manifest and manifest[row.doc_id] and text:
                total += 1
                agree += identify_language(text)[0] == manifest[row.doc_id]
    assert total >= 80
    assert agree / total >= 0.95


def test_prefix_first_gives_the_whole_text_decision_on_the_sample_pages():
    """The confident-prefix shortcut keeps every sample page's keep/drop decision (and its language) and classifies
    less text: only pages whose first 3,000 characters score below 0.8 are classified whole."""
    cfg = LangIDConfig()
    whole = LanguageIdentifier(max_chars=cfg.max_chars, prefix_chars=0)
    quick = LanguageIdentifier(max_chars=cfg.max_chars, prefix_chars=cfg.prefix_chars,
                               prefix_confidence=cfg.prefix_confidence)
    texts = [t for name in ("trafilatura-000", "aeb-000", "wceb2026-000")
             for row in read_warc_rows(str(SAMPLE / f"{name}.warc.gz"))[0] if (t := extract_text(row.html))]
    long = [t for t in texts if len(t) > cfg.prefix_chars]
    assert len(long) >= 30
    shortcut = 0
    for text in texts:
        a, b = whole(text), quick(text)
        assert language_reject_reason(*a, cfg) == language_reject_reason(*b, cfg), text[:200]
        assert a[0] == b[0]
        shortcut += a != b  # a confident prefix: its own (different) score was kept
    assert shortcut >= len(long) // 2


@pytest.mark.shared_data
def test_an_unsure_prefix_falls_back_to_the_whole_text(real_texts):
    quick = LanguageIdentifier(prefix_chars=200, prefix_confidence=0.8)
    # a confident English start settles an English-then-German text...
    mixed = real_texts["en"][:2000] + "\n" + real_texts["de"]
    assert quick(mixed) == quick(real_texts["en"][:200])
    # ...while a start that says little (numbers and punctuation) hands the decision to the whole text
    unsure = "1. 2. 3. - 42 / 17 ... 2024-05-01 | 10:30 " * 4 + real_texts["de"]
    assert quick(unsure[:200])[1] < 0.8
    assert quick(unsure) == LanguageIdentifier(prefix_chars=0)(unsure)
    assert quick(unsure)[0] == "de"


@pytest.mark.parametrize("kw", [{"prefix_chars": -1}, {"prefix_confidence": 1.5}, {"max_chars": 0}, {"min_score": -0.1}])
def test_bad_langid_config_is_a_clear_error(kw):
    with pytest.raises(ValueError, match="langid"):
        LangIDConfig(**kw)


def test_newlines_do_not_matter():
    text = "The council voted on Tuesday.\nIt will meet again next week.\n\nThe mayor agreed."
    assert identify_language(text) == identify_language(text.replace("\n", " "))


@pytest.mark.parametrize("text", ["", "   \n\t ", "\ud800 broken surrogate \udfff", "!!!! ???? ....", "x" * 1_000_000])
def test_hostile_text_never_raises(text):
    lang, score = identify_language(text)
    assert isinstance(lang, str) and 0.0 <= score <= 1.0
    if not text.strip():
        assert (lang, score) == ("", 0.0)


@pytest.mark.parametrize("lang, score, cfg, reason", [
    ("en", 0.66, LangIDConfig(min_score=0.65), None),
    ("en", 0.64, LangIDConfig(min_score=0.65), "low_score"),
    ("de", 0.99, LangIDConfig(languages=("en",)), "wrong_language"),
    ("de", 0.99, LangIDConfig(languages=("en", "de")), None),
    ("de", 0.99, LangIDConfig(languages=()), None),
    ("", 0.0, LangIDConfig(languages=()), "low_score"),
])
def test_reject_reason_both_sides(lang, score, cfg, reason):
    assert language_reject_reason(lang, score, cfg) == reason


def test_missing_or_wrong_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        LanguageIdentifier(str(tmp_path / "nope.ftz"))
    bogus = tmp_path / "bogus.bin"
    bogus.write_bytes(b"definitely not a fasttext model" * 10)
    with pytest.raises(ValueError, match="not a fastText"):
        LanguageIdentifier(str(bogus))


@pytest.mark.parametrize("kw, message", [({"min_score": 2.0}, "langid.min_score must be in [0, 1] (a probability), got 2.0"),
                                         ({"prefix_confidence": 1.5}, "langid.prefix_confidence must be in [0, 1]"),
                                         ({"max_chars": 0}, "langid.max_chars must be > 0, got 0"),
                                         ({"prefix_chars": -1}, "langid.prefix_chars must be >= 0, got -1")])
def test_bad_langid_config_names_only_the_field_at_fault(kw, message):
    with pytest.raises(ValueError) as exc:
        LangIDConfig(**kw)
    assert str(exc.value).startswith(message) and "langid: " not in str(exc.value)
