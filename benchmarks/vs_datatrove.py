"""sift against datatrove, side by side on the same WARC files and the same cores: curate, MinHash dedup, tokenize.

    .venv/bin/python benchmarks/vs_datatrove.py [--input ../shared/data/warc/pages] [--workers 2] [--out runs/vs-datatrove]

datatrove (0.10.1, from PyPI) runs in its own venv, `.venv-datatrove`, made on first use (its pins clash with sift's:
it needs `fasttext-numpy2-wheel` and xxhash < 4). Both run offline: datatrove's lid.176 download is replaced by the
same fastText model sift bundles (placed in its asset cache), and its tokenizer is GPT-2 from sift's bundled
vocabulary and merges as a `tokenizer.json` (checked to give sift's token ids).

The pipelines, each as its tool recommends (datatrove: the FineWeb recipe's blocks, one task per file; sift: one
`sift run` job):
  datatrove: WarcReader -> URLFilter -> Trafilatura -> LanguageFilter(en >= 0.65) -> GopherRepetition -> GopherQuality
             -> PIIFormatter -> JsonlWriter; MinHash signatures -> buckets -> cluster -> filter; DocumentTokenizer
  sift:      read -> blocklist -> resiliparse extract -> langid(en >= 0.65) -> Gopher -> PII (quality classifier off);
             dedup: MinHash + LSH with verified pairs (exact-document and line dedup off); tokenize (GPT-2)
Different extractors (Trafilatura vs resiliparse) are part of what is compared; `--dt-extractor resiliparse` gives
datatrove sift's extraction library instead (its "resiliparse variant"). Agreement is reported by WARC record id.
Prints per-stage wall seconds, documents per second per core, and the documents each keeps. sift runs three times
(`--sift-runs`), once before datatrove and twice after, and its median run is compared: this 2-core box's speed
drifts by up to ~20 % over minutes, and one short run beside one long one would carry that into the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DT_VENV = REPO / ".venv-datatrove"
DT_PACKAGES = [
    "datatrove==0.10.1", "trafilatura==2.3.1", "lxml_html_clean", "spacy>=3.7,<4", "fasttext-numpy2-wheel",
    "tokenizers", "xxhash<4", "warcio==1.8.1", "faust-cchardet", "python-magic", "pyahocorasick", "fasteners",
    "tldextract", "orjson", "aiohttp", "resiliparse==2.0.1",
]


def ensure_datatrove_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    stamp = venv / ".sift-stamp"
    want = " ".join(DT_PACKAGES)
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    print(f"creating {venv} with datatrove (about a minute) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *DT_PACKAGES], check=True)
    stamp.write_text(want)
    return python


def gpt2_tokenizer_json(path: Path) -> Path:
    """GPT-2 as a Hugging Face tokenizer.json, from the bundled files; must give sift's ids."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    from pipelines.tokenize import load_tokenizer

    res = REPO / "operators" / "resources" / "gpt2"
    tok = Tokenizer(BPE.from_file(str(res / "vocab.json"), str(res / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    sample = (REPO / "tests" / "fixtures" / "text" / "cs336-address.txt").read_text()
    assert tok.encode(sample).ids == load_tokenizer("gpt2").encode(sample), "tokenizer.json disagrees with sift's GPT-2"
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def run_measured(cmd: list[str], log_path: Path, env: dict, cwd: Path | None = None) -> dict:
    """Run `cmd`, sampling the resident memory of it and all its descendants every 0.2 s (psutil)."""
    import psutil

    peak_proc, peak_total = 0, 0
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
                rss = []
                for p in procs:
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.Error:
                        pass
                peak_proc, peak_total = max(peak_proc, max(rss, default=0)), max(peak_total, sum(rss))
            except psutil.Error:
                pass
            time.sleep(0.2)
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}); see {log_path}")
    return {"wall": round(time.perf_counter() - t0, 2), "peak_process_mb": round(peak_proc / 2**20),
            "peak_total_mb": round(peak_total / 2**20)}


def replicate_inputs(src: Path, dst: Path, copies: int) -> Path:
    """Each input file holding its records `copies` times over (a larger file, as Common Crawl's ~1 GB files are:
    per-file start-up costs then weigh as little as they do at scale). Copy k > 0 of a record gets a new
    WARC-Record-ID (uuid5) and `#copy-k` on its URL; the payload bytes are unchanged, so both tools see k exact
    duplicates of every page (their dedup stages remove them)."""
    import gzip
    import re
    import uuid
    import zlib

    dst.mkdir(parents=True, exist_ok=True)
    stamp = dst / ".copies"
    if stamp.exists() and stamp.read_text() == f"{src} {copies}":
        return dst
    for path in sorted(src.glob("*.warc.gz")):
        raw, members, pos = path.read_bytes(), [], 0
        while pos < len(raw):
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            members.append(d.decompress(raw[pos:]))
            pos = len(raw) - len(d.unused_data)
        with open(dst / path.name, "wb") as f:
            f.write(raw)
            for k in range(1, copies):
                for record in members:
                    head, sep, rest = record.partition(b"\r\n\r\n")
                    if b"WARC-Type: warcinfo" in head:
                        continue
                    head = re.sub(rb"<urn:uuid:([0-9a-f-]+)>", lambda m: b"<urn:uuid:%s>" % str(
                        uuid.uuid5(uuid.UUID(m.group(1).decode()), str(k))).encode(), head)
                    head = re.sub(rb"(WARC-Target-URI: )(\S+)", lambda m: m.group(1) + m.group(2) + b"#copy-%d" % k, head)
                    f.write(gzip.compress(head + sep + rest, compresslevel=6))
    stamp.write_text(f"{src} {copies}")
    return dst


def run_datatrove(python: Path, args, work: Path, tokenizer: Path) -> dict:
    env = {**os.environ, "HF_HOME": str(work / "hf"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    cmd = [str(python), str(REPO / "benchmarks" / "_datatrove_pipeline.py"), "--input", args.input, "--work",
           str(work / "datatrove"), "--workers", str(args.workers), "--tokenizer", str(tokenizer),
           "--lid", str(REPO / "operators" / "resources" / "lid.176.ftz"),
           "--buckets", str(args.bands), "--hashes-per-bucket", str(args.rows), "--extractor", args.dt_extractor,
           ] + (["--fineweb"] if args.fineweb else [])
    measured = run_measured(cmd, work / "datatrove.log", env)
    result = json.loads((work / "datatrove" / "result.json").read_text())
    result.update(measured)
    steps = {}
    for step in result["datatrove_stats"]["curate"]:
        label = step["name"].split(": ", 1)[-1]  # "🔻 - FILTER: 🥇 Gopher Quality" -> "Gopher Quality"
        name = label.split(" ", 1)[1] if " " in label else label
        steps[name] = {"seconds": round(step["time_stats"]["total"], 2),
                       "in": step["stats"].get("total", step["stats"].get("documents", {}).get("total")),
                       "out": step["stats"].get("forwarded", step["stats"].get("documents", {}).get("total"))}
    result["steps"] = steps
    result["records_in"] = steps.get("Warc", {}).get("out")
    return result


def run_sift(args, work: Path, index: int = 0) -> dict:
    out = work / "sift"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    threshold = (1 / args.bands) ** (1 / args.rows)  # LSH's 50 % point for these bands x rows
    sets = [f"output={out}", "stages=[curate, dedup, tokenize]", "report=false", f"curate.input=[{args.input}]",
            "curate.quality.enabled=false", f"curate.num_cpus={args.workers}", "dedup.documents=false",
            "dedup.lines=false", f"dedup.num_perm={args.bands * args.rows}", f"dedup.jaccard_threshold={threshold:.3f}"]
    if args.copies > 1:  # every page is there `copies` times: dedup rightly removes all but one of each
        sets.append("dedup.allow_source_loss=true")
    if args.fineweb:  # the FineWeb recipe's C4 filter keeps lines without terminal punctuation
        sets += ["curate.c4.enabled=true", "curate.c4.filter_no_terminal_punct=false", "curate.fineweb.enabled=true"]
    cmd = [sys.executable, "-m", "pipelines.run", "--config", str(REPO / "configs" / "run-demo.yaml")]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS", None)
    measured = run_measured(cmd, work / f"sift-{index}.log" if index else work / "sift.log", env, cwd=REPO)
    record = json.loads((out / "pipeline.json").read_text())
    import pyarrow.dataset as pads

    def ids(folder: Path) -> list[str]:
        return pads.dataset(folder, format="parquet").to_table(columns=["doc_id"]).column("doc_id").to_pylist()

    stats = json.loads((out / "curate" / "stats.json").read_text())["stats"]
    manifest = json.loads((out / "tokens" / "tokens" / "manifest.json").read_text())
    return {
        **measured,
        "seconds": {s: r["seconds"] for s, r in record["stages"].items()},
        "records_in": stats["read/out"],
        "curated_ids": ids(out / "curate" / "documents"),
        "deduped_ids": ids(out / "dedup" / "documents"),
        "tokens": sum(v["tokens"] for v in manifest["summary"]["splits"].values()),
        "stats": stats,
    }


def median_run(runs: list[dict]) -> dict:
    """The run of median wall time (its stage times and outputs), with every run's wall and stage times beside it."""
    ordered = sorted(runs, key=lambda r: r["wall"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs"] = [{"wall": r["wall"], "seconds": r["seconds"], "peak_process_mb": r["peak_process_mb"]} for r in runs]
    return chosen


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", default=str(REPO.parent / "shared" / "data" / "warc" / "pages"), help="folder of .warc.gz")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="cores for both tools")
    p.add_argument("--bands", type=int, default=14, help="MinHash buckets (datatrove's default 14)")
    p.add_argument("--rows", type=int, default=8, help="hashes per bucket (datatrove's default 8)")
    p.add_argument("--venv", default=str(DT_VENV))
    p.add_argument("--fineweb", action="store_true", help="both add the FineWeb recipe's C4 and FineWeb quality filters")
    p.add_argument("--out", default=str(REPO / "runs" / "vs-datatrove"))
    p.add_argument("--copies", type=int, default=1, help="each file's records this many times over (larger files)")
    p.add_argument("--sift-runs", type=int, default=3,
                   help="sift runs (one before datatrove, the rest after); the median wall time is compared")
    p.add_argument("--dt-extractor", choices=("trafilatura", "resiliparse"), default="trafilatura",
                   help="datatrove's extractor: its default Trafilatura, or resiliparse (sift's library) swapped in")
    args = p.parse_args()
    if not Path(args.input).is_dir():
        print(f"no WARC folder at {args.input}", file=sys.stderr)
        return 2
    args.input = str(Path(args.input).resolve())
    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    if args.copies > 1:
        args.input = str(replicate_inputs(Path(args.input), work / f"input-x{args.copies}", args.copies))
    python = ensure_datatrove_venv(Path(args.venv))
    tokenizer = gpt2_tokenizer_json(work / "gpt2-tokenizer.json")

    # sift runs before and after datatrove: this box's speed drifts by up to ~20 % over minutes, and one sift run
    # (under a minute) next to one datatrove run (several) would carry that drift into the ratio; the median is used
    sift_runs = [run_sift(args, work, 0)] if args.sift_runs > 1 else []
    dt = run_datatrove(python, args, work, tokenizer)
    sift_runs += [run_sift(args, work, i) for i in range(len(sift_runs), args.sift_runs)]
    sf = median_run(sift_runs)

    cores = args.workers
    records = sf["records_in"]
    rows = [
        ("curate (read .. PII)", dt["seconds"]["curate"], sf["seconds"]["curate"]),
        ("MinHash dedup", dt["seconds"]["dedup"], sf["seconds"]["dedup"]),
        ("tokenize", dt["seconds"]["tokenize"], sf["seconds"]["tokenize"]),
        ("end to end (process wall)", dt["wall"], sf["wall"]),
    ]
    print(f"\n{len(list(Path(args.input).glob('*.warc.gz')))} WARC files in {args.input}: {records:,} HTML records (sift) / "
          f"{dt['records_in']:,} (datatrove); {cores} cores each\n")
    print(f"{'stage':<27} {'datatrove s':>12} {'sift s':>8} {'sift speed-up':>14} {'datatrove rec/s/core':>21} {'sift rec/s/core':>16}")
    for name, a, b in rows:
        print(f"{name:<27} {a:>12.1f} {b:>8.1f} {a / b:>13.2f}x {records / a / cores:>21.1f} {records / b / cores:>16.1f}")
    if len(sf.get("runs", [])) > 1:
        print("sift runs (the median is compared): " + ", ".join(
            f"{r['wall']:.1f} s (curate {r['seconds']['curate']:.1f})" for r in sf["runs"]))
    print(f"\npeak memory: datatrove largest process {dt['peak_process_mb']} MB, all processes {dt['peak_total_mb']} MB; "
          f"sift largest process {sf['peak_process_mb']} MB, all processes {sf['peak_total_mb']} MB (Ray's own daemons included)")
    print("\ndatatrove curate steps (summed over tasks, seconds): " +
          ", ".join(f"{k} {v['seconds']}" for k, v in dt["steps"].items()))
    dc, sc = set(dt["curated_ids"]), set(sf["curated_ids"])
    dd, sd = set(dt["deduped_ids"]), set(sf["deduped_ids"])
    print("\nagreement (WARC record ids):")
    print(f"  after curate: datatrove keeps {len(dc):,}, sift {len(sc):,}; both {len(dc & sc):,}, "
          f"only datatrove {len(dc - sc):,}, only sift {len(sc - dc):,} (Jaccard {len(dc & sc) / max(len(dc | sc), 1):.3f})")
    print(f"  after dedup:  datatrove keeps {len(dd):,} (removed {len(dc) - len(dd)}), sift {len(sd):,} "
          f"(removed {len(sc) - len(sd)}); both {len(dd & sd):,}")
    print(f"  tokens: datatrove {dt['tokens']:,}, sift {sf['tokens']:,}")
    summary = {
        "input": args.input, "cores": cores, "records": records, "datatrove_extractor": args.dt_extractor,
        "fineweb": args.fineweb, "copies": args.copies,
        "datatrove": {k: v for k, v in dt.items() if not k.endswith("_ids") and k != "datatrove_stats"},
        "sift": {k: v for k, v in sf.items() if not k.endswith("_ids") and k != "stats"},
        "agreement": {"curate_both": len(dc & sc), "curate_only_datatrove": len(dc - sc), "curate_only_sift": len(sc - dc),
                      "dedup_both": len(dd & sd), "dedup_datatrove": len(dd), "dedup_sift": len(sd)},
    }
    (work / "results.json").write_text(json.dumps(summary, indent=1))
    print(f"\nresults: {work / 'results.json'}; logs: {work}/datatrove.log, {work}/sift.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
