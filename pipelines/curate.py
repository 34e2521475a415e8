"""`sift curate`: WARC files -> clean document shards (Parquet, zstd) with per-shard stats.

The DAG, one Ray Data task per input file (streaming; a file is never held in memory whole):

    list inputs -> read WARC -> [per-document stages] -> write shard + its stats -> merge stats

Per-document stages run fused inside the file's task, in the order of `document_stages()`;
later stages (language ID, PII, Gopher, classifiers) are added there. Corpus-wide stages (dedup,
tokenization) read the shards this writes.

    python -m pipelines.curate --input 'data/sample/*.warc.gz' --output runs/demo
    ray job submit --working-dir . -- python -m pipelines.curate --input s3://... --output s3://...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.parquet as pq

from operators.blocklist import BlocklistConfig
from operators.classifier import BUNDLED_QUALITY_MODEL, ClassifierConfig
from operators.extract import ExtractConfig
from operators.gopher import GopherConfig
from operators.langid import LangIDConfig
from operators.linefilters import C4Config, FineWebConfig
from operators.pii import PIIConfig
from operators.domains import registered_domain
from operators.warc import ReadConfig, iter_warc, sniff_format
from pipelines import stats as statslib
from pipelines.config import config_hash, parse_set, resolve, config_parser
from pipelines.io import OutputDir, input_locations, list_inputs, open_input
from pipelines.layout import DOCS_DIR, EXCLUSIONS_DIR, STATS_DIR, init_ray  # noqa: F401 (re-exported)
from pipelines.run_info import run_metadata
from pipelines.schema import document_schema, parse_warc_date, to_table
from pipelines.stages import (
    EXCLUSION_SCHEMA,
    BlocklistStage,
    C4Stage,
    ClassifierStage,
    DocStage,
    ExtractStage,
    FineWebStage,
    GopherStage,
    LanguageIDStage,
    PIIStage,
    touch,
)

STAGE_ORDER = ("read", "blocklist", "extract", "langid", "gopher", "c4", "fineweb", "quality", "nsfw", "toxic", "pii")


@dataclass(frozen=True)
class CurateConfig:
    input: tuple[str, ...] = ()
    """WARC/ARC files, directories, globs, s3:// or gs:// prefixes, or a CC `warc.paths[.gz]` listing."""
    output: str = "runs/curate"
    """Output folder (local or s3://, gs://)."""
    cc_base_url: str = "s3://commoncrawl/"
    """Prefix joined to the relative paths of a `warc.paths` listing."""
    max_files: int | None = None
    """Only the first N input files (sorted), for trial runs."""
    num_cpus: int | None = None
    """Size of the embedded local Ray (default: all cores). Ignored when RAY_ADDRESS is set."""
    batch_size: int = 128
    """Documents per batch inside a file task (bounds memory; does not change the documents)."""
    batch_max_bytes: int = 32 * 1024 * 1024
    """A batch also closes once its pages' HTML adds up to this many bytes, so a worker holds at most about
    this plus one page (`read.max_html_bytes`) of HTML, whatever `batch_size` is."""
    keep_html: bool = False
    """Also store the raw HTML bytes in the shards."""
    write_exclusions: bool = False
    """Also write every document a stage removed (doc_id, url, stage, reason) to
    exclusions/<shard>.parquet, to answer "why was this page removed?"."""
    read: ReadConfig = field(default_factory=ReadConfig)
    blocklist: BlocklistConfig = field(default_factory=BlocklistConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    langid: LangIDConfig = field(default_factory=LangIDConfig)
    gopher: GopherConfig = field(default_factory=GopherConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    quality: ClassifierConfig = field(default_factory=ClassifierConfig)
    """fastText quality score (bundled model when model_path is empty); set min_score to filter."""
    nsfw: ClassifierConfig = field(default_factory=ClassifierConfig)
    """NSFW classifier: runs only with a model_path; set max_score to filter."""
    toxic: ClassifierConfig = field(default_factory=ClassifierConfig)
    """Toxic-speech classifier: runs only with a model_path; set max_score to filter."""
    pii: PIIConfig = field(default_factory=PIIConfig)

    def output_hash(self) -> str:
        """Hash of the fields that change the shards' content (not where or how fast)."""
        return config_hash(
            {
                "read": asdict(self.read),
                "blocklist": {k: v for k, v in asdict(self.blocklist).items() if k != "cache_dir"},
                # resource guards, like num_cpus: they change only pages no real page comes near
                "extract": {k: v for k, v in asdict(self.extract).items() if k not in ("time_limit_s", "memory_limit_mb")},
                "langid": asdict(self.langid),
                "gopher": asdict(self.gopher),
                "c4": asdict(self.c4),
                "fineweb": asdict(self.fineweb),
                "quality": asdict(self.quality),
                "nsfw": asdict(self.nsfw),
                "toxic": asdict(self.toxic),
                "pii": asdict(self.pii),
                "keep_html": self.keep_html,
                "write_exclusions": self.write_exclusions,
            }
        )


def document_stages(cfg: CurateConfig) -> list[DocStage]:
    """The per-document stages, in order. New filters plug in here."""
    stages: list[DocStage] = []
    if cfg.blocklist.enabled:  # URL rules first: they need no extraction
        stages.append(BlocklistStage(cfg.blocklist))
    stages.append(ExtractStage(cfg.extract))
    if cfg.langid.enabled:
        stages.append(LanguageIDStage(cfg.langid))
    if cfg.gopher.enabled:
        stages.append(GopherStage(cfg.gopher))
    if cfg.c4.enabled:
        stages.append(C4Stage(cfg.c4))
    if cfg.fineweb.enabled:
        stages.append(FineWebStage(cfg.fineweb))
    for name, ccfg, default_model in (
        ("quality", cfg.quality, BUNDLED_QUALITY_MODEL),
        ("nsfw", cfg.nsfw, ""),
        ("toxic", cfg.toxic, ""),
    ):
        if ccfg.enabled and (ccfg.model_path or default_model):
            stages.append(ClassifierStage(name, ccfg.model_path or default_model, ccfg))
    if cfg.pii.enabled:  # after the filters: mask only what is kept
        stages.append(PIIStage(cfg.pii))
    return stages


def shard_name(path: str) -> str:
    """Stable, unique shard name for an input file: readable stem + hash of the full path."""
    stem = re.sub(r"(\.warc|\.arc)?(\.gz|\.lz4|\.zst)?$", "", path.rstrip("/").rsplit("/", 1)[-1])
    # no leading dot: hidden names are skipped by listings, and ".tmp-*" names are unfinished writes
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip(".")[:80] or "input"
    return f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def _batched(rows, n: int, max_bytes: int):
    """Batches of at most `n` rows whose HTML adds up to at most `max_bytes` (or one row, if that is larger)."""
    batch, size = [], 0
    for row in rows:
        if batch and (len(batch) >= n or size + len(row.html) > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += len(row.html)
    if batch:
        yield batch


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


LZ4_MAGIC, ZSTD_MAGIC = b"\x04\x22\x4d\x18", b"\x28\xb5\x2f\xfd"

# what a file error kind means, when the reader's exception message does not say it
_ERROR_NOTES = {"damaged_start": "the start of the file is not WARC; reading began at the first intact record"}
# record drops that mean the file itself is damaged (a record cut short), not that a page was unwanted
DAMAGE_DROPS = ("truncated_record", "length_mismatch")


def sniff_content(head: bytes) -> tuple[str, str]:
    """(format, what the bytes are) from a file's first bytes: format 'warc', 'arc' or '' (neither, or unknown
    because compressed with LZ4/zstd); what, for a file that is neither: 'text', 'binary data', 'gzip data' ..."""
    if not head:
        return "", "empty"
    if head[:2] == b"\x1f\x8b":
        try:
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 64)
        except zlib.error:
            return "", "corrupt gzip data"
        fmt = sniff_format(inner)
        if fmt != "unknown":
            return fmt, f"gzip-compressed {fmt.upper()}"
        return "", "gzip data that is not WARC or ARC" if inner else "corrupt gzip data"
    if head[:4] in (LZ4_MAGIC, ZSTD_MAGIC):
        return "", "LZ4 data" if head[:4] == LZ4_MAGIC else "zstd data"
    fmt = sniff_format(head)
    if fmt != "unknown":
        return fmt, fmt.upper()
    text = head[:1024].decode("utf-8", errors="replace")  # (a character cut at 1024 bytes is one replacement)
    printable = sum(c != "\ufffd" and (c.isprintable() or c in "\r\n\t") for c in text)
    return "", "text" if printable >= 0.95 * len(text) else "binary data"


def damage_record(path: str, stats: dict[str, int], head: bytes, messages: dict[str, str]) -> dict[str, Any] | None:
    """The record of a damaged input file, for the summary and `sift stats` (None: the file read cleanly).

    `kind`: empty | not_a_warc (nothing in it is WARC/ARC) | unreadable (a WARC/ARC file of which no record could
    be read) | damaged (a reader error after some records) | truncated (no reader error, but a record ends early).
    `error` says what went wrong, with the reader's exception message where it had one."""
    errors = {k[len("read/file_error_"):]: v for k, v in stats.items() if k.startswith("read/file_error_") and v}
    cut = {r: stats.get(f"read/drop_{r}", 0) for r in DAMAGE_DROPS if stats.get(f"read/drop_{r}", 0)}
    if not errors and not cut:
        return None
    fmt, content = sniff_content(head)
    records = stats.get("read/in", 0) - sum(cut.values())  # records read whole (a cut-short one is not kept)
    if not head and not stats.get("read/in", 0):
        kind = "empty"
    elif "not_a_warc" in errors or (not records and not fmt and content not in ("LZ4 data", "zstd data")):
        kind = "not_a_warc"
    elif not records:
        kind = "unreadable"
    else:
        kind = "damaged" if errors else "truncated"
    parts = []
    for err, n in sorted(errors.items()):
        times = f" x{n}" if n > 1 else ""
        msg = messages.get(err)
        if err == "not_a_warc":
            parts.append(f"not_a_warc ({content})")
        elif msg and msg.split(":", 1)[0].lower() == err:  # the kind is only the exception's type: show its message
            parts.append(f"{msg}{times}")
        elif msg or err in _ERROR_NOTES:
            parts.append(f"{err}{times} ({msg.split(': ', 1)[-1] if msg else _ERROR_NOTES[err]})")
        else:
            parts.append(f"{err}{times}")
    parts += [f"{r} x{n}" if n > 1 else r for r, n in cut.items()]
    return {
        "file": path,
        "kind": kind,
        "format": fmt,
        "content": content,
        "error": "; ".join(parts),
        "errors": {**errors, **cut},
        "messages": dict(sorted(messages.items())),
        "records_kept": records,
        "pages_kept": stats.get("read/out", 0),
        "documents": stats.get("write/docs", 0),
        "resyncs": stats.get("read/resyncs", 0),
        "bytes": stats.get("read/input_bytes", 0),
    }


class CurateShard:
    """Ray Data worker: one input file -> one Parquet shard + its stats file, written atomically.

    Built once per worker (stages load their models in __init__), called once per file.
    """

    def __init__(self, cfg: CurateConfig):
        self.cfg = cfg
        self.out = OutputDir(cfg.output)
        self.stages = document_stages(cfg)
        self.schema = document_schema([f for s in self.stages for f in s.fields], cfg.keep_html)
        # one-time per-worker setup belongs here, not in the first file's task: the public-suffix
        # list (~0.1 s of CPU) loads on first use
        registered_domain("https://www.example.co.uk/")
        for stage in self.stages:
            if isinstance(stage, ExtractStage):
                stage.start()  # the extraction child process (per-page time limits)

    def cpu_seconds(self) -> float:
        """This worker's CPU time, including its extraction child process."""
        return time.process_time() + sum(s.sandbox.cpu_seconds() for s in self.stages if getattr(s, "sandbox", None))

    def process(self, path: str, shard: str) -> Counter:
        cfg, out = self.cfg, self.out
        stats: Counter = Counter()
        messages: dict[str, str] = {}  # the reader's exception message per file-error kind
        stats["read/files"] += 1
        for stage_name in ("read", *(s.name for s in self.stages)):
            touch(stats, stage_name)  # every shard names every stage, even with no documents
        rejected: list[dict] | None = [] if cfg.write_exclusions else None
        tmp = out.tmp_path(DOCS_DIR, f"{shard}.parquet")
        with out.fs.open_output_stream(tmp) as sink, pq.ParquetWriter(sink, self.schema, compression="zstd") as writer:
            with open_input(path) as f:
                for batch in _batched(iter_warc(f, path, cfg.read, stats, messages), cfg.batch_size, cfg.batch_max_bytes):
                    docs = []
                    for row in batch:
                        doc = row.as_dict()
                        doc["html_bytes"] = len(row.html)
                        doc["warc_date"] = parse_warc_date(row.warc_date)
                        docs.append(doc)
                    for stage in self.stages:
                        docs = stage(docs, stats, rejected)
                    if docs:
                        writer.write_table(to_table(docs, self.schema))
                    stats["write/docs"] += len(docs)
                f.seek(0, os.SEEK_END)
                stats["read/input_bytes"] += f.tell()
                f.seek(0)
                head = f.read(4096)
        out.commit(tmp, DOCS_DIR, f"{shard}.parquet")
        if rejected is not None:
            tmp = out.tmp_path(EXCLUSIONS_DIR, f"{shard}.parquet")
            with out.fs.open_output_stream(tmp) as sink:
                pq.write_table(to_table(rejected, EXCLUSION_SCHEMA), sink, compression="zstd")
            out.commit(tmp, EXCLUSIONS_DIR, f"{shard}.parquet")
        record = damage_record(path, stats, head, {k: _shorten(v) for k, v in messages.items()})
        # the stats file is written last: its presence marks the unit complete
        out.write_json({**stats, **({statslib.DAMAGED_FILE: record} if record else {})}, STATS_DIR, f"{shard}.json")
        return stats

    def __call__(self, unit: dict[str, Any]) -> dict[str, Any]:
        t0, c0 = time.perf_counter(), self.cpu_seconds()
        try:
            self.process(unit["path"], unit["shard"])
        except Exception as exc:
            # a deterministic failure names its input so it can be reproduced with one file
            raise RuntimeError(f"curate failed on {unit['path']}: {type(exc).__name__}: {exc}") from exc
        return {
            "shard": unit["shard"],
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": self.cpu_seconds() - c0,
            "node": _node_id(),
        }


WORKER_START_TIMEOUT_S = 300  # a curate worker that cannot start in this time (no room on the cluster) is an error


def _node_id() -> str:
    """The Ray node this worker runs on ("" outside Ray): the run summary says where the work went."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - diagnostics only
        return ""


def largest_first(units: list[dict]) -> list[dict]:
    """Local files in decreasing size (ties and remote files in their listed order): workers take files as they free
    up, so starting with the largest leaves the smallest for the end and the workers finish closer together."""
    def size(u: dict) -> int:
        try:
            return -os.path.getsize(u["path"]) if "://" not in u["path"] else 0
        except OSError:
            return 0

    return sorted(units, key=size)


def curate_dataset(pending: list[dict], cfg: CurateConfig, workers: int):
    """The Ray Data plan of a curate run: one row per file in `pending`, mapped by a pool of `workers`
    `CurateShard` actors (one CPU each) to a row of timings.

    Files go out only once every worker is up (models loaded, extraction child started): otherwise the first
    worker ready, on a lightly loaded node, takes files that a slower node's workers were meant to share. Ray Data
    copies the DataContext into a dataset when it is created, so the wait is set on this dataset's own context."""
    import ray

    ds = ray.data.from_items(pending, override_num_blocks=len(pending))
    ds.context.wait_for_min_actors_s = WORKER_START_TIMEOUT_S
    return ds.map(
        CurateShard,
        fn_constructor_args=(cfg,),
        compute=ray.data.ActorPoolStrategy(min_size=workers, max_size=workers),
        num_cpus=1,
    )


def run(cfg: CurateConfig) -> dict[str, Any]:
    """Curate `cfg.input` into `cfg.output`; skip files whose shards are already complete."""
    t0 = time.perf_counter()
    inputs = list_inputs(cfg.input, cfg.cc_base_url)
    if cfg.max_files is not None:
        inputs = inputs[: cfg.max_files]
    out = OutputDir(cfg.output)
    out.check_writable()
    document_stages(cfg)  # a missing or wrong model is an error here, before any work starts
    locations = input_locations(cfg.input)
    if out.exists("run.json"):
        previous = out.read_json("run.json")
        if previous.get("output_hash") != cfg.output_hash():
            raise ValueError(
                f"{cfg.output} holds a run made with different settings (output hash "
                f"{previous.get('output_hash')} != {cfg.output_hash()}); choose a new --output"
            )
        had = previous.get("input_locations")
        if had is not None and had != locations:
            raise ValueError(
                f"{cfg.output} holds a curate run of {', '.join(had)}, not of {', '.join(locations)}: rerun with that "
                "--input (files added under it since are curated and added), or choose a new --output"
            )
    out.makedirs(DOCS_DIR)
    out.makedirs(STATS_DIR)
    if cfg.write_exclusions:
        out.makedirs(EXCLUSIONS_DIR)
    units = [{"path": p, "shard": shard_name(p)} for p in inputs]
    done = set(out.list(STATS_DIR, suffix=".json"))
    pending = largest_first([u for u in units if f"{u['shard']}.json" not in done])
    meta = {**run_metadata(asdict(cfg), cfg.output_hash()), "input_locations": locations}
    out.write_json({**meta, "status": "running", "inputs": len(units), "pending": len(pending)}, "run.json")

    if pending:
        import ray

        init_ray(cfg.num_cpus)
        workers = max(1, min(len(pending), int(ray.available_resources().get("CPU", 1))))
        # shards and their stats are written by the workers; the rows only carry timings
        timings = list(curate_dataset(pending, cfg, workers).iter_rows())
        task_seconds = sum(r["seconds"] for r in timings)
        cpu_seconds = sum(r["cpu_seconds"] for r in timings)
        nodes = dict(Counter(r["node"] for r in timings))
    else:
        task_seconds = cpu_seconds = 0.0
        nodes = {}
        workers = 0
    wall = time.perf_counter() - t0

    shard_stats = [out.read_json(STATS_DIR, f"{u['shard']}.json") for u in units]
    total = statslib.merge(shard_stats)
    damaged = statslib.damaged_files(shard_stats)
    errors = statslib.balance_errors(total)
    if errors:
        raise AssertionError(f"stats do not balance: {errors}")
    summary = {
        "output": out.uri,
        "documents_dir": out.path(DOCS_DIR),
        "exclusions_dir": out.path(EXCLUSIONS_DIR) if cfg.write_exclusions else None,
        "files": len(units),
        "files_processed_now": len(pending),
        "wall_seconds": round(wall, 3),
        "task_seconds": round(task_seconds, 3),
        "task_cpu_seconds": round(cpu_seconds, 3),
        "workers": workers,
        "shards_per_node": nodes,
        "stats": dict(sorted(total.items())),
        "damaged_files": damaged,
    }
    out.write_json(summary, "stats.json")
    out.write_bytes(b"", DOCS_DIR, "_SUCCESS")
    out.write_json({**meta, "status": "finished", "inputs": len(units), "wall_seconds": wall}, "run.json")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    s = summary["stats"]
    lines = [f"sift curate: {summary['files']} input files ({summary['files_processed_now']} processed now)"]
    for stage, n_in, n_out, drops in statslib.funnel(s, STAGE_ORDER):
        lines.append(f"  {stage:<9} in {n_in:>8,}  out {n_out:>8,}")
        if stage == "langid":
            langs = sorted(((k.split("_", 1)[1], v) for k, v in s.items() if k.startswith("langid/lang_")), key=lambda kv: -kv[1])
            lines.append(f"  {'':<8}   languages: " + ", ".join(f"{lang} {n}" for lang, n in langs[:8]))
        if stage == "pii":
            masked = {k.split("masked_", 1)[1]: v for k, v in s.items() if k.startswith("pii/masked_")}
            lines.append(f"  {'':<8}   masked: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(masked.items())))
        for reason, n in sorted(drops.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {'':<8}   - {reason:<28} {n:>8,}")
    lines += format_damaged(summary.get("damaged_files") or [], summary["files"], summary["output"])
    errors = {k.split("/", 1)[1]: v for k, v in s.items() if "/file_error_" in k}
    if errors and not summary.get("damaged_files"):  # shards written by a sift that did not record the files
        lines.append("  file errors (files not recorded): " + ", ".join(f"{k} x{n}" for k, n in sorted(errors.items())))
    if summary["files_processed_now"] == summary["files"] and summary["task_seconds"] > 0:
        busy = summary["task_seconds"]
        mb = s.get("read/input_bytes", 0) / 1e6
        lines.append(
            f"  throughput per core: {mb / busy:.1f} MB/s of WARC, {s.get('extract/in', 0) / busy:,.0f} pages/s "
            f"({busy:.1f} core-s in file tasks, {summary['wall_seconds']:.1f} s wall incl. Ray start)"
        )
    elif not summary["files_processed_now"]:
        lines.append("  nothing to do: every input already has a complete shard (delete the output to redo)")
    lines.append(f"  documents: {summary['documents_dir']}  (Parquet, one shard per input file)")
    if summary.get("exclusions_dir"):
        lines.append(f"  removed:   {summary['exclusions_dir']}  (doc_id, url, stage, reason and evidence of every removed page)")
    lines.append(f"  stats:     {summary['output']}/stats.json")
    return "\n".join(lines)


MAX_LISTED_DAMAGED = 20


def format_damaged(damaged: list[dict[str, Any]], n_files: int, output: str, limit: int = MAX_LISTED_DAMAGED
                   ) -> list[str]:
    """Summary lines naming each damaged input file (up to `limit`) with what is wrong and what was kept."""
    if not damaged:
        return []
    nothing = sum(d["kind"] in ("empty", "not_a_warc", "unreadable") for d in damaged)
    kept = sum(d["records_kept"] for d in damaged)
    parts = [f"{nothing:,} with nothing readable"] if nothing else []
    if len(damaged) > nothing:
        parts.append(f"{len(damaged) - nothing:,} damaged, {kept:,} records kept from them")
    base = statslib.common_dir(d["file"] for d in damaged)
    where = f", in {base}/" if base else ""
    lines = [f"  damaged input files: {len(damaged):,} of {n_files:,}{where} ({'; '.join(parts)})"]
    shown = damaged[:limit]
    names = [d["file"][len(base) + 1:] if base else d["file"] for d in shown]
    width = min(max(len(n) for n in names), 40)
    for name, d in zip(names, shown):
        lines.append(f"    {name:<{width}}  {statslib.describe_damage(d)}")
    if len(damaged) > limit:
        lines.append(f"    ... and {len(damaged) - limit:,} more (see sift stats {output} --json)")
    return lines


def build_parser(prog: str = "sift curate") -> argparse.ArgumentParser:
    p = config_parser(prog, "Curate WARC files into clean document shards.", CurateConfig)
    p.add_argument("--input", "-i", action="append", default=[], help="file, dir, glob, s3://..., or warc.paths (repeatable)")
    p.add_argument("--output", "-o", help="output folder (local or s3://, gs://)")
    p.add_argument("--config", "-c", help="YAML file overriding CurateConfig fields")
    p.add_argument("--num-cpus", type=int, help="size of the embedded local Ray")
    p.add_argument("--max-files", type=int, help="only the first N input files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. extract.main_content=false")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def config_from_args(args: argparse.Namespace) -> CurateConfig:
    overrides = parse_set(args.set)
    if args.input:
        overrides["input"] = list(args.input)
    if args.output:
        overrides["output"] = args.output
    if args.num_cpus is not None:
        overrides["num_cpus"] = args.num_cpus
    if args.max_files is not None:
        overrides["max_files"] = args.max_files
    return resolve(CurateConfig, args.config, overrides)


def main(argv: list[str] | None = None, prog: str = "python -m pipelines.curate") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        cfg = config_from_args(args)
        summary = run(cfg)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
