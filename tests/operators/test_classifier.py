"""fastText classifiers: normalisation, the training command end to end on real text, the card,
the bundled quality model, and clear errors for bad models."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.classifier import (
    BUNDLED_QUALITY_MODEL,
    ClassifierConfig,
    FastTextClassifier,
    classify_nsfw,
    classify_quality,
    classify_toxic_speech,
    normalize_for_classifier,
    score_reject_reason,
)
from operators.extract import extract_text
from operators.langid import BUNDLED_LID_MODEL, identify_language
from operators.warc import read_warc_rows
from tests.conftest import FIXTURES, SAMPLE
from training.classifier import main as train_main
from training.classifier import roc_auc


def test_normalisation_makes_tokenised_and_raw_text_alike():
    assert normalize_for_classifier("Hello, World!\nIt's 2024.") == normalize_for_classifier("hello , world ! it ' s 2024 .")
    assert normalize_for_classifier("   \n ") == ""


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=400))
def test_normalisation_is_one_line_and_stable(text):
    once = normalize_for_classifier(text)
    assert "\n" not in once and normalize_for_classifier(once) == once


@pytest.mark.parametrize("scores, labels, auc", [
    ([0.9, 0.8, 0.2, 0.1], [True, True, False, False], 1.0),
    ([0.1, 0.2, 0.8, 0.9], [True, True, False, False], 0.0),
    ([0.5, 0.5, 0.5, 0.5], [True, False, True, False], 0.5),
    ([0.9, 0.3, 0.6, 0.1], [True, True, False, False], 0.75),
])
def test_roc_auc_exact(scores, labels, auc):
    assert roc_auc(scores, labels) == pytest.approx(auc)
    assert math.isnan(roc_auc([0.1], [True]))


@pytest.mark.parametrize("score, cfg, reason", [
    (0.30, ClassifierConfig(min_score=0.3), None),
    (0.29, ClassifierConfig(min_score=0.3), "low_score"),
    (0.80, ClassifierConfig(max_score=0.8), None),
    (0.81, ClassifierConfig(max_score=0.8), "high_score"),
])
def test_thresholds_both_sides(score, cfg, reason):
    assert score_reject_reason(score, cfg) == reason


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """A small classifier trained through the CLI on the sample's real pages: English vs German
    page texts stand in for 'harmful' vs 'other' to exercise the mechanism end to end."""
    rows = []
    for path in sorted(SAMPLE.glob("*.warc.gz")):
        for r in read_warc_rows(str(path))[0]:
            text = extract_text(r.html)
            lang = identify_language(text)[0] if text else ""
            if lang in ("en", "de"):
                rows.append({"text": text, "label": "flagged" if lang == "en" else "other"})
    out = tmp_path_factory.mktemp("clf")
    data = out / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    model = out / "model.bin"
    assert train_main(["--input", str(data), "--positive-label", "flagged", "--output", str(model), "--epoch", "10", "--dim", "8"]) == 0
    return model, rows


def test_training_writes_model_and_card(trained_model):
    model, rows = trained_model
    card = json.loads((model.parent / "model.bin.json").read_text())
    assert card["positive_label"] == "flagged"
    assert card["data"]["examples"] == len(rows)
    assert card["data"]["train"] + card["data"]["test"] == len(rows)
    m = card["test_metrics"]
    assert set(m) >= {"precision", "recall", "f1", "roc_auc"}
    assert m["roc_auc"] > 0.8  # the two labels really are separable


def test_trained_model_scores_through_the_public_functions(trained_model):
    model, rows = trained_model
    english = next(r["text"] for r in rows if r["label"] == "flagged")
    label, score = classify_nsfw(english, str(model))
    assert label in ("flagged", "other") and 0.0 <= score <= 1.0
    assert classify_toxic_speech(english, str(model)) == (label, score)
    clf = FastTextClassifier(str(model))
    assert clf.positive == "flagged"  # read from the card
    assert clf.score("") == 0.0


def test_training_input_errors(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "only text"}\n')
    assert train_main(["--input", str(bad), "--output", str(tmp_path / "m.bin")]) == 2
    assert "needs 'text' and 'label'" in capsys.readouterr().err
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "a b c", "label": "hq"}\n')
    assert train_main(["--input", str(one), "--output", str(tmp_path / "m.bin")]) == 2
    assert "at least two labels" in capsys.readouterr().err


def test_bundled_quality_model_and_card():
    card = json.loads(open(BUNDLED_QUALITY_MODEL + ".json").read())
    assert card["positive_label"] == "hq" and card["test_metrics"]["roc_auc"] > 0.9
    label, score = classify_quality((FIXTURES / "text" / "cs336-address.txt").read_text())
    assert label == "hq" and score > 0.5


def test_quality_model_ranks_spam_below_articles():
    """Real CC-MAIN-2020-34 spam pages (the sample's warcfile) score below the sample's news articles."""
    clf = FastTextClassifier(BUNDLED_QUALITY_MODEL)

    def scores(name):
        texts = [extract_text(r.html) for r in read_warc_rows(str(SAMPLE / name))[0]]
        return sorted(clf.score(t) for t in texts if t)

    spam, news = scores("warcfile.warc.gz"), scores("aeb-000.warc.gz")
    assert sum(spam) / len(spam) < sum(news) / len(news) - 0.3


def test_bad_models_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        FastTextClassifier(str(tmp_path / "missing.bin"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a fastText"):
        FastTextClassifier(str(junk))
    with pytest.raises(ValueError, match="has no label 'hq'"):
        FastTextClassifier(BUNDLED_LID_MODEL, positive_label="hq")  # a classifier, of languages


def test_autotune_option(trained_model, tmp_path, monkeypatch):
    """--autotune hands fastText a validation split carved from training (disjoint from the training file, and the
    test split in neither), with the search time. fastText's own search is not run here: it is timed, and the model
    it then trains with the best parameters found has no time bound (a search on a loaded machine picked subword
    n-grams and ran past the test's 600 s), so the call is recorded and a plain model trained instead."""
    import fasttext

    model, rows = trained_model
    real, seen = fasttext.train_supervised, {}

    def record(**params):
        seen.update(params)
        seen["files"] = {k: open(params[k], encoding="utf-8").read().splitlines()
                         for k in ("input", "autotuneValidationFile")}
        plain = {k: v for k, v in params.items() if not k.startswith("autotune")}
        return real(**{**plain, "epoch": 10, "dim": 8, "lr": 0.5, "wordNgrams": 2, "minCount": 2})  # the fixture's settings

    monkeypatch.setattr(fasttext, "train_supervised", record)
    out = tmp_path / "auto.bin"
    assert train_main(["--input", str(model.parent / "data.jsonl"), "--positive-label", "flagged",
                       "--output", str(out), "--autotune", "2"]) == 0
    card = json.loads((tmp_path / "auto.bin.json").read_text())
    assert seen["autotuneDuration"] == 2 and seen["thread"] == 1
    train_lines, valid_lines = seen["files"]["input"], seen["files"]["autotuneValidationFile"]
    assert len(train_lines) == card["data"]["train"] and len(valid_lines) == card["data"]["valid"] > 0
    assert not set(train_lines) & set(valid_lines)
    from training.classifier import TrainClassifierConfig, _write_fasttext_file, split

    _, _, test = split([(r["text"], r["label"]) for r in rows],
                       TrainClassifierConfig(positive_label="flagged", autotune_seconds=2))
    _write_fasttext_file(str(tmp_path / "test.txt"), test)
    _write_fasttext_file(str(tmp_path / "all.txt"), [(r["text"], r["label"]) for r in rows])
    test_lines = (tmp_path / "test.txt").read_text(encoding="utf-8").splitlines()
    copies = Counter((tmp_path / "all.txt").read_text(encoding="utf-8").splitlines())
    shared = set(test_lines) & (set(train_lines) | set(valid_lines))
    assert len(test_lines) == card["data"]["test"]
    assert all(copies[line] > 1 for line in shared)  # only pages the sample holds twice (its duplicates) recur
    assert card["data"]["train"] + card["data"]["valid"] + card["data"]["test"] == len(rows)
    assert card["hyperparameters"]["autotune_seconds"] == 2


def test_quantize_option(trained_model, tmp_path):
    model, _ = trained_model
    out = tmp_path / "small.ftz"
    assert train_main(["--input", str(model.parent / "data.jsonl"), "--positive-label", "flagged",
                       "--output", str(out), "--quantize", "--epoch", "5", "--dim", "8"]) == 0
    assert json.loads((tmp_path / "small.ftz.json").read_text())["hyperparameters"]["quantize"] is True
    assert out.stat().st_size < model.stat().st_size / 10
