"""Byte-level BPE tokenizer: a pure-Python specification and a compiled (tiktoken) backend that gives the same ids.

`Tokenizer(vocab, merges, special_tokens)`:

- `encode(text)`: special tokens are split out first (overlapping specials: the longest match wins), each
  remaining segment is pre-tokenised with the GPT-2 regex and every pre-token is BPE-merged by applying the
  lowest-ranked merge present, repeatedly. A special-token-looking string that is not registered is ordinary
  text. Lone surrogates (not encodable as UTF-8) are replaced by U+FFFD before encoding, as tiktoken does.
- `decode(ids)`: the concatenated token bytes decoded as UTF-8 with U+FFFD for invalid sequences.
- `encode_iterable(chunks)`: ids for a stream of strings (e.g. a file's lines) with bounded memory; the
  result equals `encode("".join(chunks))` because text is only encoded up to a point no pre-token or special
  token can cross.

The fast path builds a `tiktoken.Encoding` whose mergeable ranks are the token ids. tiktoken merges the adjacent
pair whose *concatenation* has the lowest rank, which is the same as merge-order BPE only when every token's
bytes, BPE-merged with the tokens ranked below it, split into exactly the merge that created it (the
"recover the merges" property minbpe relies on), when merge ids increase in merge order, and when the vocabulary
has no token outside bytes, merges and specials. The constructor checks this; vocabularies that fail it encode
through the Python path (`tokenizer.backend` says which is used).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path


from operators.bpe import GPT2_PATTERN, PRETOKENIZE, load_vocab_merges, special_token_splitter

_CACHE_LIMIT = 200_000


def _bpe_by_concat_rank(word: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    """tiktoken's algorithm on one word: merge the adjacent pair whose concatenation has the lowest rank < max_rank."""
    parts = [word[i : i + 1] for i in range(len(word))]
    while len(parts) > 1:
        best_i, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best_i, best_rank = i, r
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


class Tokenizer:
    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[bytes, bytes]],
        special_tokens: list[str] | None = None,
        *,
        backend: str = "auto",
    ):
        if backend not in ("auto", "python", "tiktoken"):
            raise ValueError(f"backend must be auto, python or tiktoken, not {backend!r}")
        self.vocab: dict[int, bytes] = dict(vocab)
        self.merges: list[tuple[bytes, bytes]] = list(merges)
        self.special_tokens: list[str] = list(dict.fromkeys(special_tokens or []))
        self._id_of: dict[bytes, int] = {}
        for i, b in sorted(self.vocab.items()):
            self._id_of.setdefault(b, i)
        # special tokens missing from the vocabulary are appended
        self.special_ids: dict[str, int] = {}
        next_id = max(self.vocab, default=-1) + 1
        for s in self.special_tokens:
            b = s.encode("utf-8")
            ids = [i for i, v in self.vocab.items() if v == b]
            if not ids:
                self.vocab[next_id] = b
                ids = [next_id]
                next_id += 1
            self.special_ids[s] = min(ids)
        missing = [bytes([x]) for x in range(256) if bytes([x]) not in self._id_of]
        if missing:
            raise ValueError(f"vocabulary lacks {len(missing)} of the 256 single-byte tokens (e.g. {missing[0]!r})")
        self._merge_rank: dict[tuple[bytes, bytes], int] = {}
        for r, (a, b) in enumerate(self.merges):
            if a + b not in self._id_of:
                raise ValueError(f"merge {r} ({a!r}, {b!r}) produces a token that is not in the vocabulary")
            self._merge_rank.setdefault((a, b), r)
        self._splitter = special_token_splitter(self.special_tokens)
        self._max_special = max((len(s) for s in self.special_tokens), default=0)
        self._cache: dict[str, tuple[int, ...]] = {}
        self._tiktoken = None
        self.backend = "python"
        if backend != "python":
            reason = self._tiktoken_incompatibility()
            if reason is None:
                self._tiktoken = self._build_tiktoken()
                self.backend = "tiktoken"
            elif backend == "tiktoken":
                raise ValueError(f"this vocabulary cannot be encoded exactly by tiktoken: {reason}")
            self.tiktoken_incompatibility = reason
        self.vocab_size = max(self.vocab) + 1
        self.eot_id = self.special_ids.get("<|endoftext|>")

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_files(
        cls, vocab_path: str | os.PathLike, merges_path: str | os.PathLike, special_tokens: list[str] | None = None, **kw
    ) -> "Tokenizer":
        """Load GPT-2-format files (GPT-2's own `vocab.json`/`merges.txt`, or those `sift train-tokenizer` writes)."""
        vocab, merges = load_vocab_merges(vocab_path, merges_path, special_tokens)
        return cls(vocab, merges, special_tokens, **kw)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, **kw) -> "Tokenizer":
        """Load a tokenizer directory: `vocab.json`, `merges.txt` and `special_tokens.txt` (one per line, optional)."""
        d = Path(directory)
        specials_file = d / "special_tokens.txt"
        specials = [s for s in specials_file.read_text(encoding="utf-8").split("\n") if s] if specials_file.exists() else []
        return cls.from_files(d / "vocab.json", d / "merges.txt", specials, **kw)

    # ------------------------------------------------------------------------------------------------
    def _tiktoken_incompatibility(self) -> str | None:
        special_bytes = {s.encode("utf-8") for s in self.special_tokens}
        ranks: dict[bytes, int] = {}
        for i, b in self.vocab.items():
            if i in self.special_ids.values():
                continue
            if b in ranks:
                return f"token {b!r} has two ids"
            ranks[b] = i
        merged = {a + b for a, b in self.merges}
        extra = [b for b in ranks if len(b) > 1 and b not in merged and b not in special_bytes]
        if extra:
            return f"{len(extra)} multi-byte tokens are not produced by any merge (e.g. {extra[0]!r})"
        last = -1
        for r, (a, b) in enumerate(self.merges):
            i = ranks.get(a + b)
            if i is None or i <= last or ranks[a] >= i or ranks[b] >= i:
                return f"merge {r} ({a!r}, {b!r}): token ids do not increase in merge order"
            last = i
            if len(a) + len(b) > 2 and _bpe_by_concat_rank(a + b, ranks, i) != [a, b]:
                return f"merge {r} ({a!r}, {b!r}): its bytes BPE-merge differently by concatenation rank"
        self._ranks = ranks
        return None

    def _build_tiktoken(self):
        import tiktoken

        return tiktoken.Encoding(
            f"sift-bpe-{len(self.vocab)}", pat_str=GPT2_PATTERN, mergeable_ranks=self._ranks, special_tokens={}
        )

    # ------------------------------------------------------------------------------------------------
    def _bpe(self, word: bytes) -> list[bytes]:
        parts = [word[i : i + 1] for i in range(len(word))]
        rank = self._merge_rank
        while len(parts) > 1:
            best, best_rank = None, None
            for pair in zip(parts, parts[1:]):
                r = rank.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            a, b = best
            out: list[bytes] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        return parts

    def _encode_ordinary_python(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self._cache
        id_of = self._id_of
        for piece in PRETOKENIZE.findall(text):
            got = cache.get(piece)
            if got is None:
                got = tuple(id_of[p] for p in self._bpe(piece.encode("utf-8")))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[piece] = got
            ids.extend(got)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of `text` with no special-token handling."""
        text = _clean_surrogates(text)
        if self._tiktoken is not None:
            return self._tiktoken.encode_ordinary(text)
        return self._encode_ordinary_python(text)

    def encode(self, text: str, *, backend: str | None = None) -> list[int]:
        """Ids of `text`; registered special tokens map to their ids. `backend="python"` forces the specification."""
        text = _clean_surrogates(text)
        if backend == "python" or self._tiktoken is None:
            ordinary = self._encode_ordinary_python
        else:
            ordinary = self._tiktoken.encode_ordinary
        if self._splitter is None:
            return ordinary(text)
        ids: list[int] = []
        for k, segment in enumerate(self._splitter.split(text)):
            if k % 2:
                ids.append(self.special_ids[segment])
            elif segment:
                ids.extend(ordinary(segment))
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Ids of the concatenation of `iterable`, produced lazily; memory is bounded by the longest stretch of text
        without a safe cut point (an ASCII non-space followed by whitespace, outside any special token)."""
        buffer = ""
        for chunk in iterable:
            buffer += chunk
            cut = self._safe_cut(buffer)
            if cut > 0:
                yield from self.encode(buffer[:cut])
                buffer = buffer[cut:]
        if buffer:
            yield from self.encode(buffer)

    def _safe_cut(self, text: str) -> int:
        # keep at least the longest special token's length after the cut so a special token that straddles it is
        # complete in the buffer (and then detected below)
        limit = len(text) - max(self._max_special, 1)
        p = limit
        while p > 0:
            p = _last_ws_boundary(text, p)
            if p <= 0:
                return 0
            if self._splitter is None or not self._inside_special(text, p):
                return p
            p -= 1
        return 0

    def _inside_special(self, text: str, p: int) -> bool:
        lo = max(0, p - self._max_special)
        for m in self._splitter.finditer(text, lo, min(len(text), p + self._max_special)):
            if m.start() < p < m.end():
                return True
        return False

    # ------------------------------------------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        vocab = self.vocab
        try:
            return b"".join(vocab[i] for i in ids)
        except KeyError as e:
            raise ValueError(f"token id {e.args[0]} is not in the vocabulary (size {self.vocab_size})") from None

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


_WS_AFTER = frozenset(" \n\t\r")


def _last_ws_boundary(text: str, before: int) -> int:
    """Largest p < `before` (p > 0) where text[p-1] is an ASCII non-space and text[p] is ASCII whitespace; 0 if none."""
    p = before
    while p > 0:
        i = max(text.rfind(" ", 0, p), text.rfind("\n", 0, p))
        if i <= 0:
            return 0
        c = text[i - 1]
        if "!" <= c <= "~":
            return i
        p = i
    return 0


def _clean_surrogates(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def gpt2_tokenizer(tokenizer_dir: str | os.PathLike, **kw) -> Tokenizer:
    """GPT-2's tokenizer from a folder holding its `gpt2_vocab.json` and `gpt2_merges.txt` (or vocab.json/merges.txt)."""
    d = Path(tokenizer_dir)
    vocab = d / "gpt2_vocab.json" if (d / "gpt2_vocab.json").exists() else d / "vocab.json"
    merges = d / "gpt2_merges.txt" if (d / "gpt2_merges.txt").exists() else d / "merges.txt"
    return Tokenizer.from_files(vocab, merges, ["<|endoftext|>"], **kw)


__all__ = ["Tokenizer", "gpt2_tokenizer"]
