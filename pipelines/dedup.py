"""`sift dedup`: exact document and line deduplication of a curate run, on Ray Data.

    list shards -> read (doc_id, text, rank fields)
      -> document hashes -> groupby(hash) [hash-partitioned shuffle] -> one keeper per hash
      -> MinHash bands -> coarse shards of whole LSH buckets -> candidate pairs -> shards of pairs (each once)
         -> each shingle set copied into the verification shards of its pairs' buckets (once per shard, not per pair)
         -> exact Jaccard per pair -> connected components (union-find, or label propagation on Ray Data)
      -> (with an index) the same against the hashes and signatures of an earlier run
      -> line hashes -> groupby(hash).count() [hash-partitioned] -> lines seen more than once
      -> plan/: the removals as one Parquet part per input shard (groupby shard) + the repeated lines
    -> rewrite every shard (one task each): drop its planned documents, strip duplicated lines,
       drop documents left empty; write shard + stats + the removal table + its index part, atomically

Removals stay Ray datasets from the shuffles to the plan parts: the driver holds the removed and candidate
documents as int64 keys (8 bytes each, `PlaceKeys`) and the repeated line hashes, never a dict per removal. A
rerun after a failed rewrite reuses a finished plan.

The keeper of a group of identical documents is chosen deterministically: highest quality score
(when the run has one), then earliest crawl date, then smallest doc_id. Line dedup follows the
CS336 definition: a line that occurs more than once anywhere in the corpus is removed from every
document that contains it.

    python -m pipelines.dedup --input runs/demo --output runs/demo-dedup
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import sys
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from operators.exact import SortedHashes, document_hash, line_hashes, remove_lines
from pipelines import stats as statslib
from pipelines.config import config_hash, stage_main
from pipelines.layout import DOCS_DIR, STATS_DIR, init_ray, retry_system_failures
from pipelines.io import OutputDir
from pipelines.localdata import LocalDataset
from pipelines.run_info import run_metadata

REMOVED_DIR = "dedup_removed"
INDEX_DIR = "index"
STAGE_ORDER = ("exact_dedup", "fuzzy_dedup", "index_dedup", "line_dedup")


# Ray Data's CPU shuffle strategies (ray.data.context.ShuffleStrategy values); "" = Ray's default
SHUFFLE_STRATEGIES = ("", "sort_shuffle_pull_based", "sort_shuffle_push_based", "hash_shuffle", "shuffle_v2")


@dataclass(frozen=True)
class DedupConfig:
    input: str = ""
    """A finished `sift curate` output folder (its documents/ shards are read)."""
    output: str = ""
    """Where the deduplicated shards go (same layout as curate's)."""
    documents: bool = True
    """Remove exact duplicate documents (normalised text), keeping one per group."""
    lines: bool = True
    """Remove lines that occur more than once anywhere in the corpus (CS336 exact line dedup)."""
    num_cpus: int | None = None
    """Size of the embedded local Ray (ignored with RAY_ADDRESS)."""
    shuffle_partitions: int = 0
    """Hash partitions of the groupby shuffles; 0 = twice the cluster's CPUs. Only the hash strategies (shuffle_v2,
    hash_shuffle) use it: the sort shuffles make as many partitions as their input has blocks."""
    shuffle_strategy: str = "sort_shuffle_pull_based"
    """Ray Data's shuffle for the groupbys (a `ray.data.context.ShuffleStrategy` value; "" = Ray's default, now
    shuffle_v2). The output is the same with any of them; the pull-based sort shuffle needs no aggregator actors:
    on 2 CPUs a dedup of 12 documents took 15 s with it, 38 s with hash_shuffle and 60 s with shuffle_v2, and of
    2,480 web pages 15.8 s, 35.2 s and 55.2 s (benchmarks/RESULTS.md). Not yet compared on a multi-node cluster:
    for very large corpora (many thousands of blocks) Ray's actor-based shuffles may scale better."""
    system_retries: int = 2
    """Times the dedup plan is made again after a system failure (a node or worker lost mid-shuffle); never for an
    error of the code itself."""
    local_max_docs: int = 20_000
    """Corpora of up to this many documents are deduplicated in this process, same algorithm and output, instead
    of as Ray Data shuffles (whose start-up costs ~20 s however small the input); 0 always uses Ray Data. Runs on
    a Ray cluster (RAY_ADDRESS set) always use Ray Data."""
    fuzzy: bool = True
    """Remove near duplicates: MinHash + LSH candidates, each verified by exact shingle Jaccard."""
    jaccard_threshold: float = 0.8
    """Two documents whose 5-word-shingle Jaccard is at least this are near duplicates."""
    num_perm: int = 128
    ngram: int = 5
    max_bucket: int = 500
    """An LSH bucket with more members links them to its first member only (a star, not all pairs)."""
    max_cluster_size: int = 10_000
    """A verified cluster larger than this stops the run (a guard against runaway merging) unless
    allow_large_clusters is set."""
    allow_large_clusters: bool = False
    distributed_cc_min_edges: int = 2_000_000
    """Verified edge lists at least this long get their connected components by label propagation on Ray Data
    (hash-partitioned, never on one node) instead of union-find on the driver. 0 = always distributed."""
    max_source_loss: float = 0.9
    """Stop (before writing anything) when dedup would remove more than this share of one source file's
    documents, unless allow_source_loss is set: a runaway merge looks exactly like that."""
    min_source_docs: int = 100
    """The source-loss guard applies to files with at least this many documents."""
    allow_source_loss: bool = False
    index: str = ""
    """Incremental dedup: a previous `sift dedup` output (or its index/ folder). Documents that exactly or
    nearly duplicate a document kept there are removed (stage index_dedup); the old corpus is not read
    or recomputed, only its index (hashes and signatures)."""
    write_index: bool = True
    """Write index/ (document hashes and MinHash signatures of the kept documents, plus the parts of
    `index`) so that a later crawl can be deduplicated against this run."""

    def __post_init__(self) -> None:
        if self.shuffle_strategy not in SHUFFLE_STRATEGIES:
            raise ValueError(f"dedup.shuffle_strategy {self.shuffle_strategy!r}: expected one of "
                             f"{', '.join(repr(s) for s in SHUFFLE_STRATEGIES)}")

    def output_hash(self) -> str:
        return config_hash({
            "documents": self.documents, "lines": self.lines, "fuzzy": self.fuzzy,
            "jaccard_threshold": self.jaccard_threshold, "num_perm": self.num_perm, "ngram": self.ngram,
            **({"index": self.index} if self.index else {}),
        })


# ---------------------------------------------------------------------------------------------
# Ray Data steps (pure functions over batches)
# ---------------------------------------------------------------------------------------------


def _doc_keys(batch: pa.Table, hashed: bool = True) -> pa.Table:
    """(doc_hash, doc_id, rank fields) per document; documents with no words are left out, so two
    empty documents never count as duplicates. Without `hashed` (no exact-document stage: the keys only rank
    near-duplicate clusters), doc_hash is 1 for every document with a non-space character instead of the hash of
    its normalised text (0.25 ms a page); a page that normalises to nothing then stays among the keys but has no
    shingles, so it is in no cluster."""
    texts = batch.column("text").to_pylist()
    quality = batch.column("quality_score").to_pylist() if "quality_score" in batch.column_names else [None] * len(texts)
    dates = batch.column("warc_date").cast(pa.int64()).to_pylist() if "warc_date" in batch.column_names else [None] * len(texts)
    # a record's place (file, offset) identifies it even where WARC-Record-IDs repeat across files
    places = [f"{f}#{o}" for f, o in zip(batch.column("source_file").to_pylist(), batch.column("record_offset").to_pylist())]
    keys = pa.table({
        "doc_hash": pa.array([document_hash(t) for t in texts] if hashed else [int(not t.isspace()) if t else 0
                                                                              for t in texts], pa.int64()),
        "place": pa.array(places, pa.string()),
        "doc_id": batch.column("doc_id"),
        "neg_quality": pa.array([-(q if q is not None else 0.0) for q in quality], pa.float64()),
        "date": pa.array([d if d is not None else 2**62 for d in dates], pa.int64()),
    })
    return keys.filter(pc.not_equal(keys.column("doc_hash"), 0))


def _repeated(counts: pa.Table) -> pa.Table:
    return counts.filter(pc.greater(counts.column("count()"), 1)).select(["line_hash"])


def _pick_keeper(group: pa.Table) -> pa.Table:
    """For one hash group: a row per removed document, naming the kept one."""
    rows = sorted(zip(
        group.column("neg_quality").to_pylist(), group.column("date").to_pylist(),
        group.column("doc_id").to_pylist(), group.column("place").to_pylist(),
    ))
    keeper = rows[0][2]
    removed = rows[1:]
    return pa.table({
        "place": pa.array([r[3] for r in removed], pa.string()),
        "kept_doc_id": pa.array([keeper] * len(removed), pa.string()),
        "group_size": pa.array([len(rows)] * len(removed), pa.int32()),
    })


def _line_rows(batch: pa.Table) -> pa.Table:
    hashes = [h for t in batch.column("text").to_pylist() for h in line_hashes(t)]
    return pa.table({"line_hash": pa.array(hashes, pa.int64())})


def _places(batch: pa.Table) -> list[str]:
    return [f"{f}#{o}" for f, o in zip(batch.column("source_file").to_pylist(), batch.column("record_offset").to_pylist())]


def _band_rows(batch: pa.Table, num_perm: int, ngram: int, bands: int, rows: int) -> pa.Table:
    """(band, key, place) for every band of every document with words."""
    from operators.lsh import band_keys
    from operators.minhash import MinHashConfig, signatures

    sigs, has = signatures(batch.column("text").to_pylist(), MinHashConfig(num_perm=num_perm, ngram=ngram))
    out_band, out_key, out_place = [], [], []
    for place, sig, ok in zip(_places(batch), sigs, has):
        if ok:
            for band, key in enumerate(band_keys(sig, bands, rows)):
                out_band.append(band)
                out_key.append(key)
                out_place.append(place)
    return pa.table({"band": pa.array(out_band, pa.int32()), "key": pa.array(out_key, pa.int64()),
                     "place": pa.array(out_place, pa.string())})


STAR_CHUNK = 1024
"""Members of an oversized bucket's star (or new documents of an index bucket) that share one verification cell."""
_M64 = (1 << 64) - 1
_ROWS_PER_SHARD = 100_000
"""Rows a coarse shard of the Ray Data path aims at (see `_shards`)."""


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over an integer array (as uint64): equal inputs, equal outputs, in every process."""
    x = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def _cell(band: int, key: int, chunk: int) -> int:
    """The verification cell of an LSH bucket (or of one chunk of a huge one) as an int64 (mixed by `_mix`; two
    buckets that collide only share a cell, which changes no score)."""
    x = (int(band) * 0x9E3779B97F4A7C15 + int(key) * 0xBF58476D1CE4E5B9 + chunk * 0x94D049BB133111EB) & _M64
    return int(_mix(np.array([x], np.uint64)).view(np.int64)[0])


def _bucket_runs(band: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of equal (band, key) in arrays sorted by them: one LSH bucket each."""
    starts = np.flatnonzero(np.r_[True, (band[1:] != band[:-1]) | (key[1:] != key[:-1])])
    return starts, np.r_[starts[1:], len(band)]


def _string_hash(column) -> np.ndarray:
    """A stable 32-bit hash (CRC-32) of each string (Python's str hash differs between processes)."""
    return np.fromiter((zlib.crc32(s.encode()) for s in column.to_pylist()), np.uint64, count=len(column))


def _shard_of(batch: pa.Table, columns: tuple[str, ...], shards: int) -> np.ndarray:
    """Coarse shard (0 <= s < shards) of each row, from its values in `columns` (integers or strings)."""
    h = np.zeros(batch.num_rows, np.uint64)
    with np.errstate(over="ignore"):
        for c in columns:
            col = batch.column(c)
            part = _string_hash(col) if pa.types.is_string(col.type) else col.to_numpy().astype(np.int64).view(np.uint64)
            h = _mix(h * np.uint64(0x9E3779B97F4A7C15) + part)
    return (h % np.uint64(shards)).astype(np.int64)


def _with_shard(batch: pa.Table, columns: tuple[str, ...], shards: int, name: str = "shard") -> pa.Table:
    return batch.append_column(name, pa.array(_shard_of(batch, columns, shards), pa.int64()))


def _shards(rows: int, partitions: int) -> int:
    """How many coarse shards for a Ray Data groupby over `rows` rows. Grouping by shard, not by each bucket, pair or
    document, lets one vectorised call handle a shard's many small groups: Ray Data's `map_groups` costs ~30 µs a
    group, and its built-in aggregations ~35 µs a row here (a groupby(a, b).min() of 1.06 M pair rows: 38 s on
    2 CPUs; the same by shard: 4 s)."""
    return max(partitions, -(-rows // _ROWS_PER_SHARD))


def _unique_pairs(band_rows: pa.Table, max_bucket: int, cells: bool = False) -> pa.Table:
    """The candidate pairs of every (band, key) bucket among `band_rows` (whole buckets: all of them in process, one
    coarse shard on Ray Data): each pair once, a < b; a bucket over `max_bucket` members pairs its first with the
    rest. Built as integer codes: copies of a page share all of their buckets, k copies make k(k-1)/2 pairs in each
    band (2.2 M pair rows for 9,920 pages at 32 copies each as per-bucket lists). With `cells`, each pair also
    carries the smallest cell of the buckets that made it (`_cell`; a star has one cell per `STAR_CHUNK` members)."""
    empty = pa.table({"a": pa.array([], pa.string()), "b": pa.array([], pa.string()),
                      **({"cell": pa.array([], pa.int64())} if cells else {})})
    if not band_rows.num_rows:
        return empty
    encoded = band_rows.column("place").combine_chunks().dictionary_encode()
    names = encoded.dictionary
    order = pc.array_sort_indices(names).to_numpy()  # codes in string order, so a < b as strings too
    rank = np.empty(len(names), np.int64)
    rank[order] = np.arange(len(names))
    member = rank[encoded.indices.to_numpy()]
    band = band_rows.column("band").to_numpy()
    key = band_rows.column("key").to_numpy()
    rows = np.lexsort((member, key, band))
    band, key, member = band[rows], key[rows], member[rows]
    starts, ends = _bucket_runs(band, key)
    n = np.int64(len(names))
    codes, cell_parts = [], []
    for lo, hi in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
        members = np.unique(member[lo:hi])
        if len(members) < 2:
            continue
        if len(members) <= max_bucket:
            i, j = np.triu_indices(len(members), 1)
            codes.append(members[i] * n + members[j])
            if cells:
                cell_parts.append(np.full(len(i), _cell(band[lo], key[lo], 0), np.int64))
        else:
            codes.append(members[0] * n + members[1:])
            if cells:  # one cell per STAR_CHUNK members of the star
                sizes = np.diff(np.r_[np.arange(0, len(members) - 1, STAR_CHUNK), len(members) - 1])
                cell_parts.append(np.repeat(np.array([_cell(band[lo], key[lo], 1 + c) for c in range(len(sizes))],
                                                     np.int64), sizes))
    if not codes:
        return empty
    codes = np.concatenate(codes)
    if cells:
        cell = np.concatenate(cell_parts)
        by = np.lexsort((cell, codes))  # per code, its smallest cell first
        codes, cell = codes[by], cell[by]
        first = np.r_[True, codes[1:] != codes[:-1]]
        codes, cell = codes[first], cell[first]
    else:
        codes = np.unique(codes)
    sorted_names = names.take(pa.array(order))
    out = {"a": sorted_names.take(pa.array(codes // n)), "b": sorted_names.take(pa.array(codes % n))}
    return pa.table({**out, "cell": pa.array(cell, pa.int64())} if cells else out)


def _shard_pairs(group: pa.Table, max_bucket: int) -> pa.Table:
    """One coarse shard of band rows (whole buckets) -> its buckets' candidate pairs with their cells."""
    return _unique_pairs(group, max_bucket, cells=True)


def _pair_table(pairs: list[tuple[str, str]], cells: list[int]) -> pa.Table:
    return pa.table({"a": pa.array([p[0] for p in pairs], pa.string()), "b": pa.array([p[1] for p in pairs], pa.string()),
                     "cell": pa.array(cells, pa.int64())})


def _pairs_once(pairs, partitions: int):
    """(a, b, cell) rows, a pair once per bucket that made it (materialised: its size sets the shard count) -> each
    pair once with its smallest cell, by coarse shards of hash(a, b). Materialised."""
    shards = _shards(pairs.count(), partitions)
    return pairs.map_batches(functools.partial(_with_shard, columns=("a", "b"), shards=shards), batch_format="pyarrow") \
        .groupby("shard", num_partitions=partitions).map_groups(_fewest_cells, batch_format="pyarrow").materialize()


def _fewest_cells(group: pa.Table) -> pa.Table:
    """One coarse shard of (a, b, cell) rows (a pair's rows from every band share a shard) -> each pair once, with
    its smallest cell."""
    low = group.group_by(["a", "b"]).aggregate([("cell", "min")])
    return pa.table({"a": low.column("a"), "b": low.column("b"), "cell": low.column("cell_min")})


# Verification on Ray Data. A candidate pair is met by both documents' shingle sets in a verification shard: the one
# of its cell (the LSH bucket that produced it, the smallest cell among its buckets). Each document's set is copied
# once into every verification shard where it has a pair: at most once per band, however many pairs it is in.
# (Copying a set into every pair cost k - 1 copies per document of a cluster of k copies: 4.4 M copies of ~1,000
# shingles for the 2.2 M pairs of 1,082 pages at 64 copies each.)


def _route_rows(pairs: pa.Table) -> pa.Table:
    """(a, b, vshard) pairs -> one (place, vshard) row per document and verification shard it is needed in
    (shingles empty), to meet that document's shingle row (vshard null) in a groupby on the document's shard."""
    places = pa.concat_arrays([pairs.column("a").combine_chunks(), pairs.column("b").combine_chunks()])
    cells = pa.concat_arrays([pairs.column("vshard").combine_chunks()] * 2)
    unique = pa.table({"place": places, "vshard": cells}).group_by(["place", "vshard"]).aggregate([])
    return pa.table({"place": unique.column("place"), "vshard": unique.column("vshard"),
                     "shingles": pa.array([[]] * unique.num_rows, pa.list_(pa.uint32()))})


def _to_shards(group: pa.Table) -> pa.Table:
    """Rows of some documents (each one's own set row: vshard null; their route rows) -> each set copied into each
    verification shard it is routed to, as verification rows (vshard, place, b null, shingles). A document
    without an own row is routed nowhere (its pairs are dropped); of several own rows, the first counts."""
    own = group.column("vshard").is_null().to_numpy(zero_copy_only=False)
    places = group.column("place").to_pylist()
    vshards = group.column("vshard").to_pylist()
    first: dict[str, int] = {}
    for i in np.flatnonzero(own):
        first.setdefault(places[i], int(i))
    # a document's routes come from every block of pairs (each block removed its own repeats): once per shard here
    routes = {(places[i], vshards[i]) for i in np.flatnonzero(~own) if places[i] in first}
    routes = sorted(routes)
    take = pa.array(np.array([first[p] for p, _ in routes], np.int64))
    return pa.table({"vshard": pa.array([v for _, v in routes], pa.int64()),
                     "place": group.column("place").take(take), "b": pa.nulls(len(routes), pa.string()),
                     "shingles": group.column("shingles").take(take)})


def _verify_pair_rows(pairs: pa.Table) -> pa.Table:
    """(a, b, vshard) pairs as verification rows (vshard, place = a, b, no shingles)."""
    return pa.table({"vshard": pairs.column("vshard"), "place": pairs.column("a"), "b": pairs.column("b"),
                     "shingles": pa.array([[]] * pairs.num_rows, pa.list_(pa.uint32()))})


def _verify_shard(group: pa.Table, threshold: float, estimate: bool = False) -> pa.Table:
    """One verification shard: its documents' sets and its pairs -> the pairs scoring at least `threshold` (exact
    shingle Jaccard; with `estimate`, the sets are MinHash signatures and the score their agreement)."""
    is_set = group.column("b").is_null()
    pairs = group.filter(pc.invert(is_set))
    return _verify_in_process(pa.table({"a": pairs.column("place"), "b": pairs.column("b")}), group.filter(is_set),
                              threshold, estimate)


def _with_vshard(pairs: pa.Table, shards: int) -> pa.Table:
    return pa.table({"a": pairs.column("a"), "b": pairs.column("b"),
                     "vshard": pa.array(_shard_of(pairs, ("cell",), shards), pa.int64())})


def _verify_on_ray(unique, set_rows, n_sets: int, threshold: float, partitions: int, estimate: bool = False):
    """Ray Data verification of (a, b, cell) pairs against `n_sets` (place, vshard null, shingles) set rows: the
    sets are copied into the verification shards of their cells (a groupby on the document's shard), then each
    shard is verified (a groupby on it). Materialised."""
    n_pairs = unique.count()
    pairs = unique.map_batches(functools.partial(_with_vshard, shards=_shards(2 * n_pairs, partitions)),
                               batch_format="pyarrow").materialize()
    doc_shard = functools.partial(_with_shard, columns=("place",), shards=_shards(2 * n_pairs + n_sets, partitions),
                                  name="dshard")
    routed = pairs.map_batches(_route_rows, batch_format="pyarrow").union(set_rows) \
        .map_batches(doc_shard, batch_format="pyarrow") \
        .groupby("dshard", num_partitions=partitions).map_groups(_to_shards, batch_format="pyarrow")
    return routed.union(pairs.map_batches(_verify_pair_rows, batch_format="pyarrow")) \
        .groupby("vshard", num_partitions=partitions).map_groups(
            functools.partial(_verify_shard, threshold=threshold, estimate=estimate), batch_format="pyarrow").materialize()


def _shingle_rows(batch: pa.Table, ngram: int, only=None, keys: "PlaceKeys | None" = None) -> pa.Table:
    """Each document's shingle set as one row (place, vshard null, shingles); with `only` (a sorted key array, or
    its object-store reference), just the documents in some candidate pair (the others are never verified, so
    their shingles need not be computed or shuffled)."""
    from operators.minhash import shingle_sets

    places, texts = _places(batch), batch.column("text").to_pylist()
    if only is not None and batch.num_rows:
        keep = np.flatnonzero(_in_keys(batch, only, keys))
        places, texts = [places[i] for i in keep], [texts[i] for i in keep]
    values, offsets = shingle_sets(texts, ngram)
    return pa.table({
        "place": pa.array(places, pa.string()),
        "vshard": pa.nulls(len(texts), pa.int64()),
        "shingles": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, pa.uint32())),
    })


def _verify_in_process(pairs: pa.Table, shingles: pa.Table, threshold: float, estimate: bool = False) -> pa.Table:
    """Pair verification from one table of sets (place, shingles): each (a, b) pair with both sides present and a
    score of at least `threshold`, as (a, b, similarity), in pair order; a pair whose side is missing is dropped.
    The score is the exact Jaccard of the sorted shingle-hash sets (32-bit hashes: equal to the Jaccard of the
    shingle sets up to collisions, about 1e-6 per pair of ~1,000-shingle documents), or with `estimate` (the sets
    are MinHash signatures) their agreement; all pairs in one compiled pass (`operators.lsh.set_similarities`).
    Used whole by the in-process path and per verification shard (`_verify_shard`) by the Ray Data path."""
    from operators.lsh import set_similarities

    column = shingles.column("shingles").combine_chunks()
    values, offsets = column.values.to_numpy(zero_copy_only=False), column.offsets.to_numpy()
    # documents with equal sets (copies of a page) are one set here: a pair inside such a group scores 1.0
    # (0.0 for empty sets), and two groups are compared once, however many pairs join their members
    group_of: dict[str, int] = {}
    group_rows: list[int] = []
    by_content: dict[bytes, int] = {}
    for i, p in enumerate(shingles.column("place").to_pylist()):
        if p not in group_of:  # the first row of a place
            g = by_content.setdefault(values[offsets[i]: offsets[i + 1]].tobytes(), len(group_rows))
            if g == len(group_rows):
                group_rows.append(i)
            group_of[p] = g
    a_col, b_col = pairs.column("a"), pairs.column("b")
    ga = np.array([group_of.get(p, -1) for p in a_col.to_pylist()], np.int64)
    gb = np.array([group_of.get(p, -1) for p in b_col.to_pylist()], np.int64)
    present = np.flatnonzero((ga >= 0) & (gb >= 0))
    n_groups = np.int64(max(len(group_rows), 1))
    codes = np.minimum(ga[present], gb[present]) * n_groups + np.maximum(ga[present], gb[present])
    unique, inverse = np.unique(codes, return_inverse=True)
    rows = np.asarray(group_rows, np.int64)
    scores = set_similarities(values, offsets, rows[unique // n_groups], rows[unique % n_groups], estimate=estimate)
    similarity = scores[inverse.reshape(-1)]
    keep = similarity >= threshold
    take = pa.array(present[keep], pa.int64())
    return pa.table({"a": a_col.take(take).cast(pa.string()), "b": b_col.take(take).cast(pa.string()),
                     "similarity": pa.array(similarity[keep], pa.float64())})


def _rows_at(batch: pa.Table, places: pa.Array) -> pa.Table:
    return batch.filter(pc.is_in(batch.column("place"), value_set=places))


# ---------------------------------------------------------------------------------------------
# The plan: what to remove, as datasets (never one dict of every removal on the driver)
# ---------------------------------------------------------------------------------------------

PLAN_DIR = "plan"
PLAN_SCHEMA = pa.schema([
    pa.field("place", pa.string()),
    pa.field("kept_doc_id", pa.string()),
    pa.field("cluster_size", pa.int32()),
    pa.field("similarity", pa.float64()),
    pa.field("stage", pa.string()),
    pa.field("reason", pa.string()),
])
OFFSET_BITS = 40


class PlaceKeys:
    """A document's place (source_file#record_offset) as one exact int64: the index of its source file among the
    run's sorted source files, shifted left 40 bits, plus its record offset (WARC offsets stay far below 1 TiB).
    Sets of removed or candidate documents travel as sorted arrays of these keys (8 bytes a document, shared
    zero-copy by the workers of a node), not as Python sets of path strings pickled into every task."""

    def __init__(self, sources: list[str]):
        self.sources = sorted(set(sources))
        if len(self.sources) >= 1 << (63 - OFFSET_BITS):
            raise ValueError(f"{len(self.sources):,} source files do not fit the document keys")
        self._index = {src: i for i, src in enumerate(self.sources)}

    def _check(self, offsets: np.ndarray, what: str) -> None:
        if len(offsets) and (offsets.min() < 0 or offsets.max() >= 1 << OFFSET_BITS):
            raise ValueError(f"a record offset of {what} does not fit {OFFSET_BITS} bits")

    def of_places(self, places: list[str]) -> np.ndarray:
        parts = [p.rsplit("#", 1) for p in places]
        try:
            idx = np.array([self._index[src] for src, _ in parts], np.int64)
        except KeyError as exc:
            raise ValueError(f"document from a source file this run does not hold: {exc}") from None
        offsets = np.array([int(off) for _, off in parts], np.int64)
        self._check(offsets, "a planned document")
        return (idx << OFFSET_BITS) | offsets

    def of_batch(self, batch: pa.Table) -> np.ndarray:
        idx = pc.index_in(batch.column("source_file"), value_set=pa.array(self.sources, pa.string()))
        if idx.null_count:
            raise ValueError("document from a source file this run does not hold")
        offsets = batch.column("record_offset").to_numpy().astype(np.int64)
        self._check(offsets, "a document")
        return (idx.to_numpy().astype(np.int64) << OFFSET_BITS) | offsets


def _key_set(ref) -> SortedHashes:
    """A sorted key array (or its object-store reference) as a set."""
    value = _fetch(ref)
    return value if isinstance(value, SortedHashes) else SortedHashes(value, sorted_unique=True)


def _share(keys: np.ndarray, local: bool):
    """A sorted key array for the workers: itself in process, else one object-store copy per node."""
    if local:
        return SortedHashes(keys, sorted_unique=True)
    import ray

    return ray.put(keys)


def _key_rows(batch: pa.Table, keys: PlaceKeys, columns: tuple[str, ...] = ("place",)) -> pa.Table:
    found = [keys.of_places(batch.column(c).to_pylist()) for c in columns if batch.num_rows]
    return pa.table({"key": pa.array(np.concatenate(found) if found else np.zeros(0, np.int64), pa.int64())})


def collect_keys(ds, keys: PlaceKeys, columns: tuple[str, ...] = ("place",)) -> np.ndarray:
    """The sorted unique keys of the places in `columns` of `ds` (8 bytes a document on the driver)."""
    parts = [b["key"] for b in ds.map_batches(functools.partial(_key_rows, keys=keys, columns=columns), batch_format="pyarrow")
             .iter_batches(batch_format="numpy") if len(b.get("key", ()))]
    return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


def _in_keys(batch: pa.Table, ref, keys: PlaceKeys) -> np.ndarray:
    """Per row of `batch`: is its document (source_file + record_offset columns, else a place column) in the key
    set `ref`?"""
    found = keys.of_batch(batch) if "source_file" in batch.column_names else keys.of_places(batch.column("place").to_pylist())
    return _key_set(ref).contains_many(found)


def _without_keys(batch: pa.Table, removed, keys: PlaceKeys) -> pa.Table:
    """The rows of `batch` whose document's key is not in `removed`."""
    if not batch.num_rows:
        return batch
    return batch.filter(pa.array(~_in_keys(batch, removed, keys), pa.bool_()))


def _dataset_like(ds, table: pa.Table):
    """`table` as a dataset of the same kind as `ds` (Ray Data, or in-process)."""
    if isinstance(ds, LocalDataset):
        return LocalDataset(table)
    import ray

    return ray.data.from_arrow(table)


def _exact_plan_rows(batch: pa.Table, stage: str, reason: str) -> pa.Table:
    """(place, kept_doc_id[, group_size]) rows of an exact match -> PLAN_SCHEMA rows (similarity 1; a match
    against the index is a pair)."""
    n = batch.num_rows
    size = batch.column("group_size") if "group_size" in batch.column_names else pa.array([2] * n, pa.int32())
    return pa.table({"place": batch.column("place"), "kept_doc_id": batch.column("kept_doc_id"),
                     "cluster_size": size, "similarity": pa.array([1.0] * n, pa.float64()),
                     "stage": pa.array([stage] * n, pa.string()), "reason": pa.array([reason] * n, pa.string())},
                    schema=PLAN_SCHEMA)


def _union(datasets: list):
    return datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]


def fuzzy_removals(docs, keys, cfg: "DedupConfig", partitions: int, place_keys: PlaceKeys, local: bool):
    """A dataset of PLAN_SCHEMA rows (stage fuzzy_dedup): every document that a verified near-duplicate cluster
    removes, with the kept doc_id, cluster size and best similarity. `keys` (`_doc_keys` rows) rank the documents.
    The driver holds the candidates' keys (8 bytes each) and, for the in-process union-find, the verified edges."""
    from operators.lsh import UnionFind, optimal_bands

    bands, rows = optimal_bands(cfg.num_perm, cfg.jaccard_threshold)
    band_rows = docs.map_batches(functools.partial(_band_rows, num_perm=cfg.num_perm, ngram=cfg.ngram, bands=bands, rows=rows),
                                 batch_format="pyarrow")
    if local:
        unique = _dataset_like(docs, _unique_pairs(band_rows.table, cfg.max_bucket))
    else:
        # coarse shards of whole buckets, then of pairs (see `_shards`): no Python call per bucket or per pair
        band_rows = band_rows.materialize()  # (its size sets the shard count)
        shards = _shards(band_rows.count(), partitions)
        pairs = band_rows.map_batches(functools.partial(_with_shard, columns=("band", "key"), shards=shards),
                                      batch_format="pyarrow") \
            .groupby("shard", num_partitions=partitions).map_groups(
                functools.partial(_shard_pairs, max_bucket=cfg.max_bucket), batch_format="pyarrow").materialize()
        unique = _pairs_once(pairs, partitions)
    candidates = collect_keys(unique, place_keys, ("a", "b"))
    if not len(candidates):
        return _dataset_like(docs, PLAN_SCHEMA.empty_table())
    only = _share(candidates, local)
    shingle_rows = docs.map_batches(functools.partial(_shingle_rows, ngram=cfg.ngram, only=only, keys=place_keys),
                                    batch_format="pyarrow")
    if local:  # one table of shingle sets: each pair reads both sides from it (no per-pair tables)
        verified = _dataset_like(docs, _verify_in_process(unique.table, shingle_rows.table, cfg.jaccard_threshold))
    else:
        verified = _verify_on_ray(unique, shingle_rows, len(candidates), cfg.jaccard_threshold, partitions)
    if not verified.count():
        return _dataset_like(docs, PLAN_SCHEMA.empty_table())
    if verified.count() >= cfg.distributed_cc_min_edges:
        return distributed_components(verified, keys, only, place_keys, cfg, partitions)
    edges = [(r["a"], r["b"], r["similarity"]) for r in verified.iter_rows()]
    places = sorted({p for a, b, _ in edges for p in (a, b)})
    # keeper rank of the clustered documents only: (-quality, crawl date, doc_id)
    keys_by_place = {r["place"]: (r["neg_quality"], r["date"], r["doc_id"]) for r in keys.map_batches(
        functools.partial(_rows_at, places=pa.array(places, pa.string())), batch_format="pyarrow").iter_rows()} \
        if places else {}
    index = {p: i for i, p in enumerate(places)}
    uf = UnionFind(len(places))
    best_sim: dict[str, float] = {}
    for a, b, sim in edges:
        uf.union(index[a], index[b])
        best_sim[a] = max(best_sim.get(a, 0.0), sim)
        best_sim[b] = max(best_sim.get(b, 0.0), sim)
    removals = []
    for component in uf.components():
        if len(component) < 2:
            continue
        _guard_cluster(len(component), cfg)
        members = sorted(component, key=lambda i: keys_by_place[places[i]])
        keeper = keys_by_place[places[members[0]]][2]
        for i in members[1:]:
            removals.append({"place": places[i], "kept_doc_id": keeper, "cluster_size": len(component),
                             "similarity": best_sim[places[i]], "stage": "fuzzy_dedup", "reason": "near_duplicate"})
    return _dataset_like(docs, pa.Table.from_pylist(removals, schema=PLAN_SCHEMA))


# ---------------------------------------------------------------------------------------------
# Incremental dedup: a persistent index of kept documents (hashes + signatures, Parquet)
# ---------------------------------------------------------------------------------------------

INDEX_SCHEMA = pa.schema([
    pa.field("place", pa.string()),
    pa.field("doc_id", pa.string()),
    pa.field("doc_hash", pa.int64()),
    pa.field("signature", pa.list_(pa.uint32())),
])


def _index_params(cfg: "DedupConfig") -> dict[str, Any]:
    from operators.minhash import MinHashConfig

    return {"num_perm": cfg.num_perm, "ngram": cfg.ngram, "seed": MinHashConfig().seed,
            "jaccard_threshold": cfg.jaccard_threshold, "hash": "operators.exact.document_hash + minhash affine32 v1"}


def load_index(cfg: "DedupConfig") -> dict[str, Any]:
    """index.json of `cfg.index` (a dedup output or its index/ folder), checked against this run's settings."""
    root = OutputDir(cfg.index)
    if not root.exists("index.json") and root.exists(INDEX_DIR, "index.json"):
        root = OutputDir(root.uri_of(INDEX_DIR))
    if not root.exists("index.json") or not root.exists("_SUCCESS"):
        raise ValueError(f"index {cfg.index!r}: no finished dedup index there (expected index/index.json and _SUCCESS)")
    info = root.read_json("index.json")
    want = _index_params(cfg)
    if info.get("params") != want:
        raise ValueError(f"index {cfg.index!r} was built with {info.get('params')}, this run uses {want}: "
                         "signatures would not be comparable")
    return info


def _index_rows(batch: pa.Table, num_perm: int, ngram: int) -> pa.Table:
    from operators.minhash import MinHashConfig, signatures

    texts = batch.column("text").to_pylist()
    sigs, has = signatures(texts, MinHashConfig(num_perm=num_perm, ngram=ngram))
    return pa.table({
        "place": pa.array(_places(batch), pa.string()),
        "doc_id": batch.column("doc_id"),
        "doc_hash": pa.array([document_hash(t) for t in texts], pa.int64()),
        "signature": pa.array([sig.tolist() if ok else [] for sig, ok in zip(sigs, has)], pa.list_(pa.uint32())),
    }, schema=INDEX_SCHEMA)


def _local_ok(n_docs: int, cfg: "DedupConfig") -> bool:
    """In-process dedup: a small corpus, no index to read (it may be large), and no Ray cluster to send work to
    (under `ray job submit` the driver's working-dir copy can be removed while the job runs: found in the
    two-node test, where compiling the MinHash kernel in the driver then failed on `os.getcwd()`)."""
    return n_docs <= cfg.local_max_docs and not cfg.index and not os.environ.get("RAY_ADDRESS")


def write_index(cfg: "DedupConfig", out: OutputDir, shards: list[str], previous: dict[str, Any] | None) -> None:
    """index/index.json: the parts of `previous` followed by this run's (one per shard, written by the rewrite
    workers: the kept documents' hashes and signatures of their text before line dedup), then _SUCCESS."""
    mine = [out.path(INDEX_DIR, f"{s}.parquet") for s in shards]
    missing = [p for p in mine if out.fs.get_file_info(p).type == pafs.FileType.NotFound]
    if missing:
        raise AssertionError(f"index parts missing (shards rewritten before the index was written?): {missing[:3]}")
    documents = sum(pq.ParquetFile(p, filesystem=out.fs).metadata.num_rows for p in mine)
    parts = (previous or {}).get("parts", []) + [out.uri_of(INDEX_DIR, f"{s}.parquet") for s in shards]
    out.write_json({"params": _index_params(cfg), "parts": parts,
                    "documents": documents + (previous or {}).get("documents", 0)}, INDEX_DIR, "index.json")
    out.write_bytes(b"", INDEX_DIR, "_SUCCESS")


def _index_exact(group: pa.Table) -> pa.Table:
    """One doc_hash group of new and indexed rows: every new document of a hash that the index holds."""
    is_old = group.column("old").to_pylist()
    olds = sorted(d for d, o in zip(group.column("doc_id").to_pylist(), is_old) if o)
    new = [p for p, o in zip(group.column("place").to_pylist(), is_old) if not o] if olds else []
    return pa.table({"place": pa.array(new, pa.string()), "kept_doc_id": pa.array([olds[0] if olds else ""] * len(new), pa.string())})


def _sig_band_rows(batch: pa.Table, bands: int, rows: int) -> pa.Table:
    """(band, key, place, old) for every band of every signature row."""
    from operators.lsh import band_keys

    out_band, out_key, out_place, out_old = [], [], [], []
    for place, sig, old in zip(batch.column("place").to_pylist(), batch.column("signature").to_pylist(), batch.column("old").to_pylist()):
        if sig:
            for band, key in enumerate(band_keys(np.asarray(sig, np.uint32), bands, rows)):
                out_band.append(band)
                out_key.append(key)
                out_place.append(place)
                out_old.append(old)
    return pa.table({"band": pa.array(out_band, pa.int32()), "key": pa.array(out_key, pa.int64()),
                     "place": pa.array(out_place, pa.string()), "old": pa.array(out_old, pa.bool_())})


def _cross_pairs(group: pa.Table, max_bucket: int) -> pa.Table:
    """Candidate (new, indexed) pairs of one LSH bucket (pairs among new or among old documents are not needed),
    each with its cell: the bucket, one cell per `STAR_CHUNK` new documents."""
    old = group.column("old").to_pylist()
    places = group.column("place").to_pylist()
    band, key = group.column("band")[0].as_py(), group.column("key")[0].as_py()
    olds = sorted({p for p, o in zip(places, old) if o})[:max_bucket]
    news = sorted({p for p, o in zip(places, old) if not o})
    chunk_cells = [_cell(band, key, c) for c in range(-(-len(news) // STAR_CHUNK))]
    return _pair_table([(n, o) for n in news for o in olds],
                       [chunk_cells[i // STAR_CHUNK] for i in range(len(news)) for _ in olds])


def _shard_cross_pairs(group: pa.Table, max_bucket: int) -> pa.Table:
    """One coarse shard of (band, key, place, old) rows (whole buckets) -> the `_cross_pairs` of each bucket with
    more than one row (one sort; no call for the many single-row buckets)."""
    band, key = group.column("band").to_numpy(), group.column("key").to_numpy()
    order = np.lexsort((key, band))
    group = group.take(pa.array(order))
    parts = [_cross_pairs(group.slice(lo, hi - lo), max_bucket) for lo, hi in zip(*_bucket_runs(band[order], key[order]))
             if hi - lo > 1]
    return pa.concat_tables(parts) if parts else _pair_table([], [])


def _as_sig_rows(batch: pa.Table, prefix: str, old: bool) -> pa.Table:
    return pa.table({
        "place": pa.array([prefix + p for p in batch.column("place").to_pylist()], pa.string()),
        "doc_id": batch.column("doc_id"), "doc_hash": batch.column("doc_hash"),
        "signature": batch.column("signature"), "old": pa.array([old] * batch.num_rows, pa.bool_()),
    })


def _sig_attach_rows(batch: pa.Table) -> pa.Table:
    """Signature rows as verification sets (place, vshard null, shingles = the signature)."""
    return pa.table({"place": batch.column("place"), "vshard": pa.nulls(batch.num_rows, pa.int64()),
                     "shingles": batch.column("signature").cast(pa.list_(pa.uint32()))})


_MATCH_SCHEMA = pa.schema([("place", pa.string()), ("new", pa.string()), ("similarity", pa.float64()),
                           ("doc_id", pa.string())])


def _best_match(group: pa.Table) -> pa.Table:
    """The verified (new, indexed) pairs of one new document -> its most similar indexed document (ties: the
    greater place), as a row keyed by that indexed document's place."""
    sim, old = max(zip(group.column("similarity").to_pylist(), group.column("b").to_pylist()))
    return pa.table({"place": [old], "new": [group.column("a")[0].as_py()], "similarity": [sim], "doc_id": [None]},
                    schema=_MATCH_SCHEMA)


def _old_id_rows(batch: pa.Table) -> pa.Table:
    n = batch.num_rows
    return pa.table({"place": batch.column("place"), "new": pa.array([None] * n, pa.string()),
                     "similarity": pa.array([None] * n, pa.float64()), "doc_id": batch.column("doc_id")},
                    schema=_MATCH_SCHEMA)


def _index_near_plan_rows(group: pa.Table) -> pa.Table:
    """One indexed document's row (its doc_id) and the new documents matched to it -> their plan rows."""
    ids = [d for d in group.column("doc_id").to_pylist() if d is not None]
    rows = [(n, s) for n, s in zip(group.column("new").to_pylist(), group.column("similarity").to_pylist()) if n is not None]
    if rows and not ids:
        raise ValueError(f"index match {group.column('place')[0].as_py()!r} is not in the index")
    return pa.Table.from_pylist([{"place": n, "kept_doc_id": ids[0], "cluster_size": 2, "similarity": s,
                                  "stage": "index_dedup", "reason": "near_duplicate_of_index"} for n, s in rows],
                                schema=PLAN_SCHEMA)


def index_removals(survivors, info: dict[str, Any], cfg: "DedupConfig", partitions: int, place_keys: PlaceKeys):
    """A dataset of PLAN_SCHEMA rows (stage index_dedup): new documents duplicating an indexed one.

    Exact: equal document hashes (a hash-partitioned groupby of new and indexed rows). Near: LSH buckets of
    new and indexed signatures give (new, indexed) candidates, each verified by its signature estimate of
    the Jaccard (the old texts are not read, so the shingle sets are not available); each new document is
    matched to its most similar indexed one, whose doc_id is joined in by a groupby on the indexed place."""
    import ray
    from ray.data.expressions import col

    from operators.lsh import optimal_bands

    old = ray.data.read_parquet(info["parts"]).map_batches(
        functools.partial(_as_sig_rows, prefix="old:", old=True), batch_format="pyarrow")
    new = survivors.map_batches(functools.partial(_index_rows, num_perm=cfg.num_perm, ngram=cfg.ngram), batch_format="pyarrow") \
        .map_batches(functools.partial(_as_sig_rows, prefix="", old=False), batch_format="pyarrow").materialize()
    plans = []
    remaining = new
    if cfg.documents:
        both = new.union(old).filter(expr=col("doc_hash") != 0)  # an Arrow predicate, not a Python call per row
        exact = both.groupby("doc_hash", num_partitions=partitions).map_groups(_index_exact, batch_format="pyarrow") \
            .map_batches(functools.partial(_exact_plan_rows, stage="index_dedup", reason="exact_duplicate_of_index"),
                         batch_format="pyarrow").materialize()
        plans.append(exact)
        removed = collect_keys(exact, place_keys)
        if len(removed):
            remaining = new.map_batches(functools.partial(_without_keys, removed=_share(removed, local=False), keys=place_keys),
                                        batch_format="pyarrow")
    if cfg.fuzzy:
        bands, rows = optimal_bands(cfg.num_perm, cfg.jaccard_threshold)
        band_rows = remaining.union(old).map_batches(functools.partial(_sig_band_rows, bands=bands, rows=rows),
                                                     batch_format="pyarrow").materialize()
        shards = _shards(band_rows.count(), partitions)  # coarse shards, as in `fuzzy_removals`
        pairs = band_rows.map_batches(functools.partial(_with_shard, columns=("band", "key"), shards=shards),
                                      batch_format="pyarrow") \
            .groupby("shard", num_partitions=partitions).map_groups(
                functools.partial(_shard_cross_pairs, max_bucket=cfg.max_bucket), batch_format="pyarrow").materialize()
        unique = _pairs_once(pairs, partitions)
        sig_rows = remaining.union(old).map_batches(_sig_attach_rows, batch_format="pyarrow")
        verified = _verify_on_ray(unique, sig_rows, band_rows.count() // bands, cfg.jaccard_threshold, partitions,
                                  estimate=True)
    if cfg.fuzzy and verified.count():
        best = verified.groupby("a", num_partitions=partitions).map_groups(_best_match, batch_format="pyarrow")
        ids = old.map_batches(_old_id_rows, batch_format="pyarrow")
        plans.append(best.union(ids).groupby("place", num_partitions=partitions).map_groups(
            _index_near_plan_rows, batch_format="pyarrow").materialize())
    if not plans:
        return ray.data.from_arrow(PLAN_SCHEMA.empty_table())
    return _union(plans)


def _guard_cluster(size: int, cfg: "DedupConfig") -> None:
    if size > cfg.max_cluster_size and not cfg.allow_large_clusters:
        raise ValueError(
            f"a near-duplicate cluster has {size} documents (> max_cluster_size "
            f"{cfg.max_cluster_size}); refusing to drop them. Inspect it, raise the limit or set "
            "allow_large_clusters=true"
        )


_LABEL_SCHEMA = pa.schema([("node", pa.string()), ("nb", pa.string()), ("sim", pa.float64()), ("lq", pa.float64()),
                           ("ld", pa.int64()), ("lid", pa.string()), ("lplace", pa.string()), ("kind", pa.string())])


def _adjacency(batch: pa.Table) -> pa.Table:
    a, b, sim = batch.column("a").to_pylist(), batch.column("b").to_pylist(), batch.column("similarity").to_pylist()
    n = len(a)
    return pa.table({"node": a + b, "nb": b + a, "sim": sim + sim, "lq": [None] * 2 * n, "ld": [None] * 2 * n,
                     "lid": [None] * 2 * n, "lplace": [None] * 2 * n, "kind": ["edge"] * 2 * n}, schema=_LABEL_SCHEMA)


def _key_label_rows(batch: pa.Table, only, keys: PlaceKeys) -> pa.Table:
    """`_doc_keys` rows of the candidate documents (keys in `only`) as label-schema rows of kind "key"."""
    if batch.num_rows:
        batch = batch.filter(pa.array(_in_keys(batch, only, keys), pa.bool_()))
    n = batch.num_rows
    return pa.table({"node": batch.column("place"), "nb": pa.array([None] * n, pa.string()),
                     "sim": pa.array([None] * n, pa.float64()), "lq": batch.column("neg_quality"),
                     "ld": batch.column("date"), "lid": batch.column("doc_id"), "lplace": batch.column("place"),
                     "kind": pa.array(["key"] * n, pa.string())}, schema=_LABEL_SCHEMA)


def _initial_labels(group: pa.Table) -> pa.Table:
    """One node's adjacency rows and its key row -> its own label: its keeper rank (-quality, date, doc_id), its
    place and its best similarity to a neighbour. A candidate document with no verified edge gets no label."""
    kinds = group.column("kind").to_pylist()
    if "edge" not in kinds:
        return _LABEL_SCHEMA.empty_table()
    if "key" not in kinds:
        raise ValueError(f"document {group.column('node')[0].as_py()!r} of a verified pair has no rank row")
    key = group.slice(kinds.index("key"), 1).to_pylist()[0]
    best = max(s for s, k in zip(group.column("sim").to_pylist(), kinds) if k == "edge")
    return pa.table({"node": [key["node"]], "nb": [None], "sim": [best], "lq": [key["lq"]], "ld": [key["ld"]],
                     "lid": [key["lid"]], "lplace": [key["node"]], "kind": ["label"]}, schema=_LABEL_SCHEMA)


def _send_labels(group: pa.Table) -> pa.Table:
    """A node's label row and adjacency rows -> its label sent to itself (with its best similarity) and to every
    neighbour."""
    rows = group.to_pylist()
    label = next(r for r in rows if r["kind"] == "label")
    targets = [label["node"]] + [r["nb"] for r in rows if r["kind"] == "edge"]
    return pa.table({"node": targets, "nb": [None] * len(targets), "sim": [label["sim"]] + [None] * (len(targets) - 1),
                     "lq": [label["lq"]] * len(targets), "ld": [label["ld"]] * len(targets),
                     "lid": [label["lid"]] * len(targets), "lplace": [label["lplace"]] * len(targets),
                     "kind": ["self"] + ["msg"] * (len(targets) - 1)}, schema=_LABEL_SCHEMA)


def _min_label(group: pa.Table) -> pa.Table:
    """Messages to one node -> its new label (the smallest rank seen), flagged when it changed."""
    rows = group.to_pylist()
    own = next(r for r in rows if r["kind"] == "self")
    best = min(rows, key=lambda r: (r["lq"], r["ld"], r["lid"], r["lplace"]))
    changed = best["lplace"] != own["lplace"]
    return pa.table({"node": [own["node"]], "nb": [None], "sim": [own["sim"]], "lq": [best["lq"]], "ld": [best["ld"]],
                     "lid": [best["lid"]], "lplace": [best["lplace"]], "kind": ["changed" if changed else "label"]},
                    schema=_LABEL_SCHEMA)


def _relabel(batch: pa.Table) -> pa.Table:
    return batch.set_column(batch.schema.get_field_index("kind"), "kind", pa.array(["label"] * batch.num_rows, pa.string()))


def _component_plan_rows(group: pa.Table) -> pa.Table:
    """The final labels of one component (all naming its keeper's place) -> a plan row per removed member."""
    size = group.num_rows
    return pa.Table.from_pylist([
        {"place": r["node"], "kept_doc_id": r["lid"], "cluster_size": size, "similarity": r["sim"],
         "stage": "fuzzy_dedup", "reason": "near_duplicate"}
        for r in group.select(["node", "lid", "lplace", "sim"]).to_pylist() if r["node"] != r["lplace"]], schema=PLAN_SCHEMA)


def distributed_components(verified, keys, only, place_keys: PlaceKeys, cfg: "DedupConfig", partitions: int,
                           max_iterations: int = 100):
    """Connected components of the verified graph by min-label propagation on Ray Data -> PLAN_SCHEMA rows.

    Every node starts labelled with its own keeper rank (its `_doc_keys` row, met by a groupby on the node); each
    round, every node sends its label to its neighbours (a groupby on node of adjacency + label rows) and keeps
    the smallest it receives (a second groupby). After as many rounds as the largest component's diameter, every
    node carries its component's keeper; a groupby on the keeper gives the cluster sizes and the removals. No step
    holds more than one node's neighbourhood, and the driver holds nothing per document."""
    from ray.data.expressions import col

    adjacency = verified.map_batches(_adjacency, batch_format="pyarrow").materialize()
    ranks = keys.map_batches(functools.partial(_key_label_rows, only=only, keys=place_keys), batch_format="pyarrow")
    labels = adjacency.union(ranks).groupby("node", num_partitions=partitions).map_groups(
        _initial_labels, batch_format="pyarrow").materialize()
    for _ in range(max_iterations):
        sent = adjacency.union(labels).groupby("node", num_partitions=partitions).map_groups(_send_labels, batch_format="pyarrow")
        labels = sent.groupby("node", num_partitions=partitions).map_groups(_min_label, batch_format="pyarrow").materialize()
        if labels.filter(expr=col("kind") == "changed").count() == 0:
            break
        labels = labels.map_batches(_relabel, batch_format="pyarrow").materialize()
    else:
        raise RuntimeError(f"connected components did not converge in {max_iterations} rounds")
    sizes = labels.groupby("lplace", num_partitions=partitions).count()
    _guard_cluster(max((r["count()"] for r in sizes.iter_rows()), default=0), cfg)
    return labels.groupby("lplace", num_partitions=partitions).map_groups(_component_plan_rows, batch_format="pyarrow")


def source_losses(lost: dict[str, int], totals: dict[str, int]) -> list[tuple[str, int, int]]:
    """(source file, removed, total) per source file that loses documents, most damaged share first."""
    rows = [(src, n, totals.get(src, n)) for src, n in lost.items()]
    return sorted(rows, key=lambda r: (-r[1] / max(r[2], 1), r[0]))


def _source_rows(batch: pa.Table) -> pa.Table:
    return pa.table({"source": pa.array([p.rsplit("#", 1)[0] for p in batch.column("place").to_pylist()], pa.string())})


def check_source_loss(plan, docs, cfg: "DedupConfig", partitions: int) -> None:
    """Refuse to remove most of one source's documents (the failure where a peer deleted 859,091 of 859,092
    documents of one source), unless the user allows it. Counted per source file by groupbys: the driver holds
    one number per source file."""
    if cfg.allow_source_loss:
        return
    lost = {r["source"]: r["count()"] for r in plan.map_batches(_source_rows, batch_format="pyarrow")
            .groupby("source", num_partitions=partitions).count().iter_rows()}
    if not lost:
        return
    counts = docs.select_columns(["source_file"]).groupby("source_file", num_partitions=partitions).count()
    totals = {r["source_file"]: r["count()"] for r in counts.iter_rows()}
    bad = [(src, n, total) for src, n, total in source_losses(lost, totals)
           if total >= cfg.min_source_docs and n / total > cfg.max_source_loss]
    if bad:
        worst = "; ".join(f"{src}: {n:,} of {total:,} ({100 * n / total:.1f} %)" for src, n, total in bad[:5])
        raise ValueError(
            f"dedup would remove more than {100 * cfg.max_source_loss:.0f} % of the documents of {len(bad)} source "
            f"file(s): {worst}. This is what a runaway merge looks like; inspect the clusters (e.g. with a lower "
            "max_cluster_size or --set lines=false), or set allow_source_loss=true if the source really is a copy"
        )


def _fetch(ref):
    """An object-store reference under Ray Data, the value itself in the local path."""
    import ray

    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


def shards_of_sources(src: OutputDir, shards: list[str]) -> dict[str, list[str]]:
    """source_file -> the input shards holding its documents (each shard's distinct source_file values: one
    column read)."""
    shards_of: dict[str, list[str]] = {}
    for shard in shards:
        column = pq.read_table(src.path(DOCS_DIR, f"{shard}.parquet"), columns=["source_file"], filesystem=src.fs).column(0)
        for source in column.unique().to_pylist():
            shards_of.setdefault(source, []).append(shard)
    return shards_of


def _with_shards(batch: pa.Table, shards_of: dict[str, list[str]]) -> pa.Table:
    """Plan rows, each with the shard(s) holding its document's source file (a rewrite reads its shard's only)."""
    take, names = [], []
    for i, place in enumerate(batch.column("place").to_pylist()):
        for shard in shards_of.get(place.rsplit("#", 1)[0], ()):
            take.append(i)
            names.append(shard)
    return batch.take(pa.array(take, pa.int64())).append_column("shard", pa.array(names, pa.string()))


def _write_plan_part(group: pa.Table, out_uri: str) -> pa.Table:
    """One shard's plan rows -> plan/<shard>.parquet (atomic; sorted, so a rerun writes the same bytes)."""
    shard = group.column("shard")[0].as_py()
    out = OutputDir(out_uri)
    table = group.drop_columns(["shard"]).cast(PLAN_SCHEMA).sort_by("place")
    tmp = out.tmp_path(PLAN_DIR, f"{shard}.parquet")
    with out.fs.open_output_stream(tmp) as sink:
        pq.write_table(table, sink, compression="zstd")
    out.commit(tmp, PLAN_DIR, f"{shard}.parquet")
    return pa.table({"shard": [shard], "removals": pa.array([table.num_rows], pa.int64())})


def read_plan_part(out: OutputDir, shard: str) -> dict[str, tuple]:
    """place -> (kept doc_id, cluster size, similarity, stage, reason) for the planned removals of one shard."""
    if not out.exists(PLAN_DIR, f"{shard}.parquet"):
        return {}
    t = pq.read_table(out.path(PLAN_DIR, f"{shard}.parquet"), filesystem=out.fs)
    cols = [t.column(c).to_pylist() for c in PLAN_SCHEMA.names]
    return {place: tuple(rest) for place, *rest in zip(*cols)}


class RewriteShard:
    """One curate shard -> its deduplicated shard + stats + removal rows (+ its index part), atomic writes."""

    def __init__(self, cfg: DedupConfig, dup_lines_ref):
        self.cfg = cfg
        self.src = OutputDir(cfg.input)
        self.out = OutputDir(cfg.output)
        # {place (source_file#record_offset) of each removed document of the shard at hand: (kept doc_id, cluster
        # size, similarity, stage, reason)}, read from the shard's part of the plan
        self.removed: dict[str, tuple] = {}
        # the repeated line hashes: one sorted int64 array, shared zero-copy by the workers of a node
        lines = _fetch(dup_lines_ref) if dup_lines_ref is not None else np.zeros(0, np.int64)
        self.dup_lines = lines if isinstance(lines, SortedHashes) else SortedHashes(lines, sorted_unique=True)

    def __call__(self, unit: dict[str, Any]) -> dict[str, Any]:
        shard = unit["shard"]
        try:
            self.removed = read_plan_part(self.out, shard)
            return self._rewrite(shard)
        except Exception as exc:
            raise RuntimeError(f"dedup failed on shard {shard}: {type(exc).__name__}: {exc}") from exc

    def _rewrite(self, shard: str) -> dict[str, Any]:
        table = pq.read_table(self.src.path(DOCS_DIR, f"{shard}.parquet"), filesystem=self.src.fs)
        stats: Counter = Counter()
        ids = table.column("doc_id").to_pylist()
        urls = table.column("url").to_pylist() if "url" in table.column_names else [None] * len(ids)
        domains = table.column("domain").to_pylist() if "domain" in table.column_names else [None] * len(ids)
        places = [f"{f}#{o}" for f, o in zip(table.column("source_file").to_pylist(), table.column("record_offset").to_pylist())]
        keep = np.ones(len(ids), bool)
        removed_rows = []
        for stage in ("exact_dedup", "fuzzy_dedup", "index_dedup"):
            enabled = {"exact_dedup": self.cfg.documents, "fuzzy_dedup": self.cfg.fuzzy, "index_dedup": bool(self.cfg.index)}
            if not enabled[stage]:
                continue
            stats[f"{stage}/in"] += int(keep.sum())
            for i, (doc_id, place) in enumerate(zip(ids, places)):
                if keep[i] and place in self.removed and self.removed[place][3] == stage:
                    kept_id, size, similarity, _, reason = self.removed[place]
                    keep[i] = False
                    stats[f"{stage}/drop_{reason}"] += 1
                    removed_rows.append({"doc_id": doc_id, "url": urls[i], "domain": domains[i], "stage": stage, "reason": reason,
                                         "kept_doc_id": kept_id, "similarity": similarity, "cluster_size": size})
            stats[f"{stage}/out"] += int(keep.sum())
        table = table.filter(pa.array(keep))
        if self.cfg.write_index:
            # the kept documents' hashes and signatures, of their text *before* line dedup, so that a re-crawled
            # copy of a page still matches
            rows = _index_rows(table.select(["doc_id", "source_file", "record_offset", "text"]), self.cfg.num_perm, self.cfg.ngram) \
                if table.num_rows else INDEX_SCHEMA.empty_table()
            self.out.makedirs(INDEX_DIR)
            tmp = self.out.tmp_path(INDEX_DIR, f"{shard}.parquet")
            with self.out.fs.open_output_stream(tmp) as sink:
                pq.write_table(rows.cast(INDEX_SCHEMA).sort_by("place"), sink, compression="zstd")
            self.out.commit(tmp, INDEX_DIR, f"{shard}.parquet")
        if self.cfg.lines and self.dup_lines:
            texts = table.column("text").to_pylist()
            line_urls = [u for u, k in zip(urls, keep) if k]
            line_domains = [d for d, k in zip(domains, keep) if k]
            new_texts, keep = [], np.ones(len(texts), bool)
            stats["line_dedup/in"] += len(texts)
            for i, text in enumerate(texts):
                new, n_removed = remove_lines(text, self.dup_lines)
                stats["line_dedup/lines_removed"] += n_removed
                if not new.strip():
                    keep[i] = False
                    stats["line_dedup/drop_empty_after_line_dedup"] += 1
                    removed_rows.append({"doc_id": table.column("doc_id")[i].as_py(), "url": line_urls[i],
                                         "domain": line_domains[i], "stage": "line_dedup",
                                         "reason": "empty_after_line_dedup", "kept_doc_id": None,
                                         "similarity": None, "cluster_size": None})
                new_texts.append(new)
            stats["line_dedup/out"] += int(keep.sum())
            idx = table.schema.get_field_index("text")
            table = table.set_column(idx, table.schema.field("text"), pa.array(new_texts, table.schema.field("text").type))
            if "text_chars" in table.column_names:
                j = table.schema.get_field_index("text_chars")
                table = table.set_column(j, "text_chars", pa.array([len(t) for t in new_texts], pa.int64()))
            table = table.filter(pa.array(keep))
        elif self.cfg.lines:
            stats["line_dedup/in"] += table.num_rows
            stats["line_dedup/out"] += table.num_rows
        for name, sub, rows_table in (
            (DOCS_DIR, f"{shard}.parquet", table),
            (REMOVED_DIR, f"{shard}.parquet", pa.Table.from_pylist(removed_rows, schema=REMOVED_SCHEMA)),
        ):
            tmp = self.out.tmp_path(name, sub)
            with self.out.fs.open_output_stream(tmp) as sink:
                pq.write_table(rows_table, sink, compression="zstd")
            self.out.commit(tmp, name, sub)
        self.out.write_json(dict(stats), STATS_DIR, f"{shard}.json")
        return {"shard": shard}


REMOVED_SCHEMA = pa.schema([
    pa.field("doc_id", pa.string()),
    pa.field("url", pa.string()),
    pa.field("domain", pa.string()),
    pa.field("stage", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("kept_doc_id", pa.string()),
    pa.field("similarity", pa.float64()),
    pa.field("cluster_size", pa.int32()),
])


def _plan(cfg: DedupConfig, src: OutputDir, out: OutputDir, paths: list[str], index_info: dict[str, Any] | None,
          local: bool, place_keys: PlaceKeys, shards_of: dict[str, list[str]]) -> None:
    """Work out every removal and the repeated lines, and write them to plan/: a Parquet part per input shard
    (PLAN_SCHEMA rows: place, kept doc_id, cluster size, similarity, stage, reason), repeated_lines.npy,
    plan.json (counts) and _SUCCESS last. Removals stay datasets from the shuffles to the parts; the driver holds
    the removed documents' keys (8 bytes each, to filter the survivors of each stage) and the repeated lines."""
    out.remove_tree(PLAN_DIR)
    out.makedirs(PLAN_DIR)
    schema_names = pq.read_schema(paths[0], filesystem=src.fs).names
    columns = [c for c in ("doc_id", "source_file", "record_offset", "text", "warc_date", "quality_score") if c in schema_names]
    if local:
        docs = LocalDataset.read_parquet(paths, columns, filesystem=src.fs)
        partitions = 1
    else:
        import ray

        init_ray(cfg.num_cpus)
        docs = ray.data.read_parquet(paths, filesystem=src.fs).select_columns(columns)
        partitions = cfg.shuffle_partitions or 2 * int(ray.cluster_resources().get("CPU", 1))
    removed = np.zeros(0, np.int64)

    def survivors():
        if not len(removed):
            return docs
        return docs.map_batches(functools.partial(_without_keys, removed=_share(removed, local), keys=place_keys),
                                batch_format="pyarrow")

    plans = []
    keys = docs.map_batches(functools.partial(_doc_keys, hashed=cfg.documents), batch_format="pyarrow")
    if cfg.documents and cfg.fuzzy:
        keys = keys.materialize()  # read twice: hashed once
    if cfg.documents:
        exact = keys.groupby("doc_hash", num_partitions=partitions).map_groups(_pick_keeper, batch_format="pyarrow") \
            .map_batches(functools.partial(_exact_plan_rows, stage="exact_dedup", reason="duplicate_document"),
                         batch_format="pyarrow").materialize()
        plans.append(exact)
        removed = collect_keys(exact, place_keys)
    if cfg.fuzzy:
        # exact duplicates already removed take no part, so a cluster's keeper is always a surviving document
        fuzzy = fuzzy_removals(survivors(), keys, cfg, partitions, place_keys, local).materialize()
        plans.append(fuzzy)
        removed = np.union1d(removed, collect_keys(fuzzy, place_keys))
    if len(removed):
        check_source_loss(_union(plans), docs, cfg, partitions)
    if cfg.index:
        near_index = index_removals(survivors(), index_info, cfg, partitions, place_keys).materialize()
        plans.append(near_index)
        removed = np.union1d(removed, collect_keys(near_index, place_keys))
    dup = np.zeros(0, np.int64)
    if cfg.lines:
        # lines are counted over the documents that survive document dedup: counting the removed copies too
        # would make every line of a kept page "repeated" and empty it, losing the whole duplicate cluster
        counts = survivors().map_batches(_line_rows, batch_format="pyarrow").groupby("line_hash", num_partitions=partitions).count()
        batches = [b["line_hash"] for b in counts.map_batches(_repeated, batch_format="pyarrow").iter_batches(batch_format="numpy")]
        dup = np.unique(np.concatenate(batches)).astype(np.int64) if batches else dup
    parts: dict[str, int] = {}
    if len(removed):
        plan = _union(plans)
        written = plan.map_batches(functools.partial(_with_shards, shards_of=shards_of), batch_format="pyarrow") \
            .groupby("shard", num_partitions=partitions).map_groups(
                functools.partial(_write_plan_part, out_uri=out.uri), batch_format="pyarrow")
        parts = {r["shard"]: r["removals"] for r in written.iter_rows()}
    buf = io.BytesIO()
    np.save(buf, dup)
    out.write_bytes(buf.getvalue(), PLAN_DIR, "repeated_lines.npy")
    out.write_json({"removals": len(removed), "parts": parts, "repeated_lines": len(dup)}, PLAN_DIR, "plan.json")
    out.write_bytes(b"", PLAN_DIR, "_SUCCESS")


def _read_repeated_lines(out: OutputDir) -> np.ndarray:
    with out.fs.open_input_stream(out.path(PLAN_DIR, "repeated_lines.npy")) as f:
        return np.load(io.BytesIO(f.read()))


@contextlib.contextmanager
def _shuffle_strategy(name: str):
    """Ray Data's shuffle strategy for the datasets created inside (they copy the driver's DataContext when made);
    the previous one is restored after. "" leaves it alone."""
    if not name:
        yield
        return
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    ctx = DataContext.get_current()
    before = ctx.shuffle_strategy
    ctx.shuffle_strategy = ShuffleStrategy(name)
    try:
        yield
    finally:
        ctx.shuffle_strategy = before


def run(cfg: DedupConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    if not cfg.input or not cfg.output:
        raise ValueError("dedup needs --input (a curate output) and --output")
    src = OutputDir(cfg.input)
    if not src.exists(DOCS_DIR, "_SUCCESS"):
        raise ValueError(f"{cfg.input!r} is not a finished curate run (no documents/_SUCCESS)")
    shards = [name[: -len(".parquet")] for name in src.list(DOCS_DIR, suffix=".parquet")]
    out = OutputDir(cfg.output)
    out.check_writable()
    out.check_same_run(cfg.output_hash(), src, "dedup")
    for d in (DOCS_DIR, STATS_DIR, REMOVED_DIR):
        out.makedirs(d)
    index_info = load_index(cfg) if cfg.index else None  # a bad index is an error before any work
    meta = run_metadata(asdict(cfg), cfg.output_hash())
    meta["input_run"], meta["input_location"] = src.uri, src.location
    out.write_json({**meta, "status": "running"}, "run.json")
    pending = [s for s in shards if not out.exists(STATS_DIR, f"{s}.json")]

    local = False
    dup_lines_ref = None
    planned_now = False
    if pending:
        import ray

        paths = [src.path(DOCS_DIR, f"{s}.parquet") for s in shards]  # every shard: duplicates span shards
        n_docs = sum(pq.ParquetFile(p, filesystem=src.fs).metadata.num_rows for p in paths)
        local = _local_ok(n_docs, cfg)
        if not out.exists(PLAN_DIR, "_SUCCESS"):  # a rerun after a crash in the rewrite reuses the finished plan
            shards_of = shards_of_sources(src, shards)
            place_keys = PlaceKeys(list(shards_of))
            # the plan writes only plan/, each attempt afresh, so after a system failure (a node lost in the middle
            # of a shuffle) it is simply made again; a bug in our code fails at once
            with _shuffle_strategy("" if local else cfg.shuffle_strategy):
                retry_system_failures(
                    lambda: _plan(cfg, src, out, paths, index_info, local, place_keys, shards_of),
                    attempts=1 if local else cfg.system_retries + 1, what="dedup plan")
            planned_now = True
        if cfg.lines:
            dup = SortedHashes(_read_repeated_lines(out), sorted_unique=True)
            dup_lines_ref = dup if local else ray.put(dup.hashes)
    if pending and local:
        rewrite = RewriteShard(cfg, dup_lines_ref)
        for s in pending:
            rewrite({"shard": s})
    elif pending:
        units = ray.data.from_items([{"shard": s} for s in pending], override_num_blocks=len(pending))
        workers = max(1, min(len(pending), int(ray.available_resources().get("CPU", 1))))
        done = units.map(RewriteShard, fn_constructor_args=(cfg, dup_lines_ref),
                         compute=ray.data.ActorPoolStrategy(min_size=workers, max_size=workers), num_cpus=1)
        for _ in done.iter_rows():
            pass
    total = statslib.merge(out.read_json(STATS_DIR, f"{s}.json") for s in shards)
    errors = statslib.balance_errors(total)
    if errors:
        raise AssertionError(f"stats do not balance: {errors}")
    if out.exists(PLAN_DIR, "plan.json"):
        planned = out.read_json(PLAN_DIR, "plan.json")["removals"]
        done = sum(v for k, v in total.items() if k.split("/")[0] in ("exact_dedup", "fuzzy_dedup", "index_dedup")
                   and "/drop_" in k)
        if done != planned:  # every planned removal reached the shard that holds its document
            raise AssertionError(f"{planned} documents were planned for removal but {done} were removed")
    if cfg.write_index and not out.exists(INDEX_DIR, "_SUCCESS"):
        write_index(cfg, out, shards, index_info)
    out.remove_tree(PLAN_DIR)  # every shard is rewritten: the plan's evidence is in dedup_removed/
    summary = {"output": out.uri, "shards": len(shards), "shards_processed_now": len(pending),
               "planned_now": planned_now, "wall_seconds": round(time.perf_counter() - t0, 3),
               "stats": dict(sorted(total.items()))}
    out.write_json(summary, "stats.json")
    out.write_bytes(b"", DOCS_DIR, "_SUCCESS")
    out.write_json({**meta, "status": "finished"}, "run.json")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    s = summary["stats"]
    lines = [f"sift dedup: {summary['shards']} shards ({summary['shards_processed_now']} processed now)"]
    for stage, n_in, n_out, drops in statslib.funnel(s, STAGE_ORDER):
        lines.append(f"  {stage:<12} in {n_in:>8,}  out {n_out:>8,}")
        for reason, n in sorted(drops.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {'':<12}   - {reason:<28} {n:>8,}")
    if "line_dedup/lines_removed" in s:
        lines.append(f"  duplicated lines removed: {s['line_dedup/lines_removed']:,}")
    lines.append(f"  documents: {summary['output']}/{DOCS_DIR}   removed (with the kept duplicate): {summary['output']}/{REMOVED_DIR}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m pipelines.dedup") -> int:
    return stage_main(argv, prog, "Exact, near-duplicate and line deduplication of a curate run.", DedupConfig, run,
                      format_summary, "a finished sift curate output folder")


def dedup_report(dedup_output: str, top: int = 5, sample_chars: int = 160, per_cluster: int = 5) -> str:
    """Text report of a finished dedup run: removals by stage and reason, the cluster-size
    histogram, and the largest clusters with the start of the kept text and of up to `per_cluster` removed ones."""
    import pyarrow.dataset as pads

    out = OutputDir(dedup_output)
    if not out.exists("run.json"):
        raise ValueError(f"{dedup_output!r} is not a sift dedup output (no run.json)")
    meta = out.read_json("run.json")
    # where the input was (absolute since input_location was recorded; older runs: as given, from their cwd)
    source = meta.get("input_location") or meta["config"]["input"]
    removed = pads.dataset(out.path(REMOVED_DIR), format="parquet", filesystem=out.fs).to_table().to_pylist() if out.list(REMOVED_DIR, suffix=".parquet") else []
    lines = [f"sift dedup report: {dedup_output} (from {source}); {len(removed)} documents removed"]
    by_reason = Counter(f"{r['stage']}/{r['reason']}" for r in removed)
    for key, n in by_reason.most_common():
        lines.append(f"  {key:<40} {n:>8,}")
    clusters: dict[str, list[dict]] = {}
    for r in removed:
        if r["kept_doc_id"]:
            clusters.setdefault(r["kept_doc_id"], []).append(r)
    sizes = Counter(len(members) + 1 for members in clusters.values())
    if sizes:
        lines.append("  cluster sizes (documents per cluster incl. the kept one):")
        for size, n in sorted(sizes.items()):
            lines.append(f"    {size:>6} : {n:>6,} clusters  {'#' * min(60, n)}")
    if clusters:
        texts = {}
        wanted = set(clusters) | {m["doc_id"] for members in clusters.values() for m in members}
        src = OutputDir(source)
        if src.exists(DOCS_DIR):
            docs = pads.dataset(src.path(DOCS_DIR), format="parquet", filesystem=src.fs).to_table(
                columns=["doc_id", "url", "text"])
            for doc_id, url, text in zip(*(docs.column(c).to_pylist() for c in ("doc_id", "url", "text"))):
                if doc_id in wanted:
                    texts[doc_id] = (url, " ".join(text.split())[:sample_chars])
        else:
            lines.append(f"  (the input run {source} is not there any more: no texts)")
        lines.append(f"  largest clusters (top {top}):")
        for kept, members in sorted(clusters.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]:
            url, text = texts.get(kept, ("?", ""))
            lines.append(f"    kept {url}  ({len(members) + 1} documents)")
            lines.append(f"      kept:    {text}")
            shown = sorted(members, key=lambda m: (m["doc_id"] == kept, m["url"] or "", m["doc_id"]))[:per_cluster]
            for m in shown:
                m_url, m_text = texts.get(m["doc_id"], (m["url"] or "?", ""))
                sim = "" if m["similarity"] is None else f", similarity {m['similarity']:.3f}"
                lines.append(f"      removed: {m_url} ({m['stage']}/{m['reason']}{sim})")
                if m["doc_id"] == kept:  # the input holds the kept record twice (same WARC-Record-ID, same text)
                    lines.append("               another copy of the kept record itself (same record id)")
                else:
                    lines.append(f"               {m_text}")
            if len(members) > len(shown):
                lines.append(f"      ... and {len(members) - len(shown)} more removed (dedup_removed/)")
    return "\n".join(lines)


def report_main(argv: list[str] | None = None, prog: str = "sift dedup-report") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Cluster sizes and the largest duplicate clusters of a dedup run.")
    p.add_argument("dedup_output", help="a sift dedup output folder")
    p.add_argument("--top", type=int, default=5)
    args = p.parse_args(argv)
    try:
        print(dedup_report(args.dedup_output, args.top))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def exact_line_dedup(input_paths: list[str | os.PathLike], output_dir: str | os.PathLike) -> dict[str, int]:
    """Write each input file to `output_dir` (same name) without the lines that occur more than once
    across all the inputs (two passes: count line hashes, then rewrite). Returns counters."""
    from collections import Counter as _Counter

    from operators.exact import line_hash

    counts: _Counter = _Counter()
    for path in input_paths:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            counts.update(line_hash(line) for line in f if line.strip())
    duplicated = {h for h, n in counts.items() if n > 1}
    os.makedirs(output_dir, exist_ok=True)
    stats = {"files": 0, "lines_removed": 0}
    for path in input_paths:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        new, removed = remove_lines(text, duplicated)
        target = os.path.join(output_dir, os.path.basename(path))
        tmp = f"{target}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(new)
        os.replace(tmp, target)
        stats["files"] += 1
        stats["lines_removed"] += removed
    return stats


def minhash_dedup(
    input_paths: list[str | os.PathLike],
    num_hashes: int,
    num_bands: int,
    ngrams: int,
    jaccard_threshold: float,
    output_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Fuzzy dedup of plain text files (one document each): MinHash + LSH candidates, every
    candidate pair verified by its true shingle Jaccard >= `jaccard_threshold`, clusters by
    union-find; the first file (by path) of each cluster is written to `output_dir`.

    Returns counters and the clusters (lists of paths) that had more than one member.
    """
    from operators.lsh import UnionFind, band_keys, candidate_pairs, jaccard
    from operators.minhash import MinHashConfig, normalize_text, shingles, signatures

    if num_bands < 1 or num_hashes % num_bands:
        raise ValueError(f"num_hashes ({num_hashes}) must be a multiple of num_bands ({num_bands})")
    paths = sorted(str(p) for p in input_paths)
    texts = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    cfg = MinHashConfig(num_perm=num_hashes, ngram=ngrams)
    sigs, has = signatures(texts, cfg)
    rows = num_hashes // num_bands
    keys = [band_keys(sig, num_bands, rows) if ok else [] for sig, ok in zip(sigs, has)]
    candidates = sorted(candidate_pairs(keys))
    shingle_sets: dict[int, set] = {}

    def shingle_set(i: int) -> set:
        if i not in shingle_sets:
            shingle_sets[i] = set(shingles(normalize_text(texts[i]), ngrams))
        return shingle_sets[i]

    uf = UnionFind(len(paths))
    verified = 0
    for i, j in candidates:
        if jaccard(shingle_set(i), shingle_set(j)) >= jaccard_threshold:
            uf.union(i, j)
            verified += 1
    clusters = uf.components()
    os.makedirs(output_dir, exist_ok=True)
    for members in clusters:
        keep = paths[members[0]]
        target = os.path.join(output_dir, os.path.basename(keep))
        tmp = f"{target}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(texts[members[0]])
        os.replace(tmp, target)
    duplicates = [[paths[m] for m in c] for c in clusters if len(c) > 1]
    return {
        "files": len(paths),
        "kept": len(clusters),
        "removed": len(paths) - len(clusters),
        "candidate_pairs": len(candidates),
        "verified_pairs": verified,
        "clusters": duplicates,
    }


if __name__ == "__main__":
    sys.exit(main())

