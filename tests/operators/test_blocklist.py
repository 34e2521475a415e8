"""URL blocklists: real UT1 entries are blocked by the right rule; the sample's real news and
article URLs pass; the 4.5 M-domain list loads as a compact, cached, memory-mapped array."""

from __future__ import annotations

from pathlib import Path

import pytest

from operators.blocklist import BlocklistConfig, HashSet, URLBlocklist
from operators.warc import read_warc_rows
from tests.conftest import FIXTURES, SAMPLE

DOMAINS = FIXTURES / "blocklists" / "ut1-domains-sample.txt"
URLS = FIXTURES / "blocklists" / "ut1-urls-sample.txt"


def _entries(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def blocklist(tmp_path_factory) -> URLBlocklist:
    cache = tmp_path_factory.mktemp("blcache")
    return URLBlocklist(BlocklistConfig(domains_path=str(DOMAINS), urls_path=str(URLS), cache_dir=str(cache)))


@pytest.mark.parametrize("domain", _entries(DOMAINS))
def test_listed_domains_and_their_hosts_are_blocked(blocklist, domain):
    assert blocklist.reject_reason(f"https://{domain}/some/page.html") == "blocked_domain"
    assert blocklist.reject_reason(f"http://www.{domain}/") == "blocked_domain"


def test_subdomain_of_a_listed_registered_domain_is_blocked(blocklist):
    assert blocklist.reject_reason("https://videos.pornocash.net/x") == "blocked_domain"


@pytest.mark.parametrize("entry", _entries(URLS))
def test_listed_url_prefixes_are_blocked(blocklist, entry):
    """Blocked by some rule (many UT1 URLs also carry banned words; the URL rule alone is tested below)."""
    assert blocklist.reject_reason("https://www." + entry) is not None
    assert blocklist.reject_reason("https://" + entry + "/deeper/page?x=1") is not None


def test_url_rule_in_isolation(tmp_path):
    """'tumblr.com/gjovbjfl1iw3n9' blocks that blog and its posts, not the rest of tumblr.com."""
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    bl = URLBlocklist(BlocklistConfig(
        urls_path=str(URLS), banned_words_path=str(empty), banned_subwords_path=str(empty),
        soft_banned_words_path=str(empty), cache_dir=str(tmp_path),
    ))
    assert bl.reject_reason("https://www.tumblr.com/gjovbjfl1iw3n9/post/123") == "blocked_url"
    assert bl.reject_reason("https://tumblr.com/gjovbjfl1iw3n9") == "blocked_url"
    assert bl.reject_reason("https://www.tumblr.com/staff") is None
    assert bl.reject_reason("https://die-orks.de/clips/") == "blocked_url"
    assert bl.reject_reason("https://die-orks.de/forum") is None
    assert bl.check("https://www.tumblr.com/gjovbjfl1iw3n9/post/123") == ("blocked_url", {"matched": "tumblr.com/gjovbjfl1iw3n9"})
    assert bl.check("https://die-orks.de/forum") == (None, {})


@pytest.mark.parametrize("url, reason", [
    ("https://example.com/free-porn-videos", "banned_word"),
    ("https://example.com/hot-sexy-babes", "soft_banned_words"),  # two soft words
    ("https://example.com/sexy-dress-sale", None),  # one soft word
    ("https://example.com/watch-barely-legal-now", "banned_subword"),  # phrase "barely legal" across tokens
    ("https://en.wikipedia.org/wiki/Sex_education", None),
    ("https://www.essex.ac.uk/", None),  # 'sex' inside a token is not a banned word
])
def test_word_rules(url, reason):
    assert URLBlocklist().reject_reason(url) == reason


def test_check_names_what_matched(blocklist):
    """The evidence `sift serve` shows for "why was this page removed?"."""
    words = URLBlocklist()
    assert words.check("https://example.com/free-porn-videos") == ("banned_word", {"matched": ["porn"]})
    assert words.check("https://example.com/hot-sexy-babes") == ("soft_banned_words", {"matched": ["sexy", "babes"], "limit": 2})
    assert words.check("https://example.com/watch-barely-legal-now") == ("banned_subword", {"matched": "barelylegal"})
    assert blocklist.check("https://videos.pornocash.net/x") == ("blocked_domain", {"matched": "pornocash.net"})


def test_sample_pages_pass(blocklist):
    """The sample's real news, blog and shop URLs trip none of the rules."""
    urls = [r.url for p in sorted(SAMPLE.glob("*.warc.gz")) for r in read_warc_rows(str(p))[0]]
    assert len(urls) > 100
    assert [u for u in urls if blocklist.reject_reason(u)] == []


def test_missing_list_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        URLBlocklist(BlocklistConfig(domains_path=str(tmp_path / "nope.txt")))
    with pytest.raises(ValueError, match="not found"):
        URLBlocklist(BlocklistConfig(banned_words_path=str(tmp_path / "nope.txt")))


def test_hashset_membership():
    hs = HashSet.build(["a.com", "b.org", "#comment", ""])
    assert len(hs) == 2 and "a.com" in hs and "b.org" in hs and "c.net" not in hs and "#comment" not in hs


@pytest.mark.shared_data
@pytest.mark.slow
def test_full_ut1_list_is_compact_and_cached(shared_data: Path, tmp_path):
    """4.5 M domains cost 8 bytes each (36 MB), are built once and memory-mapped afterwards."""
    archive = shared_data / "blocklists" / "ut1-adult-blocklist.tar.gz"
    cfg = BlocklistConfig(domains_path=str(archive), cache_dir=str(tmp_path))
    first = URLBlocklist(cfg)
    assert len(first.domains) > 4_500_000 and len(first.urls) > 19_000
    assert first.domains.nbytes == 8 * len(first.domains) < 40e6
    again = URLBlocklist(cfg)
    assert again.domains.hashes.__class__.__name__ == "memmap"
    assert again.reject_reason("http://www.pornhub.com/") == "blocked_domain"
    assert again.reject_reason("https://www.bbc.co.uk/news") is None
