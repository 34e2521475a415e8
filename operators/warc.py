"""WARC/ARC reading: one row per HTML page, every skipped record counted by reason.

FastWARC is the fast path for WARC/0.17-1.1 (per-record gzip, whole-file gzip, LZ4, zstd,
uncompressed). warcio takes over where FastWARC cannot read a file at all (ARC files).
FastWARC's own HTTP parser rejects real-world quirks (bare-LF header lines), so records are read
with ``parse_http=False`` and the HTTP envelope is parsed here, where every failure can be
counted instead of ending the file.

This module does no path globbing and imports no Ray: it turns one open byte stream into rows.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from fastwarc.warc import ArchiveIterator as FastWarcIterator
from fastwarc.warc import WarcRecordType
from warcio.exceptions import ArchiveLoadFailed

from operators.domains import registered_domain

STAGE = "read"

HTML_MIME_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class ReadConfig:
    allowed_http_statuses: tuple[int, ...] = (200,)
    """HTTP statuses whose pages are kept; redirects and errors are counted as `http_status_<code>`."""
    html_mime_types: tuple[str, ...] = HTML_MIME_TYPES
    """Media types read as HTML. `WARC-Identified-Payload-Type` (sniffed by the crawler) wins over the
    server's Content-Type, which is often wrong."""
    include_resource_records: bool = True
    """Also emit WARC `resource` records holding HTML (wget, Heritrix); they have no HTTP envelope."""
    max_record_bytes: int = 32 * 1024 * 1024
    """Records whose WARC block is larger are skipped unread (`record_too_large`)."""
    max_html_bytes: int = 8 * 1024 * 1024
    """Cap on the decoded HTML body (after de-chunking and decompression); a gzip bomb stops here
    (`html_too_large`) without inflating further."""
    keep_crawler_truncated: bool = False
    """Keep records that the crawler marked `WARC-Truncated` (Common Crawl cuts payloads at 1 MiB).
    Off by default: a half page is not a document."""


@dataclass
class WarcRow:
    """One HTML page. Field order is the output schema order (see pipelines.schema)."""

    doc_id: str
    url: str
    domain: str
    warc_date: str
    source_file: str
    record_offset: int
    http_status: int | None
    content_type: str
    charset: str | None
    html: bytes

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class SkipRecord(Exception):
    """A record that is not a usable HTML page; `reason` becomes the counter key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# HTTP envelope
# ---------------------------------------------------------------------------------------------


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes


def parse_http_response(block: bytes) -> HttpResponse:
    """Split a WARC response block into status, headers and raw body.

    Accepts CRLF and bare-LF line ends, HTTP/0.9-2 status lines and headers without a reason
    phrase. Raises SkipRecord('bad_http_header') for anything that is not an HTTP response.
    """
    crlf = block.find(b"\r\n\r\n")
    lf = block.find(b"\n\n")
    if crlf < 0 and lf < 0:
        raise SkipRecord("bad_http_header")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        head, body = block[:crlf], block[crlf + 4 :]
    else:
        head, body = block[:lf], block[lf + 2 :]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    status_line = lines[0].split(None, 2)
    if len(status_line) < 2 or not status_line[0].upper().startswith(b"HTTP/"):
        raise SkipRecord("bad_http_header")
    try:
        status = int(status_line[1])
    except ValueError:
        raise SkipRecord("bad_http_header") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return HttpResponse(status, headers, body)


def parse_content_type(value: str | None) -> tuple[str, str | None]:
    """'text/html; charset="UTF-8"' -> ('text/html', 'utf-8')."""
    if not value:
        return "", None
    parts = value.split(";")
    mime = parts[0].strip().lower()
    charset = None
    for param in parts[1:]:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'").lower() or None
    return mime, charset


def dechunk(body: bytes) -> bytes:
    """Decode HTTP/1.1 chunked transfer coding. Raises SkipRecord('bad_chunking') on bad framing.

    A body that does not start with a chunk-size line was stored already de-chunked (Common Crawl
    and others keep the header but write the decoded body) and is returned unchanged.
    """
    first_line_end = body.find(b"\n")
    size_field = body[: first_line_end if first_line_end >= 0 else 0].split(b";")[0].strip()
    if not size_field or any(c not in b"0123456789abcdefABCDEF" for c in size_field):
        return body
    out = bytearray()
    pos = 0
    n = len(body)
    while pos < n:
        line_end = body.find(b"\n", pos)
        if line_end < 0:
            raise SkipRecord("bad_chunking")
        size_text = body[pos:line_end].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise SkipRecord("bad_chunking") from None
        if size == 0:
            return bytes(out)
        start = line_end + 1
        if start + size > n:
            raise SkipRecord("truncated_http_body")
        out += body[start : start + size]
        pos = start + size
        # chunk data is followed by CRLF (or bare LF in sloppy servers)
        if body.startswith(b"\r\n", pos):
            pos += 2
        elif body.startswith(b"\n", pos):
            pos += 1
        else:
            raise SkipRecord("bad_chunking")
    raise SkipRecord("truncated_http_body")  # no terminating zero-size chunk


def decompress_capped(body: bytes, coding: str, cap: int) -> bytes:
    """Undo Content-Encoding gzip/deflate, stopping at `cap` bytes of output (gzip bombs)."""
    coding = coding.strip().lower()
    if coding in ("", "identity", "none"):
        return body
    if coding in ("gzip", "x-gzip"):
        if not body.startswith(b"\x1f\x8b"):
            return body  # stored already decoded (Common Crawl style)
        decoders = [zlib.decompressobj(16 + zlib.MAX_WBITS)]
    elif coding == "deflate":
        # RFC 9110 says zlib-wrapped; many servers send raw deflate. Try both.
        decoders = [zlib.decompressobj(zlib.MAX_WBITS), zlib.decompressobj(-zlib.MAX_WBITS)]
    else:
        raise SkipRecord("unsupported_content_encoding")
    for decoder in decoders:
        try:
            out = decoder.decompress(body, cap + 1)
        except zlib.error:
            continue
        if len(out) > cap:
            raise SkipRecord("html_too_large")
        if not decoder.eof:
            # ran out of input before the end of the stream: a body cut short
            raise SkipRecord("truncated_http_body")
        return out
    raise SkipRecord("bad_content_encoding")


def looks_like_html(body: bytes) -> bool:
    """Sniff an HTML document when no media type was declared at all."""
    head = body[:1024].lstrip(b" \t\r\n\xef\xbb\xbf").lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return True
    return head.startswith(b"<?xml") and b"<html" in body[:4096].lower()


def clean_uri(uri: str) -> str:
    """wget 1.14-1.21 wrote WARC/1.0 draft syntax `<http://...>`; strip the brackets."""
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri


# ---------------------------------------------------------------------------------------------
# Records -> rows
# ---------------------------------------------------------------------------------------------


def record_to_row(
    record_type: str,
    warc_headers: dict[str, str],
    block: bytes,
    declared_length: int,
    source_file: str,
    offset: int,
    cfg: ReadConfig,
) -> WarcRow:
    """Turn one WARC record into a row or raise SkipRecord with the reason.

    `warc_headers` keys are WARC header names as written (case-insensitive lookups done here).
    """
    h = {k.lower(): v for k, v in warc_headers.items()}
    if record_type not in ("response", "resource"):
        raise SkipRecord(f"record_type_{record_type}")
    if record_type == "resource" and not cfg.include_resource_records:
        raise SkipRecord("record_type_resource")
    if declared_length > cfg.max_record_bytes:
        raise SkipRecord("record_too_large")  # the reader left its block unread
    if len(block) < declared_length:
        raise SkipRecord("truncated_record")
    crawler_truncated = "warc-truncated" in h
    if crawler_truncated and not cfg.keep_crawler_truncated:
        raise SkipRecord("truncated_by_crawler")
    url = clean_uri(h.get("warc-target-uri", ""))
    identified = h.get("warc-identified-payload-type", "").split(";")[0].strip().lower()

    if record_type == "response":
        if not url.lower().startswith(("http://", "https://")):
            raise SkipRecord("not_http")
        http = parse_http_response(block)
        if http.status not in cfg.allowed_http_statuses:
            raise SkipRecord(f"http_status_{http.status}")
        mime, charset = parse_content_type(http.headers.get("content-type"))
        body = http.body
        transfer = http.headers.get("transfer-encoding", "").lower()
        if "chunked" in transfer:
            body = dechunk(body)
        else:
            length = http.headers.get("content-length", "").strip()
            if length.isdigit() and len(body) < int(length) and not crawler_truncated:
                raise SkipRecord("truncated_http_body")
        content_type = identified or mime
        if not content_type:
            content_type = "text/html" if looks_like_html(body[:4096]) else "unknown"
        if content_type not in cfg.html_mime_types:
            raise SkipRecord("not_html")
        body = decompress_capped(body, http.headers.get("content-encoding", ""), cfg.max_html_bytes)
        status: int | None = http.status
    else:  # resource: the block is the payload itself
        mime, charset = parse_content_type(h.get("content-type"))
        content_type = identified or mime
        if content_type not in cfg.html_mime_types:
            raise SkipRecord("not_html")
        body = block
        status = None

    if len(body) > cfg.max_html_bytes:
        raise SkipRecord("html_too_large")
    if not body.strip():
        raise SkipRecord("empty_body")
    return WarcRow(
        doc_id=h.get("warc-record-id", "").strip(),
        url=url,
        domain=registered_domain(url),
        warc_date=h.get("warc-date", "").strip(),
        source_file=source_file,
        record_offset=offset,
        http_status=status,
        content_type=content_type,
        charset=charset,
        html=body,
    )


_FASTWARC_TYPES = {
    int(getattr(WarcRecordType, name)): name
    for name in ("warcinfo", "response", "resource", "request", "metadata", "revisit", "conversion", "continuation", "unknown")
}


def _fastwarc_records(stream: IO[bytes], cfg: ReadConfig) -> Iterator[tuple[str, dict, bytes, int, int]]:
    for record in FastWarcIterator(stream, parse_http=False):
        rtype = _FASTWARC_TYPES.get(int(record.record_type)) or str(record.record_type).rsplit(".", 1)[-1]
        declared = record.content_length
        if rtype not in ("response", "resource") or declared > cfg.max_record_bytes:
            yield rtype, {}, b"", declared, record.stream_pos  # skipped from headers; body never read
        else:
            yield rtype, dict(record.headers.items()), record.reader.read(), declared, record.stream_pos


def _warcio_records(stream: IO[bytes], cfg: ReadConfig) -> Iterator[tuple[str, dict, bytes, int, int]]:
    """ARC files only (FastWARC cannot read them)."""
    from warcio.archiveiterator import ArchiveIterator

    it = ArchiveIterator(stream, arc2warc=True, no_record_parse=True)
    for record in it:
        rtype = record.rec_type
        headers = dict(record.rec_headers.headers)
        declared = int(record.rec_headers.get_header("Content-Length") or record.length or 0)
        if rtype in ("response", "resource") and declared <= cfg.max_record_bytes:
            block = record.raw_stream.read()
            # warcio's ARC->WARC conversion reports a length that counts the ARC header line
            # endings; the block it hands back is the whole record, so trust what was read.
            declared = len(block)
        else:
            block = b""
        yield rtype, headers, block, declared, it.get_record_offset()


def sniff_format(head: bytes) -> str:
    """'arc', 'warc' or 'unknown' from the first (decompressed) bytes of a file."""
    if head.startswith(b"filedesc://"):
        return "arc"
    if head.startswith(b"WARC/"):
        return "warc"
    return "unknown"


def _decompressed_head(raw_head: bytes) -> bytes:
    if raw_head.startswith(b"\x1f\x8b"):
        try:
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw_head, 64)
        except zlib.error:
            return b""
    return raw_head


def iter_warc(
    stream: IO[bytes], source_file: str, cfg: ReadConfig, stats: Counter,
    error_messages: dict[str, str] | None = None,
) -> Iterator[WarcRow]:
    """Yield one WarcRow per HTML page of an open, seekable WARC/ARC byte stream.

    Counts into `stats` (keys `read/in`, `read/out`, `read/drop_<reason>`) so that
    in == out + drops always holds. A file that ends in the middle of a record, or whose tail is
    corrupt, keeps every complete record before the damage (`read/file_error_*` says so); a per-record-gzip
    file damaged in the middle is read on from the next intact record (`read/resyncs` counts those restarts).
    `error_messages`, when given, gets the first reader exception of each file-error kind ("ValueError: invalid
    literal for int() ..."), which says more than the kind alone.
    """
    raw_head = stream.read(4096)
    stream.seek(0)
    fmt = sniff_format(_decompressed_head(raw_head))
    start = 0
    gzipped = raw_head[:2] == b"\x1f\x8b"
    compressed = gzipped or raw_head[:4] in (b"\x04\x22\x4d\x18", b"\x28\xb5\x2f\xfd")  # gzip, lz4, zstd magic
    if fmt == "unknown" and not compressed:
        # no WARC/ARC start and no whole compression magic (a flipped bit in the first gzip header counts as
        # damage): a WARC only if a damaged start hides one
        nxt = _next_warc_member(stream, 1)
        if nxt is None:
            stats[f"{STAGE}/file_error_not_a_warc"] += 1
            return
        stats[f"{STAGE}/file_error_damaged_start"] += 1
        stats[f"{STAGE}/resyncs"] += 1
        start, gzipped = nxt, True
        stream.seek(start)
    if fmt == "arc":
        records = _warcio_records(stream, cfg)
    else:
        records = _fastwarc_records(stream, cfg)
    # per-record gzip (what Common Crawl writes) can be resynced after damage: the next gzip member that starts a
    # WARC record is found and reading goes on from there, so one bad block costs the records it touches only
    resyncable = fmt != "arc" and gzipped
    seen, last = 0, -1
    while True:
        try:
            for rtype, headers, block, declared, offset in records:
                seen += 1
                last = max(last, offset)
                stats[f"{STAGE}/in"] += 1
                if resyncable and declared > cfg.max_record_bytes and _member_holds(stream, offset, declared) is False:
                    # an oversized record whose gzip member ends long before its declared length: skipping it by
                    # that length would silently swallow the rest of the file (a 1 TB Content-Length); go on from
                    # the next member instead. (A length only slightly wrong is caught by the resync below: the
                    # next header is then misaligned, and reading restarts at the next member.)
                    stats[f"{STAGE}/drop_length_mismatch"] += 1
                    nxt = _next_warc_member(stream, offset + 1)
                    if nxt is None:
                        break
                    stream.seek(nxt)
                    records = _fastwarc_records(stream, cfg)
                    raise _Jump
                try:
                    row = record_to_row(rtype, headers, block, declared, source_file, offset, cfg)
                except SkipRecord as skip:
                    stats[f"{STAGE}/drop_{skip.reason}"] += 1
                    continue
                stats[f"{STAGE}/out"] += 1
                stats[f"{STAGE}/html_bytes"] += len(row.html)
                yield row
            break
        except _Jump:
            continue
        except (OSError, ValueError, EOFError, zlib.error, ArchiveLoadFailed) as exc:
            # a corrupt or cut-off part: FastWARC raises OSError, warcio ArchiveLoadFailed
            kind = _error_kind(exc)
            stats[f"{STAGE}/file_error_{kind}"] += 1
            if error_messages is not None:
                error_messages.setdefault(kind, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            nxt = _next_warc_member(stream, max(last, start) + 1) if resyncable else None
            if nxt is None:
                break
            stats[f"{STAGE}/resyncs"] += 1
            start = nxt
            stream.seek(start)
            records = _fastwarc_records(stream, cfg)
    if seen == 0 and any(k.startswith(f"{STAGE}/file_error_") for k in stats):
        stats[f"{STAGE}/file_unreadable"] += 1


class _Jump(Exception):
    """Restart reading at the stream's new position (inside iter_warc only)."""


def _member_holds(stream: IO[bytes], offset: int, declared: int) -> bool | None:
    """Whether the gzip member at `offset` holds the record's whole block of `declared` bytes (None: not a gzip
    member start, or unreadable). Inflates at most the member or the record, whichever ends first; the stream's
    position is restored."""
    pos = stream.tell()
    try:
        stream.seek(offset)
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        need, got, head = None, 0, b""
        while True:
            chunk = stream.read(1 << 16)
            if not chunk:
                return False if need is not None else None
            out = d.decompress(chunk, 1 << 20)
            while True:
                if need is None:
                    head += out[: 65536]
                    end = head.find(b"\r\n\r\n")
                    if end < 0 and len(head) >= 65536:
                        return None
                    if end >= 0:
                        need = end + 4 + declared
                got += len(out)
                if need is not None and got >= need:
                    return True
                if d.eof:
                    return False
                if not d.unconsumed_tail:
                    break
                out = d.decompress(d.unconsumed_tail, 1 << 20)
    except zlib.error:
        return None
    finally:
        stream.seek(pos)


def _next_warc_member(stream: IO[bytes], pos: int, chunk: int = 1 << 20) -> int | None:
    """Offset of the first gzip member at or after `pos` whose content starts a WARC record, or None."""
    magic = b"\x1f\x8b\x08"
    while True:
        stream.seek(pos)
        buf = stream.read(chunk + len(magic))
        if len(buf) < len(magic):
            return None
        i = buf.find(magic)
        while i >= 0:
            stream.seek(pos + i)
            if _decompressed_head(stream.read(4096)).startswith(b"WARC/"):
                return pos + i
            i = buf.find(magic, i + 1)
        if len(buf) <= chunk:
            return None
        pos += chunk


def _error_kind(exc: BaseException) -> str:
    text = str(exc).lower()
    for key, kind in (
        ("header", "invalid_header"),
        ("gzip", "bad_compression"),
        ("decompress", "bad_compression"),
        ("chunk", "bad_chunking"),
    ):
        if key in text:
            return kind
    return type(exc).__name__.lower()


def read_warc_rows(path: str, cfg: ReadConfig | None = None) -> tuple[list[WarcRow], Counter]:
    """Convenience for scripts and tests: all rows and counters of one local file."""
    stats: Counter = Counter()
    with open(path, "rb") as f:
        rows = list(iter_warc(f, path, cfg or ReadConfig(), stats))
    return rows, stats
