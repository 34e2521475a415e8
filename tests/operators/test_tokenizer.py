"""Tokenizer: GPT-2 ids equal tiktoken's on real text; Python spec == compiled path (hypothesis); streaming."""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.bpe import GPT2_PATTERN, train_bpe
from operators.tokenizer import Tokenizer, gpt2_tokenizer
from tests.conftest import FIXTURES, REPO

TOK = FIXTURES / "tokenizer"
GPT2_DIR = REPO / "operators" / "resources" / "gpt2"
EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return gpt2_tokenizer(GPT2_DIR)


@pytest.fixture(scope="module")
def reference():
    """tiktoken's gpt2 encoding built offline from the same files (the data-gym loader skips the first line)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(GPT2_DIR / "merges.txt"), encoder_json_file=str(GPT2_DIR / "vocab.json")
    )
    return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    vocab, merges = train_bpe(TOK / "cs336-corpus.en", 1200, [EOT])
    return Tokenizer(vocab, merges, [EOT])


REAL_TEXTS = ["wikitext-2-valid-head.txt", "cs336-corpus.en", "cs336-tinystories_sample.txt"]


@pytest.mark.parametrize("name", REAL_TEXTS)
def test_gpt2_ids_equal_tiktoken_on_real_text(gpt2, reference, name):
    text = (TOK / name).read_text(encoding="utf-8")
    expected = reference.encode(text, allowed_special="all")
    assert gpt2.backend == "tiktoken"
    assert gpt2.encode(text) == expected
    assert gpt2.encode(text, backend="python") == expected  # the specification agrees, id for id
    assert gpt2.decode(expected) == text


def test_gpt2_known_ids(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(EOT) == [50256]
    assert gpt2.vocab_size == 50257


def test_german_and_address(gpt2, reference):
    for name in ("cs336-german.txt", "cs336-address.txt"):
        text = (FIXTURES / "text" / name).read_text(encoding="utf-8")
        assert gpt2.encode(text, backend="python") == reference.encode(text) == gpt2.encode(text)


SPECIAL_HEAVY = st.lists(
    st.one_of(st.text(max_size=40), st.sampled_from([EOT, "<|endoftext|", "<|", " \n\n ", "'s", "  x"])), max_size=12
).map("".join)


@settings(max_examples=200, deadline=None)
@given(SPECIAL_HEAVY)
def test_spec_equals_compiled_and_round_trips_gpt2(gpt2, text):
    ids = gpt2.encode(text)
    assert ids == gpt2.encode(text, backend="python")
    assert gpt2.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(SPECIAL_HEAVY)
def test_spec_equals_compiled_and_round_trips_trained(trained, text):
    assert trained.backend == "tiktoken"
    ids = trained.encode(text)
    assert ids == trained.encode(text, backend="python")
    assert trained.decode(ids) == text


def test_trained_tokenizer_on_real_text(trained):
    text = (TOK / "wikitext-2-valid-head.txt").read_text(encoding="utf-8")
    assert trained.encode(text) == trained.encode(text, backend="python")


def test_overlapping_special_tokens_longest_wins():
    vocab, merges = train_bpe(TOK / "cs336-corpus.en", 300, [EOT])
    double = EOT + EOT
    tok = Tokenizer(vocab, merges, [EOT, double])
    ids = tok.encode(f"a{double}b{EOT}c")
    assert ids.count(tok.special_ids[double]) == 1 and ids.count(tok.special_ids[EOT]) == 1
    assert tok.decode(ids) == f"a{double}b{EOT}c"


def test_unregistered_special_is_plain_text(gpt2):
    plain = Tokenizer(gpt2.vocab, gpt2.merges, [])
    ids = plain.encode(f"x{EOT}y")
    assert 50256 not in ids and plain.decode(ids) == f"x{EOT}y"
    assert len(ids) > 3


def test_surrogates_nul_and_invalid_bytes(gpt2):
    assert gpt2.decode(gpt2.encode("a\ud800b")) == "a\ufffdb"  # lone surrogate -> U+FFFD, as tiktoken
    assert gpt2.encode("a\ud800b") == gpt2.encode("a\ud800b", backend="python")
    assert gpt2.decode(gpt2.encode("nul\x00byte")) == "nul\x00byte"
    # a token holding half of a multi-byte character decodes with U+FFFD
    ids = gpt2.encode("\U0001d518")  # MATHEMATICAL FRAKTUR CAPITAL U: 4 UTF-8 bytes, several GPT-2 tokens
    assert len(ids) > 1 and gpt2.decode(ids[:1]) == "\ufffd" and gpt2.decode(ids) == "\U0001d518"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        gpt2.decode([10**6])


def test_encode_iterable_equals_encode_and_is_lazy(gpt2):
    text = (TOK / "wikitext-2-valid-head.txt").read_text(encoding="utf-8") + EOT + "tail  \n\n  end"
    lines = text.splitlines(keepends=True)
    consumed = 0

    def stream():
        nonlocal consumed
        for line in lines:
            consumed += 1
            yield line

    it = gpt2.encode_iterable(stream())
    first = [next(it) for _ in range(100)]
    assert consumed < len(lines) // 10, "encode_iterable read the whole input before yielding"
    assert first + list(it) == gpt2.encode(text)
    # chunks cut anywhere, even inside a special token or a whitespace run
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    assert list(gpt2.encode_iterable(pieces)) == gpt2.encode(text)


def test_incompatible_vocab_falls_back_to_python():
    vocab, merges = train_bpe(TOK / "cs336-corpus.en", 300, [EOT])
    vocab = dict(vocab)
    vocab[len(vocab)] = b"zzqq"  # a token no merge produces: tiktoken would use it, BPE never does
    tok = Tokenizer(vocab, merges, [EOT])
    assert tok.backend == "python" and "not produced by any merge" in tok.tiktoken_incompatibility
    assert tok.encode("zzqq") != [len(vocab) - 1]
    with pytest.raises(ValueError):
        Tokenizer(vocab, merges, [EOT], backend="tiktoken")


def test_from_files_and_dir(tmp_path):
    from operators.bpe import save_vocab_merges

    vocab, merges = train_bpe(TOK / "cs336-corpus.en", 300, [EOT])
    save_vocab_merges(vocab, merges, tmp_path / "vocab.json", tmp_path / "merges.txt")
    (tmp_path / "special_tokens.txt").write_text(EOT + "\n")
    a = Tokenizer.from_dir(tmp_path)
    b = Tokenizer(vocab, merges, [EOT])
    text = (TOK / "cs336-corpus.en").read_text()[:5000]
    assert a.encode(text) == b.encode(text)
    with pytest.raises(ValueError, match="256 single-byte"):
        Tokenizer({0: b"a"}, [], [])


@pytest.mark.shared_data
def test_gpt2_ids_equal_tiktoken_on_every_shared_lm_corpus(gpt2, reference, shared_data):
    for path in sorted((shared_data / "text" / "lm").iterdir()):
        text = path.read_text(encoding="utf-8")
        expected = reference.encode(text, allowed_special="all")
        assert gpt2.encode(text) == expected, path.name
        assert gpt2.encode(text[:200_000], backend="python") == reference.encode(text[:200_000], allowed_special="all")
