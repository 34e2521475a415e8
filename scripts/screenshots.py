"""Screenshots of every `sift serve` page on the demo run, for docs/ (run after `bash scripts/demo.sh`):

    .venv/bin/python scripts/screenshots.py [--runs runs] [--out docs]

Needs Debian's chromium and chromium-driver (what the browser tests use)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.serve import catalog
from tests.serve.helpers import chromium, serve_in_thread


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=str(REPO / "runs"))
    p.add_argument("--run", default="demo")
    p.add_argument("--out", default=str(REPO / "docs"))
    args = p.parse_args()
    run = catalog.get_run(args.runs, args.run)
    import pyarrow.dataset as pads

    excluded = pads.dataset(run.stage_dirs()["curate"].path("exclusions"), format="parquet").to_table().to_pylist()
    removed = next((e for e in excluded if e["stage"] == "gopher"), excluded[0])
    shards = catalog.list_shards(run)
    doc_shard = max(shards["documents"]["dedup"], key=lambda s: s["documents"])["shard"]
    tok = shards["tokens"][0]
    pages = {
        "serve-runs": "/",
        "serve-run": f"/runs/{run.name}",
        "serve-lookup": f"/runs/{run.name}/lookup?q={removed['url']}",
        "serve-shards": f"/runs/{run.name}/shards",
        "serve-documents": f"/runs/{run.name}/shards/dedup/{doc_shard}",
        "serve-tokens": f"/runs/{run.name}/tokens/{tok['split']}/{tok['shard']}",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with serve_in_thread(args.runs) as base, chromium(1280, 1000) as driver:
        for name, path in pages.items():
            driver.get(base + path)
            height = min(driver.execute_script("return document.body.scrollHeight"), 2400)
            driver.set_window_size(1280, max(height, 700))
            driver.save_screenshot(str(out / f"{name}.png"))
            driver.set_window_size(1280, 1000)
            print(f"{out / name}.png  <- {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
