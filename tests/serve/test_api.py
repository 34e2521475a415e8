"""The JSON API of `sift serve` on a real job: the answers are checked against the job's own files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from pipelines.serve import catalog
from pipelines.serve.app import create_app
from pipelines.serve.cli import _is_loopback, main
from pipelines.tokenize import load_tokenizer, read_token_shard
from tests.serve.conftest import FILES, add_shard_stats, make_live_copy

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def client(runs_root: Path) -> TestClient:
    return TestClient(create_app(str(runs_root)))


def _table(path: Path) -> pa.Table:
    return pads.dataset(path, format="parquet").to_table()


def test_runs_list_and_overview(client, runs_root):
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    job = runs["job"]
    assert job["kind"] == "pipeline" and job["status"] == "finished"
    assert [s["stage"] for s in job["stages"]] == ["curate", "dedup", "tokenize"]
    assert all(s["status"] == "finished" and s["units_done"] == s["units_total"] == len(FILES) for s in job["stages"])
    curate = job["stages"][0]
    stats = json.loads((runs_root / "job" / "curate" / "stats.json").read_text())["stats"]
    assert curate["documents_in"] == stats["read/in"] and curate["documents_out"] == stats["write/docs"]
    assert curate["records_per_second"] > 0
    assert client.get("/api/runs/job").json()["config"]["curate"]["write_exclusions"] is True


def test_funnel_equals_the_stage_stats(client, runs_root):
    live = client.get("/api/runs/job/funnel").json()
    rows = {f["stage"]: f for f in live["funnel"]}
    for stage_dir in ("curate", "dedup"):
        stats = json.loads((runs_root / "job" / stage_dir / "stats.json").read_text())["stats"]
        for key, value in stats.items():
            stage, _, what = key.partition("/")
            if stage in rows and what in ("in", "out"):
                assert rows[stage][what] == value, key
            elif stage in rows and what.startswith("drop_"):
                assert rows[stage]["drops"][what[len("drop_"):]] == value, key
    kept = sum(pq.ParquetFile(p).metadata.num_rows for p in (runs_root / "job" / "dedup" / "documents").glob("*.parquet"))
    assert live["documents_kept"] == kept == rows["tokenize"]["out"]
    # the report API is `sift stats`'s JSON, with the same funnel
    report = client.get("/api/runs/job/report").json()
    assert [(f["stage"], f["in"], f["out"]) for f in report["funnel"]] == [(f["stage"], f["in"], f["out"]) for f in live["funnel"]]
    assert len(client.get("/api/runs/job/plots").json()) >= 5
    png = client.get("/runs/job/plots/0.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_curate_exclusion_is_explained_by_url_and_doc_id(client, runs_root):
    excluded = _table(runs_root / "job" / "curate" / "exclusions").to_pylist()
    assert {e["stage"] for e in excluded} >= {"langid", "gopher"}
    for e in excluded:
        hits = client.get("/api/runs/job/lookup", params={"q": e["url"]}).json()
        assert hits["key"] == "url"
        place = (e["doc_id"], e["source_file"], e["record_offset"])  # edge-truncated repeats records of edge-cases
        match = [h for h in hits["results"] if (h["doc_id"], h["source_file"], h["record_offset"]) == place]
        assert len(match) == 1, e
        assert match[0]["status"] == "removed"
        assert match[0]["removed_by"] == {"stage": e["stage"], "reason": e["reason"], "evidence": json.loads(e["evidence"])}
    by_id = client.get("/api/runs/job/lookup", params={"q": excluded[0]["doc_id"]}).json()
    assert by_id["key"] == "doc_id" and by_id["count"] >= 1


def test_dedup_removal_names_the_kept_twin(client, runs_root):
    removed = _table(runs_root / "job" / "dedup" / "dedup_removed").to_pylist()
    exact = [r for r in removed if r["stage"] == "exact_dedup"]
    assert exact, "edge-truncated repeats edge-cases pages: exact duplicates must be removed"
    kept = {r["doc_id"]: r for r in _table(runs_root / "job" / "dedup" / "documents").to_pylist()}
    for r in exact:
        hit = next(h for h in client.get("/api/runs/job/lookup", params={"q": r["url"]}).json()["results"]
                   if h["status"] == "removed" and h["removed_by"]["stage"] == "exact_dedup")
        ev = hit["removed_by"]["evidence"]
        assert ev["kept_doc_id"] == r["kept_doc_id"] and ev["similarity"] == 1.0 and ev["cluster_size"] == r["cluster_size"]
        assert ev["kept_url"] == kept[r["kept_doc_id"]]["url"]


def test_kept_document_location_and_tokens(client, runs_root):
    """A kept page's shard and row hold it, and its token span decodes back to its deduplicated text."""
    docs = _table(runs_root / "job" / "dedup" / "documents").to_pylist()
    tok = load_tokenizer("gpt2")
    for doc in docs[:5]:
        hits = client.get("/api/runs/job/lookup", params={"q": doc["doc_id"], "key": "doc_id"}).json()["results"]
        hit = next(h for h in hits if (h["source_file"], h["record_offset"]) == (doc["source_file"], doc["record_offset"]))
        assert hit["status"] == "kept"
        loc = hit["location"]
        row = pq.read_table(runs_root / "job" / "dedup" / "documents" / f"{loc['shard']}.parquet").slice(loc["row"], 1)
        assert row.column("doc_id")[0].as_py() == doc["doc_id"]
        t = hit["tokens"]
        ids = read_token_shard(runs_root / "job" / "tokens" / "tokens" / t["split"] / f"{t['shard']}.arrow")
        assert tok.decode(ids[t["token_offset"]: t["token_offset"] + t["num_tokens"]].tolist()) == doc["text"]


def test_domain_lookup_finds_kept_and_removed_pages(client, runs_root):
    kept = _table(runs_root / "job" / "curate" / "documents")
    excluded = _table(runs_root / "job" / "curate" / "exclusions")
    domains = Counter(kept.column("domain").to_pylist()) + Counter(excluded.column("domain").to_pylist())
    domain, n = domains.most_common(1)[0]
    result = client.get("/api/runs/job/lookup", params={"q": domain}).json()
    assert result["key"] == "domain" and result["count"] == n
    assert all(h["domain"] == domain for h in result["results"])


def test_document_pages_cross_row_groups(client, runs_root, tmp_path):
    """Paging reads only the row groups it needs; the pages put together are the whole shard."""
    root = tmp_path / "runs"
    (root / "small" / "documents").mkdir(parents=True)
    src = runs_root / "job" / "curate"
    shard = max(src.glob("documents/*.parquet"), key=lambda p: pq.ParquetFile(p).metadata.num_rows)
    table = pq.read_table(shard)
    pq.write_table(table, root / "small" / "documents" / shard.name, row_group_size=3)
    (root / "small" / "run.json").write_text((src / "run.json").read_text())
    (root / "small" / "shard_stats").mkdir()
    c = TestClient(create_app(str(root)))
    stem = shard.name[: -len(".parquet")]
    pages = [c.get(f"/api/runs/small/shards/curate/{stem}", params={"offset": o, "limit": 4, "full_text": True}).json()
             for o in range(0, table.num_rows, 4)]
    assert all(p["total"] == table.num_rows for p in pages)
    got = [d for p in pages for d in p["documents"]]
    assert [d["doc_id"] for d in got] == table.column("doc_id").to_pylist()
    assert [d["text"] for d in got] == table.column("text").to_pylist()
    assert [d["row"] for d in got] == list(range(table.num_rows))
    one = c.get(f"/api/runs/small/doc/curate/{stem}/{table.num_rows - 1}").json()
    assert one["doc_id"] == table.column("doc_id")[-1].as_py()
    assert c.get(f"/api/runs/small/doc/curate/{stem}/{table.num_rows}").status_code == 404


def test_token_shard_decodes_to_the_documents(client, runs_root):
    shards = client.get("/api/runs/job/shards").json()
    assert set(shards["documents"]) == {"curate", "dedup"}
    first = shards["tokens"][0]
    page = client.get(f"/api/runs/job/tokens/{first['split']}/{first['shard']}", params={"limit": 3}).json()
    assert page["total"] == first["documents"] and page["tokens"] == first["tokens"]
    texts = {r["doc_id"]: r["text"] for r in _table(runs_root / "job" / "dedup" / "documents").to_pylist()}
    assert page["documents"] and all(d["text"] == texts[d["doc_id"]] for d in page["documents"])


def test_errors_are_answers_not_crashes(client):
    assert client.get("/api/runs/nope").status_code == 404
    assert client.get("/runs/nope").status_code == 404
    assert client.get("/api/runs/job/shards/curate/no-such-shard").status_code == 404
    assert client.get("/api/runs/job/shards/curate/..%2F..%2Frun").status_code == 404
    assert client.get("/api/runs/job/shards/model/x").status_code == 404
    assert client.get("/api/runs/job/tokens/train/nope").status_code == 404
    assert client.get("/api/runs/job/lookup", params={"q": "x", "key": "html"}).status_code == 422
    assert client.get("/api/runs/job/shards/curate/x", params={"limit": 10_000}).status_code == 422
    none = client.get("/api/runs/job/lookup", params={"q": "https://example.invalid/never-crawled"}).json()
    assert none["count"] == 0
    assert client.get("/runs/job/lookup", params={"q": "https://example.invalid/"}).status_code == 200


def test_openapi_documents_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/runs", "/api/runs/{name}/funnel", "/api/runs/{name}/lookup", "/api/runs/{name}/shards",
              "/api/runs/{name}/shards/{stage}/{shard}", "/api/runs/{name}/tokens/{split}/{shard}"):
        assert p in paths, p


def test_live_run_counts_only_finished_shards(client, runs_root):
    live = make_live_copy(runs_root, "live-api", shards_done=1)
    first = client.get("/api/runs/live-api/funnel").json()
    assert first["status"] == "running"
    stage = first["stages"][0]
    assert (stage["stage"], stage["status"], stage["units_done"], stage["units_total"]) == ("curate", "running", 1, len(FILES))
    one = json.loads(sorted((live / "curate" / "shard_stats").glob("*.json"))[0].read_text())
    assert first["records"] == one["read/in"]
    second = add_shard_stats(runs_root, live, 1)
    again = client.get("/api/runs/live-api/funnel").json()
    assert again["records"] == one["read/in"] + second["read/in"] and again["stages"][0]["units_done"] == 2


def test_running_dedup_shows_its_total_before_its_summary_exists(runs_root, tmp_path):
    """While dedup runs there is no stats.json yet: the total comes from the input run's shards."""
    import shutil

    d = tmp_path / "dedup"
    shutil.copytree(runs_root / "job" / "dedup", d)
    (d / "stats.json").unlink()
    for extra in sorted((d / "shard_stats").glob("*.json"))[1:]:
        extra.unlink()
    info = catalog.stage_progress("dedup", catalog.OutputDir(str(d)))
    assert (info["units_done"], info["units_total"]) == (1, len(FILES))


def test_cli(tmp_path, capsys):
    assert main(["--runs", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("10.1.2.3")


def test_catalog_guesses_the_key():
    assert catalog.guess_key("<urn:uuid:1>") == "doc_id"
    assert catalog.guess_key("https://a.com/x") == "url"
    assert catalog.guess_key("a.com") == "domain"


def test_ray_serve_deployment_answers_like_the_local_app(ray_local, client, runs_root):
    """`sift serve --ray-serve`: the same app deployed as a Ray Serve application on the test's Ray."""
    import urllib.request

    from ray import serve

    from pipelines.serve.cli import deploy_on_ray
    from tests.conftest import free_ports

    url = deploy_on_ray(str(runs_root), "127.0.0.1", free_ports(1)[0])
    try:
        with urllib.request.urlopen(url + "api/runs/job/funnel", timeout=60) as r:
            served = json.loads(r.read())
        local = client.get("/api/runs/job/funnel").json()
        assert served["funnel"] == local["funnel"] and served["documents_kept"] == local["documents_kept"] > 0
        with urllib.request.urlopen(url + "runs/job", timeout=60) as r:
            assert r.status == 200 and b'id="funnel"' in r.read()
    finally:
        serve.shutdown()


def test_run_copied_without_its_links_still_finds_its_stages(runs_root, tmp_path):
    """An object store has no symlinks: a run copied there (or recorded with relative paths) is found by the
    <stage>-<hash> folder names in its pipeline.json."""
    import shutil

    job = runs_root / "job"
    copy = tmp_path / "served" / "copied"
    copy.mkdir(parents=True)
    record = json.loads((job / "pipeline.json").read_text())
    for stage in record["stages"].values():
        folder = Path(stage["output"]).name
        shutil.copytree(job / folder, copy / folder)
        stage["output"] = f"relative/to/the/driver/{folder}"
    (copy / "pipeline.json").write_text(json.dumps(record))
    assert not any(p.is_symlink() for p in copy.iterdir())
    run = catalog.get_run(str(tmp_path / "served"), "copied")
    dirs = run.stage_dirs()
    assert sorted(dirs) == ["curate", "dedup", "tokenize"]
    assert all(Path(d.root).name == Path(record["stages"][s]["output"]).name for s, d in dirs.items())
