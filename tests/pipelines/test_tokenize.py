"""`sift tokenize` / `sift train-tokenizer` / `sift stats` on a local Ray, over a real curated sample."""

from __future__ import annotations

import base64
from dataclasses import replace
import hashlib
import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from operators.classifier import ClassifierConfig
from operators.gopher import GopherConfig
from operators.langid import LangIDConfig
from operators.tokenizer import Tokenizer
from pipelines import report, tokenize
from pipelines.curate import CurateConfig
from pipelines.curate import run as curate
from pipelines.dedup import DedupConfig
from pipelines.dedup import run as dedup
from pipelines.stats import balance_errors
from pipelines.tokenize import (
    PackShard,
    TokenizeConfig,
    TokenizeShard,
    plan_shards,
    read_token_shard,
    token_dtype,
    validation_mask,
)
from tests.conftest import SAMPLE
from training.tokenizer import train_tokenizer

pytestmark = pytest.mark.ray
EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    base = tmp_path_factory.mktemp("tok")
    inputs = tuple(str(p) for p in sorted(SAMPLE.glob("*.warc.gz"))[:3])
    curate(CurateConfig(input=inputs, output=str(base / "curate"), langid=LangIDConfig(languages=()),
                        gopher=GopherConfig(enabled=False), quality=ClassifierConfig(enabled=False)))
    dedup(DedupConfig(input=str(base / "curate"), output=str(base / "dedup")))
    return base


def _cfg(runs, out, **kw) -> TokenizeConfig:
    return TokenizeConfig(input=str(runs / "dedup"), output=str(out), shard_tokens=kw.pop("shard_tokens", 30_000),
                          validation_fraction=kw.pop("validation_fraction", 0.2), **kw)


def _all_docs(runs) -> dict[str, str]:
    t = pads.dataset(runs / "dedup" / "documents", format="parquet").to_table(columns=["doc_id", "text"])
    return dict(zip(t.column("doc_id").to_pylist(), t.column("text").to_pylist()))


def test_shards_hold_every_document_exactly_once_and_decode_to_its_text(runs, tmp_path):
    summary = tokenize.run(_cfg(runs, tmp_path / "t"))
    assert balance_errors(summary["stats"]) == []
    tok = Tokenizer.from_dir(tokenize.BUNDLED_GPT2)
    texts = {k: v for k, v in _all_docs(runs).items() if v.strip()}
    manifest = json.loads((tmp_path / "t" / "tokens" / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["eot_id"] == 50256
    seen = {}
    for split in ("train", "validation"):
        assert manifest["shards"][split], f"no {split} shards"
        for entry in manifest["shards"][split]:
            path = tmp_path / "t" / "tokens" / entry["file"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
            tokens = read_token_shard(path)
            assert tokens.dtype == np.uint16 and not tokens.flags.owndata  # a view of the mapped file
            assert len(tokens) == entry["tokens"]
            docs = pq.read_table(tmp_path / "t" / "tokens" / entry["docs_file"]).to_pylist()
            assert len(docs) == entry["documents"]
            end = 0
            for d in docs:
                assert d["token_offset"] == end  # back to back
                ids = tokens[d["token_offset"] : d["token_offset"] + d["num_tokens"]]
                assert tokens[d["token_offset"] + d["num_tokens"]] == 50256  # end-of-text after each document
                assert tok.decode(ids.tolist()) == texts[d["doc_id"]]
                assert d["url"] and d["source_file"]
                end = d["token_offset"] + d["num_tokens"] + 1
                seen[d["doc_id"]] = split
            assert end == len(tokens)
    assert set(seen) == set(texts)
    # the split is the document-hash rule
    ids = sorted(seen)
    expected_val = {i for i, v in zip(ids, validation_mask(ids, 0.2, "sift-split-v1")) if v}
    assert {i for i, s in seen.items() if s == "validation"} == expected_val
    # shards are about shard_tokens: only the last document of a shard may cross the target
    for entry in manifest["shards"]["train"][:-1]:
        assert entry["tokens"] >= 30_000 or len(manifest["shards"]["train"]) == 1
    assert not (tmp_path / "t" / "parts").exists()  # parts are removed after packing


def test_output_does_not_depend_on_scheduling(runs, tmp_path):
    """A serial, reversed-order run of the same workers, and the in-process path for small inputs, give
    byte-identical shards to the Ray Data run."""
    cfg = _cfg(runs, tmp_path / "ray", local_max_docs=0)
    tokenize.run(cfg)
    tokenize.run(_cfg(runs, tmp_path / "local"))  # small: in-process
    manifests = [json.loads((tmp_path / n / "tokens" / "manifest.json").read_text()) for n in ("ray", "local")]
    assert manifests[0]["shards"] == manifests[1]["shards"] and manifests[0]["shards"]["train"]
    serial = _cfg(runs, tmp_path / "serial", keep_parts=True)
    worker = TokenizeShard(serial)
    shards = sorted(p.stem for p in (runs / "dedup" / "documents").glob("*.parquet"))
    for s in reversed(shards):
        worker({"shard": s})
    packer = PackShard(serial, "uint16")
    for split in ("train", "validation"):
        parts = [(s, json.loads((tmp_path / "serial" / "part_stats" / f"{s}.json").read_text()).get(f"tokenize/{split}_tokens", 0)) for s in shards]
        for plan in reversed(plan_shards(parts, serial.shard_tokens)):
            packer({**plan, "split": split})
    a = sorted((tmp_path / "ray" / "tokens").rglob("shard-*"))
    b = sorted((tmp_path / "serial" / "tokens").rglob("shard-*"))
    c = sorted((tmp_path / "local" / "tokens").rglob("shard-*"))
    assert [p.name for p in a] == [p.name for p in b] == [p.name for p in c] and a
    for x, y, z in zip(a, b, c):
        assert x.read_bytes() == y.read_bytes() == z.read_bytes(), x.name


def test_rerun_skips_and_interrupted_run_redoes_only_missing(runs, tmp_path):
    cfg = _cfg(runs, tmp_path / "t", keep_parts=True)
    first = tokenize.run(cfg)
    assert tokenize.run(cfg)["already_complete"]
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "t" / "tokens").rglob("shard-*")}
    # simulate a crash: one document shard's part never finished, no shards were packed
    victim = sorted((tmp_path / "t" / "part_stats").glob("*.json"))[0]
    victim.unlink()
    (tmp_path / "t" / "tokens" / "_SUCCESS").unlink()
    for p in (tmp_path / "t" / "tokens").rglob("shard-*"):
        p.unlink()
    again = tokenize.run(cfg)
    assert again["input_shards_processed_now"] == 1 and again["tokens"] == first["tokens"]
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "t" / "tokens").rglob("shard-*")}
    assert after == before
    with pytest.raises(ValueError, match="different settings"):
        tokenize.run(_cfg(runs, tmp_path / "t", shard_tokens=999))
    # the same settings on another input: refused, not added to this run's shards
    with pytest.raises(ValueError, match=f"holds a tokenize run of {runs / 'dedup'}, not of {runs / 'curate'}"):
        tokenize.run(replace(cfg, input=str(runs / "curate")))


def test_trained_tokenizer_end_to_end(runs, tmp_path):
    card = train_tokenizer([str(runs / "dedup")], str(tmp_path / "tk"), 1000, [EOT])
    assert card["vocab_size"] == 1000 and card["documents"] > 5
    merges = (tmp_path / "tk" / "merges.txt").stat().st_mtime_ns
    # the same command again keeps the tokenizer; other settings into the same folder are refused
    assert train_tokenizer([str(runs / "dedup")], str(tmp_path / "tk"), 1000, [EOT])["skipped"] is True
    assert (tmp_path / "tk" / "merges.txt").stat().st_mtime_ns == merges
    with pytest.raises(ValueError, match="trained with other settings \\(requested_vocab_size 1000 there vs 1200 now\\)"):
        train_tokenizer([str(runs / "dedup")], str(tmp_path / "tk"), 1200, [EOT])
    tok = Tokenizer.from_dir(tmp_path / "tk")
    assert tok.backend == "tiktoken" and tok.special_ids[EOT] == 0
    tokenize.run(_cfg(runs, tmp_path / "t", tokenizer=str(tmp_path / "tk")))
    manifest = json.loads((tmp_path / "t" / "tokens" / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocab_size"] == 1000 and manifest["tokenizer"]["eot_id"] == 0
    entry = manifest["shards"]["train"][0]
    tokens = read_token_shard(tmp_path / "t" / "tokens" / entry["file"])
    doc = pq.read_table(tmp_path / "t" / "tokens" / entry["docs_file"]).to_pylist()[0]
    assert tok.decode(tokens[: doc["num_tokens"]].tolist()) == _all_docs(runs)[doc["doc_id"]]


def test_bad_configs(runs, tmp_path):
    with pytest.raises(ValueError, match="expected `gpt2` or a folder"):
        tokenize.run(_cfg(runs, tmp_path / "a", tokenizer=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="not a special token"):
        tokenize.run(_cfg(runs, tmp_path / "b", eot_token="<|eot|>"))
    with pytest.raises(ValueError, match="not a finished"):
        tokenize.run(TokenizeConfig(input=str(tmp_path), output=str(tmp_path / "c")))
    with pytest.raises(ValueError, match="validation_fraction"):
        tokenize.run(_cfg(runs, tmp_path / "d", validation_fraction=1.5))
    with pytest.raises(ValueError, match="hold no text"):
        (tmp_path / "empty.txt").write_text("")
        train_tokenizer([str(tmp_path / "empty.txt")], str(tmp_path / "tk"), 300, [EOT])


def test_plan_and_dtype():
    plans = plan_shards([("a", 10), ("b", 0), ("c", 25)], 12)
    assert [(p["lo"], p["hi"], p["parts"]) for p in plans] == [
        (0, 12, [{"name": "a", "start": 0}, {"name": "c", "start": 10}]),
        (12, 24, [{"name": "c", "start": 10}]), (24, 36, [{"name": "c", "start": 10}])]
    assert plan_shards([("a", 0)], 5) == []
    assert token_dtype(50257) == pa.uint16() and token_dtype(65536) == pa.uint16() and token_dtype(65537) == pa.uint32()
    m = validation_mask([f"doc{i}" for i in range(20000)], 0.1, "s")
    assert 0.09 < m.mean() < 0.11
    assert (m == validation_mask([f"doc{i}" for i in range(20000)], 0.1, "s")).all()


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[bytes] = []
        self.captions = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("src", "").startswith("data:image/png;base64,"):
            self.images.append(base64.b64decode(a["src"].split(",", 1)[1]))
        if tag == "figcaption":
            self.captions += 1


def test_stats_report_follows_the_chain_and_renders(runs, tmp_path, capsys):
    out = tmp_path / "t"
    tokenize.run(_cfg(runs, out))
    rep = report.collect(str(out))
    assert [r["kind"] for r in rep.runs] == ["curate", "dedup", "tokenize"]
    stages = [f[0] for f in rep.funnel()]
    assert stages[0] == "read" and stages[-1] == "tokenize" and "exact_dedup" in stages
    curated = json.loads((runs / "curate" / "stats.json").read_text())["stats"]
    assert rep.counters["read/in"] == curated["read/in"]
    data = rep.to_json()
    assert data["documents"] == len(_all_docs(runs))
    assert data["tokens"] == json.loads((out / "stats.json").read_text())["tokens"]
    assert report.main([str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Funnel" in printed and "Token shards" in printed
    html_text = (out / "report.html").read_text()
    parser = _Images()
    parser.feed(html_text)
    assert len(parser.images) >= 6 and parser.captions == len(parser.images)
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") and len(img) > 2000 for img in parser.images)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:  # render it for real when a browser is installed (Debian `chromium`)
        shot = tmp_path / "shot.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                        "--window-size=1000,4000", (out / "report.html").as_uri()], capture_output=True, timeout=120)
        assert shot.exists() and shot.stat().st_size > 20_000


def test_stats_on_a_run_in_progress(runs, tmp_path):
    """A curate run with one shard's stats missing (still running) reports the finished shards only."""
    partial = tmp_path / "partial"
    shutil.copytree(runs / "curate", partial)
    stats_files = sorted((partial / "shard_stats").glob("*.json"))
    stats_files[0].unlink()
    (partial / "documents" / "_SUCCESS").unlink()
    rep = report.collect(str(partial))
    assert rep.units["curate"] == len(stats_files) - 1
    full = report.collect(str(runs / "curate"))
    assert rep.counters["read/in"] < full.counters["read/in"]
    with pytest.raises(ValueError, match="not a sift run"):
        report.collect(str(tmp_path / "nothing"))
