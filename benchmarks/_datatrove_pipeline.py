"""datatrove's side of `benchmarks/vs_datatrove.py`; runs inside the datatrove venv (no sift imports).

    python _datatrove_pipeline.py --input DIR --work DIR --workers N --lid lid.176.ftz --tokenizer tokenizer.json

The FineWeb-style datatrove pipeline, offline: WarcReader -> URLFilter -> Trafilatura (or, with
--extractor resiliparse, resiliparse in a datatrove extractor step) -> LanguageFilter (ft176,
en >= 0.65) -> GopherRepetitionFilter -> GopherQualityFilter [-> C4QualityFilter -> FineWebQualityFilter with --fineweb]
-> PIIFormatter -> JsonlWriter; then MinHash dedup
in its four steps (signatures, buckets, clusters, filter); then DocumentTokenizer (GPT-2). One task per WARC file,
`workers` processes. Writes <work>/result.json: wall seconds per stage, documents per stage, kept ids.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import shutil
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--lid", required=True, help="fastText lid.176 model file (placed where datatrove looks for it)")
    p.add_argument("--tokenizer", required=True, help="a tokenizer.json (GPT-2)")
    p.add_argument("--buckets", type=int, default=14)
    p.add_argument("--hashes-per-bucket", type=int, default=8)
    p.add_argument("--fineweb", action="store_true", help="add the FineWeb recipe's C4 and FineWeb quality filters")
    p.add_argument("--extractor", choices=("trafilatura", "resiliparse"), default="trafilatura",
                   help="datatrove's Trafilatura (its default), or resiliparse in a datatrove extractor step")
    args = p.parse_args()

    # datatrove downloads lid.176.bin into huggingface_hub's assets cache on first use: put the model there instead
    from datatrove.io import strip_protocol
    from datatrove.utils.lid import FT176LID
    from huggingface_hub import cached_assets_path

    lid_dir = cached_assets_path(library_name="datatrove", namespace="lid", subfolder=FT176LID.MODEL_SUBFOLDER)
    target = os.path.join(str(lid_dir), strip_protocol(FT176LID.MODEL_URL).replace("/", "_"))
    if not os.path.exists(target + ".completed"):  # datatrove's marker of a finished download
        shutil.copy(args.lid, target)
        open(target + ".completed", "w").close()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.extractors.base import BaseExtractor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
        URLFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from datatrove.pipeline.writers import JsonlWriter

    class Resiliparse(BaseExtractor):
        """resiliparse's main-content extraction (sift's extractor's library and its default options) as a datatrove
        step: datatrove has none of its own. Runs in datatrove's per-document sandbox like Trafilatura."""

        name = "Resiliparse"

        def __init__(self, timeout: float = 1):
            super().__init__(timeout)

        def extract(self, text: str) -> str:
            from resiliparse.extract.html2text import extract_plain_text

            return extract_plain_text(text, main_content=True, alt_texts=False, list_bullets=False, comments=False)

    extractor = Trafilatura(favour_precision=True) if args.extractor == "trafilatura" else Resiliparse()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    files = sorted(glob.glob(os.path.join(args.input, "*.warc.gz")))
    n = len(files)
    result: dict = {"files": n, "workers": args.workers, "seconds": {}}

    def run(name: str, pipeline: list, tasks: int, workers: int | None = None) -> None:
        t0 = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers or args.workers,
                              logging_dir=f"{work}/logs/{name}", skip_completed=False).run()
        result["seconds"][name] = round(time.perf_counter() - t0, 2)

    run("curate", [
        WarcReader(args.input, glob_pattern="*.warc.gz", default_metadata={}),
        URLFilter(),
        extractor,
        LanguageFilter(languages=["en"], language_threshold=0.65),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        *([C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter()] if args.fineweb else []),
        PIIFormatter(),
        JsonlWriter(f"{work}/curated"),
    ], tasks=n)

    config = MinhashConfig(n_grams=5, num_buckets=args.buckets, hashes_per_bucket=args.hashes_per_bucket)
    t0 = time.perf_counter()
    run("minhash_signatures", [JsonlReader(f"{work}/curated"), MinhashDedupSignature(f"{work}/sigs", config=config)], tasks=n)
    run("minhash_buckets", [MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=config)],
        tasks=config.num_buckets)
    run("minhash_cluster", [MinhashDedupCluster(f"{work}/buckets", f"{work}/remove_ids", config=config)], tasks=1, workers=1)
    run("minhash_filter", [JsonlReader(f"{work}/curated"), MinhashDedupFilter(f"{work}/remove_ids"),
                           JsonlWriter(f"{work}/deduped")], tasks=n)
    result["seconds"]["dedup"] = round(time.perf_counter() - t0, 2)
    run("tokenize", [JsonlReader(f"{work}/deduped"),
                     DocumentTokenizer(f"{work}/tokens", tokenizer_name_or_path=args.tokenizer, eos_token="<|endoftext|>")],
        tasks=n)

    def ids(folder: str) -> list[str]:
        out = []
        for path in sorted(glob.glob(f"{folder}/*.jsonl.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                out += [json.loads(line)["id"] for line in f if line.strip()]
        return out

    stats = {}
    for stage in ("curate",):
        with open(f"{work}/logs/{stage}/stats.json") as f:
            stats[stage] = json.load(f)
    result["datatrove_stats"] = stats
    result["curated_ids"] = ids(f"{work}/curated")
    result["deduped_ids"] = ids(f"{work}/deduped")
    tokens = 0
    for meta in glob.glob(f"{work}/tokens/*.metadata"):
        with open(meta) as f:
            tokens += int(f.read().split("\n")[1] or 0)
    result["tokens"] = tokens
    with open(f"{work}/result.json", "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
