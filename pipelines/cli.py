"""The `sift` command: `sift curate ...` (more subcommands arrive with later stages)."""

from __future__ import annotations

import sys

COMMANDS = {
    "run": "pipelines.run",
    "curate": "pipelines.curate",
    "dedup": "pipelines.dedup",
    "dedup-report": "pipelines.dedup:report_main",
    "train-classifier": "training.classifier",
    "tokenize": "pipelines.tokenize",
    "train-tokenizer": "training.tokenizer",
    "stats": "pipelines.report",
    "serve": "pipelines.serve.cli",
    "pretrain": "training.pretrain",
    "generate": "training.sample",
    "scaling": "training.scaling",
    "align": "training.align.grpo",
}


USAGE = (
    "usage: sift <command> [options]   (sift <command> --help for its options; sift --version)\n\ncommands:\n"
    "  run               every stage as one job: curate, dedup, tokenize (+ report), pretrain [, sweep, align]\n"
    "  curate            WARC files -> clean document shards\n"
    "  dedup             exact, near-duplicate and line dedup of a curate run\n"
    "  dedup-report      cluster sizes and the largest clusters of a dedup run\n"
    "  train-classifier  train a fastText document classifier (quality, NSFW, toxicity) with a card\n"
    "  train-tokenizer   train a byte-level BPE tokenizer on a curated run or text files\n"
    "  tokenize          tokenize a curate/dedup run into memory-mappable Arrow token shards\n"
    "  stats             funnel, languages, quality, domains, tokens and dedup of a run (+ HTML report)\n"
    "  serve             web view of the runs in a folder: live funnel, why-removed lookup, shard browser\n"
    "  pretrain          train the TransformerLM on a tokenize run's shards (--num-workers N: Ray Train DDP)\n"
    "  generate          sample text from a pretrain checkpoint (temperature, top-p)\n"
    "  scaling fit       IsoFLOP + parametric scaling-law fits of training runs, with bootstrap intervals\n"
    "  scaling sweep     plan and run an IsoFLOP sweep (one Ray task per run) on a tokenize run, then fit it\n"
    "  align sft|grpo|dpo|ei  SFT, GRPO (verifiable rewards, Ray rollout actor), DPO, expert iteration\n"
)


def version() -> str:
    """The installed distribution's version; the source tree's pyproject.toml when sift is not installed."""
    try:
        from importlib.metadata import PackageNotFoundError, version as dist_version

        return dist_version("sift")
    except PackageNotFoundError:
        pass
    try:
        import tomllib
        from pathlib import Path

        with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except Exception:  # no pyproject, no tomllib (Python < 3.11), no version field
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv and argv[0] in ("-V", "--version"):
        print(f"sift {version()}")
        return 0
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] not in COMMANDS:
        what = "option" if argv[0].startswith("-") else "command"
        print(f"error: unknown {what} {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    import importlib

    module_name, _, func = COMMANDS[argv[0]].partition(":")
    entry = getattr(importlib.import_module(module_name), func or "main")
    return entry(argv[1:], prog=f"sift {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
