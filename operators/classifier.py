"""fastText document classifiers (quality, NSFW, toxicity): one mechanism for all.

The same `normalize_for_classifier` runs at training time (training/classifier.py) and here, so a
model never sees text prepared differently from what it was trained on. A model is any fastText
supervised model; a JSON card next to it (`<model file>.json`) names its positive label.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache

BUNDLED_QUALITY_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "quality.ftz")

_TOKEN = re.compile(r"\w+|[^\w\s]")
MAX_TOKENS = 2000
"""Only the first tokens are classified: enough for the style of a page, and bounded cost."""


def normalize_for_classifier(text: str, max_tokens: int = MAX_TOKENS) -> str:
    """Lower-cased words and punctuation marks separated by single spaces, on one line.

    'Hello, World!\\n' and 'hello , world !' normalise alike, so tokenised corpora (WikiText) and raw
    web text look the same to the model.
    """
    tokens = _TOKEN.findall(text[: max_tokens * 12].lower())
    return " ".join(tokens[:max_tokens])


@dataclass(frozen=True)
class ClassifierConfig:
    enabled: bool = True
    """Run the stage when a model is available (the quality stage has a bundled one; NSFW and
    toxicity stages run only when `model_path` is set)."""
    model_path: str = ""
    """fastText model file."""
    positive_label: str = ""
    """Label whose probability becomes the `<stage>_score` column; empty: the model card's."""
    min_score: float = 0.0
    """Documents scoring below are dropped (`low_score`); 0 keeps all."""
    max_score: float = 1.0
    """Documents scoring above are dropped (`high_score`), for harm classifiers; 1 keeps all."""


def score_reject_reason(score: float, cfg: ClassifierConfig) -> str | None:
    if score < cfg.min_score:
        return "low_score"
    if score > cfg.max_score:
        return "high_score"
    return None


class FastTextClassifier:
    """Loads once (per Ray actor); `__call__(text) -> (label, score)` and `.score(text)`."""

    def __init__(self, model_path: str, positive_label: str = ""):
        import fasttext

        if not os.path.isfile(model_path):
            raise ValueError(f"classifier model not found: {model_path!r}")
        fasttext.FastText.eprint = lambda *args, **kwargs: None
        try:
            self.model = fasttext.load_model(model_path)
        except ValueError as exc:
            raise ValueError(f"{model_path!r} is not a fastText model: {exc}") from exc
        self.labels = [label.removeprefix("__label__") for label in self.model.get_labels()]
        if not self.labels or self.model.get_labels()[0] == self.labels[0]:
            raise ValueError(f"{model_path!r} is not a supervised fastText classifier")
        card_path = model_path + ".json"
        card = json.load(open(card_path)) if os.path.isfile(card_path) else {}
        self.card = card
        self.positive = positive_label or card.get("positive_label") or self.labels[0]
        if self.positive not in self.labels:
            raise ValueError(f"{model_path!r} has no label {self.positive!r} (labels: {self.labels})")

    def _probs(self, text: str) -> dict[str, float]:
        line = normalize_for_classifier(text)
        if not line:
            return {}
        labels, probs = self.model.predict(line, k=-1)
        return {lab.removeprefix("__label__"): min(float(p), 1.0) for lab, p in zip(labels, probs)}

    def __call__(self, text: str) -> tuple[str, float]:
        """Most likely label and its probability; ('', 0.0) for text with no tokens."""
        probs = self._probs(text)
        if not probs:
            return "", 0.0
        label = max(probs, key=probs.get)
        return label, probs[label]

    def score(self, text: str) -> float:
        """Probability of the positive label (0.0 for empty text)."""
        return self._probs(text).get(self.positive, 0.0)


@lru_cache(maxsize=1)
def _quality() -> FastTextClassifier:
    return FastTextClassifier(BUNDLED_QUALITY_MODEL)


def classify_quality(text: str) -> tuple[str, float]:
    """('hq' | 'cc', probability) with the bundled quality model (well-edited articles vs random
    Common Crawl text; see operators/resources/quality.ftz.json for its data and held-out metrics)."""
    return _quality()(text)


@lru_cache(maxsize=4)
def _by_path(path: str) -> FastTextClassifier:
    return FastTextClassifier(path)


def classify_nsfw(text: str, model_path: str) -> tuple[str, float]:
    """(label, probability) from a fastText NSFW model given by path (e.g. Dolma's Jigsaw NSFW model)."""
    return _by_path(model_path)(text)


def classify_toxic_speech(text: str, model_path: str) -> tuple[str, float]:
    """(label, probability) from a fastText toxicity model given by path (e.g. Dolma's Jigsaw hate-speech model)."""
    return _by_path(model_path)(text)
