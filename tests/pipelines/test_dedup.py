"""`sift dedup` on a local Ray: exact duplicates across shards, line dedup, evidence, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from operators.classifier import ClassifierConfig
from operators.gopher import GopherConfig
from operators.langid import LangIDConfig
from pipelines import dedup
from pipelines.curate import CurateConfig
from pipelines.curate import run as curate
from pipelines.dedup import DedupConfig
from pipelines.stats import balance_errors
from tests.conftest import FIXTURES, SAMPLE

pytestmark = pytest.mark.ray

KEEP_ALL = dict(langid=LangIDConfig(languages=()), gopher=GopherConfig(enabled=False), quality=ClassifierConfig(enabled=False))


def _expected_edge_duplicates() -> tuple[str, str]:
    exp = {json.loads(x)["name"]: json.loads(x) for x in (FIXTURES / "edge-cases.jsonl").read_text().splitlines() if "record_id" in x}
    # two records carry the identical page bytes (one labelled text/plain)
    return exp["plain-200"]["record_id"], exp["html-labelled-text-plain"]["record_id"]


@pytest.fixture(scope="module")
def curated(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("dd") / "curate"
    curate(CurateConfig(input=(str(SAMPLE / "edge-cases.warc.gz"), str(SAMPLE / "edge-truncated.warc.gz")), output=str(out), **KEEP_ALL))
    return out


def test_exact_duplicates_across_shards_are_removed_with_evidence(curated, tmp_path):
    """edge-truncated repeats 5 pages of edge-cases (another shard) and edge-cases holds one page
    twice: each group keeps one document; every removal names its kept twin."""
    summary = dedup.run(DedupConfig(input=str(curated), output=str(tmp_path / "d"), lines=False))
    s = summary["stats"]
    assert balance_errors(s) == []
    removed = pads.dataset(tmp_path / "d" / "dedup_removed", format="parquet").to_table().to_pylist()
    assert s["exact_dedup/drop_duplicate_document"] == len(removed) == 6  # 5 cross-shard + 1 in-shard
    # edge-truncated repeats edge-cases' first records with the same WARC-Record-IDs: a record is
    # identified by its place (file, offset), so one copy of each stays
    a, b = _expected_edge_duplicates()
    kept = pads.dataset(tmp_path / "d" / "documents", format="parquet").to_table()
    kept_ids = kept.column("doc_id").to_pylist()
    assert len(kept_ids) == len(set(kept_ids)) == s["exact_dedup/out"]
    assert (a in kept_ids) != (b in kept_ids)  # the same page under two URLs: one survives
    assert all(r["kept_doc_id"] in kept_ids for r in removed)
    # each removal also carries its own URL and domain (for "why was this page removed?" by URL)
    curated_urls = dict(zip(*(pads.dataset(curated / "documents", format="parquet").to_table().column(c).to_pylist()
                              for c in ("doc_id", "url"))))
    assert all(r["url"] == curated_urls[r["doc_id"]] and r["domain"] for r in removed)


def test_line_dedup_never_empties_the_keeper_of_a_duplicate_cluster(curated, tmp_path):
    """Lines are counted after document dedup: the removed copies of a page do not make its kept copy's lines
    "repeated" (which emptied the keeper and lost every copy of the page)."""
    dedup.run(DedupConfig(input=str(curated), output=str(tmp_path / "d")))
    removed = pads.dataset(tmp_path / "d" / "dedup_removed", format="parquet").to_table().to_pylist()
    kept_ids = set(pads.dataset(tmp_path / "d" / "documents", format="parquet").to_table().column("doc_id").to_pylist())
    twins = {r["kept_doc_id"] for r in removed if r["stage"] == "exact_dedup"}
    assert twins and twins <= kept_ids


def test_line_dedup_removes_repeated_lines_everywhere(curated, tmp_path):
    summary = dedup.run(DedupConfig(input=str(curated), output=str(tmp_path / "d")))
    s = summary["stats"]
    assert balance_errors(s) == []
    assert s["line_dedup/lines_removed"] > 0
    texts = pads.dataset(tmp_path / "d" / "documents", format="parquet").to_table().column("text").to_pylist()
    seen: dict[str, int] = {}
    for t in texts:
        for line in t.split("\n"):
            if line.strip():
                seen[line.strip()] = seen.get(line.strip(), 0) + 1
    assert max(seen.values()) == 1  # no line left twice anywhere in the corpus
    again = dedup.run(DedupConfig(input=str(curated), output=str(tmp_path / "d")))
    assert again["shards_processed_now"] == 0 and again["stats"] == s


def test_refuses_unfinished_input(tmp_path):
    with pytest.raises(ValueError, match="not a finished curate run"):
        dedup.run(DedupConfig(input=str(tmp_path), output=str(tmp_path / "o")))


@pytest.mark.shared_data
def test_labelled_duplicate_groups_are_all_found_and_nothing_else_merged(ray_local, shared_data: Path, tmp_path):
    """shared/data/warc/duplicates: 22 labelled groups (18 exact recaptures, 4 edited pages). Exact
    and verified fuzzy dedup leave exactly one document per group, and every removal names a member
    of its own group with its measured similarity."""
    labels = [json.loads(x) for x in (shared_data / "warc/duplicates/duplicates.jsonl").read_text().splitlines()]
    group_of = {row["record_id"]: row["group"] for row in labels}
    out = tmp_path / "curate"
    curate(CurateConfig(input=(str(shared_data / "warc/duplicates/duplicates.warc.gz"),), output=str(out), **KEEP_ALL))
    summary = dedup.run(DedupConfig(input=str(out), output=str(tmp_path / "d"), lines=False))
    s = summary["stats"]
    assert balance_errors(s) == []
    removed = pads.dataset(tmp_path / "d" / "dedup_removed", format="parquet").to_table().to_pylist()
    kept = pads.dataset(tmp_path / "d" / "documents", format="parquet").to_table().column("doc_id").to_pylist()
    assert sorted(group_of[k] for k in kept) == sorted(set(group_of.values()))  # one survivor per group
    for r in removed:
        assert group_of[r["kept_doc_id"]] == group_of[r["doc_id"]]
        assert r["similarity"] >= 0.8 and r["cluster_size"] == 2
    assert s["fuzzy_dedup/drop_near_duplicate"] >= 1
    # the cluster guard: a limit below the real cluster size stops the run before anything is dropped
    with pytest.raises(ValueError, match="refusing to drop"):
        dedup.run(DedupConfig(input=str(out), output=str(tmp_path / "guarded"), lines=False, documents=False, max_cluster_size=1))
    assert not (tmp_path / "guarded" / "documents" / "_SUCCESS").exists()


def test_dedup_report_shows_clusters_with_texts(curated, tmp_path, capsys, monkeypatch):
    from pipelines.cli import main as sift

    dedup.run(DedupConfig(input=os.path.relpath(curated), output=str(tmp_path / "d"), lines=False))
    monkeypatch.chdir(tmp_path)  # the input was given relative to another working directory
    assert sift(["dedup-report", str(tmp_path / "d")]) == 0
    report = capsys.readouterr().out
    assert "exact_dedup/duplicate_document" in report
    assert "cluster sizes" in report and "wordsmith.org/words/maudlin.html" in report
    # every removed document of the (small) clusters is listed, the kept record's own second copy named as such
    removed = pads.dataset(tmp_path / "d" / "dedup_removed", format="parquet").to_table().to_pylist()
    assert report.count("removed: ") == len(removed) and "not there any more" not in report
    twins = [r for r in removed if r["doc_id"] == r["kept_doc_id"]]
    assert report.count("another copy of the kept record itself") == len(twins)
    assert sift(["dedup-report", str(tmp_path)]) == 2


def test_source_loss_guard_refuses_to_empty_a_source(curated, tmp_path):
    """edge-truncated.warc.gz is a partial copy of edge-cases: dedup removes most of its documents. With the
    guard armed for small files that is refused (nothing written), and allowed on request."""
    from pipelines.dedup import source_losses

    with pytest.raises(ValueError, match=r"edge-truncated.*allow_source_loss"):
        dedup.run(DedupConfig(input=str(curated), output=str(tmp_path / "a"), lines=False,
                              min_source_docs=1, max_source_loss=0.5))
    assert not list((tmp_path / "a" / "documents").glob("*.parquet"))
    summary = dedup.run(DedupConfig(input=str(curated), output=str(tmp_path / "b"), lines=False,
                                    min_source_docs=1, max_source_loss=0.5, allow_source_loss=True))
    assert summary["stats"]["exact_dedup/drop_duplicate_document"] == 6
    assert source_losses({"g": 1, "f": 2}, {"f": 2, "g": 10}) == [("f", 2, 2), ("g", 1, 10)]


def test_a_rerun_after_a_failed_rewrite_reuses_the_plan(curated, tmp_path, monkeypatch):
    """The plan (what to remove, which lines repeat) is written to plan/ before any shard is rewritten: when a
    rewrite fails, the rerun rewrites the missing shard from that plan, without redoing the shuffles, and the
    output equals an uninterrupted run's; the plan is removed once every shard is done."""
    ref = dedup.run(DedupConfig(input=str(curated), output=str(tmp_path / "ref")))
    assert ref["planned_now"] and not (tmp_path / "ref" / "plan").exists()
    shards = sorted(p.stem for p in (curated / "documents").glob("*.parquet"))
    assert len(shards) == 2
    real = dedup.RewriteShard._rewrite

    def fail_on_last(self, shard):
        if shard == shards[-1]:
            raise OSError("disk full")
        return real(self, shard)

    monkeypatch.setattr(dedup.RewriteShard, "_rewrite", fail_on_last)
    with pytest.raises(RuntimeError, match="disk full"):
        dedup.run(DedupConfig(input=str(curated), output=str(tmp_path / "d")))
    plan = json.loads((tmp_path / "d" / "plan" / "plan.json").read_text())
    assert plan["removals"] == ref["stats"]["exact_dedup/drop_duplicate_document"] == 6
    assert sum(plan["parts"].values()) >= 6 and set(plan["parts"]) <= set(shards)
    monkeypatch.setattr(dedup.RewriteShard, "_rewrite", real)
    monkeypatch.setattr(dedup, "_plan", lambda *a, **k: pytest.fail("the finished plan was made again"))
    again = dedup.run(DedupConfig(input=str(curated), output=str(tmp_path / "d")))
    assert not again["planned_now"] and again["shards_processed_now"] == 1
    assert again["stats"] == ref["stats"]
    for sub in ("documents", "dedup_removed", "index"):
        for p in sorted((tmp_path / "ref" / sub).glob("*.parquet")):
            assert pads.dataset(p).to_table().equals(pads.dataset(tmp_path / "d" / sub / p.name).to_table()), (sub, p.name)
    assert not (tmp_path / "d" / "plan").exists()
    # the same settings on another input folder are refused, not mixed into this run's shards
    with pytest.raises(ValueError, match=f"holds a dedup run of {curated.resolve()}, not of {(tmp_path / 'ref').resolve()}"):
        dedup.run(DedupConfig(input=str(tmp_path / "ref"), output=str(tmp_path / "d")))


def test_place_keys_are_exact_and_agree_between_columns_and_strings(curated):
    """Removed and candidate documents travel as int64 keys of their place (source file index << 40 | record
    offset): unique per record, equal whether made from the columns or the place string, and an offset or source
    that does not fit is an error, never a collision."""
    import pyarrow as pa

    from pipelines.dedup import OFFSET_BITS, PlaceKeys, _places

    docs = pads.dataset(curated / "documents", format="parquet").to_table(columns=["source_file", "record_offset"])
    keys = PlaceKeys(docs.column("source_file").to_pylist())
    assert len(keys.sources) == 2
    from_columns = keys.of_batch(docs)
    assert from_columns.tolist() == keys.of_places(_places(docs)).tolist()
    assert len(set(from_columns.tolist())) == docs.num_rows
    assert set((from_columns >> OFFSET_BITS).tolist()) == {0, 1}
    with pytest.raises(ValueError, match="does not fit"):
        keys.of_places([f"{keys.sources[0]}#{1 << OFFSET_BITS}"])
    with pytest.raises(ValueError, match="does not hold"):
        keys.of_batch(pa.table({"source_file": ["elsewhere.warc.gz"], "record_offset": pa.array([0], pa.int64())}))


def test_shuffle_strategy_is_checked_and_restored():
    """Every allowed shuffle strategy is one of Ray Data's; a typo is an error when the config is made; the
    strategy is set only while the plan runs."""
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    assert {ShuffleStrategy(s) for s in dedup.SHUFFLE_STRATEGIES if s} <= set(ShuffleStrategy)
    with pytest.raises(ValueError, match="shuffle_strategy 'sort'"):
        DedupConfig(shuffle_strategy="sort")
    ctx = DataContext.get_current()
    before = ctx.shuffle_strategy
    with dedup._shuffle_strategy("hash_shuffle" if before != ShuffleStrategy.HASH_SHUFFLE else "shuffle_v2"):
        assert ctx.shuffle_strategy != before
    assert ctx.shuffle_strategy == before
