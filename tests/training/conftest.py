"""Fixtures of the training tests: real text tokenized by the pipeline (shared by pretraining and sweep tests)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.bpe import save_vocab_merges, train_bpe
from pipelines import tokenize
from tests.conftest import FIXTURES

EOT = "<|endoftext|>"


@pytest.fixture(scope="session")
def shards(ray_local, tmp_path_factory):
    """Real text (WikiText-2 valid head, TinyStories, cs336 corpus) -> documents run -> sift tokenize with a
    1,000-token BPE trained on it."""
    base = tmp_path_factory.mktemp("pt")
    texts = [p for p in (FIXTURES / "tokenizer" / "wikitext-2-valid-head.txt").read_text().split(" \n = ") if p.strip()]
    texts += (FIXTURES / "tokenizer" / "cs336-tinystories_sample.txt").read_text().split(EOT)
    texts = [t for t in texts if t.strip()]
    (base / "docs" / "documents").mkdir(parents=True)
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts}), base / "docs" / "documents" / "a.parquet")
    (base / "docs" / "documents" / "_SUCCESS").write_text("")
    corpus = base / "corpus.txt"
    corpus.write_text(EOT.join(texts))
    vocab, merges = train_bpe(corpus, 1000, [EOT])
    (base / "tok").mkdir()
    save_vocab_merges(vocab, merges, base / "tok" / "vocab.json", base / "tok" / "merges.txt")
    (base / "tok" / "special_tokens.txt").write_text(EOT + "\n")
    tokenize.run(tokenize.TokenizeConfig(input=str(base / "docs"), output=str(base / "tokens"), tokenizer=str(base / "tok"),
                                         shard_tokens=20_000, validation_fraction=0.1))
    return base / "tokens"
