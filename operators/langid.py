"""Language identification with fastText `lid.176` (bundled), or any fastText LID model by path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

STAGE = "langid"
BUNDLED_LID_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "lid.176.ftz")


@dataclass(frozen=True)
class LangIDConfig:
    enabled: bool = True
    """Run the stage at all (when off, no `lang` columns are written)."""
    model_path: str = ""
    """fastText language-ID model; empty means the bundled lid.176.ftz (CC BY-SA 3.0)."""
    languages: tuple[str, ...] = ("en",)
    """ISO 639 codes to keep (as the model names them: `en`, `de`, `zh` ...); empty keeps every language."""
    min_score: float = 0.65
    """Documents whose top language scores lower are dropped as `low_score` (datatrove's default)."""
    max_chars: int = 100_000
    """Only the first this many characters are classified (the language rarely changes after that)."""


class LanguageIdentifier:
    """Loads the model once (a Ray actor keeps it); `__call__(text) -> (lang, score)`."""

    def __init__(self, model_path: str = "", max_chars: int = 100_000):
        import fasttext

        path = model_path or BUNDLED_LID_MODEL
        if not os.path.isfile(path):
            raise ValueError(f"language-ID model not found: {path!r}")
        fasttext.FastText.eprint = lambda *args, **kwargs: None  # silence the load_model deprecation notice
        try:
            self.model = fasttext.load_model(path)
        except ValueError as exc:
            raise ValueError(f"{path!r} is not a fastText model: {exc}") from exc
        labels = self.model.get_labels()
        if not labels or not all(label.startswith("__label__") for label in labels[:5]):
            raise ValueError(f"{path!r} is not a fastText classifier (no __label__ labels)")
        self.max_chars = max_chars

    def __call__(self, text: str) -> tuple[str, float]:
        """Top language and its probability; ('', 0.0) for text with nothing to classify."""
        # fastText predicts one line: newlines must go; invalid surrogates cannot be encoded
        line = " ".join(text[: self.max_chars].split())
        if not line:
            return "", 0.0
        line = line.encode("utf-8", "replace").decode("utf-8")
        labels, scores = self.model.predict(line, k=1)
        return labels[0].removeprefix("__label__"), float(min(scores[0], 1.0))


def language_reject_reason(lang: str, score: float, cfg: LangIDConfig) -> str | None:
    """None keeps the document; otherwise `low_score` or `wrong_language`."""
    if score < cfg.min_score:
        return "low_score"
    if cfg.languages and lang not in cfg.languages:
        return "wrong_language"
    return None


@lru_cache(maxsize=1)
def _default_identifier() -> LanguageIdentifier:
    return LanguageIdentifier()


def identify_language(text: str) -> tuple[str, float]:
    """(language code, probability) of `text` with the bundled lid.176 model."""
    return _default_identifier()(text)
