"""Exact-duplicate hashing and line removal on real licence texts."""

from __future__ import annotations

import numpy as np

from operators.exact import SortedHashes, document_hash, line_hashes, remove_lines
from pipelines.dedup import exact_line_dedup
from tests.conftest import FIXTURES

LICENSES = FIXTURES / "dedup"


def test_document_hash_ignores_case_punctuation_and_spacing():
    a = (LICENSES / "mit--openai-prm800k.txt").read_text()
    assert document_hash(a) == document_hash(a.upper().replace(".", " . ").replace("\n", "  \n "))
    assert document_hash(a) != document_hash(a + " extra")
    assert document_hash("") == document_hash("  ... !!") == 0  # no words: never a duplicate key


def test_real_exact_copies_hash_alike():
    """The Apache-2.0 texts of trafilatura and dolma differ only in whitespace/encoding details or
    not at all; the MIT variants differ in their copyright lines and must hash apart."""
    mits = sorted(LICENSES.glob("mit--*.txt"))
    hashes = {document_hash(p.read_text()) for p in mits}
    raw = {p.read_text() for p in mits}
    assert len(hashes) <= len(raw)
    assert len(hashes) > 1


def test_remove_lines_keeps_blank_lines_and_order():
    text = "keep me\n\nduplicated line\nalso kept"
    dup = set(line_hashes("duplicated line"))
    assert remove_lines(text, dup) == ("keep me\n\nalso kept", 1)


def test_sorted_hashes_remove_the_same_lines_as_a_set():
    """SortedHashes (a sorted int64 array, what dedup workers share through Ray's object store) removes exactly the
    lines a Python set does, on the real licence texts, including lines repeated inside one text."""
    texts = [p.read_text() for p in sorted(LICENSES.glob("*.txt"))]
    hashes = [h for t in texts for h in line_hashes(t)]
    dup = {h for h in hashes if hashes.count(h) > 1}
    packed = SortedHashes(np.array(sorted(dup) + sorted(dup)[:3], np.int64))  # unsorted, with repeats
    assert len(packed) == len(dup) > 10
    assert all(remove_lines(t, packed) == remove_lines(t, dup) for t in texts)
    assert SortedHashes(np.array([], np.int64)).contains_many(np.array([1, 2])).tolist() == [False, False]
    assert min(dup) in packed and (max(dup) + 1 not in packed or max(dup) + 1 in dup)


def test_exact_line_dedup_on_licences(tmp_path):
    """Exactly the lines that occur more than once across the real MIT licences (the permission
    grant, the warranty disclaimer, in the common wrapping) are removed from every file; every
    line that occurs once (each project's copyright line, odd wrappings) survives."""
    inputs = sorted(LICENSES.glob("mit--*.txt"))
    stats = exact_line_dedup(inputs, tmp_path)
    assert stats["files"] == len(inputs) and stats["lines_removed"] > 5 * len(inputs)
    occurrences: dict[str, int] = {}
    for path in inputs:
        for line in path.read_text().splitlines():
            if line.strip():
                occurrences[line.strip()] = occurrences.get(line.strip(), 0) + 1
    for path in inputs:
        out = {line.strip() for line in (tmp_path / path.name).read_text().splitlines() if line.strip()}
        for line in path.read_text().splitlines():
            if line.strip():
                assert (line.strip() in out) == (occurrences[line.strip()] == 1), line
