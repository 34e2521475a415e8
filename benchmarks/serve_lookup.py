"""Latency of `sift serve`'s "why was this document removed?" lookup, on the demo run and on a copy of it scaled up.

    .venv/bin/python benchmarks/serve_lookup.py [--run runs/demo] [--shards 64] [--copies 400]

The lookup has no index of its own: it scans the key column (url, domain or doc_id) of every Parquet shard of
the curate exclusions and documents (threads, one file each), then reads the other columns of the matching rows
only; dedup's and tokenize's tables are then searched by doc_id. The scaled copy repeats the demo's real rows
`copies` times over `shards` shards per table (URLs and doc_ids made unique per copy, text cut to 1,000
characters), so the scan cost grows as it would on a real run of that size. Prints a table; median of 5.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.serve import catalog


def _scaled(table: pa.Table, copies: int, shards: int, out: Path, cut_text: bool) -> None:
    """`table` repeated `copies` times (doc_id/url/kept_doc_id made unique per copy) into `shards` files."""
    out.mkdir(parents=True, exist_ok=True)
    if cut_text and "text" in table.column_names:
        i = table.schema.get_field_index("text")
        table = table.set_column(i, table.schema.field("text"), pc.utf8_slice_codeunits(table.column("text"), 0, 1000))
    per_shard = max(1, copies // shards)
    for s in range(shards):
        parts = []
        for k in range(s * per_shard, (s + 1) * per_shard):
            t = table
            for col in ("doc_id", "url", "kept_doc_id"):
                if col in t.column_names:
                    j = t.schema.get_field_index(col)
                    suffix = f"#{k}" if col != "url" else f"?copy={k}"
                    t = t.set_column(j, t.schema.field(col), pc.binary_join_element_wise(
                        t.column(col), pa.scalar(suffix, t.schema.field(col).type), ""))
            parts.append(t)
        pq.write_table(pa.concat_tables(parts), out / f"shard-{s:05d}.parquet", compression="zstd")


def build_scaled(run_dir: Path, dest: Path, copies: int, shards: int) -> None:
    """A pipeline run at `dest` with every table of `run_dir` scaled up (copied metadata, stats files as-is)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy(run_dir / "pipeline.json", dest / "pipeline.json")
    for stage, tables in (("curate", ("documents", "exclusions")), ("dedup", ("documents", "dedup_removed"))):
        (dest / stage).mkdir()
        for f in ("run.json", "stats.json"):
            shutil.copy(run_dir / stage / f, dest / stage / f)
        shutil.copytree(run_dir / stage / "shard_stats", dest / stage / "shard_stats")
        for name in tables:
            t = pads.dataset(run_dir / stage / name, format="parquet").to_table()
            _scaled(t, copies, shards, dest / stage / name, cut_text=True)


def time_lookup(run: catalog.Run, query: str, key: str, repeat: int = 5) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = catalog.lookup(run, query, key)
        times.append(time.perf_counter() - t0)
        count = result["count"]
    return statistics.median(times), count


def queries(run_dir: Path, suffix_url: str = "", suffix_id: str = "") -> list[tuple[str, str, str]]:
    ex = pads.dataset(run_dir / "curate" / "exclusions", format="parquet").to_table().slice(0, 1).to_pylist()[0]
    kept = pads.dataset(run_dir / "dedup" / "documents", format="parquet").to_table(
        columns=["doc_id", "url", "domain"]).slice(0, 1).to_pylist()[0]
    return [
        ("removed page by URL", ex["url"] + suffix_url, "url"),
        ("kept page by URL", kept["url"] + suffix_url, "url"),
        ("kept page by doc_id", kept["doc_id"] + suffix_id, "doc_id"),
        ("domain", kept["domain"], "domain"),
    ]


def rows_of(run_dir: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for stage in ("curate", "dedup")
               for sub in ("documents", "exclusions", "dedup_removed") for p in (run_dir / stage / sub).glob("*.parquet"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=str(REPO / "runs" / "demo"), help="a finished `sift run` job (the demo's)")
    p.add_argument("--shards", type=int, default=64)
    p.add_argument("--copies", type=int, default=400)
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args()
    run_dir = Path(args.run)
    if not (run_dir / "pipeline.json").exists():
        print(f"{run_dir} is not a finished `sift run` job: run `bash scripts/demo.sh` first", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        scaled = Path(tmp) / "runs" / "scaled"
        t0 = time.perf_counter()
        build_scaled(run_dir, scaled, args.copies, args.shards)
        print(f"scaled copy: {rows_of(scaled):,} rows in {4 * args.shards} Parquet files "
              f"({sum(f.stat().st_size for f in scaled.rglob('*.parquet')) / 1e6:,.0f} MB), built in {time.perf_counter() - t0:.0f} s")
        for label, root, name, url_sfx, id_sfx in (
            ("demo", run_dir.parent, run_dir.name, "", ""),
            ("scaled", scaled.parent, "scaled", "?copy=7", "#7"),
        ):
            run = catalog.get_run(str(root), name)
            base = run_dir if label == "demo" else scaled
            for what, q, key in queries(run_dir, url_sfx, id_sfx):  # a domain repeats in every copy: many hits
                seconds, count = time_lookup(run, q, key)
                results.append({"run": label, "rows": rows_of(base), "lookup": what, "hits": count,
                                "ms": round(1000 * seconds, 1)})
    print(f"\n{'run':<8} {'rows scanned':>13} {'lookup':<22} {'hits':>6} {'median ms':>10}")
    for r in results:
        print(f"{r['run']:<8} {r['rows']:>13,} {r['lookup']:<22} {r['hits']:>6} {r['ms']:>10.1f}")
    print(f"\nmachine: {os.cpu_count()} cores; one process, pyarrow {pa.__version__}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
