"""MinHash signatures: exactly datasketch's on real text, defined for hostile input, and the
Jaccard estimate tracks the true shingle Jaccard on real near-duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.extract import extract_text
from operators.minhash import (
    MinHashConfig,
    minhash_signature,
    normalize_text,
    permutations,
    shingle_hash32,
    normalize_bytes,
    shingle_hashes,
    shingle_sets,
    shingles,
    signatures,
)
from operators.warc import read_warc_rows
from tests.conftest import FIXTURES, SAMPLE


@pytest.fixture(scope="module")
def page_texts() -> list[str]:
    return [t for p in sorted(SAMPLE.glob("*.warc.gz")) for r in read_warc_rows(str(p))[0] if (t := extract_text(r.html))]


def _datasketch(text: str, cfg: MinHashConfig) -> np.ndarray:
    m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=shingle_hash32)
    m.update_batch(shingles(normalize_text(text), cfg.ngram))
    return m.hashvalues


BACKENDS = ["numpy", "numba"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", [MinHashConfig(), MinHashConfig(num_perm=64, ngram=3, seed=42)])
def test_signatures_equal_datasketch_on_real_pages(page_texts, cfg, backend):
    """Every real page of the sample (German, English, Chinese, Russian ...): bit-identical to
    datasketch.MinHash with the same seed, permutations and hash function, from both backends."""
    sigs, has = signatures(page_texts, cfg, backend=backend)
    assert has.all()
    for text, sig in zip(page_texts, sigs):
        assert np.array_equal(sig, _datasketch(text, cfg))


def test_permutations_are_datasketchs():
    assert np.array_equal(np.array(permutations(128, 1)), MinHash(num_perm=128, seed=1).permutations)


def test_normalisation():
    assert normalize_text("Café  déjà-vu,\nNAÏVE façade!") == "cafe dejavu naive facade"
    assert normalize_text("snake_case and ... ---") == "snakecase and"
    assert normalize_text("Привет, мир! 你好，世界") == "привет мир 你好世界"


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_vectorised_shingle_hashes_equal_the_reference(text):
    normalized = normalize_text(text)
    assert list(shingle_hashes(normalized, 5)) == [shingle_hash32(s) for s in shingles(normalized, 5)]


@pytest.mark.parametrize("text, has_words", [
    ("", False), ("   \n", False), ("!!! ... ???", False), ("one", True), ("two words", True), ("x" * 100_000, True),
])
def test_defined_for_hostile_input(text, has_words):
    sig = minhash_signature(text)
    assert (sig is not None) == has_words
    if sig is not None:
        assert np.array_equal(sig, _datasketch(text, MinHashConfig()))


def test_empty_documents_are_flagged_not_matched():
    sigs, has = signatures(["", "...", "a real sentence with enough words in it"])
    assert has.tolist() == [False, False, True]


def _jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = set(shingles(normalize_text(a), n)), set(shingles(normalize_text(b), n))
    return len(sa & sb) / len(sa | sb)


def test_estimate_tracks_true_jaccard_on_real_licence_variants():
    """MIT licence texts that differ only in their copyright line (real near duplicates)."""
    licences = sorted((FIXTURES / "dedup").glob("mit--*.txt"))
    assert len(licences) >= 4
    texts = [p.read_text() for p in licences]
    sigs, _ = signatures(texts, MinHashConfig(num_perm=256))
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            estimate = float(np.mean(sigs[i] == sigs[j]))
            assert abs(estimate - _jaccard(texts[i], texts[j])) < 0.15


def test_no_process_dependent_hashing(tmp_path: Path):
    """Signatures are the same in every process (no use of Python's randomised str hash)."""
    import subprocess
    import sys

    code = "from operators.minhash import minhash_signature as m; print(m('the same page text in two processes').tolist())"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": s, "PATH": ""}, cwd=FIXTURES.parents[1]).stdout for s in ("1", "2")}
    assert len(outs) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_normalisation_properties(text):
    """Valid UTF-8 out, single spaces only between words, no punctuation left, idempotent."""
    out = normalize_text(text)
    assert "  " not in out and out == out.strip()
    assert not any(ch in out for ch in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u2014\u201c\u00bf\u3002")
    assert normalize_text(out) == out


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=150, deadline=None)
@given(texts=st.lists(st.text(max_size=120), max_size=6))
def test_batch_equals_one_document_at_a_time(texts, backend):
    """The batch path (documents joined, one pass) gives each document exactly its own signature
    (against the per-document reference: normalize_bytes + shingle_hash32 + datasketch)."""
    cfg = MinHashConfig(num_perm=16, ngram=3)
    sigs, has = signatures(texts, cfg, batch_bytes=200, chunk_shingles=7, backend=backend)
    for text, sig, flag in zip(texts, sigs, has):
        sh = shingles(normalize_text(text), cfg.ngram)
        assert flag == bool(sh)
        if sh:
            m = MinHash(num_perm=16, seed=cfg.seed, hashfunc=shingle_hash32)
            m.update_batch(sh)
            assert np.array_equal(sig, m.hashvalues)


@pytest.mark.parametrize("backend", BACKENDS)
def test_greek_final_sigma_and_nul_bytes_in_a_batch(backend):
    texts = ["ΟΔΟΣ ΚΑΙ ΣΟΦΙΑ ΟΔΟΣ ΚΑΙ", "a\x00b c d e f", "ΣΑΣ"]
    sigs, _ = signatures(texts, MinHashConfig(ngram=2), backend=backend)
    for text, sig in zip(texts, sigs):
        assert np.array_equal(sig, _datasketch(text, MinHashConfig(ngram=2)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=200) | st.sampled_from(
    ["\u00a0", "\u2014", "\u3000", "caf\u00e9", "\u00bf", "\u2028x y", "\uff01", "e\u0301"]), max_size=8),
    st.integers(1, 6))
def test_compiled_kernel_equals_numpy(texts, ngram):
    """The numba kernel and the numpy path agree on arbitrary text, including every multi-byte rule."""
    cfg = MinHashConfig(num_perm=32, ngram=ngram)
    a, ha = signatures(texts, cfg, batch_bytes=150, backend="numba")
    b, hb = signatures(texts, cfg, batch_bytes=150, backend="numpy")
    assert np.array_equal(a, b) and np.array_equal(ha, hb)


def test_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        signatures(["x"], backend="gpu")


def _reference_sets(texts: list[str], ngram: int) -> list[np.ndarray]:
    return [np.unique(shingle_hashes(normalize_bytes(t), ngram)) for t in texts]


def _split(values: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    assert offsets[0] == 0 and offsets[-1] == len(values) and np.all(np.diff(offsets) >= 0)
    return [values[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


@pytest.mark.parametrize("backend", BACKENDS)
def test_shingle_sets_equal_one_document_at_a_time_on_real_pages(page_texts, backend):
    """The batched shingle sets (what dedup's pair verification compares) are each page's own sorted unique set."""
    values, offsets = shingle_sets(page_texts, 5, batch_bytes=50_000, backend=backend)
    assert values.dtype == np.uint32 and len(offsets) == len(page_texts) + 1
    for got, want in zip(_split(values, offsets), _reference_sets(page_texts, 5)):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=150) | st.sampled_from(["", " ", "a", "ΟΔΟΣ ΚΑΙ ΣΟΦΙΑ", "a\x00b c d e",
                                                               "e\u0301 x y"]), max_size=8),
       ngram=st.integers(1, 6), batch_bytes=st.sampled_from([40, 1 << 20]))
def test_shingle_sets_property(texts, ngram, batch_bytes, backend):
    values, offsets = shingle_sets(texts, ngram, batch_bytes=batch_bytes, backend=backend)
    got = _split(values, offsets)
    assert len(got) == len(texts)
    for g, want in zip(got, _reference_sets(texts, ngram)):
        assert np.array_equal(g, want)


def test_unique_per_doc_sorts_each_document_and_refuses_ungrouped_input():
    from operators import _minhash_kernel as kernel

    if not kernel.available():
        pytest.skip("numba is not installed")
    values = np.array([9, 3, 9, 1, 7, 7, 2], np.uint32)
    docs = np.array([0, 0, 0, 0, 2, 2, 3], np.int64)  # document 1 has no shingles
    out, counts = kernel.unique_per_doc(values, docs, 5)
    assert out.tolist() == [1, 3, 9, 7, 2] and counts.tolist() == [3, 0, 1, 1, 0]
    assert kernel.unique_per_doc(values, np.array([0, 0, 1, 1, 0, 2, 2], np.int64), 3) is None
    empty, none = kernel.unique_per_doc(np.zeros(0, np.uint32), np.zeros(0, np.int64), 2)
    assert len(empty) == 0 and none.tolist() == [0, 0]
