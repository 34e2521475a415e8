"""Per-document stages of the curate DAG: an operator plus the counting around it.

A stage takes a batch of documents (dicts) and the shard's counter and returns the documents it
keeps, counting `<name>/in`, `<name>/out` and `<name>/drop_<reason>`. Operators stay pure; the
bookkeeping lives here so every stage counts the same way.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

import pyarrow as pa

from operators.blocklist import BlocklistConfig, URLBlocklist
from operators.extract import ExtractConfig, Extractor, Rejected
from operators.gopher import GopherConfig, gopher_reject_reason
from operators.langid import LangIDConfig, LanguageIdentifier, language_reject_reason
from operators.pii import PIIConfig, mask_pii

Doc = dict[str, Any]


class DocStage(Protocol):
    name: str
    fields: list[pa.Field]
    """Columns this stage adds to the shard schema."""

    def __call__(self, docs: list[Doc], stats: Counter) -> list[Doc]: ...


def touch(stats: Counter, stage: str) -> None:
    """Make `<stage>/in` and `<stage>/out` present even when zero, so every shard's stats name every stage."""
    stats[f"{stage}/in"] += 0
    stats[f"{stage}/out"] += 0


class ExtractStage:
    """HTML -> main-content text; pages with no text (or that the parser rejects) are dropped."""

    name = "extract"
    fields = [pa.field("text", pa.large_string()), pa.field("text_chars", pa.int64())]

    def __init__(self, cfg: ExtractConfig):
        self.extractor = Extractor(cfg)

    def __call__(self, docs: list[Doc], stats: Counter) -> list[Doc]:
        touch(stats, self.name)
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


class LanguageIDStage:
    """Adds `lang` and `lang_score`; keeps configured languages scoring at least `min_score`.

    Counts the language of every document it sees (`langid/lang_<code>`), kept or not.
    """

    name = "langid"
    fields = [pa.field("lang", pa.string()), pa.field("lang_score", pa.float32())]

    def __init__(self, cfg: LangIDConfig):
        self.cfg = cfg
        self.identify = LanguageIdentifier(cfg.model_path, cfg.max_chars)

    def __call__(self, docs: list[Doc], stats: Counter) -> list[Doc]:
        touch(stats, self.name)
        kept = []
        for doc in docs:
            stats["langid/in"] += 1
            lang, score = self.identify(doc["text"])
            stats[f"langid/lang_{lang or 'none'}"] += 1
            reason = language_reject_reason(lang, score, self.cfg)
            if reason:
                stats[f"langid/drop_{reason}"] += 1
                continue
            doc["lang"], doc["lang_score"] = lang, score
            stats["langid/out"] += 1
            kept.append(doc)
        return kept


class PIIStage:
    """Masks e-mails, phone numbers and IP addresses in `text`; never drops. Adds per-document counts."""

    name = "pii"
    fields = [pa.field("pii_emails", pa.int32()), pa.field("pii_phone_numbers", pa.int32()), pa.field("pii_ip_addresses", pa.int32())]

    def __init__(self, cfg: PIIConfig):
        self.cfg = cfg

    def __call__(self, docs: list[Doc], stats: Counter) -> list[Doc]:
        touch(stats, self.name)
        for doc in docs:
            doc["text"], counts = mask_pii(doc["text"], self.cfg)
            for kind, n in counts.items():
                doc[f"pii_{kind}"] = n
                stats[f"pii/masked_{kind}"] += n
            stats["pii/docs_with_pii"] += any(counts.values())
        stats["pii/in"] += len(docs)
        stats["pii/out"] += len(docs)
        return docs


class GopherStage:
    """Drops documents that break a Gopher quality or repetition rule, counted by rule."""

    name = "gopher"
    fields: list[pa.Field] = []

    def __init__(self, cfg: GopherConfig):
        self.cfg = cfg

    def __call__(self, docs: list[Doc], stats: Counter) -> list[Doc]:
        touch(stats, self.name)
        kept = []
        for doc in docs:
            stats["gopher/in"] += 1
            reason = gopher_reject_reason(doc["text"], self.cfg)
            if reason:
                stats[f"gopher/drop_{reason}"] += 1
                continue
            stats["gopher/out"] += 1
            kept.append(doc)
        return kept


class BlocklistStage:
    """Drops pages whose URL is on a blocklist or carries banned words (before extraction: cheap)."""

    name = "blocklist"
    fields: list[pa.Field] = []

    def __init__(self, cfg: BlocklistConfig):
        self.blocklist = URLBlocklist(cfg)

    def __call__(self, docs: list[Doc], stats: Counter) -> list[Doc]:
        touch(stats, self.name)
        kept = []
        for doc in docs:
            stats["blocklist/in"] += 1
            reason = self.blocklist.reject_reason(doc["url"])
            if reason:
                stats[f"blocklist/drop_{reason}"] += 1
                continue
            stats["blocklist/out"] += 1
            kept.append(doc)
        return kept
