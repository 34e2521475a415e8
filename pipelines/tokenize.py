"""`sift tokenize`: documents of a curate/dedup run -> memory-mappable Arrow IPC token shards + manifest.

Two Ray Data stages, both deterministic whatever the parallelism:

    1. tokenize (one actor task per document shard): text -> ids + <|endoftext|>, split train/validation by a
       hash of doc_id; writes parts/<shard>.<split>.arrow (tokens) + .docs.parquet, then part_stats/<shard>.json
    2. pack (one task per output shard): the parts, in name order, form one token stream per split; output shard
       k holds the documents whose first token falls in [k*shard_tokens, (k+1)*shard_tokens) of that stream (no
       document is cut); writes tokens/<split>/shard-NNNNN.arrow + .docs.parquet + .json (written last)

Output layout (`tokens/manifest.json` lists every shard with its token/document counts and sha256):

    tokens/<split>/shard-00000.arrow        Arrow IPC file, one record batch, one column `tokens` (uint16 when the
                                            vocabulary fits, else uint32): documents back to back, each followed
                                            by the end-of-text id. Memory-map it: `read_token_shard(path)`.
    tokens/<split>/shard-00000.docs.parquet per document: doc_id, url, domain, source_file, language,
                                            quality_score, token_offset (first token), num_tokens (without the
                                            end-of-text token)

    python -m pipelines.tokenize --input runs/demo-dedup --output runs/demo-tokens [--tokenizer DIR]
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from operators.tokenizer import Tokenizer
from pipelines import stats as statslib
from pipelines.config import config_hash, stage_main
from pipelines.layout import DOCS_DIR, init_ray
from pipelines.io import OutputDir
from pipelines.run_info import run_metadata

BUNDLED_GPT2 = Path(__file__).resolve().parents[1] / "operators" / "resources" / "gpt2"
PARTS_DIR = "parts"
PART_STATS_DIR = "part_stats"
TOKENS_DIR = "tokens"
SPLITS = ("train", "validation")
PROVENANCE = ("doc_id", "url", "domain", "source_file", "language", "quality_score")
DOCS_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string()),
    pa.field("url", pa.string()),
    pa.field("domain", pa.string()),
    pa.field("source_file", pa.string()),
    pa.field("language", pa.string()),
    pa.field("quality_score", pa.float64()),
    pa.field("token_offset", pa.int64()),
    pa.field("num_tokens", pa.int32()),
])


@dataclass(frozen=True)
class TokenizeConfig:
    input: str = ""
    """A finished `sift curate` or `sift dedup` output folder."""
    output: str = ""
    tokenizer: str = "gpt2"
    """`gpt2` (bundled GPT-2 BPE) or a folder written by `sift train-tokenizer` (vocab.json, merges.txt,
    special_tokens.txt)."""
    eot_token: str = "<|endoftext|>"
    """Appended after every document; must be one of the tokenizer's special tokens."""
    shard_tokens: int = 100_000_000
    """Target tokens per output shard (documents are never cut, so shards overshoot by < one document)."""
    validation_fraction: float = 0.01
    """Share of documents, chosen by a hash of doc_id, that go to the validation split."""
    split_salt: str = "sift-split-v1"
    batch_size: int = 256
    keep_parts: bool = False
    """Keep the per-input token parts after packing (they double the disk use)."""
    num_cpus: int | None = None
    local_max_docs: int = 5_000
    """Inputs of up to this many documents are tokenized and packed in this process (same bytes out) instead of by
    Ray Data actor pools, whose start-up costs seconds however small the input; 0 always uses Ray. Runs on a Ray
    cluster (RAY_ADDRESS set) always use Ray."""

    def output_hash(self) -> str:
        return config_hash({
            "tokenizer": tokenizer_fingerprint(self.tokenizer), "eot": self.eot_token, "shard_tokens": self.shard_tokens,
            "validation_fraction": self.validation_fraction, "split_salt": self.split_salt,
        })


def tokenizer_dir(spec: str) -> Path:
    d = BUNDLED_GPT2 if spec == "gpt2" else Path(spec)
    if not (d / "vocab.json").is_file() or not (d / "merges.txt").is_file():
        raise ValueError(f"tokenizer {spec!r}: expected `gpt2` or a folder with vocab.json and merges.txt")
    return d


def tokenizer_fingerprint(spec: str) -> str:
    d = tokenizer_dir(spec)
    h = hashlib.sha256()
    for name in ("vocab.json", "merges.txt", "special_tokens.txt"):
        if (d / name).exists():
            h.update((d / name).read_bytes())
    return h.hexdigest()[:16]


_LOADED: dict[tuple, Tokenizer] = {}
_LOADED_MAX = 4


def load_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer of `spec`, loaded once per process (about 0.8 s for GPT-2: the files, then the check that
    tiktoken encodes it exactly) and shared while its files are unchanged (path, size and mtime of each)."""
    d = tokenizer_dir(spec)
    files = [d / name for name in ("vocab.json", "merges.txt", "special_tokens.txt")]
    key = (str(d.resolve()), *((f.name, st.st_size, st.st_mtime_ns) for f in files if (st := _stat(f))))
    tok = _LOADED.get(key)
    if tok is None:
        tok = Tokenizer.from_dir(d)
        while len(_LOADED) >= _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = tok
    return tok


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def token_dtype(vocab_size: int) -> pa.DataType:
    return pa.uint16() if vocab_size <= 1 << 16 else pa.uint32()


def validation_mask(doc_ids: list[str], fraction: float, salt: str) -> np.ndarray:
    """True for documents in the validation split: blake2b(salt, doc_id) as a uniform number < fraction."""
    if fraction <= 0:
        return np.zeros(len(doc_ids), bool)
    key = salt.encode()
    u = np.array(
        [int.from_bytes(hashlib.blake2b(d.encode(), digest_size=8, key=key).digest(), "little") for d in doc_ids],
        dtype=np.uint64,
    )
    return u < np.uint64(min(fraction, 1.0) * float(1 << 64) - 1)


def write_token_file(out: OutputDir, tokens: np.ndarray, dtype: pa.DataType, *parts: str) -> str:
    """Arrow IPC file with one record batch holding `tokens` (so it memory-maps as one buffer). Returns sha256."""
    arr = pa.array(tokens.astype(dtype.to_pandas_dtype(), copy=False), type=dtype)
    table = pa.table({"tokens": arr})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, len(arr)))
    data = sink.getvalue().to_pybytes()
    out.write_bytes(data, *parts)
    return hashlib.sha256(data).hexdigest()


def read_token_shard(path: str | Path, filesystem: pafs.FileSystem | None = None) -> np.ndarray:
    """A token shard as a read-only numpy array over the memory-mapped file (zero copy); on an object store
    (`filesystem` not local) the file is read into memory."""
    if filesystem is None or isinstance(filesystem, pafs.LocalFileSystem):
        source = pa.memory_map(str(path), "r")
    else:
        with filesystem.open_input_file(str(path)) as f:
            source = pa.BufferReader(f.read())
    reader = pa.ipc.open_file(source)
    if reader.num_record_batches == 0:
        return np.zeros(0, np.uint16)
    if reader.num_record_batches != 1:
        raise ValueError(f"{path}: expected one record batch, found {reader.num_record_batches}")
    return reader.get_batch(0).column(0).to_numpy(zero_copy_only=True)


# ---------------------------------------------------------------------------------------------------------
# Stage 1: tokenize each document shard


class TokenizeShard:
    """Ray Data worker: one document shard -> token parts per split + part stats (written last)."""

    def __init__(self, cfg: TokenizeConfig):
        self.cfg = cfg
        self.src = OutputDir(cfg.input)
        self.out = OutputDir(cfg.output)
        self.tok = load_tokenizer(cfg.tokenizer)
        if cfg.eot_token not in self.tok.special_ids:
            raise ValueError(f"end-of-text token {cfg.eot_token!r} is not a special token of {cfg.tokenizer!r}")
        self.eot = self.tok.special_ids[cfg.eot_token]
        self.dtype = token_dtype(self.tok.vocab_size)

    def __call__(self, unit: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            stats = self.process(unit["shard"])
        except Exception as exc:
            raise RuntimeError(f"tokenize failed on shard {unit['shard']}: {type(exc).__name__}: {exc}") from exc
        return {"shard": unit["shard"], "seconds": time.perf_counter() - t0, "tokens": stats["tokenize/tokens"]}

    def process(self, shard: str) -> Counter:
        cfg = self.cfg
        pf = pq.ParquetFile(self.src.path(DOCS_DIR, f"{shard}.parquet"), filesystem=self.src.fs)
        names = set(pf.schema_arrow.names)
        columns = ["text"] + [c for c in PROVENANCE if c in names]
        stats: Counter = Counter()
        stats["tokenize/in"] += 0
        tokens: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        docs: dict[str, list[dict]] = {s: [] for s in SPLITS}
        offset = {s: 0 for s in SPLITS}
        np_dtype = self.dtype.to_pandas_dtype()
        for batch in pf.iter_batches(batch_size=cfg.batch_size, columns=columns):
            rows = batch.to_pylist()
            stats["tokenize/in"] += len(rows)
            val = validation_mask([r["doc_id"] for r in rows], cfg.validation_fraction, cfg.split_salt)
            for r, is_val in zip(rows, val):
                text = r.pop("text") or ""
                if not text.strip():
                    stats["tokenize/drop_empty"] += 1
                    continue
                ids = self.tok.encode_ordinary(text)
                split = SPLITS[1] if is_val else SPLITS[0]
                arr = np.empty(len(ids) + 1, np_dtype)
                arr[:-1] = ids
                arr[-1] = self.eot
                tokens[split].append(arr)
                r.update(token_offset=offset[split], num_tokens=len(ids))
                docs[split].append(r)
                offset[split] += len(arr)
                stats["tokenize/out"] += 1
                stats[f"tokenize/{split}_documents"] += 1
                stats[f"tokenize/{split}_tokens"] += len(arr)
                stats["tokenize/tokens"] += len(arr)
                stats["tokenize/text_bytes"] += len(text.encode("utf-8", "surrogatepass"))
        for d in (PARTS_DIR, PART_STATS_DIR):  # here, not in __init__: a late actor must not recreate parts/
            self.out.makedirs(d)
        for split in SPLITS:
            flat = np.concatenate(tokens[split]) if tokens[split] else np.zeros(0, np_dtype)
            write_token_file(self.out, flat, self.dtype, PARTS_DIR, f"{shard}.{split}.arrow")
            table = pa.Table.from_pylist(docs[split], schema=DOCS_SCHEMA)
            _write_parquet(self.out, table, PARTS_DIR, f"{shard}.{split}.docs.parquet")
        self.out.write_json(dict(stats), PART_STATS_DIR, f"{shard}.json")
        return stats


def _write_parquet(out: OutputDir, table: pa.Table, *parts: str) -> None:
    tmp = out.tmp_path(*parts)
    with out.fs.open_output_stream(tmp) as sink:
        pq.write_table(table, sink, compression="zstd")
    out.commit(tmp, *parts)


# ---------------------------------------------------------------------------------------------------------
# Stage 2: pack parts into shards of about shard_tokens


def plan_shards(part_tokens: list[tuple[str, int]], shard_tokens: int) -> list[dict[str, Any]]:
    """Output shards for one split: each covers the global token range [k*T, (k+1)*T) of the parts laid end to
    end (T = shard_tokens), listed with the parts that overlap it and their global start offsets."""
    starts, pos = [], 0
    for name, n in part_tokens:
        starts.append((name, pos, n))
        pos += n
    total = pos
    plans = []
    for k in range(-(-total // shard_tokens) if total else 0):
        lo, hi = k * shard_tokens, (k + 1) * shard_tokens
        overlapping = [{"name": name, "start": start} for name, start, n in starts if n and start < hi and start + n > lo]
        plans.append({"index": k, "lo": lo, "hi": hi, "parts": overlapping})
    return plans


class PackShard:
    """Ray Data worker: copy the documents whose first token lies in [lo, hi) into one output shard."""

    def __init__(self, cfg: TokenizeConfig, dtype_name: str):
        self.out = OutputDir(cfg.output)
        self.dtype = getattr(pa, dtype_name)()

    def __call__(self, unit: dict[str, Any]) -> dict[str, Any]:
        split, k = unit["split"], unit["index"]
        name = f"shard-{k:05d}"
        if self.out.exists(TOKENS_DIR, split, f"{name}.json"):
            return self.out.read_json(TOKENS_DIR, split, f"{name}.json")
        pieces, doc_tables, out_pos = [], [], 0
        for p in unit["parts"]:
            part, start = p["name"], p["start"]
            docs = pq.read_table(self.out.path(PARTS_DIR, f"{part}.{split}.docs.parquet"), filesystem=self.out.fs)
            offs = docs.column("token_offset").to_numpy() + start
            sel = np.flatnonzero((offs >= unit["lo"]) & (offs < unit["hi"]))
            if len(sel) == 0:
                continue
            tokens = read_token_shard(self.out.path(PARTS_DIR, f"{part}.{split}.arrow"), self.out.fs)
            a = int(docs.column("token_offset")[int(sel[0])].as_py())
            last = int(sel[-1])
            b = int(docs.column("token_offset")[last].as_py()) + int(docs.column("num_tokens")[last].as_py()) + 1
            pieces.append(tokens[a:b])
            sub = docs.take(pa.array(sel))
            new_off = pa.array(sub.column("token_offset").to_numpy() - a + out_pos, pa.int64())
            doc_tables.append(sub.set_column(sub.schema.get_field_index("token_offset"), "token_offset", new_off))
            out_pos += b - a
        flat = np.concatenate(pieces) if pieces else np.zeros(0, self.dtype.to_pandas_dtype())
        self.out.makedirs(TOKENS_DIR, split)
        sha = write_token_file(self.out, flat, self.dtype, TOKENS_DIR, split, f"{name}.arrow")
        docs_table = pa.concat_tables(doc_tables) if doc_tables else DOCS_SCHEMA.empty_table()
        _write_parquet(self.out, docs_table, TOKENS_DIR, split, f"{name}.docs.parquet")
        meta = {"split": split, "file": f"{split}/{name}.arrow", "docs_file": f"{split}/{name}.docs.parquet",
                "tokens": int(len(flat)), "documents": docs_table.num_rows, "sha256": sha}
        self.out.write_json(meta, TOKENS_DIR, split, f"{name}.json")
        return meta


# ---------------------------------------------------------------------------------------------------------


def run(cfg: TokenizeConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    if not cfg.input or not cfg.output:
        raise ValueError("tokenize needs --input (a curate or dedup output) and --output")
    if cfg.shard_tokens < 1:
        raise ValueError(f"shard_tokens must be positive, got {cfg.shard_tokens}")
    if not 0 <= cfg.validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {cfg.validation_fraction}")
    tok = load_tokenizer(cfg.tokenizer)  # a bad tokenizer is an error before any work starts
    if cfg.eot_token not in tok.special_ids:
        raise ValueError(f"end-of-text token {cfg.eot_token!r} is not a special token of tokenizer {cfg.tokenizer!r}")
    src = OutputDir(cfg.input)
    if not src.exists(DOCS_DIR, "_SUCCESS"):
        raise ValueError(f"{cfg.input!r} is not a finished curate or dedup run (no documents/_SUCCESS)")
    shards = [n[: -len(".parquet")] for n in src.list(DOCS_DIR, suffix=".parquet")]
    out = OutputDir(cfg.output)
    out.check_writable()
    out.check_same_run(cfg.output_hash(), src, "tokenize")
    if out.exists(TOKENS_DIR, "_SUCCESS"):
        manifest = out.read_json(TOKENS_DIR, "manifest.json")
        return {**manifest["summary"], "already_complete": True, "wall_seconds": round(time.perf_counter() - t0, 3)}
    meta = run_metadata(asdict(cfg), cfg.output_hash())
    meta["input_run"], meta["input_location"] = src.uri, src.location
    out.write_json({**meta, "status": "running"}, "run.json")
    for d in (PARTS_DIR, PART_STATS_DIR, TOKENS_DIR, f"{TOKENS_DIR}/train", f"{TOKENS_DIR}/validation"):
        out.makedirs(*d.split("/"))
    dtype = token_dtype(tok.vocab_size)
    pending = [s for s in shards if not out.exists(PART_STATS_DIR, f"{s}.json")]
    n_docs = sum(pq.ParquetFile(src.path(DOCS_DIR, f"{s}.parquet"), filesystem=src.fs).metadata.num_rows for s in shards)
    local = n_docs <= cfg.local_max_docs and not os.environ.get("RAY_ADDRESS")
    if pending:
        _map_units([{"shard": s} for s in pending], TokenizeShard, (cfg,), local, cfg.num_cpus)
    t_tokenized = time.perf_counter()
    part_stats = {s: out.read_json(PART_STATS_DIR, f"{s}.json") for s in shards}
    total = statslib.merge(part_stats.values())
    errors = statslib.balance_errors(total)
    if errors:
        raise AssertionError(f"stats do not balance: {errors}")

    units = []
    for split in SPLITS:
        part_tokens = [(s, part_stats[s].get(f"tokenize/{split}_tokens", 0)) for s in shards]
        units += [{**p, "split": split} for p in plan_shards(part_tokens, cfg.shard_tokens)]
    metas = sorted(_map_units(units, PackShard, (cfg, str(dtype)), local, cfg.num_cpus),
                   key=lambda m: (SPLITS.index(m["split"]), m["file"])) if units else []
    t_packed = time.perf_counter()
    by_split = {s: [m for m in metas if m["split"] == s] for s in SPLITS}
    for split in SPLITS:
        expect = total.get(f"tokenize/{split}_tokens", 0)
        got = sum(m["tokens"] for m in by_split[split])
        if got != expect:
            raise AssertionError(f"{split}: packed {got} tokens but tokenized {expect}")
    summary = {
        "output": out.uri, "input_shards": len(shards), "input_shards_processed_now": len(pending),
        "documents": total.get("tokenize/out", 0), "tokens": total.get("tokenize/tokens", 0),
        "splits": {s: {"shards": len(by_split[s]), "tokens": sum(m["tokens"] for m in by_split[s]),
                       "documents": sum(m["documents"] for m in by_split[s])} for s in SPLITS},
        "stats": dict(sorted(total.items())),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "tokenize_seconds": round(t_tokenized - t0, 3), "pack_seconds": round(t_packed - t_tokenized, 3),
    }
    manifest = {
        "format": "sift-tokens-v1",
        "dtype": str(dtype),
        "tokenizer": {"spec": cfg.tokenizer, "fingerprint": tokenizer_fingerprint(cfg.tokenizer),
                      "vocab_size": tok.vocab_size, "eot_token": cfg.eot_token, "eot_id": tok.special_ids[cfg.eot_token],
                      "backend": tok.backend},
        "shard_tokens": cfg.shard_tokens,
        "validation_fraction": cfg.validation_fraction,
        "shards": {s: [{k: m[k] for k in ("file", "docs_file", "tokens", "documents", "sha256")} for m in by_split[s]]
                   for s in SPLITS},
        "summary": summary,
    }
    if not cfg.keep_parts:
        _remove_dir(out, PARTS_DIR)
    out.write_json(manifest, TOKENS_DIR, "manifest.json")
    out.write_json(summary, "stats.json")
    out.write_bytes(b"", TOKENS_DIR, "_SUCCESS")
    out.write_json({**meta, "status": "finished"}, "run.json")
    return summary


def _map_units(units: list[dict[str, Any]], cls: type, args: tuple, local: bool, num_cpus: int | None) -> list[dict]:
    """`cls(*args)` applied to every unit: in this process, or by a Ray Data actor pool (one actor per CPU)."""
    if local:
        worker = cls(*args)
        return [worker(u) for u in units]
    import ray

    init_ray(num_cpus)
    workers = max(1, min(len(units), int(ray.available_resources().get("CPU", 1))))
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    ds = ds.map(cls, fn_constructor_args=args, compute=ray.data.ActorPoolStrategy(min_size=workers, max_size=workers),
                num_cpus=1)
    return list(ds.iter_rows())


def _remove_dir(out: OutputDir, name: str) -> None:
    try:
        out.fs.delete_dir(out.path(name))
    except OSError:
        pass


def format_summary(summary: dict[str, Any]) -> str:
    if summary.get("already_complete"):
        head = f"sift tokenize: {summary['output']} is already complete (nothing to do)"
    else:
        head = f"sift tokenize: {summary['input_shards']} document shards ({summary['input_shards_processed_now']} tokenized now)"
    lines = [head, f"  documents {summary['documents']:,}   tokens {summary['tokens']:,}"]
    for split, s in summary["splits"].items():
        lines.append(f"  {split:<10} {s['shards']:>4} shards  {s['documents']:>9,} docs  {s['tokens']:>12,} tokens")
    drops = statslib.drops(summary["stats"], "tokenize")
    for reason, n in drops.items():
        lines.append(f"  dropped ({reason}): {n:,}")
    lines.append(f"  shards: {summary['output']}/{TOKENS_DIR}  (manifest.json)")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m pipelines.tokenize") -> int:
    return stage_main(argv, prog, "Tokenize a curate/dedup run into Arrow IPC token shards.", TokenizeConfig, run,
                      format_summary, "a finished sift curate or dedup output folder", extra=[
                          ("--tokenizer -t", {"help": "`gpt2` (default) or a `sift train-tokenizer` folder"}),
                          ("--shard-tokens", {"type": int}),
                      ])


if __name__ == "__main__":
    sys.exit(main())
