"""Registered domain (eTLD+1) of a URL, offline, with the public-suffix snapshot tldextract ships."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import unquote, urlsplit

import tldextract

# suffix_list_urls=() keeps tldextract from fetching the list at first use (no network in jobs).
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@lru_cache(maxsize=65536)
def _domain_of_host(host: str) -> str:
    parts = _EXTRACT(host)
    if parts.domain and parts.suffix:
        return f"{parts.domain}.{parts.suffix}"
    return parts.domain or host  # IP addresses, localhost, bare suffixes


def registered_domain(url: str) -> str:
    """'https://www.bbc.co.uk/news' -> 'bbc.co.uk'; '' for URLs without a host."""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    # percent-encoded IDN hosts (seen in real WARC-Target-URIs) are decoded to their Unicode form
    return _domain_of_host(unquote(host).rstrip(".").lower()) if host else ""
