"""URL blocklists, the first line of harmful-content filtering (RefinedWeb, FineWeb).

A URL is rejected when, in this order:
  `blocked_domain`    its registered domain or full host is on the domain list (UT1 adult: 4.5 M)
  `blocked_url`       it, or a path prefix of it (scheme and `www.` stripped), is on the URL list
  `banned_word`       one of its alphanumeric tokens is a banned word
  `soft_banned_words` at least `soft_word_threshold` of its tokens are soft-banned words
  `banned_subword`    a banned sub-word occurs anywhere in its alphanumerics

Memory: the domain and URL lists are held as sorted arrays of 64-bit BLAKE2b hashes (8 bytes an
entry: 4.5 M domains = 36 MB instead of ~450 MB as a Python set), built once and cached as `.npy`
next to a content key, then memory-mapped, so every worker on a node shares one copy in the page
cache. A false match needs a 64-bit collision (about 4.5e6 / 2^64 per lookup).
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from typing import Any
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from operators.domains import registered_domain

STAGE = "blocklist"
BUNDLED_WORD_LISTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "blocklists")


@dataclass(frozen=True)
class BlocklistConfig:
    enabled: bool = True
    """Run the URL blocklist stage."""
    domains_path: str = ""
    """Domain list: a text file (one domain or host a line) or a UT1 archive (.tar.gz holding
    `.../domains` and `.../urls`). Empty: no domain or URL list, word rules only."""
    urls_path: str = ""
    """URL-prefix list (one URL without scheme a line); with a UT1 archive its `urls` member is used."""
    banned_words_path: str = ""
    """Words that block a URL when they are one of its tokens; empty = the bundled list (datatrove's)."""
    banned_subwords_path: str = ""
    soft_banned_words_path: str = ""
    soft_word_threshold: int = 2
    """This many soft-banned tokens in one URL block it."""
    cache_dir: str = ""
    """Where hashed lists are cached (default ~/.cache/sift/blocklists)."""


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _normalize(word: str) -> str:
    return _NON_ALNUM.sub("", word.lower())


def _read_word_list(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {w for w in (_normalize(line) for line in f if line.strip() and not line.startswith("#")) if w}


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _strip_url(url: str) -> str:
    """'https://www.Example.com/a/b?x' -> 'example.com/a/b?x' (the form UT1 lists URLs in)."""
    url = url.strip()
    if "://" in url:
        url = url.split("://", 1)[1]
    host, sep, rest = url.partition("/")
    host = host.lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    return host + sep + rest


def _iter_list_lines(path: str, member: str) -> Iterator[str]:
    """Lines of a plain list file, or of the member named `member` in a UT1 .tar.gz."""
    if path.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as tar:
            names = [m for m in tar.getmembers() if m.isfile() and m.name.rsplit("/", 1)[-1] == member]
            if not names:
                raise ValueError(f"{path!r} holds no '{member}' list")
            f = tar.extractfile(names[0])
            assert f is not None
            for raw in f:
                yield raw.decode("utf-8", "replace").strip()
    else:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                yield line.strip()


class HashSet:
    """A read-only set of strings as a sorted array of 64-bit hashes."""

    def __init__(self, hashes: np.ndarray):
        self.hashes = hashes

    @classmethod
    def build(cls, items: Iterable[str]) -> HashSet:
        values = np.fromiter((_hash(x) for x in items if x and not x.startswith("#")), np.uint64)
        return cls(np.unique(values))

    @classmethod
    def cached(cls, path: str, member: str, normalize, cache_dir: str) -> HashSet:
        """Build from `path` once; later loads memory-map the cached array (shared page cache)."""
        st = os.stat(path)
        key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{member}|v1".encode()).hexdigest()[:16]
        cache = os.path.join(cache_dir or os.path.expanduser("~/.cache/sift/blocklists"), f"{member}-{key}.npy")
        if not os.path.exists(cache):
            built = cls.build(normalize(line) for line in _iter_list_lines(path, member))
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            tmp = f"{cache}.tmp-{os.getpid()}.npy"
            np.save(tmp, built.hashes)
            os.replace(tmp, cache)
        return cls(np.load(cache, mmap_mode="r"))

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, item: str) -> bool:
        if not len(self.hashes):
            return False
        h = np.uint64(_hash(item))
        i = int(np.searchsorted(self.hashes, h))
        return i < len(self.hashes) and self.hashes[i] == h

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes)


def _domain_line(line: str) -> str:
    return line.strip().lower().rstrip(".").removeprefix("www.")


class URLBlocklist:
    """Loads the lists once (per Ray actor); `reject_reason(url) -> str | None`."""

    def __init__(self, cfg: BlocklistConfig | None = None):
        cfg = cfg or BlocklistConfig()
        self.cfg = cfg

        def word_list(path: str, name: str) -> set[str]:
            path = path or os.path.join(BUNDLED_WORD_LISTS, name)
            if not os.path.isfile(path):
                raise ValueError(f"blocklist word list not found: {path!r}")
            return _read_word_list(path)

        self.banned_words = word_list(cfg.banned_words_path, "banned_words.txt")
        self.soft_banned_words = word_list(cfg.soft_banned_words_path, "soft_banned_words.txt")
        subwords = sorted(word_list(cfg.banned_subwords_path, "banned_subwords.txt"), key=len, reverse=True)
        self.banned_subwords = re.compile("|".join(map(re.escape, subwords))) if subwords else None

        self.domains = HashSet(np.empty(0, np.uint64))
        self.urls = HashSet(np.empty(0, np.uint64))
        for path in (cfg.domains_path, cfg.urls_path):
            if path and not os.path.isfile(path):
                raise ValueError(f"blocklist not found: {path!r}")
        if cfg.domains_path:
            self.domains = HashSet.cached(cfg.domains_path, "domains", _domain_line, cfg.cache_dir)
        urls_source = cfg.urls_path or (cfg.domains_path if cfg.domains_path.endswith((".tar.gz", ".tgz", ".tar")) else "")
        if urls_source:
            self.urls = HashSet.cached(urls_source, "urls", _strip_url, cfg.cache_dir)

    def reject_reason(self, url: str) -> str | None:
        return self.check(url)[0]

    def check(self, url: str) -> tuple[str | None, dict[str, Any]]:
        """(reason or None, evidence): the list entry or words of the URL that matched."""
        stripped = _strip_url(url)
        host = stripped.split("/", 1)[0].split(":", 1)[0]
        if len(self.domains):
            if host in self.domains:
                return "blocked_domain", {"matched": host}
            domain = registered_domain(url)
            if domain in self.domains:
                return "blocked_domain", {"matched": domain}
        if len(self.urls):
            # the URL itself, then each shorter path prefix: 'a.com/x/y', 'a.com/x', 'a.com'
            candidate = stripped.rstrip("/")
            while candidate:
                if candidate in self.urls:
                    return "blocked_url", {"matched": candidate}
                cut = candidate.rfind("/")
                if cut < 0:
                    break
                candidate = candidate[:cut]
        tokens = [t for t in _NON_ALNUM.split(url.lower()) if t]
        banned = self.banned_words.intersection(tokens)
        if banned:
            return "banned_word", {"matched": sorted(banned)}
        soft = [t for t in tokens if t in self.soft_banned_words]
        if len(soft) >= self.cfg.soft_word_threshold:
            return "soft_banned_words", {"matched": soft, "limit": self.cfg.soft_word_threshold}
        if self.banned_subwords is not None:
            found = self.banned_subwords.search("".join(tokens))
            if found:
                return "banned_subword", {"matched": found.group(0)}
        return None, {}
