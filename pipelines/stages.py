"""Per-document stages of the curate DAG: an operator plus the counting around it.

A stage takes a batch of documents (dicts) and the shard's counter and returns the documents it
keeps, counting `<name>/in`, `<name>/out` and `<name>/drop_<reason>`. Operators stay pure; the
bookkeeping lives here so every stage counts the same way.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

import pyarrow as pa

from operators.extract import ExtractConfig, Extractor, Rejected

Doc = dict[str, Any]


class DocStage(Protocol):
    name: str
    fields: list[pa.Field]
    """Columns this stage adds to the shard schema."""

    def __call__(self, docs: list[Doc], stats: Counter) -> list[Doc]: ...


class ExtractStage:
    """HTML -> main-content text; pages with no text (or that the parser rejects) are dropped."""

    name = "extract"
    fields = [pa.field("text", pa.large_string()), pa.field("text_chars", pa.int64())]

    def __init__(self, cfg: ExtractConfig):
        self.extractor = Extractor(cfg)

    def __call__(self, docs: list[Doc], stats: Counter) -> list[Doc]:
        kept = []
        for doc in docs:
            stats["extract/in"] += 1
            try:
                text = self.extractor(doc["html"])
            except Rejected as rejected:
                stats[f"extract/drop_{rejected.reason}"] += 1
                continue
            except Exception:  # resiliparse raises its own parser exceptions on hostile markup
                stats["extract/drop_parse_error"] += 1
                continue
            if not text:
                stats["extract/drop_empty"] += 1
                continue
            doc["text"] = text
            doc["text_chars"] = len(text)
            stats["extract/out"] += 1
            stats["extract/text_chars"] += len(text)
            kept.append(doc)
        return kept
