"""The document shard schema: read fields, then the columns each stage adds, in stage order."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

READ_FIELDS = [
    pa.field("doc_id", pa.string(), nullable=False),  # WARC-Record-ID of the response record
    pa.field("url", pa.string()),
    pa.field("domain", pa.string()),  # registered domain (eTLD+1)
    pa.field("warc_date", pa.timestamp("s", tz="UTC")),
    pa.field("source_file", pa.string()),
    pa.field("record_offset", pa.int64()),  # byte offset of the record (of its gzip member) in source_file
    pa.field("http_status", pa.int16()),  # null for WARC resource records
    pa.field("content_type", pa.string()),
    pa.field("charset", pa.string()),  # as declared by the server (may be wrong)
    pa.field("html_bytes", pa.int64()),  # decoded body size
]
HTML_FIELD = pa.field("html", pa.binary())


def parse_warc_date(value: str) -> datetime | None:
    """WARC-Date (ISO 8601, 'Z' or offset, optional fraction; ARC gives 14 digits) -> UTC datetime."""
    value = value.strip()
    if not value:
        return None
    try:
        if value.isdigit() and len(value) == 14:
            return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def document_schema(stage_fields: list[pa.Field], keep_html: bool) -> pa.Schema:
    fields = list(READ_FIELDS) + list(stage_fields)
    if keep_html:
        fields.append(HTML_FIELD)
    return pa.schema(fields)


def to_table(docs: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> Arrow table in `schema` (column-wise: ~5x faster than Table.from_pylist)."""
    return pa.Table.from_arrays(
        [pa.array([d.get(f.name) for d in docs], type=f.type) for f in schema], schema=schema
    )
