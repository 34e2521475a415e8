"""BPE training: exact reference merges, special tokens, tie-breaking, parallel pre-tokenisation, bad input."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import bpe
from operators.bpe import (
    chunk_boundaries,
    count_file_pretokens,
    count_pretokens,
    learn_merges,
    load_vocab_merges,
    save_vocab_merges,
    train_bpe,
)
from tests.conftest import FIXTURES

TOK = FIXTURES / "tokenizer"
EOT = "<|endoftext|>"


def test_train_bpe_matches_cs336_reference_exactly_and_fast():
    start = time.perf_counter()
    vocab, merges = train_bpe(TOK / "cs336-corpus.en", 500, [EOT])
    elapsed = time.perf_counter() - start
    ref_vocab, ref_merges = load_vocab_merges(
        TOK / "train-bpe-reference-vocab.json", TOK / "train-bpe-reference-merges.txt", [EOT]
    )
    assert merges == ref_merges  # same merges, same order
    assert vocab == ref_vocab  # same ids too: specials, bytes in GPT-2 order, merges
    assert len(vocab) == 500
    # the target is < 1 s on one core; report rather than assert a timing
    print(f"cs336-corpus.en -> vocab 500 in {elapsed:.3f}s")


def test_special_tokens_are_never_merged_across():
    vocab, merges = train_bpe(TOK / "cs336-tinystories_sample.txt", 1000, [EOT])
    text = (TOK / "cs336-tinystories_sample.txt").read_text()
    assert text.count(EOT) >= 5
    assert vocab[0] == EOT.encode()
    others = [b for i, b in vocab.items() if i != 0]
    assert not any(b"<|" in b for b in others), "a merge crossed the special token"


def test_ties_break_by_lexicographically_greater_pair():
    # "ab" and "cd" are equally frequent: (c, d) > (a, b) so it is merged first; then "ab"
    merges = learn_merges({b"ab": 3, b"cd": 3, b"xy": 1}, 2)
    assert merges == [(b"c", b"d"), (b"a", b"b")]
    # length decides between a prefix and its extension: (b"ab", b"c") > (b"a", b"bc")
    merges = learn_merges({b"abc": 1, b"ab": 5, b"bc": 5}, 3)
    assert merges[:2] == [(b"b", b"c"), (b"a", b"b")]


def test_incremental_counts_equal_naive_recount():
    """The incremental algorithm must learn exactly what recounting every pair after each merge learns."""
    text = (TOK / "cs336-corpus.en").read_text()[:20000]
    counts = {w.encode(): c for w, c in count_pretokens(text, []).items()}

    def naive(word_counts, n):
        words = {tuple(bytes([x]) for x in w): c for w, c in word_counts.items()}
        out = []
        for _ in range(n):
            pairs = Counter()
            for w, c in words.items():
                for p in zip(w, w[1:]):
                    pairs[p] += c
            if not pairs:
                break
            best = max(pairs, key=lambda p: (pairs[p], p))
            out.append(best)
            new = {}
            for w, c in words.items():
                r, i = [], 0
                while i < len(w):
                    if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                        r.append(w[i] + w[i + 1])
                        i += 2
                    else:
                        r.append(w[i])
                        i += 1
                new[tuple(r)] = new.get(tuple(r), 0) + c
            words = new
        return out

    assert learn_merges(counts, 120) == naive(counts, 120)


def test_parallel_pretokenisation_equals_serial(tmp_path, monkeypatch):
    text = (TOK / "wikitext-2-valid-head.txt").read_text()
    path = tmp_path / "corpus.txt"
    path.write_text(text.replace("\n \n", f"\n{EOT}\n"))
    serial = count_file_pretokens(path, [EOT], num_workers=1)
    monkeypatch.setattr(bpe, "PARALLEL_MIN_BYTES", 0)
    parallel = count_file_pretokens(path, [EOT], num_workers=2)
    assert parallel == serial
    # and without special tokens the cuts fall on whitespace boundaries
    assert count_file_pretokens(path, [], num_workers=2) == count_file_pretokens(path, [], num_workers=1)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(list("ab c\n\t'1.é€\u00a0") + [EOT]), max_size=300).map("".join), st.integers(2, 9))
def test_chunk_boundaries_never_change_pretokens(text, n):
    data = text.encode()
    cuts = chunk_boundaries(data, n, [EOT])
    assert cuts[0] == 0 and cuts[-1] == len(data)
    assert all(a < b for a, b in zip(cuts, cuts[1:])) or not data
    pieces = Counter()
    for a, b in zip(cuts, cuts[1:]):
        pieces.update(count_pretokens(data[a:b].decode(), [EOT]))
    assert pieces == count_pretokens(text, [EOT])


def test_bad_input(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    vocab, merges = train_bpe(empty, 300, [EOT])
    assert merges == [] and len(vocab) == 257
    with pytest.raises(ValueError, match="smaller than 256"):
        train_bpe(empty, 256, [EOT])
    with pytest.raises(ValueError, match="duplicate"):
        train_bpe(empty, 300, [EOT, EOT])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello world \xff\xfe and more\n")
    with pytest.raises(ValueError, match="not valid UTF-8 at byte 12"):
        train_bpe(bad, 300)
    vocab, merges = train_bpe(bad, 300, errors="replace")
    assert len(vocab) == 256 + len(merges) < 300  # the corpus runs out of pairs before 300
    assert any(b"\xef\xbf\xbd" in a + b for a, b in merges)  # U+FFFD took the invalid bytes' place
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"a\x00\x00 a\x00\x00 a\x00\x00")  # NUL is punctuation to the GPT-2 regex: "\x00\x00" x3
    _, merges = train_bpe(nul, 257)
    assert merges == [(b"\x00", b"\x00")]


def test_save_load_round_trip(tmp_path):
    vocab, merges = train_bpe(TOK / "cs336-corpus.en", 400, [EOT])
    save_vocab_merges(vocab, merges, tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert (tmp_path / "merges.txt").read_text().startswith("#version")
    assert load_vocab_merges(tmp_path / "vocab.json", tmp_path / "merges.txt", [EOT]) == (vocab, merges)
