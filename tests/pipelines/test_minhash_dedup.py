"""minhash_dedup on real licence files: near duplicates clustered, verified, nothing else merged."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.lsh import UnionFind, band_keys, candidate_pairs, expected_candidate_probability, jaccard, optimal_bands
from operators.minhash import normalize_text, shingles, signatures
from pipelines.dedup import minhash_dedup
from tests.conftest import FIXTURES

LICENSES = sorted((FIXTURES / "dedup").glob("*.txt"))
ADDRESS = FIXTURES / "text" / "cs336-address.txt"


def _brute_force_clusters(paths, threshold, n=5):
    sets = [set(shingles(normalize_text(p.read_text()), n)) for p in paths]
    uf = UnionFind(len(paths))
    for i, j in itertools.combinations(range(len(paths)), 2):
        if jaccard(sets[i], sets[j]) >= threshold:
            uf.union(i, j)
    return sorted(sorted(str(paths[m]) for m in c) for c in uf.components() if len(c) > 1)


def test_licence_variants_cluster_exactly_as_true_jaccard_says(tmp_path):
    """The 11 MIT texts (differing in copyright lines) and the 2 Apache-2.0 copies form the same
    clusters as an exhaustive all-pairs Jaccard >= 0.8; the BSD licence and the Gettysburg Address
    stay alone."""
    inputs = LICENSES + [ADDRESS]
    result = minhash_dedup(inputs, num_hashes=128, num_bands=16, ngrams=5, jaccard_threshold=0.8, output_dir=tmp_path)
    assert sorted(sorted(c) for c in result["clusters"]) == _brute_force_clusters(inputs, 0.8)
    mit = sorted(str(p) for p in LICENSES if p.name.startswith("mit--"))
    assert mit in result["clusters"]
    assert result["kept"] == len(result["clusters"]) + sum(1 for p in inputs if not any(str(p) in c for c in result["clusters"]))
    written = sorted(p.name for p in tmp_path.iterdir())
    assert "cs336-address.txt" in written and "bsd3--pytorch-examples.txt" in written
    assert len(written) == result["kept"]


def test_verification_rejects_bucket_collisions(tmp_path):
    """At a threshold above every MIT pair's true Jaccard, LSH candidates are rejected by the check."""
    mit = [p for p in LICENSES if p.name.startswith("mit--")]
    result = minhash_dedup(mit, num_hashes=128, num_bands=32, ngrams=5, jaccard_threshold=0.999, output_dir=tmp_path)
    assert result["clusters"] == _brute_force_clusters(mit, 0.999)
    assert result["verified_pairs"] < result["candidate_pairs"]


def test_bad_band_config():
    with pytest.raises(ValueError, match="multiple of num_bands"):
        minhash_dedup([ADDRESS], 128, 15, 5, 0.8, "/tmp/unused")


def test_banding_math():
    bands, rows = optimal_bands(128, 0.8)
    assert bands * rows <= 128
    assert expected_candidate_probability(0.9, bands, rows) > 0.99 and expected_candidate_probability(0.5, bands, rows) < 0.05
    sigs, _ = signatures([p.read_text() for p in LICENSES[:3]])
    keys = [band_keys(s, bands, rows) for s in sigs]
    assert all(len(k) == bands for k in keys)
    assert candidate_pairs([[1, 2], [3, 2], [5, 6]]) == {(0, 1)}  # band 1 key 2 shared
    assert candidate_pairs([[1], [1], []]) == {(0, 1)}
    assert jaccard(set(), set()) == 0.0


def _bucket_pairs(group, max_bucket: int):
    """Reference: the candidate pairs of one LSH bucket (all pairs, or a star from the first member if huge) with
    the cell the pipeline gives them, written plainly (one group = one bucket)."""
    import pyarrow as pa

    from pipelines.dedup import STAR_CHUNK, _cell

    members = sorted(set(group.column("place").to_pylist()))
    band, key = group.column("band")[0].as_py(), group.column("key")[0].as_py()
    if len(members) <= max_bucket:
        pairs = [(members[i], members[j]) for i in range(len(members)) for j in range(i + 1, len(members))]
        cells = [_cell(band, key, 0)] * len(pairs)
    else:
        pairs = [(members[0], m) for m in members[1:]]
        cells = [_cell(band, key, 1 + i // STAR_CHUNK) for i in range(len(pairs))]
    return pa.table({"a": pa.array([p[0] for p in pairs], pa.string()), "b": pa.array([p[1] for p in pairs], pa.string()),
                     "cell": pa.array(cells, pa.int64())})


def test_pair_verification_steps_give_the_exact_shingle_jaccard():
    """The Ray Data verification steps (pairs routed to verification shards, each document's shingle set copied
    once into each shard it has a pair in, each shard verified), run on the real licence texts over three shards:
    each candidate pair gets the Jaccard of its two documents' 5-shingle hash sets, computed directly."""
    import numpy as np
    import pyarrow as pa

    from operators.minhash import normalize_bytes, shingle_hashes
    from pipelines.dedup import _route_rows, _shingle_rows, _to_shards, _verify_on_ray
    from pipelines.localdata import LocalDataset

    texts = [p.read_text(encoding="utf-8") for p in LICENSES]
    docs = pa.table({"source_file": [p.name for p in LICENSES], "record_offset": pa.array([0] * len(texts), pa.int64()),
                     "text": texts})
    places = [f"{p.name}#0" for p in LICENSES]
    pairs = list(itertools.combinations(sorted(places), 2))
    cells = [(7 * i) % 5 - 2 for i in range(len(pairs))]  # any int64 names a cell
    unique = pa.table({"a": [a for a, _ in pairs], "b": [b for _, b in pairs], "cell": pa.array(cells, pa.int64())})
    sets_table = _shingle_rows(docs, 5)
    verified = _verify_on_ray(LocalDataset(unique), LocalDataset(sets_table), sets_table.num_rows, 0.0, 3).table
    got = {(a, b): s for a, b, s in zip(*(verified.column(c).to_pylist() for c in ("a", "b", "similarity")))}
    sets = {pl: set(np.unique(shingle_hashes(normalize_bytes(t), 5)).tolist()) for pl, t in zip(places, texts)}
    want = {(a, b): jaccard(sets[a], sets[b]) for a, b in pairs}
    assert got.keys() == want.keys() and len(want) == len(LICENSES) * (len(LICENSES) - 1) // 2
    assert all(got[k] == pytest.approx(want[k], abs=1e-12) for k in want)
    assert sum(v >= 0.8 for v in want.values()) >= 10  # the MIT variants: the premise of the check
    # each document's set is copied once into each of its shards, not once per pair (len(LICENSES) - 1 times)
    vshards = [c % 3 for c in cells]
    routes = _route_rows(pa.table({"a": [a for a, _ in pairs], "b": [b for _, b in pairs], "vshard": vshards}))
    routed = _to_shards(pa.concat_tables([routes, sets_table]))
    shards_of = {p: {v for (a, b), v in zip(pairs, vshards) if p in (a, b)} for p in places}
    assert sorted(zip(routed.column("place").to_pylist(), routed.column("vshard").to_pylist())) == \
        sorted((p, v) for p, vs in shards_of.items() for v in vs)
    assert routed.num_rows <= 3 * len(places) < len(pairs) * 2
    # routes made by separate blocks of pairs (each removes only its own repeats) still copy a set once per shard
    half = len(pairs) // 2
    blocks = [_route_rows(pa.table({"a": [a for a, _ in part], "b": [b for _, b in part], "vshard": vs}))
              for part, vs in ((pairs[:half], vshards[:half]), (pairs[half:], vshards[half:]))]
    again = _to_shards(pa.concat_tables([*blocks, sets_table]))
    assert sorted(zip(again.column("place").to_pylist(), again.column("vshard").to_pylist())) == \
        sorted(zip(routed.column("place").to_pylist(), routed.column("vshard").to_pylist()))
    # a pair whose document has no shingle row is dropped, not scored
    lost = pa.table({"a": [places[0]], "b": ["missing#0"], "cell": pa.array([5], pa.int64())})
    assert _verify_on_ray(LocalDataset(lost), LocalDataset(sets_table), sets_table.num_rows, 0.0, 3).count() == 0


@pytest.mark.parametrize("max_bucket,shards", [(500, 1), (500, 3), (3, 3)])
def test_sharded_candidate_pairs_equal_the_per_bucket_pairs(max_bucket, shards):
    """The Ray Data path's candidate pairs (band rows in coarse shards of whole buckets -> each shard's pairs ->
    pairs in coarse shards -> each pair once) are the per-bucket pairs, each with the smallest cell of its
    buckets, on the licence texts three times over (copies share every bucket); verifying them shard by shard
    scores every pair as verifying them all from one table does. Copies of a page meet in one cell. With a small
    `max_bucket` the large buckets are stars from their first member, one cell per `STAR_CHUNK` members."""
    import pyarrow as pa

    import pipelines.dedup as dd
    from pipelines.localdata import LocalDataset

    texts = [p.read_text(encoding="utf-8") for p in LICENSES] * 3
    docs = pa.table({"source_file": [f"file-{i % 4}.warc.gz" for i in range(len(texts))],
                     "record_offset": pa.array(range(len(texts)), pa.int64()), "text": texts})
    band_rows = LocalDataset(dd._band_rows(docs, num_perm=112, ngram=5, bands=14, rows=8))
    reference = band_rows.groupby(["band", "key"]).map_groups(lambda g: _bucket_pairs(g, max_bucket)).table
    want: dict[tuple[str, str], int] = {}
    for a, b, cell in zip(*(reference.column(c).to_pylist() for c in ("a", "b", "cell"))):
        want[(a, b)] = min(cell, want.get((a, b), cell))
    unique = band_rows.map_batches(lambda t: dd._with_shard(t, ("band", "key"), shards)).groupby("shard") \
        .map_groups(lambda g: dd._shard_pairs(g, max_bucket)) \
        .map_batches(lambda t: dd._with_shard(t, ("a", "b"), shards)).groupby("shard").map_groups(dd._fewest_cells)
    got = list(zip(*(unique.table.column(c).to_pylist() for c in ("a", "b", "cell"))))
    assert len(got) == len(want) and {(a, b): c for a, b, c in got} == want and len(want) > 3 * len(LICENSES)
    assert all(a < b for a, b, _ in got)
    sets_table = dd._shingle_rows(docs, 5)
    on_ray = dd._verify_on_ray(unique, LocalDataset(sets_table), sets_table.num_rows, 0.0, shards).table
    whole = dd._verify_in_process(unique.table.select(["a", "b"]), sets_table, 0.0)
    assert sorted(zip(*(on_ray.column(c).to_pylist() for c in ("a", "b", "similarity")))) == \
        sorted(zip(*(whole.column(c).to_pylist() for c in ("a", "b", "similarity"))))
    if max_bucket == 500:  # (with stars, copies can pair in different buckets)
        copies: dict[str, set] = {}
        for a, b, cell in got:
            if texts[int(a.split("#")[1])] == texts[int(b.split("#")[1])]:
                copies.setdefault(texts[int(a.split("#")[1])], set()).add(cell)
        assert len(copies) == len(set(texts)) and all(len(c) == 1 for c in copies.values())
    # a star larger than STAR_CHUNK members spreads over cells of at most STAR_CHUNK pairs
    big = pa.table({"band": pa.array([2] * 2500, pa.int32()), "key": pa.array([9] * 2500, pa.int64()),
                    "place": [f"f#{i:05d}" for i in range(2500)]})
    star = dd._shard_pairs(big, max_bucket)
    assert star.num_rows == 2499 and set(star.column("a").to_pylist()) == {"f#00000"}
    sizes = sorted(star.group_by("cell").aggregate([([], "count_all")]).column("count_all").to_pylist())
    assert sizes == [451, dd.STAR_CHUNK, dd.STAR_CHUNK]


def test_in_process_verification_scores_every_pair_like_the_direct_jaccard():
    """`_verify_in_process` compares each group of equal shingle sets once: on the licence texts, each present three
    times (copies score 1.0 against each other, the same as their original against anything), plus a whitespace
    variant, an empty text and a pair whose side has no shingle row, every pair gets exactly the score of the
    direct computation and the threshold keeps the same pairs."""
    import numpy as np
    import pyarrow as pa

    from pipelines.dedup import _shingle_rows, _verify_in_process

    def _jaccard(x, y):  # of two sorted unique hash arrays, by the definition (empty: 0)
        inter = len(np.intersect1d(x, y))
        return inter / (len(x) + len(y) - inter) if len(x) and len(y) else 0.0

    texts = [p.read_text(encoding="utf-8") for p in LICENSES]
    texts = texts + texts + texts + [texts[0].replace(" ", "  "), ""]
    n = len(texts)
    docs = pa.table({"source_file": [f"f{i % 3}" for i in range(n)], "record_offset": pa.array(range(n), pa.int64()),
                     "text": texts})
    shingle_table = _shingle_rows(docs, 5)
    places = shingle_table.column("place").to_pylist()
    pairs = [(a, b) for a, b in itertools.combinations(places, 2)] + [(places[0], "missing#0")]
    column = shingle_table.column("shingles").combine_chunks()
    sets = {p: column[i].values.to_numpy(zero_copy_only=False) for i, p in enumerate(places)}
    want = {(a, b): _jaccard(sets[a], sets[b]) for a, b in pairs if b in sets}
    for threshold in (0.0, 0.7, 1.0):
        got = _verify_in_process(pa.table({"a": [a for a, _ in pairs], "b": [b for _, b in pairs]}), shingle_table,
                                 threshold)
        scored = dict(zip(zip(got.column("a").to_pylist(), got.column("b").to_pylist()), got.column("similarity").to_pylist()))
        assert scored == {k: v for k, v in want.items() if v >= threshold}
    assert sum(v == 1.0 for v in want.values()) >= 3 * len(LICENSES) + 1  # the copies (and the whitespace variant)
    assert np.isclose(min(want.values()), 0.0)  # the empty text


@pytest.mark.parametrize("max_bucket", [500, 3])
def test_in_process_candidate_pairs_equal_the_bucket_groupby(max_bucket):
    """`_unique_pairs` (integer codes, each pair once) gives the pair set of `_bucket_pairs` per (band, key) bucket
    then a groupby on (a, b), on the licence texts three times over (copies share every bucket) plus the Address;
    with a small `max_bucket`, the large buckets' star pairs too."""
    import pyarrow as pa

    from pipelines.dedup import _band_rows, _unique_pairs
    from pipelines.localdata import LocalDataset

    texts = [p.read_text(encoding="utf-8") for p in LICENSES] * 3 + [ADDRESS.read_text(encoding="utf-8")]
    docs = pa.table({"source_file": [f"file-{i % 4}.warc.gz" for i in range(len(texts))],
                     "record_offset": pa.array(range(len(texts)), pa.int64()), "text": texts})
    band_rows = _band_rows(docs, num_perm=112, ngram=5, bands=14, rows=8)
    grouped = LocalDataset(band_rows).groupby(["band", "key"]).map_groups(
        lambda g: _bucket_pairs(g, max_bucket=max_bucket)).groupby(["a", "b"]).count().table
    want = set(zip(grouped.column("a").to_pylist(), grouped.column("b").to_pylist()))
    got_table = _unique_pairs(band_rows, max_bucket)
    got = list(zip(got_table.column("a").to_pylist(), got_table.column("b").to_pylist()))
    assert len(got) == len(set(got)) and set(got) == want
    assert all(a < b for a, b in got) and len(want) > 3 * len(LICENSES)  # the copies, at least
    assert _unique_pairs(band_rows.slice(0, 0), max_bucket).num_rows == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), max_size=30), min_size=1, max_size=8), st.data())
def test_set_similarities_equal_their_definitions(raw_sets, data):
    """The compiled pass over flat set arrays gives, bit for bit, the Jaccard of sorted unique sets (0 with an empty
    side) and the agreement of equal-length signatures (0 otherwise), and the numpy fallback gives the same."""
    import numpy as np

    import operators.lsh as lsh

    n = len(raw_sets)
    pairs = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=20))
    rows_a = np.array([a for a, _ in pairs], np.int64)
    rows_b = np.array([b for _, b in pairs], np.int64)
    for estimate in (False, True):
        arrays = [np.array(s, np.uint32) if estimate else np.unique(np.array(s, np.uint32)) for s in raw_sets]
        offsets = np.r_[0, np.cumsum([len(x) for x in arrays])].astype(np.int64)
        values = np.concatenate(arrays) if arrays else np.zeros(0, np.uint32)
        want = []
        for a, b in pairs:
            x, y = arrays[a], arrays[b]
            if estimate:
                want.append(float(np.mean(x == y)) if len(x) and len(x) == len(y) else 0.0)
            else:
                inter = len(set(x.tolist()) & set(y.tolist()))
                want.append(inter / (len(x) + len(y) - inter) if len(x) and len(y) else 0.0)
        got = lsh.set_similarities(values, offsets, rows_a, rows_b, estimate=estimate)
        assert got.tolist() == want
        saved, lsh.numba = lsh.numba, None
        try:
            assert lsh.set_similarities(values, offsets, rows_a, rows_b, estimate=estimate).tolist() == want
        finally:
            lsh.numba = saved


@pytest.mark.parametrize("max_bucket", [500, 2])
def test_index_cross_pairs_by_shard_equal_the_per_bucket_pairs(max_bucket):
    """Incremental dedup's candidates (new documents x indexed ones sharing an LSH bucket): one call per coarse
    shard of whole buckets gives the pairs and cells of one call per bucket, on the licence texts' signatures (the
    index holds every text, the new crawl every text once more)."""
    import pyarrow as pa

    import pipelines.dedup as dd
    from operators.minhash import MinHashConfig
    from pipelines.localdata import LocalDataset

    texts = [p.read_text(encoding="utf-8") for p in LICENSES]
    sigs, has = signatures(texts, MinHashConfig(num_perm=112))
    rows = pa.table({"place": [f"old:{p.name}#0" for p in LICENSES] + [f"{p.name}#0" for p in LICENSES],
                     "signature": pa.array([s.tolist() for s in sigs] * 2, pa.list_(pa.uint32())),
                     "old": [True] * len(texts) + [False] * len(texts)})
    band_rows = LocalDataset(dd._sig_band_rows(rows, bands=14, rows=8))
    per_bucket = band_rows.groupby(["band", "key"]).map_groups(lambda g: dd._cross_pairs(g, max_bucket)).table
    for shards in (1, 3):
        by_shard = band_rows.map_batches(lambda t: dd._with_shard(t, ("band", "key"), shards)).groupby("shard") \
            .map_groups(lambda g: dd._shard_cross_pairs(g, max_bucket)).table
        assert sorted(zip(*(by_shard.column(c).to_pylist() for c in ("a", "b", "cell")))) == \
            sorted(zip(*(per_bucket.column(c).to_pylist() for c in ("a", "b", "cell"))))
    assert per_bucket.num_rows >= len(texts)  # every text meets its own indexed copy
    assert all(not a.startswith("old:") and b.startswith("old:") for a, b in
               zip(per_bucket.column("a").to_pylist(), per_bucket.column("b").to_pylist()))


def test_index_verification_scores_signature_agreement_by_shard():
    """The incremental path verifies (new, indexed) pairs by their MinHash signatures through the same sharded
    steps: each pair scores the share of equal signature values (0 for an empty or a shorter signature)."""
    import numpy as np
    import pyarrow as pa

    import pipelines.dedup as dd
    from operators.minhash import MinHashConfig
    from pipelines.localdata import LocalDataset

    texts = [p.read_text(encoding="utf-8") for p in LICENSES]
    sigs, _ = signatures(texts, MinHashConfig(num_perm=64))
    olds = [f"old:{p.name}#0" for p in LICENSES]
    news = [f"{p.name}#0" for p in LICENSES]
    new_sigs = [s.tolist() for s in sigs]
    new_sigs[1], new_sigs[2] = [], new_sigs[2][:32]  # an empty signature, a shorter one
    rows = pa.table({"place": olds + news, "signature": pa.array([s.tolist() for s in sigs] + new_sigs,
                                                                  pa.list_(pa.uint32()))})
    pairs = [(n, o) for n in news for o in olds]
    unique = pa.table({"a": [a for a, _ in pairs], "b": [b for _, b in pairs],
                       "cell": pa.array([i % 4 for i in range(len(pairs))], pa.int64())})
    set_rows = LocalDataset(dd._sig_attach_rows(rows))
    got = dd._verify_on_ray(LocalDataset(unique), set_rows, rows.num_rows, 0.0, 3, estimate=True).table
    scored = {(a, b): s for a, b, s in zip(*(got.column(c).to_pylist() for c in ("a", "b", "similarity")))}
    by_place = dict(zip(olds + news, [np.array(s, np.uint32) for s in [s.tolist() for s in sigs] + new_sigs]))

    def agreement(x, y):
        return float(np.mean(x == y)) if len(x) and len(x) == len(y) else 0.0

    assert scored == {(a, b): agreement(by_place[a], by_place[b]) for a, b in pairs}
    assert scored[(news[0], olds[0])] == 1.0 and scored[(news[1], olds[1])] == 0.0 and scored[(news[2], olds[2])] == 0.0


def test_index_cross_pairs_spread_many_new_documents_over_chunk_cells():
    """A bucket shared by more new documents than STAR_CHUNK pairs each with every indexed one (up to max_bucket
    of them), its new documents spread over cells of STAR_CHUNK."""
    import pyarrow as pa

    import pipelines.dedup as dd

    n_new = dd.STAR_CHUNK + 76
    places = [f"n#{i:05d}" for i in range(n_new)] + ["old:a#0", "old:b#0", "old:c#0"]
    bucket = pa.table({"band": pa.array([1] * len(places), pa.int32()), "key": pa.array([-5] * len(places), pa.int64()),
                       "place": places, "old": [False] * n_new + [True] * 3})
    pairs = dd._shard_cross_pairs(bucket, max_bucket=2)
    assert pairs.num_rows == 2 * n_new and set(pairs.column("b").to_pylist()) == {"old:a#0", "old:b#0"}
    cells = pairs.group_by("cell").aggregate([([], "count_all")]).column("count_all").to_pylist()
    assert sorted(cells) == [2 * 76, 2 * dd.STAR_CHUNK]
