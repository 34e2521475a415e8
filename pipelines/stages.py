"""Per-document stages of the curate DAG: an operator plus the counting around it.

A stage takes a batch of documents (dicts) and the shard's counter and returns the documents it
keeps, counting `<name>/in`, `<name>/out` and `<name>/drop_<reason>`; with a `rejected` list it
also records each removed document with its reason (the exclusions output). Operators stay pure;
this bookkeeping lives once, in `DocStage.__call__`, so every stage counts the same way.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa

from operators import _gopher_kernel
from operators.blocklist import BlocklistConfig, URLBlocklist
from operators.classifier import ClassifierConfig, FastTextClassifier, score_reject_reason
from operators.extract import ExtractConfig, Extractor, Rejected
from operators.gopher import GopherConfig, gopher_evidence, gopher_reject_reason
from operators.linefilters import C4Config, FineWebConfig, c4_filter, fineweb_evidence, fineweb_reject_reason
from operators.langid import LangIDConfig, LanguageIdentifier, language_reject_reason
from operators.pii import PIIConfig, mask_pii
from operators.sandbox import Sandbox

Doc = dict[str, Any]

EXCLUSION_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string()),
    pa.field("url", pa.string()),
    pa.field("domain", pa.string()),
    pa.field("source_file", pa.string()),
    pa.field("record_offset", pa.int64()),
    pa.field("stage", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("evidence", pa.string()),  # JSON: the measured values behind the reason (`DocStage.explain`)
])


def touch(stats: Counter, stage: str) -> None:
    """Make `<stage>/in` and `<stage>/out` present even when zero, so every shard's stats name every stage."""
    stats[f"{stage}/in"] += 0
    stats[f"{stage}/out"] += 0


class DocStage(ABC):
    """Base of every per-document stage: subclasses implement `decide`."""

    name: str = ""
    fields: list[pa.Field] = []
    """Columns this stage adds to the shard schema."""

    @abstractmethod
    def decide(self, doc: Doc, stats: Counter) -> str | None:
        """Return a drop reason, or None to keep `doc` (after setting this stage's columns on it)."""

    def explain(self, doc: Doc, reason: str) -> dict[str, Any]:
        """The evidence for dropping `doc` with `reason` (rule values, scores, matched list entries).

        Called only for removed documents when exclusions are written, so it may recompute what
        `decide` measured."""
        return {}

    def __call__(self, docs: list[Doc], stats: Counter, rejected: list[dict] | None = None) -> list[Doc]:
        touch(stats, self.name)
        kept = []
        for doc in docs:
            reason = self.decide(doc, stats)
            if reason is None:
                kept.append(doc)
                continue
            stats[f"{self.name}/drop_{reason}"] += 1
            if rejected is not None:
                rejected.append({
                    "doc_id": doc["doc_id"], "url": doc["url"], "domain": doc.get("domain"),
                    "source_file": doc.get("source_file"), "record_offset": doc.get("record_offset"),
                    "stage": self.name, "reason": reason,
                    "evidence": json.dumps(self.explain(doc, reason), sort_keys=True),
                })
        stats[f"{self.name}/in"] += len(docs)
        stats[f"{self.name}/out"] += len(kept)
        return kept


class BlocklistStage(DocStage):
    """Drops pages whose URL is on a blocklist or carries banned words (before extraction: cheap)."""

    name = "blocklist"

    def __init__(self, cfg: BlocklistConfig):
        self.blocklist = URLBlocklist(cfg)

    def decide(self, doc: Doc, stats: Counter) -> str | None:
        return self.blocklist.reject_reason(doc["url"])

    def explain(self, doc: Doc, reason: str) -> dict[str, Any]:
        return self.blocklist.check(doc["url"])[1]


class ExtractStage(DocStage):
    """HTML -> main-content text; pages with no text (or that the parser rejects) are dropped."""

    name = "extract"
    fields = [pa.field("text", pa.large_string()), pa.field("text_chars", pa.int64())]

    def __init__(self, cfg: ExtractConfig):
        self.cfg = cfg
        self.extractor = Extractor(cfg)
        self.sandbox: Sandbox | None = None  # started by `start()` (a curate worker's constructor), never in the driver

    def start(self) -> None:
        """Start the extraction child now (a worker's one-time setup) rather than inside the first file's task."""
        if self.cfg.time_limit_s > 0 and self.sandbox is None:
            self.sandbox = Sandbox("operators.extract:sandboxed_extractor", asdict(self.cfg),
                                   self.cfg.time_limit_s, self.cfg.memory_limit_mb)
            self.sandbox.run_one(b"<p>ready</p>")

    def __call__(self, docs: list[Doc], stats: Counter, rejected: list[dict] | None = None) -> list[Doc]:
        if self.cfg.time_limit_s > 0:
            self.start()
            restarts = self.sandbox.restarts
            for doc, result in zip(docs, self.sandbox([doc["html"] for doc in docs])):
                doc["_extracted"] = result
            stats["extract/sandbox_restarts"] += self.sandbox.restarts - restarts
        return super().__call__(docs, stats, rejected)

    def _extract(self, doc: Doc) -> tuple[str, str]:
        """(text, '') or ('', drop reason)."""
        if "_extracted" in doc:
            status, payload = doc.pop("_extracted")
            if status == "ok":
                return payload.decode("utf-8", "surrogatepass"), ""
            if status == "rejected":
                return "", payload.decode()
            return "", "parse_error" if status == "error" else status  # timeout, out_of_memory, crashed
        try:
            return self.extractor(doc["html"]), ""
        except Rejected as rejected:
            return "", rejected.reason
        except Exception:  # resiliparse raises its own parser exceptions on hostile markup
            return "", "parse_error"

    def decide(self, doc: Doc, stats: Counter) -> str | None:
        text, reason = self._extract(doc)
        if reason:
            return reason
        if not text:
            return "empty"
        doc["text"], doc["text_chars"] = text, len(text)
        stats["extract/text_chars"] += len(text)
        return None

    def explain(self, doc: Doc, reason: str) -> dict[str, Any]:
        evidence = {"html_bytes": len(doc["html"]), "charset": doc.get("charset")}
        if reason == "timeout":
            evidence["time_limit_s"] = self.cfg.time_limit_s
        elif reason == "out_of_memory":
            evidence["memory_limit_mb"] = self.cfg.memory_limit_mb
        return evidence


class LanguageIDStage(DocStage):
    """Adds `lang` and `lang_score`; keeps configured languages scoring at least `min_score`.

    Counts the language of every document it sees (`langid/lang_<code>`), kept or not.
    """

    name = "langid"
    fields = [pa.field("lang", pa.string()), pa.field("lang_score", pa.float32())]

    def __init__(self, cfg: LangIDConfig):
        self.cfg = cfg
        self.identify = LanguageIdentifier(cfg.model_path, cfg.max_chars, cfg.prefix_chars, cfg.prefix_confidence)

    def decide(self, doc: Doc, stats: Counter) -> str | None:
        lang, score = self.identify(doc["text"])
        stats[f"langid/lang_{lang or 'none'}"] += 1
        doc["lang"], doc["lang_score"] = lang, score
        return language_reject_reason(lang, score, self.cfg)

    def explain(self, doc: Doc, reason: str) -> dict[str, Any]:
        return {"lang": doc["lang"], "lang_score": round(float(doc["lang_score"]), 4),
                "languages": list(self.cfg.languages), "min_score": self.cfg.min_score}


class GopherStage(DocStage):
    """Drops documents that break a Gopher quality or repetition rule, counted by rule."""

    name = "gopher"

    def __init__(self, cfg: GopherConfig):
        self.cfg = cfg
        if _gopher_kernel.available():  # load (or compile) the n-gram kernel now, not inside the first file
            _gopher_kernel.ngram_stats(np.arange(4, dtype=np.uint64) % 2, np.ones(4, np.int64), 2)

    def decide(self, doc: Doc, stats: Counter) -> str | None:
        return gopher_reject_reason(doc["text"], self.cfg)

    def explain(self, doc: Doc, reason: str) -> dict[str, Any]:
        return gopher_evidence(doc["text"], reason, self.cfg)


class C4Stage(DocStage):
    """C4's line filters: rewrites `text` to its sentence-like lines; drops pages left too short."""

    name = "c4"

    def __init__(self, cfg: C4Config):
        self.cfg = cfg

    def decide(self, doc: Doc, stats: Counter) -> str | None:
        text, reason = c4_filter(doc["text"], self.cfg)
        if reason is None:
            stats["c4/chars_removed"] += len(doc["text"]) - len(text)
            doc["text"], doc["text_chars"] = text, len(text)
        return reason


class FineWebStage(DocStage):
    """FineWeb's page-level line ratios (punctuation, short lines, duplicated lines, list-likeness)."""

    name = "fineweb"

    def __init__(self, cfg: FineWebConfig):
        self.cfg = cfg

    def decide(self, doc: Doc, stats: Counter) -> str | None:
        return fineweb_reject_reason(doc["text"], self.cfg)

    def explain(self, doc: Doc, reason: str) -> dict[str, Any]:
        return fineweb_evidence(doc["text"], reason, self.cfg)


class ClassifierStage(DocStage):
    """Adds `<name>_score` (probability of the model's positive label) and drops by threshold."""

    def __init__(self, name: str, model_path: str, cfg: ClassifierConfig):
        self.name = name
        self.cfg = cfg
        self.classifier = FastTextClassifier(model_path, cfg.positive_label)
        self.column = f"{name}_score"
        self.fields = [pa.field(self.column, pa.float32())]

    def decide(self, doc: Doc, stats: Counter) -> str | None:
        doc[self.column] = score = self.classifier.score(doc["text"])
        return score_reject_reason(score, self.cfg)

    def explain(self, doc: Doc, reason: str) -> dict[str, Any]:
        limit = self.cfg.min_score if reason == "low_score" else self.cfg.max_score
        return {"score": round(float(doc[self.column]), 4), "limit": limit}


class PIIStage(DocStage):
    """Masks e-mails, phone numbers and IP addresses in `text`; never drops. Adds per-document counts."""

    name = "pii"
    fields = [pa.field("pii_emails", pa.int32()), pa.field("pii_phone_numbers", pa.int32()), pa.field("pii_ip_addresses", pa.int32())]

    def __init__(self, cfg: PIIConfig):
        self.cfg = cfg

    def decide(self, doc: Doc, stats: Counter) -> str | None:
        doc["text"], counts = mask_pii(doc["text"], self.cfg)
        for kind, n in counts.items():
            doc[f"pii_{kind}"] = n
            stats[f"pii/masked_{kind}"] += n
        stats["pii/docs_with_pii"] += any(counts.values())
        return None
