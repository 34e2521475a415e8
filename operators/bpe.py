"""Byte-level BPE training (GPT-2 pre-tokenisation), as in Sennrich et al. 2016 / Radford et al. 2019.

`train_bpe(input_path, vocab_size, special_tokens) -> (vocab, merges)`:

- the text is split on the special tokens first (no merge ever crosses one), then pre-tokenised with the
  GPT-2 regex; pre-tokens are counted (in parallel processes over chunks of the file whose boundaries fall
  on a special token, or on a whitespace boundary the regex cannot cross);
- merges repeatedly take the most frequent adjacent pair, ties broken by the lexicographically greater pair
  of byte strings; after a merge only the words that contain the merged pair are rewritten and only the pair
  counts that actually change are updated (a max-heap with lazy invalidation picks the next pair);
- ids: special tokens first, then the 256 single bytes in GPT-2's `bytes_to_unicode` order, then merges in
  the order learnt. `vocab_size` counts all three, so there are `vocab_size - 256 - len(special_tokens)`
  merges (fewer if the corpus runs out of pairs).

The saved format (`save_vocab_merges` / `load_vocab_merges`) is GPT-2's own: `vocab.json` maps the
printable-unicode rendering of each token's bytes to its id and `merges.txt` has one merge per line, both
halves rendered the same way, so GPT-2's files load with the same code.
"""

from __future__ import annotations

import heapq
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import regex

# GPT-2's pre-tokenisation pattern (tiktoken's spelling of it).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKENIZE = regex.compile(GPT2_PATTERN)

# Files smaller than this are pre-tokenised in-process: a process pool costs more than it saves.
PARALLEL_MIN_BYTES = 4 << 20


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (printable Latin-1 bytes map to themselves)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def special_token_splitter(special_tokens: list[str]) -> regex.Pattern | None:
    """A regex that splits on the special tokens (capturing them), longest first so overlaps pick the longest."""
    if not special_tokens:
        return None
    alternatives = sorted(set(special_tokens), key=lambda s: (-len(s), s))
    return regex.compile("(" + "|".join(regex.escape(s) for s in alternatives) + ")")


def _check_args(vocab_size: int, special_tokens: list[str]) -> None:
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"duplicate special tokens: {special_tokens}")
    if any(not s for s in special_tokens):
        raise ValueError("a special token must be a non-empty string")
    minimum = 256 + len(special_tokens)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than 256 byte tokens + {len(special_tokens)} special tokens = {minimum}"
        )


# ---------------------------------------------------------------------------------------------------------
# Pre-tokenisation


def count_pretokens(text: str, special_tokens: list[str]) -> Counter[str]:
    """Counts of GPT-2 pre-tokens in `text`, never crossing a special token (special tokens are not counted)."""
    splitter = special_token_splitter(special_tokens)
    segments = splitter.split(text)[::2] if splitter is not None else [text]
    counts: Counter[str] = Counter()
    findall = PRETOKENIZE.findall
    for segment in segments:
        if segment:
            counts.update(findall(segment))
    return counts


def _is_safe_cut(data: bytes, p: int) -> bool:
    """True when the GPT-2 regex cannot match across byte offset p: an ASCII non-space before, ASCII space after.

    No pattern continues a non-whitespace match into whitespace, and a match starting at whitespace after a
    completed token is what the regex would find scanning the whole text, so both halves tokenise as the whole.
    """
    return 0x21 <= data[p - 1] <= 0x7E and data[p] in b" \n\t"


def chunk_boundaries(data: bytes, num_chunks: int, special_tokens: list[str]) -> list[int]:
    """Byte offsets [0, ..., len(data)] cutting `data` into about `num_chunks` pieces that pre-tokenise independently.

    Each cut is moved forward to the next occurrence of a special token (so it falls on one), or, with no
    special token nearby, to the next whitespace boundary the pre-tokeniser cannot cross.
    """
    size = len(data)
    if num_chunks <= 1 or size == 0:
        return [0, size]
    specials = [s.encode("utf-8") for s in special_tokens]
    cuts = [0]
    for k in range(1, num_chunks):
        p = max(cuts[-1], size * k // num_chunks)
        window_end = min(size, p + (1 << 20))
        found = [i for i in (data.find(s, p, window_end) for s in specials) if i >= 0]
        if found:
            p = min(found)
        else:
            while p < size and not (p > 0 and _is_safe_cut(data, p)):
                p += 1
        if p > cuts[-1] and p < size:
            cuts.append(p)
    cuts.append(size)
    return cuts


def _count_chunk(args: tuple[str, int, int, list[str], str]) -> Counter[str]:
    path, start, end, special_tokens, errors = args
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    return count_pretokens(_decode(data, errors, path, start), special_tokens)


def _decode(data: bytes, errors: str, path: str, offset: int = 0) -> str:
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not valid UTF-8 at byte {offset + e.start} ({e.reason}); pass errors='replace' to substitute U+FFFD"
        ) from None


def count_file_pretokens(
    input_path: str | os.PathLike, special_tokens: list[str], num_workers: int | None = None, errors: str = "strict"
) -> Counter[str]:
    path = os.fspath(input_path)
    size = os.path.getsize(path)
    workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or size < PARALLEL_MIN_BYTES:
        with open(path, "rb") as f:
            return count_pretokens(_decode(f.read(), errors, path), special_tokens)
    with open(path, "rb") as f:
        data = f.read()
    cuts = chunk_boundaries(data, workers * 4, special_tokens)
    del data
    jobs = [(path, a, b, list(special_tokens), errors) for a, b in zip(cuts, cuts[1:])]
    total: Counter[str] = Counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for counts in pool.map(_count_chunk, jobs):
            total.update(counts)
    return total


# ---------------------------------------------------------------------------------------------------------
# Merges


_TERMINATOR = b"\x01\x00"


def _desc_key(token: bytes) -> bytes:
    """A byte string whose ascending order is the *descending* lexicographic order of tokens.

    Each byte x becomes (0, 255 - x) and the token ends with (1, 0), which sorts after every byte, so a
    token sorts after its own extensions, as descending order needs. Concatenating two keys orders
    pairs (A, B) descending, A first; heapq then pops the greatest pair among equal counts, comparing in C.
    """
    return bytes(v for x in token for v in (0, 255 - x)) + _TERMINATOR


def learn_merges(word_counts: dict[bytes, int], num_merges: int) -> list[tuple[bytes, bytes]]:
    """The BPE merges learnt from pre-token byte strings and their counts (ties: greater byte pair wins)."""
    # Internal token ids: 0..255 are bytes, 256+i is merge i. A word is a list of internal ids.
    token_bytes: list[bytes] = [bytes([i]) for i in range(256)]
    words: list[list[int]] = []
    counts: list[int] = []
    for word, count in word_counts.items():
        if len(word) >= 2:
            words.append(list(word))
            counts.append(count)

    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for wi, w in enumerate(words):
        c = counts[wi]
        for p in zip(w, w[1:]):
            pair_counts[p] = pair_counts.get(p, 0) + c
            s = where.get(p)
            if s is None:
                where[p] = {wi}
            else:
                s.add(wi)

    desc = [_desc_key(t) for t in token_bytes]
    heap = [(-c, desc[a] + desc[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[bytes, bytes]] = []
    while len(merges) < num_merges and heap:
        neg, _, a, b = heapq.heappop(heap)
        if pair_counts.get((a, b), 0) != -neg or neg == 0:
            continue  # stale entry: this pair's count changed after it was pushed
        new_id = len(token_bytes)
        token_bytes.append(token_bytes[a] + token_bytes[b])
        desc.append(_desc_key(token_bytes[-1]))
        merges.append((token_bytes[a], token_bytes[b]))

        # Only pairs touching a merged position change: old pairs (w[j], w[j+1]) for j in {i-1, i, i+1} around
        # each merge at i, new pairs (out[k-1], out[k]) and (out[k], out[k+1]) around each new token at k. Every
        # other pair appears unchanged in both words, so it is not touched at all.
        delta: dict[tuple[int, int], int] = {}
        get = delta.get
        for wi in where.pop((a, b), ()):
            w = words[wi]
            n = len(w)
            k = w.count(a)  # C-level scans settle most words without a Python loop
            if k == 0:
                continue  # the pair left this word in an earlier rewrite (its `where` entry is stale)
            if k == 1:
                i = w.index(a)
                positions = [i] if i + 1 < n and w[i + 1] == b else []
            elif a == b:  # non-overlapping, left to right
                positions = []
                i = 0
                while i < n - 1:
                    if w[i] == a and w[i + 1] == a:
                        positions.append(i)
                        i += 2
                    else:
                        i += 1
            else:
                positions = [i for i in range(n - 1) if w[i] == a and w[i + 1] == b]
            if not positions:
                continue  # the pair left this word in an earlier rewrite (its `where` entry is stale)
            c = counts[wi]
            if len(positions) == 1:  # the common case, without sets
                i = positions[0]
                out = w[:i]
                out.append(new_id)
                out += w[i + 2 :]
                if i > 0:
                    left = w[i - 1]
                    p = (left, a)
                    delta[p] = get(p, 0) - c
                    p = (left, new_id)
                    delta[p] = get(p, 0) + c
                    s = where.get(p)
                    if s is None:
                        where[p] = {wi}
                    else:
                        s.add(wi)
                if i + 2 < n:
                    right = w[i + 2]
                    p = (b, right)
                    delta[p] = get(p, 0) - c
                    p = (new_id, right)
                    delta[p] = get(p, 0) + c
                    s = where.get(p)
                    if s is None:
                        where[p] = {wi}
                    else:
                        s.add(wi)
                words[wi] = out
                continue
            old_touched = set()
            for i in positions:
                if i > 0:
                    old_touched.add(i - 1)
                old_touched.add(i)
                if i + 2 < n:
                    old_touched.add(i + 1)
            for j in old_touched:
                p = (w[j], w[j + 1])
                delta[p] = get(p, 0) - c
            out: list[int] = []
            new_positions: list[int] = []
            prev = 0
            for i in positions:
                out.extend(w[prev:i])
                new_positions.append(len(out))
                out.append(new_id)
                prev = i + 2
            out.extend(w[prev:])
            m = len(out)
            new_touched = set()
            for k in new_positions:
                if k > 0:
                    new_touched.add(k - 1)
                if k + 1 < m:
                    new_touched.add(k)
            for j in new_touched:
                p = (out[j], out[j + 1])
                delta[p] = get(p, 0) + c
                s = where.get(p)
                if s is None:
                    where[p] = {wi}
                else:
                    s.add(wi)
            words[wi] = out
        pair_counts.pop((a, b), None)
        delta.pop((a, b), None)
        for p, d in delta.items():
            if d == 0:
                continue
            c = pair_counts.get(p, 0) + d
            if c > 0:
                pair_counts[p] = c
                heapq.heappush(heap, (-c, desc[p[0]] + desc[p[1]], p[0], p[1]))
            else:
                pair_counts.pop(p, None)
    return merges


def build_vocab(merges: list[tuple[bytes, bytes]], special_tokens: list[str]) -> dict[int, bytes]:
    """ids: special tokens, then the 256 bytes in `bytes_to_unicode` order, then one token per merge."""
    vocab: dict[int, bytes] = {}
    for s in special_tokens:
        vocab[len(vocab)] = s.encode("utf-8")
    for b in bytes_to_unicode():
        vocab[len(vocab)] = bytes([b])
    for a, b in merges:
        vocab[len(vocab)] = a + b
    return vocab


def train_bpe_from_counts(
    word_counts: dict[str, int] | Counter[str], vocab_size: int, special_tokens: list[str] | None = None
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    special_tokens = list(special_tokens or [])
    _check_args(vocab_size, special_tokens)
    byte_counts: dict[bytes, int] = {}
    for word, c in word_counts.items():
        key = word.encode("utf-8", errors="surrogatepass")
        byte_counts[key] = byte_counts.get(key, 0) + c
    merges = learn_merges(byte_counts, vocab_size - 256 - len(special_tokens))
    return build_vocab(merges, special_tokens), merges


def train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: list[str] | None = None,
    *,
    num_workers: int | None = None,
    errors: str = "strict",
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train a byte-level BPE on a UTF-8 text file. Returns (vocab id -> bytes, merges in order).

    Raises ValueError for vocab_size < 256 + len(special_tokens) and for invalid UTF-8 (unless
    `errors="replace"`). An empty corpus gives the 256 bytes and the special tokens, with no merges.
    """
    special_tokens = list(special_tokens or [])
    _check_args(vocab_size, special_tokens)
    counts = count_file_pretokens(input_path, special_tokens, num_workers=num_workers, errors=errors)
    return train_bpe_from_counts(counts, vocab_size, special_tokens)


# ---------------------------------------------------------------------------------------------------------
# GPT-2 file format


def save_vocab_merges(
    vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], vocab_path: str | os.PathLike, merges_path: str | os.PathLike
) -> None:
    """Write GPT-2-format `vocab.json` ({rendered token: id}) and `merges.txt` (a `#version` line, then one merge
    per line). Special tokens are stored as their own text, like GPT-2's `<|endoftext|>`."""
    enc = bytes_to_unicode()

    def render(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    rendered: dict[str, int] = {}
    for i, b in sorted(vocab.items()):
        key = render(b)
        if key in rendered:
            raise ValueError(f"token {b!r} appears twice in the vocabulary (ids {rendered[key]} and {i})")
        rendered[key] = i
    Path(vocab_path).write_text(json.dumps(rendered, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{render(a)} {render(b)}" for a, b in merges]
    Path(merges_path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_vocab_merges(
    vocab_path: str | os.PathLike, merges_path: str | os.PathLike, special_tokens: list[str] | None = None
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Read GPT-2-format vocab/merges files (GPT-2's own, or `save_vocab_merges`'s).

    Entries named in `special_tokens` are read as their literal UTF-8 text, everything else through the
    inverse `bytes_to_unicode` map."""
    dec = {c: b for b, c in bytes_to_unicode().items()}
    specials = set(special_tokens or [])

    def unrender(s: str) -> bytes:
        try:
            return bytes(dec[ch] for ch in s)
        except KeyError as e:
            raise ValueError(f"{vocab_path}: {s!r} is not a GPT-2 byte-rendered token (unknown char {e})") from None

    raw = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
    vocab: dict[int, bytes] = {}
    for s, i in raw.items():
        vocab[int(i)] = s.encode("utf-8") if s in specials else unrender(s)
    merges: list[tuple[bytes, bytes]] = []
    for n, line in enumerate(Path(merges_path).read_text(encoding="utf-8").split("\n")):
        line = line.rstrip("\r")
        if not line or (n == 0 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{merges_path}:{n + 1}: expected two space-separated tokens, got {line!r}")
        merges.append((unrender(parts[0]), unrender(parts[1])))
    return vocab, merges
