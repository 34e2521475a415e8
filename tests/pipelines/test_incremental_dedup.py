"""Incremental dedup: a new crawl deduplicated against the persistent index of an earlier run."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from operators.lsh import jaccard
from operators.minhash import normalize_text, shingles
from pipelines import dedup
from pipelines.dedup import DedupConfig
from pipelines.stats import balance_errors
from tests.conftest import FIXTURES

pytestmark = pytest.mark.ray

LIC = FIXTURES / "dedup"
MIT = sorted(LIC.glob("mit--*.txt"))
OLD = [MIT[0], LIC / "apache2--adbar-trafilatura.txt", FIXTURES / "text" / "cs336-address.txt"]
NEW = MIT[1:] + [LIC / "apache2--allenai-dolma.txt", LIC / "bsd3--pytorch-examples.txt", FIXTURES / "text" / "cs336-german.txt"]


def _documents_run(root: Path, files: list[Path], extra: dict[str, str] | None = None) -> Path:
    """A curate-shaped run (documents/ + _SUCCESS) holding real texts, one document per file (+ `extra`
    documents given as doc_id -> text)."""
    (root / "documents").mkdir(parents=True)
    ids = [p.stem for p in files] + list(extra or {})
    texts = [p.read_text(encoding="utf-8") for p in files] + list((extra or {}).values())
    pq.write_table(pa.table({
        "doc_id": ids, "source_file": [str(root / i) for i in ids],
        "record_offset": pa.array([0] * len(ids), pa.int64()), "text": texts,
    }), root / "documents" / "part-0.parquet")
    (root / "documents" / "_SUCCESS").write_text("")
    return root


def _sh(p: Path) -> set:
    return set(shingles(normalize_text(p.read_text()), 5))


def test_new_crawl_is_deduplicated_against_the_old_index(ray_local, tmp_path):
    old = _documents_run(tmp_path / "old", OLD)
    dedup.run(DedupConfig(input=str(old), output=str(tmp_path / "old-dedup"), lines=False))
    index = json.loads((tmp_path / "old-dedup" / "index" / "index.json").read_text())
    assert index["documents"] == 3 and len(index["parts"]) == 1

    address = OLD[2].read_text()
    recrawl = "  " + address.upper().replace(" ", "   ") + "\n"  # the same page, re-crawled: equal after normalisation
    new = _documents_run(tmp_path / "new", NEW, {"address-recrawl": recrawl})
    summary = dedup.run(DedupConfig(input=str(new), output=str(tmp_path / "new-dedup"), lines=False,
                                    index=str(tmp_path / "old-dedup")))
    s = summary["stats"]
    assert balance_errors(s) == []
    removed = {r["doc_id"]: r for r in pads.dataset(tmp_path / "new-dedup" / "dedup_removed", format="parquet").to_table().to_pylist()}
    kept = set(pads.dataset(tmp_path / "new-dedup" / "documents", format="parquet").to_table().column("doc_id").to_pylist())
    r = removed["address-recrawl"]
    assert (r["stage"], r["reason"], r["kept_doc_id"]) == ("index_dedup", "exact_duplicate_of_index", "cs336-address")
    # this Apache-2.0 copy adds the licence's appendix to the old one: a near duplicate
    r = removed["apache2--allenai-dolma"]
    assert (r["stage"], r["reason"], r["kept_doc_id"]) == ("index_dedup", "near_duplicate_of_index", "apache2--adbar-trafilatura")
    # the new MIT variants: one survives the within-run clustering, and it duplicates the old MIT text
    new_keeper = min(p.stem for p in MIT[1:])
    assert jaccard(_sh(LIC / f"{new_keeper}.txt"), _sh(MIT[0])) >= 0.85  # the fixture's premise
    r = removed[new_keeper]
    assert (r["stage"], r["reason"], r["kept_doc_id"]) == ("index_dedup", "near_duplicate_of_index", MIT[0].stem)
    assert r["similarity"] >= 0.8
    assert not any(p.stem in kept for p in MIT)
    assert kept == {"bsd3--pytorch-examples", "cs336-german"}
    assert s["index_dedup/drop_exact_duplicate_of_index"] == 1 and s["index_dedup/drop_near_duplicate_of_index"] == 2
    # the new index chains the old part and adds what this run kept
    index = json.loads((tmp_path / "new-dedup" / "index" / "index.json").read_text())
    assert len(index["parts"]) == 2 and index["documents"] == 3 + 2


def test_index_with_other_settings_is_refused(ray_local, tmp_path):
    old = _documents_run(tmp_path / "old", OLD)
    dedup.run(DedupConfig(input=str(old), output=str(tmp_path / "old-dedup"), lines=False))
    with pytest.raises(ValueError, match="not be comparable"):
        dedup.run(DedupConfig(input=str(old), output=str(tmp_path / "x"), num_perm=64, index=str(tmp_path / "old-dedup")))
    with pytest.raises(ValueError, match="no finished dedup index"):
        dedup.run(DedupConfig(input=str(old), output=str(tmp_path / "y"), index=str(tmp_path)))


def test_distributed_connected_components_equal_union_find(ray_local, tmp_path):
    """Label propagation on Ray Data (forced with distributed_cc_min_edges=0) removes exactly the documents, with
    the same kept twins and cluster sizes, as union-find on the driver: the 11 MIT variants form one cluster."""
    run = _documents_run(tmp_path / "docs", sorted(LIC.glob("*.txt")) + [FIXTURES / "text" / "cs336-address.txt"])

    def removed(out: str, **kw) -> dict:
        dedup.run(DedupConfig(input=str(run), output=str(tmp_path / out), lines=False, documents=False, **kw))
        rows = pads.dataset(tmp_path / out / "dedup_removed", format="parquet").to_table().to_pylist()
        return {r["doc_id"]: (r["kept_doc_id"], r["cluster_size"]) for r in rows}

    local = removed("uf", local_max_docs=0)
    distributed = removed("lp", distributed_cc_min_edges=0, local_max_docs=0)  # on Ray Data, not in-process
    assert distributed == local
    mit = [p.stem for p in MIT]
    assert len(mit) == 11 and sum(1 for d in mit if d in local) == 10
    assert {v for v in local.values()} >= {(min(mit), 11)}


def test_in_process_path_gives_the_ray_data_output_byte_for_byte(ray_local, tmp_path):
    """Small corpora skip Ray Data (`local_max_docs`): exact, near-duplicate and line dedup, the removal evidence,
    the stats and the index are identical to the distributed run's."""
    address = (FIXTURES / "text" / "cs336-address.txt").read_text()
    run = _documents_run(tmp_path / "docs", sorted(LIC.glob("*.txt")) + [FIXTURES / "text" / "cs336-address.txt"],
                         extra={"address-copy": address, "address-copy-2": address + "\n"})
    outs = {}
    for name, limit in (("ray", 0), ("local", 10_000)):
        summary = dedup.run(DedupConfig(input=str(run), output=str(tmp_path / name), local_max_docs=limit))
        outs[name] = summary["stats"]
    s = outs["local"]
    assert s == outs["ray"] and balance_errors(s) == []
    assert s["exact_dedup/drop_duplicate_document"] >= 2 and s["fuzzy_dedup/drop_near_duplicate"] >= 5
    assert s["line_dedup/lines_removed"] > 0
    for sub in ("documents/part-0.parquet", "dedup_removed/part-0.parquet", "index/part-0.parquet"):
        a, b = (pq.read_table(tmp_path / n / sub) for n in ("ray", "local"))
        assert a.equals(b), sub
