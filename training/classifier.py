"""`sift train-classifier`: train a fastText document classifier and write it with a JSON card.

    sift train-classifier --input labelled.jsonl --positive-label hq --output models/quality.bin
    sift train-classifier --positives good.txt --negatives bad.txt --output m.ftz --quantize --autotune 60

Input: JSONL with `text` and `label`, or one document per line in positive/negative files. The
split (train / validation / test) is deterministic under `--seed`; the held-out test split is never
seen in training or autotuning, and its metrics (precision, recall, F1 at 0.5, ROC-AUC) go into the
card `<output>.json` together with data sizes and hyperparameters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np

from operators.classifier import FastTextClassifier, normalize_for_classifier


@dataclass(frozen=True)
class TrainClassifierConfig:
    positive_label: str = "hq"
    """The label whose probability is the classifier's score."""
    test_fraction: float = 0.2
    """Held out for the reported metrics."""
    valid_fraction: float = 0.1
    """Used by --autotune only (carved out of the training part)."""
    seed: int = 0
    epoch: int = 25
    lr: float = 0.5
    word_ngrams: int = 2
    dim: int = 16
    min_count: int = 2
    autotune_seconds: int = 0
    """> 0: let fastText search hyperparameters on the validation split for this long. fastText then trains the
    final model with the best parameters found; that training is not bounded by this time."""
    quantize: bool = False
    """Write a quantised .ftz (much smaller, slightly less accurate)."""


def roc_auc(scores: list[float], positives: list[bool]) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative),
    ties counted half (Mann-Whitney U with average ranks)."""
    s = np.asarray(scores, float)
    y = np.asarray(positives, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(scores: list[float], positives: list[bool], threshold: float = 0.5) -> dict[str, float]:
    pred = [s >= threshold for s in scores]
    tp = sum(p and y for p, y in zip(pred, positives))
    fp = sum(p and not y for p, y in zip(pred, positives))
    fn = sum(not p and y for p, y in zip(pred, positives))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(p == y for p, y in zip(pred, positives)) / len(pred) if pred else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy, "roc_auc": roc_auc(scores, positives)}


def split(examples: list[tuple[str, str]], cfg: TrainClassifierConfig):
    """Deterministic stratified split into train / valid / test."""
    rng = random.Random(cfg.seed)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for ex in examples:
        by_label.setdefault(ex[1], []).append(ex)
    train, valid, test = [], [], []
    for label in sorted(by_label):
        items = by_label[label][:]
        rng.shuffle(items)
        n_test = max(1, round(len(items) * cfg.test_fraction))
        n_valid = round(len(items) * cfg.valid_fraction) if cfg.autotune_seconds else 0
        test += items[:n_test]
        valid += items[n_test : n_test + n_valid]
        train += items[n_test + n_valid :]
    rng.shuffle(train)
    return train, valid, test


def _write_fasttext_file(path: str, examples: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for text, label in examples:
            line = normalize_for_classifier(text)
            if line:
                f.write(f"__label__{label} {line}\n")


def train_classifier(
    examples: list[tuple[str, str]], output: str, cfg: TrainClassifierConfig, source: str = "", note: str = ""
) -> dict:
    """Train, evaluate on the held-out split, save model + card; returns the card."""
    import fasttext

    labels = sorted({label for _, label in examples})
    if len(labels) < 2:
        raise ValueError(f"need at least two labels, got {labels}")
    if cfg.positive_label not in labels:
        raise ValueError(f"positive label {cfg.positive_label!r} not among the data's labels {labels}")
    train, valid, test = split(examples, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        train_path, valid_path = os.path.join(tmp, "train.txt"), os.path.join(tmp, "valid.txt")
        _write_fasttext_file(train_path, train)
        params = dict(input=train_path, epoch=cfg.epoch, lr=cfg.lr, wordNgrams=cfg.word_ngrams, dim=cfg.dim,
                      minCount=cfg.min_count, seed=cfg.seed, thread=1, verbose=0)
        if cfg.autotune_seconds:
            _write_fasttext_file(valid_path, valid)
            params = dict(input=train_path, autotuneValidationFile=valid_path, autotuneDuration=cfg.autotune_seconds,
                          seed=cfg.seed, thread=1, verbose=0)
        model = fasttext.train_supervised(**params)
        if cfg.quantize:
            model.quantize(input=train_path, retrain=True, qnorm=True, cutoff=100_000)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        model.save_model(output)
    args = model.f.getArgs()
    card = {
        "model": os.path.basename(output),
        "note": note,
        "positive_label": cfg.positive_label,
        "labels": labels,
        "normalization": "operators.classifier.normalize_for_classifier (lower-case, words and punctuation split, first 2,000 tokens)",
        "data": {
            "source": source,
            "sha1": hashlib.sha1("\n".join(f"{label}\t{text}" for text, label in examples).encode()).hexdigest(),
            "examples": len(examples),
            "per_label": {label: sum(1 for _, lab in examples if lab == label) for label in labels},
            "train": len(train), "valid": len(valid), "test": len(test),
        },
        "hyperparameters": {
            **asdict(cfg),
            "effective": {"epoch": args.epoch, "lr": args.lr, "wordNgrams": args.wordNgrams, "dim": args.dim, "minCount": args.minCount},
        },
        "bytes": os.path.getsize(output),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # evaluate the saved file through the same class the pipeline uses
    with open(output + ".json", "w") as f:
        json.dump(card, f, indent=2)
    clf = FastTextClassifier(output, cfg.positive_label)
    scores = [clf.score(text) for text, _ in test]
    card["test_metrics"] = binary_metrics(scores, [label == cfg.positive_label for _, label in test])
    with open(output + ".json", "w") as f:
        json.dump(card, f, indent=2)
    return card


def load_examples(jsonl: str | None, positives: str | None, negatives: str | None, positive_label: str) -> list[tuple[str, str]]:
    examples: list[tuple[str, str]] = []
    if jsonl:
        with open(jsonl, encoding="utf-8") as f:
            for n, line in enumerate(f.read().split("\n"), 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if "text" not in row or "label" not in row:
                    raise ValueError(f"{jsonl}:{n}: each line needs 'text' and 'label'")
                examples.append((row["text"], str(row["label"])))
    for path, label in ((positives, positive_label), (negatives, "other")):
        if path:
            with open(path, encoding="utf-8") as f:
                examples += [(line, label) for line in f.read().split("\n") if line.strip()]
    if not examples:
        raise ValueError("no training examples: give --input or --positives/--negatives")
    return examples


def main(argv: list[str] | None = None, prog: str = "sift train-classifier") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Train a fastText document classifier with a held-out evaluation.")
    p.add_argument("--input", help="JSONL with text and label")
    p.add_argument("--positives", help="one positive document per line")
    p.add_argument("--negatives", help="one negative document per line (label 'other')")
    p.add_argument("--output", required=True, help="model path (.bin, or .ftz with --quantize)")
    p.add_argument("--positive-label", default="hq")
    p.add_argument("--epoch", type=int, default=25)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--word-ngrams", type=int, default=2)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--autotune", type=int, default=0, metavar="SECONDS",
                   help="let fastText search hyperparameters on a validation split for this long; the final model "
                        "is then trained with the best ones found, which can take much longer (no bound)")
    p.add_argument("--quantize", action="store_true")
    p.add_argument("--note", default="", help="free text stored in the card (how the data was made)")
    args = p.parse_args(argv)
    cfg = TrainClassifierConfig(
        positive_label=args.positive_label, test_fraction=args.test_fraction, seed=args.seed, epoch=args.epoch,
        lr=args.lr, word_ngrams=args.word_ngrams, dim=args.dim, autotune_seconds=args.autotune, quantize=args.quantize,
    )
    try:
        examples = load_examples(args.input, args.positives, args.negatives, args.positive_label)
        card = train_classifier(
            examples, args.output, cfg, source=args.input or f"{args.positives} / {args.negatives}", note=args.note
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = card["test_metrics"]
    print(f"trained {args.output} ({card['bytes']:,} bytes) on {card['data']['train']} examples; "
          f"held-out {card['data']['test']}: precision {m['precision']:.3f} recall {m['recall']:.3f} "
          f"F1 {m['f1']:.3f} ROC-AUC {m['roc_auc']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
