"""WARC reading on real files: what is emitted, what is skipped and why, and that nothing crashes."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import zlib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.warc import (
    ReadConfig,
    SkipRecord,
    dechunk,
    decompress_capped,
    iter_warc,
    parse_content_type,
    parse_http_response,
    read_warc_rows,
)
from pipelines.stats import balance_errors
from tests.conftest import FIXTURES, SAMPLE

EDGE = SAMPLE / "edge-cases.warc.gz"


def _expectations() -> dict[str, dict]:
    rows = [json.loads(line) for line in (FIXTURES / "edge-cases.jsonl").read_text().splitlines()]
    return {r["name"]: r for r in rows if "record_id" in r}


def read_bytes_stream(data: bytes, cfg: ReadConfig | None = None, name: str = "mem") -> tuple[list, Counter]:
    stats: Counter = Counter()
    rows = list(iter_warc(io.BytesIO(data), name, cfg or ReadConfig(), stats))
    return rows, stats


# ------------------------------------------------------------------ edge cases with expected results

EMITTED = [
    "plain-200",
    "chunked",
    "gzip",
    "chunked+gzip",
    "charset-header-lies",
    "gb2312-no-header-charset",
    "no-charset-anywhere",
    "lf-only-http-headers",
    "html-labelled-text-plain",
    "resource-html",
    "wget-style-uri",
]


@pytest.mark.parametrize("name", EMITTED)
def test_edge_case_decoded_body_matches_expected_sha1(name):
    """De-chunking, gunzip and bare-LF headers give exactly the body the fixture's builder recorded."""
    exp = _expectations()[name]
    rows, _ = read_warc_rows(str(EDGE))
    by_id = {r.doc_id: r for r in rows}
    assert exp["record_id"] in by_id, f"{name} was not emitted"
    assert hashlib.sha1(by_id[exp["record_id"]].html).hexdigest() == exp["expect"]["decoded_body_sha1"]


def test_edge_case_skips_are_counted_by_reason():
    """Redirects, errors, images, empty bodies, revisits and crawler-truncated bodies are skipped with
    their reason; the books balance (in == out + drops)."""
    rows, stats = read_warc_rows(str(EDGE))
    assert len(rows) == len(EMITTED)
    assert stats["read/in"] == 18  # warcinfo + 17 cases
    assert {k: v for k, v in stats.items() if "/drop_" in k} == {
        "read/drop_record_type_warcinfo": 1,
        "read/drop_http_status_301": 1,
        "read/drop_http_status_404": 1,
        "read/drop_not_html": 1,  # the PNG
        "read/drop_empty_body": 1,
        "read/drop_record_type_revisit": 1,
        "read/drop_truncated_by_crawler": 1,  # WARC-Truncated: length, body shorter than Content-Length
    }
    assert balance_errors(stats) == []


def test_edge_case_fields():
    """Row fields: bracket-free wget URIs, registered domains, declared charset, null status for resource."""
    exp = _expectations()
    rows = {r.doc_id: r for r in read_warc_rows(str(EDGE))[0]}
    wget = rows[exp["wget-style-uri"]["record_id"]]
    assert wget.url == exp["wget-style-uri"]["uri"][1:-1]
    assert wget.domain == "archive.org"
    plain = rows[exp["plain-200"]["record_id"]]
    assert (plain.http_status, plain.content_type, plain.charset, plain.domain) == (200, "text/html", "windows-1252", "wordsmith.org")
    assert plain.warc_date.startswith("20")
    assert plain.source_file == str(EDGE)
    resource = rows[exp["resource-html"]["record_id"]]
    assert resource.http_status is None
    lies = rows[exp["charset-header-lies"]["record_id"]]
    assert lies.charset == "utf-8"  # declared (wrongly) by the server; extraction must not trust it


def test_crawler_truncated_record_can_be_kept_on_request():
    rows, stats = read_warc_rows(str(EDGE), ReadConfig(keep_crawler_truncated=True))
    assert len(rows) == len(EMITTED) + 1
    assert "read/drop_truncated_by_crawler" not in stats


def test_truncated_gzip_member_keeps_complete_records():
    """A file cut mid-record (interrupted write): the 5 complete pages are emitted, the partial 6th is
    counted as truncated_record and never emitted as a half page."""
    rows, stats = read_warc_rows(str(SAMPLE / "edge-truncated.warc.gz"))
    assert len(rows) == 5
    assert stats["read/drop_truncated_record"] == 1
    assert balance_errors(stats) == []


def test_max_html_bytes_skips_huge_pages():
    """An oversized page is a counted skip, not a worker's memory problem."""
    rows, stats = read_warc_rows(str(EDGE), ReadConfig(max_html_bytes=10_000))
    assert all(len(r.html) <= 10_000 for r in rows)
    assert stats["read/drop_html_too_large"] >= 4
    assert balance_errors(stats) == []


def test_max_record_bytes_skips_unread():
    rows, stats = read_warc_rows(str(EDGE), ReadConfig(max_record_bytes=20_000))
    assert stats["read/drop_record_too_large"] >= 3
    assert len(rows) < len(EMITTED)
    assert balance_errors(stats) == []


# ------------------------------------------------------------------ hostile inputs


def _response_record(url: str, http_head: bytes, body: bytes) -> bytes:
    """A gzip member holding one WARC/1.1 response record (framing only; bodies come from real pages)."""
    block = http_head + b"\r\n\r\n" + body
    head = (
        b"WARC/1.1\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-000000000001>\r\n"
        b"WARC-Date: 2026-11-25T00:00:00Z\r\nWARC-Target-URI: " + url.encode() + b"\r\n"
        b"Content-Type: application/http; msgtype=response\r\nContent-Length: " + str(len(block)).encode() + b"\r\n\r\n"
    )
    return gzip.compress(head + block + b"\r\n\r\n")


def _real_page() -> bytes:
    rows, _ = read_warc_rows(str(EDGE))
    return rows[0].html


def test_gzip_bomb_is_stopped_at_the_cap():
    """A small gzip body that inflates past max_html_bytes is skipped without inflating it all."""
    bomb = gzip.compress(_real_page() + b" " * 50_000_000)
    assert len(bomb) < 200_000
    data = _response_record("http://example.org/bomb", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip", bomb)
    rows, stats = read_bytes_stream(data, ReadConfig(max_html_bytes=1_000_000))
    assert rows == []
    assert stats["read/drop_html_too_large"] == 1


def test_corrupt_gzip_body_is_a_counted_skip():
    page = gzip.compress(_real_page())
    broken = page[: len(page) // 2]
    data = _response_record("http://example.org/x", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip", broken)
    rows, stats = read_bytes_stream(data)
    assert rows == []
    assert stats["read/drop_truncated_http_body"] == 1


@pytest.mark.parametrize(
    "data, key",
    [
        (b"", "read/file_error_not_a_warc"),
        (b"%PDF-1.4 not a warc at all\n" * 100, "read/file_error_not_a_warc"),
        (bytes(range(256)) * 64, "read/file_error_not_a_warc"),
        (b"\x1f\x8b\x08\x00garbage-after-gzip-magic" * 10, "read/file_unreadable"),
        (b"WARC/1.1\r\nContent-Length: 99999999\r\n\r\nshort", None),
    ],
)
def test_garbage_files_never_crash(data, key):
    """Empty files, non-WARC files, binary junk and broken gzip are counted, never raised."""
    rows, stats = read_bytes_stream(data)
    assert rows == []
    if key:
        assert stats[key] == 1
    assert balance_errors(stats) == []


def test_good_records_before_garbage_are_kept():
    """Junk appended to a valid file: every good record is still emitted and the error counted."""
    good = EDGE.read_bytes()
    rows, stats = read_bytes_stream(good + b"\x1f\x8b\x08\x00" + b"\x00junk" * 100)
    assert len(rows) == len(EMITTED)
    assert any(k.startswith("read/file_error_") for k in stats)


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=(SAMPLE / "edge-truncated.warc.gz").stat().st_size))
def test_any_prefix_of_a_real_warc_reads_cleanly(cut):
    """Cutting a real WARC at any byte gives a subset of its complete pages, balanced counters, no crash."""
    data = (SAMPLE / "edge-truncated.warc.gz").read_bytes()
    full_ids = [r.doc_id for r in read_bytes_stream(data)[0]]
    rows, stats = read_bytes_stream(data[:cut])
    ids = [r.doc_id for r in rows]
    assert ids == full_ids[: len(ids)]
    assert balance_errors(stats) == []


def _mutate(raw: bytes, kind: str, pos: int, size: int, other: bytes) -> bytes:
    end = min(len(raw), pos + size)
    if kind == "flip":  # bit flips across a range
        return raw[:pos] + bytes(b ^ 0x5A for b in raw[pos:end]) + raw[end:]
    if kind == "zero":  # a range of the file overwritten with zeros (a bad disk block)
        return raw[:pos] + bytes(end - pos) + raw[end:]
    if kind == "cut":  # a range cut out (a lost block): later records shift
        return raw[:pos] + raw[end:]
    if kind == "splice":  # another real file's bytes spliced into the middle of this one
        return raw[:pos] + other[: size * 8] + raw[pos:]
    if kind == "length":  # a record header claiming a huge length
        return raw[:pos] + b"WARC/1.0\r\nContent-Length: 999999999999\r\n\r\n" + raw[pos:]
    raise ValueError(kind)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["flip", "zero", "cut", "splice", "length"]), frac=st.floats(0, 1),
       size=st.integers(1, 4096), name=st.sampled_from(["edge-cases.warc.gz", "whirlwind.warc.gz", "warcfile.warc.gz"]))
def test_mutated_real_warc_never_crashes_and_keeps_every_record_before_the_damage(kind, frac, size, name):
    """Real WARC bytes damaged anywhere (bit flips, zeroed blocks, lost blocks, spliced junk, a huge declared
    length): no exception, no hang (an alarm stops the test at 30 s), balanced counters, and every page that ends
    before the damage is emitted exactly as from the intact file; so is every page after damage that moved no byte
    (flips, zeroed blocks): reading resyncs at the next intact gzip member."""
    import signal

    raw = (SAMPLE / name).read_bytes()
    other = (SAMPLE / "aeb-000.warc.gz").read_bytes()
    pos = int(frac * (len(raw) - 1))
    full = read_bytes_stream(raw)[0]

    def too_slow(*_):
        raise TimeoutError("the reader hung on damaged input")

    old = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(30)
    try:
        rows, stats = read_bytes_stream(_mutate(raw, kind, pos, size, other))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert balance_errors(stats) == []
    got = {(r.doc_id, r.record_offset): r.html for r in rows}
    # a page ends before the next page starts: pages followed by another page starting before `pos` are intact
    for page, nxt in zip(full, full[1:]):
        if nxt.record_offset <= pos:
            assert got.get((page.doc_id, page.record_offset)) == page.html, (kind, pos, page.doc_id)
    if kind in ("flip", "zero"):
        for page in full:
            if page.record_offset >= pos + size:  # its gzip member is untouched and in place
                assert got.get((page.doc_id, page.record_offset)) == page.html, (kind, pos, "after", page.doc_id)


# ------------------------------------------------------------------ HTTP parsing units


def test_parse_http_response_bare_lf_and_case():
    r = parse_http_response(b"HTTP/1.0 200 OK\ncontent-TYPE: text/html; charset=ISO-8859-1\n\n<html>")
    assert (r.status, r.headers["content-type"], r.body) == (200, "text/html; charset=ISO-8859-1", b"<html>")


@pytest.mark.parametrize("value, expected", [
    ('text/html; charset="UTF-8"', ("text/html", "utf-8")),
    ("TEXT/HTML", ("text/html", None)),
    ("text/html;charset=windows-1252;foo=bar", ("text/html", "windows-1252")),
    (None, ("", None)),
])
def test_parse_content_type(value, expected):
    assert parse_content_type(value) == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parse_http_response_total(block):
    """Arbitrary bytes either parse or raise SkipRecord; nothing else escapes."""
    try:
        parse_http_response(block)
    except SkipRecord as skip:
        assert skip.reason == "bad_http_header"


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=2000), sizes=st.lists(st.integers(min_value=1, max_value=300), max_size=20))
def test_dechunk_roundtrip(body, sizes):
    """Any chunking of any body decodes back to the body."""
    out, pos = bytearray(), 0
    for size in sizes:
        piece = body[pos : pos + size]
        if not piece:
            break
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        pos += len(piece)
    if pos < len(body):
        out += b"%x\r\n" % (len(body) - pos) + body[pos:] + b"\r\n"
    out += b"0\r\n\r\n"
    assert dechunk(bytes(out)) == body


def test_dechunk_cut_short_is_truncated():
    with pytest.raises(SkipRecord, match="truncated_http_body"):
        dechunk(b"10\r\n0123456789abcdef\r\n10\r\n0123")


def test_deflate_raw_and_zlib():
    page = _real_page()
    raw = zlib.compressobj(wbits=-15)
    raw_data = raw.compress(page) + raw.flush()
    assert decompress_capped(raw_data, "deflate", 10**7) == page
    assert decompress_capped(zlib.compress(page), "deflate", 10**7) == page
    with pytest.raises(SkipRecord, match="unsupported_content_encoding"):
        decompress_capped(page, "br", 10**7)


# ------------------------------------------------------------------ every real file in shared/data


@pytest.mark.shared_data
def test_every_shared_warc_reads_without_crashing(shared_data: Path):
    """Every file under shared/data/warc (real, broken, odd) reads with balanced counters."""
    files = [p for p in sorted((shared_data / "warc").rglob("*")) if p.is_file() and not p.name.endswith((".jsonl", ".md"))]
    assert len(files) >= 40
    for path in files:
        _, stats = read_warc_rows(str(path))
        assert balance_errors(stats) == [], path


@pytest.mark.shared_data
def test_pages_match_manifests(shared_data: Path):
    """All 1,082 benchmark pages are emitted, with the manifest's record ids and exact HTML bytes."""
    pages = shared_data / "warc" / "pages"
    expected = {}
    for manifest in pages.glob("manifest-*.jsonl"):
        for line in manifest.read_text().splitlines():
            m = json.loads(line)
            expected[m["record_id"]] = m
    got = {}
    for path in sorted(pages.glob("*.warc.gz")):
        rows, stats = read_warc_rows(str(path))
        assert balance_errors(stats) == []
        got.update({r.doc_id: r for r in rows})
    assert len(expected) == 1082
    assert set(got) == set(expected)
    for rid, m in expected.items():
        assert hashlib.sha1(got[rid].html).hexdigest() == m["sha1"]
        if "//web.archive.org/" not in m["url"]:  # the manifest names the archived site's domain
            assert got[rid].domain == m["domain"], m["url"]


@pytest.mark.shared_data
@pytest.mark.parametrize("rel, pages, extra", [
    ("real/commoncrawl-whirlwind/whirlwind.warc.gz", 1, {}),
    ("real/resiliparse-tests/warcfile.warc.lz4", 16, {}),
    ("real/resiliparse-tests/clipped.warc.gz", 0, {"read/drop_truncated_record": 1}),
    ("real/resiliparse-tests/clueweb-quirk.warc.gz", 29, {}),  # WARC/0.18
    ("real/ukwa-test-suite/IAH-20080430204825-00000-blackbook-truncated.arc.gz", 2, {}),  # ARC via warcio
    ("real/ukwa-test-suite/IAH-20080430204825-00000-blackbook-truncated.warc.gz", 2, {}),  # WARC/0.17
    ("real/warcio-tests/example.arc", 1, {}),
    ("real/warcio-tests/example-trunc.warc", 0, {"read/drop_truncated_http_body": 1}),
    ("real/dolma-tests/sample-0000.warc.gz", 22, {}),
    ("edge-cases/edge-single-gzip-member.warc.gz", 5, {}),  # whole-file gzip
    ("duplicates/duplicates.warc.gz", 44, {}),
])
def test_real_file_counts(shared_data: Path, rel, pages, extra):
    rows, stats = read_warc_rows(str(shared_data / "warc" / rel))
    assert len(rows) == pages
    for key, value in extra.items():
        assert stats[key] == value


# ------------------------------------------------------------------ hostile records between real ones

FUZZ_CAP = 256 * 1024


@functools.lru_cache(maxsize=1)
def _hostile() -> dict[str, bytes]:
    from tests.hostile import hostile_records

    return hostile_records(FUZZ_CAP)


def _members(raw: bytes) -> list[int]:
    """Offsets of the gzip members (one record each) of a real per-record-gzip WARC."""
    offsets, pos = [], 0
    while pos < len(raw):
        offsets.append(pos)
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        d.decompress(raw[pos:])
        pos = len(raw) - len(d.unused_data)
    return offsets


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["aeb-000.warc.gz", "warcfile.warc.gz", "whirlwind.warc.gz"]),
       inserts=st.lists(st.tuples(st.sampled_from(sorted(["gzip_bomb", "deflate_bomb", "one_line_under_cap", "one_line_50mb",
                                                            "huge_declared_length", "deeply_nested", "nesting_subtrees",
                                                            "binary_as_html"])), st.floats(0, 1)), min_size=1, max_size=4))
def test_hostile_records_between_real_ones_cost_only_themselves(name, inserts):
    """gzip and deflate bombs, 50 MB single lines, a 1 TB declared length, nesting bombs and binary labelled
    text/html, inserted between the records of a real file: every real page is still emitted byte for byte, each
    hostile record is counted once (skipped by the reader, or emitted for the extractor to judge), nothing hangs."""
    raw = (SAMPLE / name).read_bytes()
    cfg = ReadConfig(max_record_bytes=FUZZ_CAP, max_html_bytes=FUZZ_CAP)
    full, full_stats = read_bytes_stream(raw, cfg)
    members = _members(raw) + [len(raw)]
    cuts = sorted((members[int(frac * (len(members) - 1))], kind) for kind, frac in inserts)
    data, prev = b"", 0
    for pos, kind in cuts:
        data += raw[prev:pos] + _hostile()[kind]
        prev = pos
    data += raw[prev:]
    rows, stats = read_bytes_stream(data, cfg)
    assert balance_errors(stats) == []
    assert stats["read/in"] == full_stats["read/in"] + len(inserts)  # each hostile record counted once
    real = [(r.doc_id, r.html) for r in rows if ".example/" not in r.url]
    assert real == [(r.doc_id, r.html) for r in full]
    emitted = sorted(r.url.split("//")[1] for r in rows if ".example/" in r.url)
    expect = sorted(k for k, _ in inserts if k in ("one_line_under_cap", "deeply_nested", "nesting_subtrees", "binary_as_html"))
    assert len(emitted) == len(expect)
    assert stats["read/drop_html_too_large"] - full_stats["read/drop_html_too_large"] == \
        sum(k in ("gzip_bomb", "deflate_bomb") for k, _ in inserts)
    assert stats["read/drop_length_mismatch"] == sum(k == "huge_declared_length" for k, _ in inserts)
    assert not any(k.startswith("read/file_error_") for k in stats)


@pytest.mark.parametrize("extra", [1, 100, 5000, 200_000])
def test_a_record_a_little_longer_than_declared_loses_nothing(extra):
    """A Content-Length under the cap but too long runs into the next record; the next header is then misaligned
    and reading resyncs at the next gzip member, so every real page after it is still emitted."""
    from tests.hostile import HTML, REAL, real_pages, response_record

    raw = REAL.read_bytes()
    full = read_bytes_stream(raw)[0]
    page = real_pages()[2]
    bad = response_record("http://length.example/off", HTML, page, declared_length=len(HTML) + 4 + len(page) + extra)
    rows, stats = read_bytes_stream(bad + raw)
    assert [(r.doc_id, r.html) for r in rows if "length.example" not in r.url] == [(r.doc_id, r.html) for r in full]
    assert stats["read/resyncs"] <= 1 and balance_errors(stats) == []  # off by one byte: FastWARC steps over it


@pytest.mark.parametrize("name", ["edge-cases.warc.gz", "whirlwind.warc.gz", "warcfile.warc.gz"])
@pytest.mark.parametrize("pos", [0, 1])
def test_a_damaged_first_gzip_magic_resyncs_at_the_next_member(name, pos):
    """A flipped byte in the first gzip member's magic (found by the property test above) is a damaged start, not
    an unknown compression: reading resumes at the next intact member and every later page comes out as from the
    intact file, the file error counted and explained."""
    raw = (SAMPLE / name).read_bytes()
    full = read_bytes_stream(raw)[0]
    messages: dict[str, str] = {}
    stats: Counter = Counter()
    rows = list(iter_warc(io.BytesIO(_mutate(raw, "flip", pos, 1, b"")), "mem", ReadConfig(), stats, messages))
    got = {(r.doc_id, r.record_offset): r.html for r in rows}
    later = [p for p in full if p.record_offset > 0]
    assert later and all(got.get((p.doc_id, p.record_offset)) == p.html for p in later)
    assert stats["read/file_error_damaged_start"] == 1 and stats["read/resyncs"] >= 1
    assert balance_errors(stats) == []
