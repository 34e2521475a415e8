"""The curate DAG on a local Ray: output contract, stats, resume, config checks, CLI."""

from __future__ import annotations

import json
from collections import Counter
import os
import shutil
from dataclasses import replace

import pyarrow.parquet as pq
import pytest

from operators.gopher import GopherConfig
from operators.langid import LangIDConfig
from operators.warc import read_warc_rows
from pipelines import curate
from pipelines.curate import CurateConfig, run, shard_name
from pipelines.stats import balance_errors
from tests.conftest import FIXTURES, SAMPLE

pytestmark = pytest.mark.ray

INPUTS = [str(SAMPLE / "edge-cases.warc.gz"), str(SAMPLE / "edge-truncated.warc.gz"), str(SAMPLE / "whirlwind.warc.gz")]


@pytest.fixture(scope="module")
def finished_run(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("curate") / "run"
    # German pages kept: Gopher's stop-word rule is English-only, so it is off here
    cfg = CurateConfig(
        input=tuple(INPUTS),
        output=str(out),
        langid=LangIDConfig(languages=("en", "de")),
        gopher=GopherConfig(min_stop_words=0),
    )
    return cfg, run(cfg)


def test_output_contract(finished_run):
    """One zstd Parquet shard + stats.json per input, _SUCCESS, run.json with config and versions."""
    cfg, summary = finished_run
    docs = f"{cfg.output}/documents"
    for path in INPUTS:
        shard = shard_name(path)
        meta = pq.ParquetFile(f"{docs}/{shard}.parquet").metadata
        if meta.num_row_groups:  # a shard whose pages were all filtered out is a valid empty file
            assert meta.row_group(0).column(0).compression == "ZSTD"
        stats = json.load(open(f"{cfg.output}/shard_stats/{shard}.json"))
        assert balance_errors(stats) == []
        assert stats["write/docs"] == meta.num_rows
    assert (open(f"{docs}/_SUCCESS").read()) == ""
    run_info = json.load(open(f"{cfg.output}/run.json"))
    assert run_info["status"] == "finished"
    assert run_info["config"]["extract"]["main_content"] is True
    assert run_info["versions"]["ray"] == "2.60.0"
    assert run_info["output_hash"] == cfg.output_hash()


def test_files_wait_for_the_whole_worker_pool(finished_run):
    """Every curate worker must be up before files go out (else the first ready takes a slow node's share): the
    wait is set on the dataset's own context (Ray Data copies the global one when a dataset is created), and the
    global context is left as it was."""
    cfg, summary = finished_run
    assert summary["workers"] == 2  # ray_local has 2 CPUs, 3 files
    ds = curate.curate_dataset([{"path": p, "shard": shard_name(p)} for p in INPUTS], cfg, 2)
    assert ds.context.wait_for_min_actors_s == curate.WORKER_START_TIMEOUT_S
    import ray

    assert ray.data.DataContext.get_current().wait_for_min_actors_s != curate.WORKER_START_TIMEOUT_S


def test_documents_are_the_read_pages_with_text(finished_run):
    """Every shard row is a page the reader emitted, in file order, with non-empty extracted text."""
    cfg, summary = finished_run
    table = pq.read_table(f"{cfg.output}/documents/{shard_name(INPUTS[0])}.parquet")
    read_ids = [r.doc_id for r in read_warc_rows(INPUTS[0])[0]]
    ids = table.column("doc_id").to_pylist()
    assert ids == [i for i in read_ids if i in set(ids)]
    assert len(ids) >= 8
    assert all(len(t) > 0 for t in table.column("text").to_pylist())
    assert table.schema.field("warc_date").type.tz == "UTC"
    assert "html" not in table.schema.names
    texts = dict(zip(table.column("url").to_pylist(), table.column("text").to_pylist()))
    # the ISO-8859-1 page whose header claims UTF-8 decodes without replacement characters
    lies = [t for u, t in texts.items() if "nachrichten.at" in u][0]
    assert "\ufffd" not in lies and "Therapie" in lies
    assert {"pii_emails", "pii_phone_numbers", "pii_ip_addresses"} <= set(table.schema.names)
    langs = set(table.column("lang").to_pylist())
    assert langs <= {"en", "de"} and "de" in langs
    assert min(table.column("lang_score").to_pylist()) >= 0.65


def test_documents_folder_reads_as_one_dataset(finished_run):
    """documents/ holds only shards (and _SUCCESS), so pyarrow and Ray Data read it whole."""
    import pyarrow.dataset as pads

    cfg, summary = finished_run
    table = pads.dataset(f"{cfg.output}/documents", format="parquet").to_table()
    assert table.num_rows == summary["stats"]["write/docs"]
    assert "quality_score" in table.schema.names


def test_run_stats_balance_and_add_up(finished_run):
    cfg, summary = finished_run
    s = summary["stats"]
    assert balance_errors(s) == []
    assert s["read/files"] == 3
    assert s["blocklist/in"] == s["read/out"]
    assert s["extract/in"] == s["blocklist/out"]
    assert s["langid/in"] == s["extract/out"]
    assert s["gopher/in"] == s["langid/out"]
    assert s["pii/in"] == s["pii/out"] == s["gopher/out"]
    assert s["write/docs"] == s["pii/out"]
    assert s["langid/drop_wrong_language"] > 0  # the edge cases hold a Chinese and a Spanish page
    assert sum(v for k, v in s.items() if k.startswith("langid/lang_")) == s["langid/in"]
    assert s["read/drop_truncated_record"] == 1
    merged = json.load(open(f"{cfg.output}/stats.json"))["stats"]
    assert merged == s


def test_rerun_is_a_no_op_and_resume_redoes_only_missing(finished_run):
    """A finished run reruns as a no-op; deleting one unit's marker redoes exactly that unit with
    identical output."""
    cfg, summary = finished_run
    again = run(cfg)
    assert again["files_processed_now"] == 0
    assert again["stats"] == summary["stats"]
    shard = shard_name(INPUTS[0])
    before = pq.read_table(f"{cfg.output}/documents/{shard}.parquet")
    os.remove(f"{cfg.output}/shard_stats/{shard}.json")
    resumed = run(cfg)
    assert resumed["files_processed_now"] == 1
    assert resumed["stats"] == summary["stats"]
    assert pq.read_table(f"{cfg.output}/documents/{shard}.parquet").equals(before)


def test_changed_settings_refuse_the_same_output(finished_run):
    cfg, _ = finished_run
    changed = replace(cfg, extract=replace(cfg.extract, main_content=False))
    with pytest.raises(ValueError, match="different settings"):
        run(changed)
    # the same settings on other input files: refused before any work, not added to this run's shards
    other = replace(cfg, input=tuple(str(p) for p in sorted(SAMPLE.glob("*.warc.gz")) if str(p) not in cfg.input)[:1])
    with pytest.raises(ValueError, match="holds a curate run of .* not of .*rerun with that --input"):
        run(other)
    assert sorted(os.listdir(f"{cfg.output}/documents")) == sorted([f"{shard_name(p)}.parquet" for p in cfg.input] + ["_SUCCESS"])


def test_bad_paths_fail_before_any_work(tmp_path):
    """A missing input or an unwritable output is a clear error, raised before Ray starts."""
    with pytest.raises(ValueError, match="matched no files"):
        run(CurateConfig(input=(str(tmp_path / "nope.warc.gz"),), output=str(tmp_path / "o")))
    with pytest.raises(ValueError, match="language-ID model not found"):
        run(CurateConfig(input=(INPUTS[0],), output=str(tmp_path / "m"), langid=LangIDConfig(model_path=str(tmp_path / "x.ftz"))))
    assert not (tmp_path / "m" / "run.json").exists()  # refused before any work
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ValueError, match="not writable"):
        run(CurateConfig(input=(INPUTS[0],), output=str(blocker / "sub")))


def test_cli_reports_errors_with_exit_code_2(tmp_path, capsys):
    code = curate.main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")])
    assert code == 2
    assert "matched no files" in capsys.readouterr().err
    code = curate.main(["--input", INPUTS[0], "--output", str(tmp_path / "o"), "--set", "extract.bogus=1"])
    assert code == 2
    assert "unknown config key 'extract.bogus'" in capsys.readouterr().err


def test_cli_yaml_and_flags(ray_local, tmp_path, capsys):
    """YAML overrides defaults, flags override YAML; the summary names the funnel and outputs."""
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(f"input: [{INPUTS[2]}]\noutput: {tmp_path / 'ignored'}\nextract:\n  main_content: false\n")
    code = curate.main(["--config", str(yaml_path), "--output", str(tmp_path / "o"), "--set", "batch_size=7"])
    assert code == 0
    out = capsys.readouterr().out
    assert "read" in out and "extract" in out and "record_type_request" in out
    info = json.load(open(tmp_path / "o" / "run.json"))
    assert info["config"]["extract"]["main_content"] is False
    assert info["config"]["batch_size"] == 7
    assert not (tmp_path / "ignored").exists()


def test_corrupt_file_in_a_run_is_counted_not_fatal(ray_local, tmp_path):
    """Junk files among good ones: the job finishes, the junk is counted, good pages are written."""
    junk = tmp_path / "in" / "junk.warc.gz"
    junk.parent.mkdir()
    junk.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00not really gzip" * 50)
    empty = tmp_path / "in" / "empty.warc"
    empty.write_bytes(b"")
    shutil.copy(INPUTS[2], tmp_path / "in")
    summary = run(CurateConfig(input=(str(tmp_path / "in"),), output=str(tmp_path / "o")))
    s = summary["stats"]
    assert s["read/files"] == 3
    assert s["read/file_unreadable"] == 1
    assert s["read/file_error_not_a_warc"] == 1
    assert s["extract/out"] == 1  # the whirlwind page (Aragonese: then dropped by language ID)
    assert s["gopher/in"] == s["langid/out"]
    assert s["pii/in"] == s["pii/out"] == s["gopher/out"]
    assert s["write/docs"] == s["pii/out"]


def test_classifier_thresholds_and_exclusions(ray_local, tmp_path):
    """A quality threshold and a harm classifier (the bundled quality model standing in, scoring
    its 'cc' label) drop documents by score; with write_exclusions every removed document is
    written aside with its stage and reason, and those rows account for every drop."""
    import pyarrow.dataset as pads

    from operators.classifier import BUNDLED_QUALITY_MODEL, ClassifierConfig

    cfg = CurateConfig(
        input=(str(SAMPLE / "aeb-000.warc.gz"), str(SAMPLE / "warcfile.warc.gz")),
        output=str(tmp_path / "o"),
        langid=LangIDConfig(languages=()),
        gopher=GopherConfig(min_stop_words=0),
        quality=ClassifierConfig(min_score=0.05),
        nsfw=ClassifierConfig(model_path=BUNDLED_QUALITY_MODEL, positive_label="cc", max_score=0.9),
        write_exclusions=True,
    )
    s = run(cfg)["stats"]
    assert balance_errors(s) == []
    assert s["quality/drop_low_score"] + s["nsfw/drop_high_score"] > 0
    table = pads.dataset(f"{cfg.output}/documents", format="parquet").to_table()
    assert min(table.column("quality_score").to_pylist()) >= 0.05
    assert max(table.column("nsfw_score").to_pylist()) <= 0.9
    excluded = pads.dataset(f"{cfg.output}/exclusions", format="parquet").to_table().to_pylist()
    drops = {k: v for k, v in s.items() if "/drop_" in k and not k.startswith("read/")}
    assert len(excluded) == sum(drops.values())
    by_reason = Counter(f"{e['stage']}/drop_{e['reason']}" for e in excluded)
    assert by_reason == Counter(drops)
    assert all(e["url"].startswith("http") for e in excluded)
    # the evidence column holds the numbers behind each reason, and they break the configured limit
    for e in excluded:
        ev = json.loads(e["evidence"])
        assert e["domain"] and e["source_file"].endswith(".warc.gz") and e["record_offset"] >= 0
        if e["stage"] == "quality":
            assert ev["score"] < ev["limit"] == 0.05
        elif e["stage"] == "nsfw":
            assert ev["score"] > ev["limit"] == 0.9
        elif e["stage"] == "gopher":
            low = e["reason"].startswith("too_few") or e["reason"].endswith("short")
            assert (ev["value"] < ev["limit"]) if low else (ev["value"] > ev["limit"]), e
        elif e["stage"] == "extract":
            assert ev["html_bytes"] >= 0
    assert {e["stage"] for e in excluded} >= {"quality", "nsfw", "gopher"}


def test_optional_line_filters_run_as_stages(ray_local, tmp_path):
    """c4 and fineweb are off by default and, when on, are stages with balanced counters."""
    from operators.linefilters import C4Config, FineWebConfig

    default = run(CurateConfig(input=(INPUTS[0],), output=str(tmp_path / "a")))["stats"]
    assert "c4/in" not in default and "fineweb/in" not in default
    cfg = CurateConfig(
        input=(str(SAMPLE / "trafilatura-000.warc.gz"),), output=str(tmp_path / "b"),
        langid=LangIDConfig(languages=()), gopher=GopherConfig(min_stop_words=0),
        c4=C4Config(enabled=True), fineweb=FineWebConfig(enabled=True),
    )
    s = run(cfg)["stats"]
    assert balance_errors(s) == []
    assert s["c4/in"] == s["gopher/out"] and s["fineweb/in"] == s["c4/out"]
    assert s["c4/chars_removed"] > 0


BROKEN = FIXTURES / "broken-warc"


def _damaged_inputs(folder) -> dict[str, str]:
    """A folder of real damaged inputs next to a good file; returns {file name: what it is}."""
    import gzip

    folder.mkdir()
    shutil.copy(BROKEN / "bad.arc", folder)  # ARC whose 4th record header has length "abc": warcio ValueError
    shutil.copy(BROKEN / "example-trunc.warc", folder)  # WARC cut in a record: "Invalid WARC header"
    shutil.copy(SAMPLE / "edge-truncated.warc.gz", folder)  # last gzip member cut in half
    shutil.copy(SAMPLE / "README.md", folder / "notes.warc.gz")  # a text file with a WARC name
    (folder / "readme.warc.gz").write_bytes(gzip.compress((SAMPLE / "README.md").read_bytes()))  # gzip, not WARC
    (folder / "empty.warc.gz").write_bytes(b"")
    raw = (SAMPLE / "warcfile.warc.gz").read_bytes()  # a real CC WARC with 2,000 bytes flipped in the middle
    mid = len(raw) // 2
    flipped = bytes(b ^ 0x5A for b in raw[mid : mid + 2000])
    (folder / "mid-damage.warc.gz").write_bytes(raw[:mid] + flipped + raw[mid + 2000 :])
    shutil.copy(SAMPLE / "whirlwind.warc.gz", folder)  # clean
    return {
        "bad.arc": "damaged", "example-trunc.warc": "damaged", "edge-truncated.warc.gz": "truncated",
        "notes.warc.gz": "not_a_warc", "readme.warc.gz": "not_a_warc", "empty.warc.gz": "empty",
        "mid-damage.warc.gz": "damaged",
    }


def test_damaged_files_are_named_in_the_summary_and_in_sift_stats(ray_local, tmp_path, capsys):
    """`sift curate` names every damaged input with what is wrong (the reader's own message, not a bare
    "valueerror") and what was kept from it; `sift stats` lists the same files in its tables, --json and HTML."""
    from pipelines import report

    expected = _damaged_inputs(tmp_path / "in")
    out = tmp_path / "o"
    assert curate.main(["--input", str(tmp_path / "in"), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    lines = {n: next((ln for ln in text.splitlines() if ln.strip().startswith(n + " ")), None) for n in expected}
    assert all(lines.values()), text
    assert f"damaged input files: {len(expected)} of {len(expected) + 1}, in {tmp_path / 'in'}/" in text
    assert "whirlwind" not in text.split("damaged input files")[1].split("documents:")[0]  # the clean file: not listed
    assert "ARC damaged after 3 records: ValueError: invalid literal for int() with base 10: 'abc'" in lines["bad.arc"]
    assert "WARC damaged after 3 records: invalid_header (Invalid WARC header)" in lines["example-trunc.warc"]
    assert "the records before the damage were kept" in lines["example-trunc.warc"]
    assert "not a WARC or ARC file (text): nothing read" in lines["notes.warc.gz"]
    assert "not a WARC or ARC file (gzip data that is not WARC or ARC): nothing read" in lines["readme.warc.gz"]
    assert "empty file (0 bytes)" in lines["empty.warc.gz"]
    assert "cut short: truncated_record" in lines["edge-truncated.warc.gz"]
    assert "reading went on at the next intact record" in lines["mid-damage.warc.gz"]
    for name in ("notes.warc.gz", "readme.warc.gz", "empty.warc.gz"):  # nothing was read: no "damage" was survived
        assert "kept" not in lines[name] and "damage" not in lines[name]
    assert "file_error_" not in text

    assert report.main([str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    damaged = {os.path.basename(d["file"]): d for d in got["damaged_files"]}
    assert {n: d["kind"] for n, d in damaged.items()} == expected
    shard_stats = {os.path.basename(d["file"]): d for d in json.load(open(out / "stats.json"))["damaged_files"]}
    assert shard_stats == damaged  # the run's summary and `sift stats` read the same per-shard records
    assert damaged["bad.arc"]["error"] == "ValueError: invalid literal for int() with base 10: 'abc'"
    assert damaged["bad.arc"]["format"] == "arc" and damaged["bad.arc"]["records_kept"] == 3
    assert damaged["example-trunc.warc"]["errors"] == {"invalid_header": 1}
    assert damaged["edge-truncated.warc.gz"]["records_kept"] == 6  # warcinfo + 5 whole records; the cut one is not kept
    mid = damaged["mid-damage.warc.gz"]
    assert mid["resyncs"] >= 1 and mid["records_kept"] > 0 and "bad_compression" in mid["errors"]
    assert got["resyncs"] == sum(d["resyncs"] for d in damaged.values()) > 0
    assert all(d["records_kept"] == 0 for n, d in damaged.items() if expected[n] in ("empty", "not_a_warc"))
    assert got["input_files"] == len(expected) + 1
    html = (out / "report.html").read_text()
    assert 'id="damaged-files"' in html and all(f"{tmp_path / 'in'}/{n}</code>" in html for n in expected)
    assert "invalid literal for int() with base 10: &#x27;abc&#x27;" in html

    assert report.main([str(out), "--no-html"]) == 0  # the terminal tables
    tables = capsys.readouterr().out
    flat = " ".join(tables.split())  # rich wraps long lines
    assert "input: 8 files, 7 of them damaged (table below)" in flat
    assert f"{got['resyncs']} resyncs after damage" in flat
    assert "Damaged input files (7 of 8" in flat and all(f"│ {n} " in tables for n in expected)


def test_summary_lists_at_most_20_damaged_files():
    """A dump with many damaged files: the summary names 20 and points to `sift stats --json` for the rest."""
    recs = [{"file": f"/data/f{i:02d}.warc.gz", "kind": "not_a_warc", "content": "text", "records_kept": 0}
            for i in range(25)]
    lines = curate.format_damaged(recs, 100, "runs/x")
    assert lines[0].startswith("  damaged input files: 25 of 100, in /data/ (25 with nothing readable)")
    assert len(lines) == 1 + 20 + 1 and "f19.warc.gz" in lines[20] and "f20" not in "".join(lines)
    assert lines[-1].strip() == "... and 5 more (see sift stats runs/x --json)"
