"""`sift train-tokenizer`: train a byte-level BPE on a curated run (its documents/ shards) or on text files.

Writes a tokenizer folder that `sift tokenize --tokenizer DIR` and `Tokenizer.from_dir(DIR)` load:

    vocab.json          {GPT-2 byte-rendered token: id}   (GPT-2's own format)
    merges.txt          `#version: 0.2`, then one merge per line, in the order learnt
    special_tokens.txt  one special token per line (they hold the first ids)
    tokenizer.json      what it was trained on, how long it took, the sizes

    sift train-tokenizer --input runs/demo-dedup --vocab-size 8000 --output runs/tokenizer-8k
    sift train-tokenizer --input corpus.txt --input more.txt --vocab-size 32000 --output tok32k
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from operators.bpe import save_vocab_merges, train_bpe
from operators.tokenizer import Tokenizer


def _write_corpus(inputs: list[str], sink, separator: str, max_bytes: int | None) -> tuple[int, int]:
    """Stream the texts of `inputs` into `sink` (documents joined by `separator`). Returns (documents, bytes)."""
    n_docs = n_bytes = 0
    sep = separator.encode("utf-8")
    for spec in inputs:
        p = Path(spec)
        docs_dir = p / "documents"
        if docs_dir.is_dir():
            files = sorted(docs_dir.glob("*.parquet"))
            if not files:
                raise ValueError(f"{spec}: documents/ holds no Parquet shards")
            for f in files:
                for batch in pq.ParquetFile(f).iter_batches(columns=["text"], batch_size=512):
                    for text in batch.column(0).to_pylist():
                        if not text:
                            continue
                        data = text.encode("utf-8", "replace") + sep
                        sink.write(data)
                        n_docs += 1
                        n_bytes += len(data)
                        if max_bytes and n_bytes >= max_bytes:
                            return n_docs, n_bytes
        elif p.is_file():
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    sink.write(chunk)
                    n_bytes += len(chunk)
                    if max_bytes and n_bytes >= max_bytes:
                        return n_docs, n_bytes
            sink.write(sep)
            n_docs += 1
        else:
            raise ValueError(f"input {spec!r} is neither a curate/dedup run folder nor a text file")
    return n_docs, n_bytes


def train_tokenizer(
    inputs: list[str], output: str, vocab_size: int, special_tokens: list[str], num_workers: int | None = None,
    max_bytes: int | None = None,
) -> dict:
    if not inputs:
        raise ValueError("train-tokenizer needs --input (a curate/dedup run folder or text files)")
    if not special_tokens:
        raise ValueError("at least one special token (the end-of-text separator) is needed")
    out = Path(output)
    if (out / "tokenizer.json").exists():  # a tokenizer is there: the same one is kept, another is refused
        card = json.loads((out / "tokenizer.json").read_text())
        asked = {"inputs": inputs, "requested_vocab_size": vocab_size, "special_tokens": special_tokens,
                 "max_bytes": max_bytes}
        had = {k: card.get(k, v if k == "max_bytes" else None) for k, v in asked.items()}
        if had != asked:
            diff = ", ".join(f"{k} {had[k]!r} there vs {asked[k]!r} now" for k in asked if had[k] != asked[k])
            raise ValueError(f"{out} holds a tokenizer trained with other settings ({diff}); choose another --output")
        return {**card, "skipped": True}
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", dir=out, delete=False) as tmp:
        n_docs, n_bytes = _write_corpus(inputs, tmp, special_tokens[0], max_bytes)
    try:
        if n_bytes == 0:
            raise ValueError(f"the inputs {inputs} hold no text")
        t1 = time.perf_counter()
        vocab, merges = train_bpe(tmp.name, vocab_size, special_tokens, num_workers=num_workers, errors="replace")
        t2 = time.perf_counter()
    finally:
        os.unlink(tmp.name)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".tmp-"))
    save_vocab_merges(vocab, merges, staging / "vocab.json", staging / "merges.txt")
    (staging / "special_tokens.txt").write_text("".join(s + "\n" for s in special_tokens), encoding="utf-8")
    card = {
        "inputs": inputs, "documents": n_docs, "corpus_bytes": n_bytes, "vocab_size": len(vocab),
        "requested_vocab_size": vocab_size, "max_bytes": max_bytes, "merges": len(merges), "special_tokens": special_tokens,
        "seconds_corpus": round(t1 - t0, 3), "seconds_train": round(t2 - t1, 3),
        "format": "GPT-2 vocab.json/merges.txt (bytes rendered with bytes_to_unicode); ids: specials, 256 bytes, merges",
    }
    (staging / "tokenizer.json").write_text(json.dumps(card, indent=2) + "\n")
    for name in ("vocab.json", "merges.txt", "special_tokens.txt", "tokenizer.json"):
        os.replace(staging / name, out / name)
    staging.rmdir()
    Tokenizer.from_dir(out)  # the files load back (and report which encoder backend they get)
    return card


def main(argv: list[str] | None = None, prog: str = "sift train-tokenizer") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Train a byte-level BPE tokenizer (GPT-2 pre-tokenisation).")
    p.add_argument("--input", "-i", action="append", default=[], help="curate/dedup run folder or text file (repeatable)")
    p.add_argument("--output", "-o", required=True, help="tokenizer folder to write")
    p.add_argument("--vocab-size", type=int, required=True, help="total size: special tokens + 256 bytes + merges")
    p.add_argument("--special-token", action="append", default=None, help="default: <|endoftext|>")
    p.add_argument("--num-workers", type=int, help="processes for pre-tokenisation (default: all cores)")
    p.add_argument("--max-bytes", type=int, help="train on at most this many bytes of text")
    args = p.parse_args(argv)
    try:
        card = train_tokenizer(args.input, args.output, args.vocab_size, args.special_token or ["<|endoftext|>"],
                               args.num_workers, args.max_bytes)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if card.get("skipped"):
        print(f"sift train-tokenizer: {args.output} already holds this tokenizer ({card['merges']:,} merges, vocab "
              f"{card['vocab_size']:,}); nothing to do")
        return 0
    print(f"sift train-tokenizer: {card['merges']:,} merges, vocab {card['vocab_size']:,}, from "
          f"{card['documents']:,} documents / {card['corpus_bytes'] / 1e6:.1f} MB in {card['seconds_train']:.1f}s -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
