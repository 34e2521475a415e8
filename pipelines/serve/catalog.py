"""What `sift serve` shows, read from the files the pipelines already write (no Ray, no web here).

A *run* is a folder under the served root holding either `pipeline.json` (a `sift run` job: curate-<hash>/,
dedup-<hash>/, tokens-<hash>/, model-<hash>/ ... beneath it) or a single stage's `run.json` (`sift curate|dedup|
tokenize`).
Everything is read through `pipelines.io.OutputDir`, so a root on S3 or GCS works like a local one.

Reads are live: per-shard stats files are written last by each worker, so the funnel of a run in
progress counts exactly the finished shards. Lookups scan the Parquet outputs column by column with
pyarrow (key column first, the matching rows' other columns after), giving each hit's file and row.
"""

from __future__ import annotations

import json
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.dedup import REMOVED_DIR
from pipelines.io import OutputDir
from pipelines.layout import DOCS_DIR, EXCLUSIONS_DIR, PIPELINE_FILE, STATS_DIR
from pipelines.report import stage_kind
from pipelines.tokenize import PART_STATS_DIR, SPLITS, TOKENS_DIR

# stage folders of a `sift run` job, in pipeline order: links to the latest <name>-<hash> (pipelines.run.STAGE_DIRS)
PIPELINE_DIRS = {"curate": "curate", "dedup": "dedup", "tokenize": "tokens", "pretrain": "model", "sweep": "sweep"}
DOC_STAGES = ("curate", "dedup")  # stages whose output is Parquet documents
META_COLUMNS = ("doc_id", "url", "domain", "warc_date", "source_file", "record_offset", "lang", "lang_score",
                "quality_score", "text_chars", "pii_emails", "pii_phone_numbers", "pii_ip_addresses")
LOOKUP_KEYS = ("doc_id", "url", "domain")
MAX_HITS = 200


class NotFound(LookupError):
    """A run, stage or shard that does not exist under the served root (the web layer answers 404)."""


# ---------------------------------------------------------------------------------------------------------
# Runs


@dataclass(frozen=True)
class Run:
    name: str  # path relative to the served root (the root's own name when the root is a run)
    out: OutputDir
    kind: str  # pipeline | curate | dedup | tokenize

    def stage_dirs(self) -> dict[str, OutputDir]:
        """stage name -> its output folder (only those that exist)."""
        if self.kind != "pipeline":
            return {self.kind: self.out}
        found = {}
        record = _read_json(self.out, PIPELINE_FILE) or {}
        for stage, sub in PIPELINE_DIRS.items():
            recorded = (record.get("stages", {}).get(stage) or {}).get("output", "")
            # a recorded absolute or remote output wins (train_output may live elsewhere); a relative one was
            # relative to the driver's working directory, so its folder name (<stage>-<hash>) is looked up in the
            # run, then the run's link to the latest (<stage>)
            cands = [recorded] if recorded.startswith("/") or "://" in recorded else []
            if recorded:
                cands.append(self.out.path(posixpath.basename(recorded.rstrip("/"))))
            for cand in cands + [self.out.path(sub)]:
                if _exists(cand):
                    found[stage] = OutputDir(cand)
                    break
        return found


def _exists(uri: str) -> bool:
    try:
        out = OutputDir(uri)
        return out.exists()
    except (OSError, ValueError):
        return False


def _read_json(out: OutputDir, *parts: str) -> Any:
    try:
        return out.read_json(*parts) if out.exists(*parts) else None
    except (OSError, ValueError):
        return None  # a file being replaced, or not JSON: shown as unknown, never an error page


def _subdirs(out: OutputDir) -> list[str]:
    infos = out.fs.get_file_info(pafs.FileSelector(out.root))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and not i.base_name.startswith("."))


def list_runs(root: str, depth: int = 2) -> list[Run]:
    """Every run folder under `root` (itself included), at most `depth` levels down; stage folders of a
    pipeline run belong to it and are not listed on their own."""
    runs: list[Run] = []

    def visit(rel: str, level: int) -> None:
        out = OutputDir(root if rel == "." else f"{root.rstrip('/')}/{rel}")
        name = posixpath.basename(out.uri.rstrip("/")) or "run" if rel == "." else rel  # the root itself: its name
        if out.exists(PIPELINE_FILE):
            runs.append(Run(name, out, "pipeline"))
            return
        kind = stage_kind(out) if out.exists("run.json") else None
        if kind:
            runs.append(Run(name, out, kind))
            return
        if level < depth:
            for sub in _subdirs(out):
                visit(sub if rel == "." else f"{rel}/{sub}", level + 1)

    if not OutputDir(root).exists():
        raise NotFound(f"runs folder {root!r} does not exist")
    visit(".", 0)
    return runs


def get_run(root: str, name: str) -> Run:
    """The run called `name`; only names that `list_runs` produces are accepted (no path tricks)."""
    for run in list_runs(root):
        if run.name == name:
            return run
    raise NotFound(f"no run {name!r} under {root}")


def _mtime(out: OutputDir, *parts: str) -> float | None:
    info = out.fs.get_file_info(out.path(*parts))
    return info.mtime.timestamp() if info.mtime is not None else None


def _stats_listing(out: OutputDir, sub: str) -> tuple[tuple[str, float], ...]:
    """(name, mtime) of the finished units' stats files in `sub`: one directory listing."""
    base = out.path(sub)
    if out.fs.get_file_info(base).type != pafs.FileType.Directory:
        return ()
    infos = out.fs.get_file_info(pafs.FileSelector(base))
    return tuple(sorted((i.base_name, i.mtime.timestamp() if i.mtime else 0.0) for i in infos
                        if i.base_name.endswith(".json") and not i.base_name.startswith(".")))


def _iso_age(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


def stage_progress(stage: str, out: OutputDir) -> dict[str, Any]:
    """Status, units done/total, documents and throughput of one stage folder."""
    meta = _read_json(out, "run.json") or {}
    info: dict[str, Any] = {"stage": stage, "output": out.uri, "status": meta.get("status", "unknown"),
                            "started_at": meta.get("started_at")}
    if stage in ("curate", "dedup", "tokenize"):
        stats_dir = PART_STATS_DIR if stage == "tokenize" else STATS_DIR
        listing = _stats_listing(out, stats_dir)
        summary = _read_json(out, "stats.json") or {}
        if stage == "curate":
            total = meta.get("inputs") or summary.get("files")
        else:
            total = summary.get("shards") or summary.get("input_shards") or _input_shards(meta.get("input_run"))
        info.update(units_done=len(listing), units_total=total or None)
        last = max((t for _, t in listing), default=None) or None
        info["last_update"] = _iso_age(last)
        if stage == "curate":
            counters = dict(_summed(out.uri, stats_dir, listing))
            info["documents_in"] = counters.get("read/in", 0)
            info["documents_out"] = counters.get("write/docs", 0)
            info["input_bytes"] = counters.get("read/input_bytes", 0)
            seconds = meta.get("wall_seconds")
            if seconds is None and meta.get("started_at") and last:
                seconds = last - datetime.fromisoformat(meta["started_at"]).timestamp()
            if seconds and seconds > 0:
                info["seconds"] = round(seconds, 1)
                info["records_per_second"] = round(counters.get("read/in", 0) / seconds, 1)
                info["mb_per_second"] = round(counters.get("read/input_bytes", 0) / 1e6 / seconds, 2)
    elif stage == "pretrain":
        lines = _tail_jsonl(out, "metrics.jsonl")
        info["status"] = "finished" if out.exists("checkpoint.pt") and meta.get("status") != "running" else info["status"]
        if lines:
            last = lines[-1]
            info.update({k: last[k] for k in ("step", "loss", "val_loss", "tokens_per_second", "mfu") if k in last})
    return info


def _input_shards(input_run: str | None) -> int | None:
    """Document shards of a stage's input run (dedup and tokenize make one unit of each): the total while running."""
    if not input_run:
        return None
    try:
        return len(OutputDir(input_run).list(DOCS_DIR, suffix=".parquet")) or None
    except (OSError, ValueError):
        return None


def _sum_stats(out: OutputDir, stats_dir: str) -> dict[str, int]:
    """Counters summed over the finished units; the files are read again only when the listing changes (the live
    view polls every few seconds, and a dump has tens of thousands of them)."""
    return dict(_summed(out.uri, stats_dir, _stats_listing(out, stats_dir)))


@lru_cache(maxsize=64)
def _summed(uri: str, stats_dir: str, listing: tuple[tuple[str, float], ...]) -> tuple[tuple[str, int], ...]:
    out = OutputDir(uri)
    total: dict[str, int] = {}
    for name, _ in listing:
        for k, v in (_read_json(out, stats_dir, name) or {}).items():
            if isinstance(v, (int, float)):
                total[k] = total.get(k, 0) + v
    return tuple(total.items())


def _tail_jsonl(out: OutputDir, name: str, n: int = 200) -> list[dict[str, Any]]:
    if not out.exists(name):
        return []
    with out.fs.open_input_stream(out.path(name)) as f:
        raw = f.read().decode("utf-8", errors="replace")
    rows = []
    for line in raw.split("\n")[-n - 1:]:
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the line being written
    return rows


def run_overview(run: Run) -> dict[str, Any]:
    """One row of the runs list: kind, overall status, per-stage status and progress."""
    stages = {name: stage_progress(name, out) for name, out in run.stage_dirs().items()}
    if run.kind == "pipeline":
        record = _read_json(run.out, PIPELINE_FILE) or {}
        for name, rec in record.get("stages", {}).items():
            stages.setdefault(name, {"stage": name, "output": rec.get("output")})
            stages[name]["status"] = rec.get("status", stages[name].get("status"))  # the driver's word wins
            if rec.get("seconds") is not None:
                stages[name]["seconds"] = rec["seconds"]
            if rec.get("error"):
                stages[name]["error"] = rec["error"]
        requested = record.get("stages_requested") or list(stages)
        for name in requested:
            stages.setdefault(name, {"stage": name, "status": "pending"})
        order = [s for s in ("curate", "dedup", "tokenize", "pretrain", "sweep", "align") if s in stages]
        stages = {s: stages[s] for s in order}
        config = record.get("config", {})
    else:
        config = (_read_json(run.out, "run.json") or {}).get("config", {})
    statuses = [s.get("status") for s in stages.values()]
    if "failed" in statuses:
        status = "failed"
    elif "running" in statuses:
        status = "running"
    elif statuses and all(s == "finished" for s in statuses):
        status = "finished"
    elif "finished" in statuses:
        status = "running" if "pending" in statuses else "partial"
    else:
        status = statuses[0] if statuses else "unknown"
    return {"name": run.name, "kind": run.kind, "path": run.out.uri, "status": status,
            "stages": list(stages.values()), "config": config}


def report_dir(run: Run) -> OutputDir | None:
    """The folder `sift stats` starts from: the last of tokenize, dedup, curate that exists."""
    dirs = run.stage_dirs()
    for stage in ("tokenize", "dedup", "curate"):
        if stage in dirs:
            return dirs[stage]
    return None


def run_report(run: Run) -> dict[str, Any]:
    """The numbers of `sift stats` for the run (funnel, languages, quality, domains, clusters, tokens)."""
    from pipelines.report import collect

    start = report_dir(run)
    if start is None:
        return {}
    return collect(start.uri).to_json()


def run_figures(run: Run) -> list[tuple[str, str]]:
    """`sift stats`'s plots as (title, base64 PNG), cached until a stats file changes."""
    start = report_dir(run)
    if start is None:
        return []
    stamp = tuple(_stats_listing(d, sub) for d in run.stage_dirs().values() for sub in (STATS_DIR, PART_STATS_DIR))
    return list(_figures(start.uri, stamp))


@lru_cache(maxsize=32)
def _figures(uri: str, stamp: tuple) -> tuple[tuple[str, str], ...]:
    from pipelines.report import collect, figures

    return tuple(figures(collect(uri)))


# ---------------------------------------------------------------------------------------------------------
# Lookup: "where is this document, or why was it removed?"


def guess_key(query: str) -> str:
    q = query.strip()
    if q.startswith(("<urn:", "urn:")):
        return "doc_id"
    if "://" in q:
        return "url"
    return "domain"


def _parquet_files(out: OutputDir, *sub: str) -> list[str]:
    return [posixpath.join(*sub, name) for name in out.list(*sub, suffix=".parquet")]


def _scan_file(out: OutputDir, rel: str, key: str, values: list[str], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    with out.fs.open_input_file(out.path(rel)) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        if key not in names:
            return []
        keys = pf.read(columns=[key]).column(key)
        rows = pc.indices_nonzero(pc.is_in(keys, value_set=pa.array(values, keys.type))).to_pylist()
        if not rows:
            return []
        rows = rows[:MAX_HITS]
        table = pf.read(columns=[c for c in columns if c in names]).take(pa.array(rows))
    hits = table.to_pylist()
    for row, hit in zip(rows, hits):
        hit["file"], hit["row"] = rel, row
        for k, v in hit.items():
            if isinstance(v, datetime):
                hit[k] = v.isoformat()
    return hits


def scan(out: OutputDir, files: list[str], key: str, values: list[str], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of the Parquet `files` (relative to `out`) whose `key` is one of `values`, with file and row."""
    if not files or not values:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
        parts = pool.map(lambda rel: _scan_file(out, rel, key, values, columns), files)
        return [hit for part in parts for hit in part][:MAX_HITS]


def _url_variants(url: str) -> list[str]:
    url = url.strip()
    base = url.rstrip("/")
    return sorted({url, base, base + "/"})


def lookup(run: Run, query: str, key: str = "auto") -> dict[str, Any]:
    """Every document of `run` matching `query` by doc_id, URL or domain: where it is if kept, otherwise
    the stage and reason that removed it with the evidence (rule values, scores, the kept duplicate)."""
    t0 = time.perf_counter()
    key = guess_key(query) if key == "auto" else key
    if key not in LOOKUP_KEYS:
        raise ValueError(f"key must be one of {LOOKUP_KEYS} or auto, not {key!r}")
    values = _url_variants(query) if key == "url" else [query.strip()]
    dirs = run.stage_dirs()
    results: dict[tuple, dict[str, Any]] = {}

    def entry(hit: dict[str, Any]) -> dict[str, Any]:
        ident = (hit.get("doc_id"), hit.get("source_file"), hit.get("record_offset"))
        return results.setdefault(ident, {"doc_id": hit.get("doc_id"), "url": hit.get("url"), "domain": hit.get("domain"),
                                          "source_file": hit.get("source_file"), "record_offset": hit.get("record_offset"),
                                          "status": None, "trail": []})

    curate_dir = dirs.get("curate")
    if curate_dir is not None:
        for hit in scan(curate_dir, _parquet_files(curate_dir, EXCLUSIONS_DIR), key, values,
                        ("doc_id", "url", "domain", "source_file", "record_offset", "stage", "reason", "evidence")):
            e = entry(hit)
            e["status"] = "removed"
            e["removed_by"] = {"stage": hit["stage"], "reason": hit["reason"],
                               "evidence": json.loads(hit["evidence"]) if hit.get("evidence") else {}}
        for hit in scan(curate_dir, _parquet_files(curate_dir, DOCS_DIR), key, values, META_COLUMNS):
            e = entry(hit)
            e.update({k: v for k, v in hit.items() if k not in ("file", "row")})
            e["status"] = "kept"
            e["trail"].append({"stage": "curate", "file": hit["file"], "row": hit["row"]})
    dedup_dir = dirs.get("dedup")
    kept_ids = [e["doc_id"] for e in results.values() if e["status"] == "kept"]
    if dedup_dir is not None and kept_ids:
        # dedup's own tables are searched by doc_id: older removal tables carry no URL
        removed = scan(dedup_dir, _parquet_files(dedup_dir, REMOVED_DIR), "doc_id", kept_ids,
                       ("doc_id", "stage", "reason", "kept_doc_id", "similarity", "cluster_size"))
        kept = scan(dedup_dir, _parquet_files(dedup_dir, DOCS_DIR), "doc_id", kept_ids,
                    ("doc_id", "source_file", "record_offset", "text_chars"))
        kept_places = {(h["doc_id"], h.get("source_file"), h.get("record_offset")): h for h in kept}
        removed_by_id: dict[str, list[dict[str, Any]]] = {}
        for h in removed:
            removed_by_id.setdefault(h["doc_id"], []).append(h)
        twins = [h["kept_doc_id"] for h in removed if h.get("kept_doc_id")]
        twin_rows = {h["doc_id"]: h for h in scan(dedup_dir, _parquet_files(dedup_dir, DOCS_DIR), "doc_id", twins,
                                                   ("doc_id", "url", "domain"))}
        for ident, e in results.items():
            if e["status"] != "kept":
                continue
            if ident in kept_places:
                h = kept_places[ident]
                e["trail"].append({"stage": "dedup", "file": h["file"], "row": h["row"]})
                if h.get("text_chars") is not None:
                    e["text_chars_after_dedup"] = h["text_chars"]
            elif e["doc_id"] in removed_by_id:
                h = removed_by_id[e["doc_id"]][0]
                twin = twin_rows.get(h.get("kept_doc_id") or "", {})
                e["status"] = "removed"
                e["removed_by"] = {"stage": h["stage"], "reason": h["reason"], "evidence": {
                    k: v for k, v in {"kept_doc_id": h.get("kept_doc_id"), "kept_url": twin.get("url"),
                                      "similarity": h.get("similarity"), "cluster_size": h.get("cluster_size")}.items()
                    if v is not None}}
    tok_dir = dirs.get("tokenize")
    still_kept = [e["doc_id"] for e in results.values() if e["status"] == "kept"]
    if tok_dir is not None and still_kept:
        files = [f for split in SPLITS for f in _parquet_files(tok_dir, TOKENS_DIR, split) if f.endswith(".docs.parquet")]
        for h in scan(tok_dir, files, "doc_id", still_kept, ("doc_id", "source_file", "token_offset", "num_tokens")):
            for e in results.values():
                if e["doc_id"] == h["doc_id"] and e["status"] == "kept" and e.get("source_file") == h.get("source_file"):
                    rel = h["file"][len(TOKENS_DIR) + 1:]
                    split, shard = rel.split("/", 1)
                    e["tokens"] = {"split": split, "shard": shard.replace(".docs.parquet", ""), "row": h["row"],
                                   "token_offset": h["token_offset"], "num_tokens": h["num_tokens"]}
    hits = sorted(results.values(), key=lambda e: (e["status"] != "kept", e["url"] or "", e["doc_id"] or ""))
    for e in hits:
        if e["status"] == "kept":
            last = e["trail"][-1]
            e["location"] = {"stage": last["stage"], "shard": posixpath.basename(last["file"]).replace(".parquet", ""),
                             "row": last["row"]}
    return {"query": query, "key": key, "count": len(hits), "truncated": len(hits) >= MAX_HITS,
            "seconds": round(time.perf_counter() - t0, 4), "results": hits}


# ---------------------------------------------------------------------------------------------------------
# Shard browser


def list_shards(run: Run) -> dict[str, Any]:
    """Document shards of each document stage (with row counts from the Parquet footers) and token shards."""
    dirs = run.stage_dirs()
    out: dict[str, Any] = {"documents": {}, "tokens": []}
    for stage in DOC_STAGES:
        if stage in dirs:
            d = dirs[stage]
            rows = []
            for rel in _parquet_files(d, DOCS_DIR):
                with d.fs.open_input_file(d.path(rel)) as f:
                    meta = pq.ParquetFile(f).metadata
                rows.append({"shard": posixpath.basename(rel)[: -len(".parquet")], "documents": meta.num_rows})
            out["documents"][stage] = rows
    if "tokenize" in dirs:
        manifest = _read_json(dirs["tokenize"], TOKENS_DIR, "manifest.json") or {}
        for split in SPLITS:
            for s in manifest.get("shards", {}).get(split, []):
                out["tokens"].append({"split": split, "shard": posixpath.basename(s["file"])[: -len(".arrow")],
                                      "documents": s["documents"], "tokens": s["tokens"]})
    return out


def _shard_path(run: Run, stage: str, shard: str) -> tuple[OutputDir, str]:
    dirs = run.stage_dirs()
    if stage not in DOC_STAGES or stage not in dirs:
        raise NotFound(f"run {run.name!r} has no {stage} documents")
    d = dirs[stage]
    rel = posixpath.join(DOCS_DIR, f"{shard}.parquet")
    if f"{shard}.parquet" not in d.list(DOCS_DIR, suffix=".parquet"):
        raise NotFound(f"no shard {shard!r} in {stage}")
    return d, rel


def documents_page(run: Run, stage: str, shard: str, offset: int = 0, limit: int = 20,
                   preview_chars: int | None = 400) -> dict[str, Any]:
    """Rows [offset, offset+limit) of a document shard, reading only the row groups that hold them."""
    if offset < 0 or not 1 <= limit <= 500:
        raise ValueError("offset must be >= 0 and limit in 1..500")
    d, rel = _shard_path(run, stage, shard)
    with d.fs.open_input_file(d.path(rel)) as f:
        pf = pq.ParquetFile(f)
        total = pf.metadata.num_rows
        columns = [c for c in pf.schema_arrow.names if c != "html"]
        starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
        groups = [i for i in range(pf.num_row_groups) if starts[i + 1] > offset and starts[i] < offset + limit]
        table = pf.read_row_groups(groups, columns=columns) if groups else pa.table({c: [] for c in columns})
        first = int(starts[groups[0]]) if groups else offset
    table = table.slice(offset - first, limit)
    docs = table.to_pylist()
    for i, doc in enumerate(docs):
        doc["row"] = offset + i
        for k, v in doc.items():
            if isinstance(v, datetime):
                doc[k] = v.isoformat()
        text = doc.get("text") or ""
        if preview_chars is not None and len(text) > preview_chars:
            doc["text"], doc["text_truncated"] = text[:preview_chars], True
    return {"stage": stage, "shard": shard, "offset": offset, "limit": limit, "total": total, "documents": docs}


def _token_paths(run: Run, split: str, shard: str) -> tuple[OutputDir, dict[str, Any]]:
    dirs = run.stage_dirs()
    if "tokenize" not in dirs:
        raise NotFound(f"run {run.name!r} has no token shards")
    d = dirs["tokenize"]
    manifest = _read_json(d, TOKENS_DIR, "manifest.json") or {}
    for s in manifest.get("shards", {}).get(split, []):
        if posixpath.basename(s["file"]) == f"{shard}.arrow":
            return d, {**s, "tokenizer": manifest.get("tokenizer") or {}}
    raise NotFound(f"no token shard {split}/{shard}")


@lru_cache(maxsize=4)
def _tokenizer(spec: str):
    from pipelines.tokenize import load_tokenizer

    return load_tokenizer(spec)


def _read_tokens(d: OutputDir, rel: str) -> np.ndarray:
    if isinstance(d.fs, pafs.LocalFileSystem):
        from pipelines.tokenize import read_token_shard

        return read_token_shard(d.path(rel))
    with d.fs.open_input_file(d.path(rel)) as f:
        reader = pa.ipc.open_file(pa.BufferReader(f.read()))
        return reader.get_batch(0).column(0).to_numpy() if reader.num_record_batches == 1 else \
            pa.concat_arrays([reader.get_batch(i).column(0) for i in range(reader.num_record_batches)]).to_numpy()


def token_documents(run: Run, split: str, shard: str, offset: int = 0, limit: int = 10) -> dict[str, Any]:
    """Documents of a token shard decoded back to text with the run's own tokenizer, with their token spans."""
    if offset < 0 or not 1 <= limit <= 100:
        raise ValueError("offset must be >= 0 and limit in 1..100")
    d, entry = _token_paths(run, split, shard)
    with d.fs.open_input_file(d.path(TOKENS_DIR, entry["docs_file"])) as f:
        docs = pq.read_table(f)
    total = docs.num_rows
    rows = docs.slice(offset, limit).to_pylist()
    tokens = _read_tokens(d, posixpath.join(TOKENS_DIR, entry["file"]))
    spec = entry["tokenizer"].get("spec", "")
    decode_error = None
    try:
        tok = _tokenizer(spec)
    except Exception as exc:  # noqa: BLE001 - a tokenizer folder moved away: show ids, say why
        tok, decode_error = None, f"tokenizer {spec!r} cannot be loaded here: {exc}"
    for i, row in enumerate(rows):
        ids = tokens[row["token_offset"]: row["token_offset"] + row["num_tokens"]]
        row["row"] = offset + i
        row["first_ids"] = [int(x) for x in ids[:16]]
        row["text"] = tok.decode([int(x) for x in ids]) if tok is not None else None
    return {"split": split, "shard": shard, "offset": offset, "limit": limit, "total": total,
            "tokens": len(tokens), "tokenizer": entry["tokenizer"], "decode_error": decode_error, "documents": rows}


def live_funnel(run: Run) -> dict[str, Any]:
    """The funnel from the per-shard stats written so far (cheap: JSON files only), for the live view."""
    from pipelines import stats as statslib
    from pipelines.report import STAGE_ORDER

    dirs = run.stage_dirs()
    counters: dict[str, int] = {}
    for stage, d in dirs.items():
        if stage in ("curate", "dedup", "tokenize"):
            for k, v in _sum_stats(d, PART_STATS_DIR if stage == "tokenize" else STATS_DIR).items():
                counters[k] = counters.get(k, 0) + v
    rows = [{"stage": s, "in": i, "out": o, "dropped": i - o,
             "drops": dict(sorted(((k, v) for k, v in d.items() if v), key=lambda kv: -kv[1]))}
            for s, i, o, d in statslib.funnel(counters, STAGE_ORDER)]
    overview = run_overview(run)
    return {"name": run.name, "status": overview["status"], "stages": overview["stages"], "funnel": rows,
            "input_bytes": counters.get("read/input_bytes", 0), "html_bytes": counters.get("read/html_bytes", 0),
            "text_chars": counters.get("extract/text_chars", 0), "records": counters.get("read/in", 0),
            "documents_kept": rows[-1]["out"] if rows else 0}
