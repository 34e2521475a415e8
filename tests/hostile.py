"""Hostile WARC records built around real pages, for the fuzz and memory tests.

Every body is made from real bytes (a real page, real text, a real compressed file); only the WARC and HTTP
framing is written here.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from operators.warc import read_warc_rows
from tests.conftest import SAMPLE

REAL = SAMPLE / "aeb-000.warc.gz"


def response_record(url: str, http_head: bytes, body: bytes, declared_length: int | None = None) -> bytes:
    """One gzip member holding one WARC/1.1 response record."""
    block = http_head + b"\r\n\r\n" + body
    head = (
        b"WARC/1.1\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:" + ("%036d" % (hash(url) % 10**36)).encode()[:36] + b">\r\n"
        b"WARC-Date: 2026-11-25T00:00:00Z\r\nWARC-Target-URI: " + url.encode() + b"\r\n"
        b"Content-Type: application/http; msgtype=response\r\n"
        b"Content-Length: " + str(declared_length or len(block)).encode() + b"\r\n\r\n"
    )
    return gzip.compress(head + block + b"\r\n\r\n", compresslevel=1)


HTML = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8"


def real_pages() -> list[bytes]:
    return [row.html for row in read_warc_rows(str(REAL))[0]]


def real_text_line(n_bytes: int) -> bytes:
    """Real prose (the sample pages' visible text) as one line of about `n_bytes`, no newline anywhere."""
    from operators.extract import extract_text

    words = b" ".join(extract_text(p).encode().replace(b"\n", b" ") for p in real_pages()[:40])
    reps = n_bytes // len(words) + 1
    return (b" ".join([words] * reps))[:n_bytes]


def gzip_bomb(inflated: int) -> bytes:
    return gzip.compress(real_pages()[0] + b" " * inflated, compresslevel=9)


def deflate_bomb(inflated: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as servers often send it
    return c.compress(real_pages()[1] + b"\n" * inflated) + c.flush()


def nesting_subtrees(subtrees: int, depth: int = 2900) -> bytes:
    """Subtrees nested just under the extractor's depth guard, repeated: passes the cheap check, then takes
    seconds of main-content extraction (quadratic in depth per subtree)."""
    sub = b"<div>" * depth + b"deep text" + b"</div>" * depth
    return b"<html><body>" + sub * subtrees + b"</body></html>"


def hostile_records(cap: int) -> dict[str, bytes]:
    """Hostile records for a reader whose max_record_bytes and max_html_bytes are both `cap`."""
    page = real_pages()[2]
    return {
        "gzip_bomb": response_record("http://bomb.example/gzip", HTML + b"\r\nContent-Encoding: gzip", gzip_bomb(50 * cap)),
        "deflate_bomb": response_record("http://bomb.example/deflate", HTML + b"\r\nContent-Encoding: deflate", deflate_bomb(50 * cap)),
        "one_line_under_cap": response_record("http://line.example/under", HTML,
                                              b"<html><body><p>" + real_text_line(cap - 4096) + b"</p></body></html>"),
        "one_line_50mb": response_record("http://line.example/50mb", HTML, b"<html><body><p>" + real_text_line(50 << 20) + b"</p></body></html>"),
        "huge_declared_length": response_record("http://length.example/", HTML, page, declared_length=1 << 40),
        "deeply_nested": response_record("http://nest.example/deep", HTML, b"<html><body>" + b"<div>" * min(100_000, cap // 6) + b"x"),
        "nesting_subtrees": response_record("http://nest.example/subtrees", HTML, nesting_subtrees((cap - 100) // (2900 * 11))),
        "binary_as_html": response_record("http://binary.example/", HTML, REAL.read_bytes()[: min(200_000, cap // 2)]),
    }


def write_hostile_warc(path: Path, cap: int) -> dict[str, int]:
    """Real records, then every hostile record, then real records again. Returns how many real pages it holds."""
    real = REAL.read_bytes()
    other = (SAMPLE / "warcfile.warc.gz").read_bytes()
    with open(path, "wb") as f:
        f.write(real)
        for record in hostile_records(cap).values():
            f.write(record)
        f.write(other)
    return {"real_pages": len(read_warc_rows(str(REAL))[0]) + len(read_warc_rows(str(SAMPLE / "warcfile.warc.gz"))[0])}
