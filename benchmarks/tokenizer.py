"""Tokenizer benchmarks: BPE training vs HuggingFace `tokenizers`, encoding vs tiktoken, the tokenize stage on Ray.

    .venv/bin/python benchmarks/tokenizer.py [--shared ../shared/data] [--vocab 10000] [--repeat 4]

(a) BPE training time, one thread each (sift: one process; HF: RAYON_NUM_THREADS=1), same vocab size and special
    token, on: cs336-corpus.en (vocab 500), the text/lm corpora, "shared text" (text/lm + quality_seed texts +
    the text sift extracts from the 1,082 warc/pages), and that repeated `--repeat` times.
(b) Encoding MB/s on one core of the shared text with GPT-2's BPE: sift's Tokenizer (tiktoken backend), its
    pure-Python specification, tiktoken's own gpt2 encoding built from the same files, HF `tokenizers`; ids are
    checked identical.
(c) The tokenize stage (`pipelines.tokenize.run`) on 2 Ray workers over the shared text repeated 8 times, in 16
    document shards: wall time and MB/s of text, including Ray start-up of the stage's actors and packing.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: one thread, set before it is imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
from collections import Counter
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EOT = "<|endoftext|>"


def shared_texts(shared: Path) -> list[str]:
    """Documents of the shared real text: text/lm files, quality_seed texts, extracted warc/pages."""
    docs: list[str] = []
    for p in sorted((shared / "text" / "lm").iterdir()):
        docs.append(p.read_text(encoding="utf-8", errors="replace"))
    for line in (shared / "text" / "quality" / "quality_seed.jsonl").read_text(encoding="utf-8").split("\n"):
        if line.strip():
            docs.append(json.loads(line)["text"])
    from operators.extract import extract_text
    from operators.warc import ReadConfig, iter_warc

    for warc in sorted((shared / "warc" / "pages").glob("*.warc.gz")):
        with open(warc, "rb") as f:
            for row in iter_warc(f, str(warc), ReadConfig(), Counter()):
                text = extract_text(row.html)
                if text:
                    docs.append(text)
    return docs


def time_sift(path: Path, vocab: int) -> float:
    from operators.bpe import train_bpe

    t = time.perf_counter()
    train_bpe(path, vocab, [EOT], num_workers=1)
    return time.perf_counter() - t


def time_hf(path: Path, vocab: int) -> float:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t = time.perf_counter()
    tok.train([str(path)], trainer)
    return time.perf_counter() - t


def bench_training(shared: Path, vocab: int, repeat: int, tmp: Path, text: str) -> list[dict]:
    rows = []
    cs336 = shared / "text" / "lm" / "cs336-corpus.en"
    rows.append({"corpus": "cs336-corpus.en", "mb": cs336.stat().st_size / 1e6, "vocab": 500,
                 "sift_s": min(time_sift(cs336, 500) for _ in range(3)), "hf_s": min(time_hf(cs336, 500) for _ in range(3))})
    lm = tmp / "lm.txt"
    lm.write_text(EOT.join(p.read_text(encoding="utf-8", errors="replace") for p in sorted((shared / "text" / "lm").iterdir())))
    big = tmp / "shared.txt"
    big.write_text(text)
    rep = tmp / f"shared-x{repeat}.txt"
    rep.write_text(EOT.join([text] * repeat))
    for name, path in (("text/lm", lm), ("shared text", big), (f"shared text x{repeat}", rep)):
        rows.append({"corpus": name, "mb": path.stat().st_size / 1e6, "vocab": vocab,
                     "sift_s": time_sift(path, vocab), "hf_s": time_hf(path, vocab)})
    for r in rows:
        r["ratio"] = r["sift_s"] / r["hf_s"]
    return rows


def bench_encoding(text: str) -> list[dict]:
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    from operators.bpe import GPT2_PATTERN
    from operators.tokenizer import gpt2_tokenizer

    gpt2_dir = REPO / "operators" / "resources" / "gpt2"
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(gpt2_dir / "merges.txt"), encoder_json_file=str(gpt2_dir / "vocab.json"))
    ref = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})
    sift = gpt2_tokenizer(gpt2_dir)
    hf = HFTokenizer(models.BPE.from_file(str(gpt2_dir / "vocab.json"), str(gpt2_dir / "merges.txt")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    mb = len(text.encode()) / 1e6
    docs = text.split(EOT)

    def best(fn, n=3):
        out, times = None, []
        for _ in range(n):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return out, min(times)

    expected, t_ref = best(lambda: [ref.encode_ordinary(d) for d in docs])
    got, t_sift = best(lambda: [sift.encode(d) for d in docs])
    py_docs = docs[: max(1, len(docs) // 8)]
    py_mb = sum(len(d.encode()) for d in py_docs) / 1e6
    sift._cache.clear()
    got_py, t_py = best(lambda: [sift.encode(d, backend="python") for d in py_docs], n=1)
    got_hf, t_hf = best(lambda: [e.ids for e in (hf.encode(d) for d in docs)], n=1)
    assert got == expected, "sift ids differ from tiktoken gpt2"
    assert got_py == expected[: len(py_docs)], "the Python specification differs from tiktoken gpt2"
    hf_same = got_hf == expected
    return [
        {"encoder": "tiktoken gpt2 (reference)", "mb_s": mb / t_ref, "ratio": 1.0, "same_ids": True},
        {"encoder": "sift Tokenizer (tiktoken backend)", "mb_s": mb / t_sift, "ratio": t_ref / t_sift, "same_ids": True},
        {"encoder": "sift Tokenizer, Python spec (cold cache)", "mb_s": py_mb / t_py, "ratio": (py_mb / t_py) / (mb / t_ref), "same_ids": True},
        {"encoder": "HF tokenizers BPE (1 thread)", "mb_s": mb / t_hf, "ratio": (mb / t_hf) / (mb / t_ref), "same_ids": hf_same},
    ]


def bench_stage(text: str, tmp: Path, workers: int = 2, shards: int = 16, repeat: int = 8) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from pipelines.tokenize import TokenizeConfig, run

    docs = [d for d in text.split(EOT) if d.strip()] * repeat  # enough text that Ray's fixed start-up costs amortise
    # cut the big files into ~20 kB documents so shards balance
    pieces = []
    for d in docs:
        pieces += [d[i : i + 20000] for i in range(0, len(d), 20000)]
    src = tmp / "docs-run"
    (src / "documents").mkdir(parents=True)
    for k in range(shards):
        part = pieces[k::shards]
        pq.write_table(pa.table({"doc_id": [f"d{k}-{i}" for i in range(len(part))], "text": part,  # noqa: E501
                                 "url": [None] * len(part)}), src / "documents" / f"s{k}.parquet")
    (src / "documents" / "_SUCCESS").write_text("")
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        t = time.perf_counter()
        summary = run(TokenizeConfig(input=str(src), output=str(tmp / "tok-run"), shard_tokens=1_000_000,
                                     validation_fraction=0.01))
        wall = time.perf_counter() - t
    finally:
        ray.shutdown()
    mb = summary["stats"]["tokenize/text_bytes"] / 1e6
    return {"workers": workers, "documents": summary["documents"], "tokens": summary["tokens"], "mb": mb,
            "wall_s": wall, "mb_s": mb / wall, "mb_s_per_worker": mb / wall / workers,
            "tokenize_s": summary["tokenize_seconds"], "pack_s": summary["pack_seconds"]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--repeat", type=int, default=4)
    p.add_argument("--skip", default="", help="comma list of a,b,c to skip")
    args = p.parse_args()
    shared = Path(args.shared)
    skip = set(filter(None, args.skip.split(",")))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; one thread per encoder/trainer")
    t = time.perf_counter()
    text = EOT.join(shared_texts(shared))
    print(f"shared text: {len(text.encode()) / 1e6:.1f} MB ({time.perf_counter() - t:.0f}s to build)\n")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "a" not in skip:
            print(f"(a) BPE training, vocab {args.vocab} (cs336: 500), one thread each")
            print(f"{'corpus':<22}{'MB':>7}{'vocab':>7}{'sift s':>9}{'HF s':>9}{'sift/HF':>9}")
            for r in bench_training(shared, args.vocab, args.repeat, tmp, text):
                print(f"{r['corpus']:<22}{r['mb']:>7.1f}{r['vocab']:>7}{r['sift_s']:>9.2f}{r['hf_s']:>9.2f}{r['ratio']:>9.2f}")
            print()
        if "b" not in skip:
            print("(b) encoding with GPT-2's BPE, one core")
            print(f"{'encoder':<42}{'MB/s':>8}{'vs tiktoken':>13}{'same ids':>10}")
            for r in bench_encoding(text):
                print(f"{r['encoder']:<42}{r['mb_s']:>8.2f}{r['ratio']:>13.2f}{str(r['same_ids']):>10}")
            print()
        if "c" not in skip:
            r = bench_stage(text, tmp)
            print("(c) tokenize stage on Ray (read Parquet, GPT-2 encode, parts, pack shards, manifest)")
            print(f"workers {r['workers']}: {r['documents']:,} documents, {r['tokens']:,} tokens, {r['mb']:.1f} MB in "
                  f"{r['wall_s']:.1f}s = {r['mb_s']:.2f} MB/s ({r['mb_s_per_worker']:.2f} MB/s per worker); "
                  f"tokenize phase {r['tokenize_s']:.1f}s, pack phase {r['pack_s']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
