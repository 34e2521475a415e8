"""The `sift` command: `sift curate ...` (more subcommands arrive with later stages)."""

from __future__ import annotations

import sys

COMMANDS = {
    "curate": "pipelines.curate",
    "dedup": "pipelines.dedup",
    "train-classifier": "training.classifier",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(
            "usage: sift <command> [options]\n\ncommands:\n"
            "  curate            WARC files -> clean document shards\n"
            "  dedup             exact document and line dedup of a curate run\n"
            "  train-classifier  train a fastText document classifier (quality, NSFW, toxicity) with a card\n"
        )
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:], prog=f"sift {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
