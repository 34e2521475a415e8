"""Names shared by every stage's output folder, and the Ray connection helper.

Kept free of the curation operators (WARC parsing, extraction, fastText) so that tokenize and training import
only what they use: a GPU training node needs pyarrow and torch, not resiliparse.
"""

from __future__ import annotations

import os

DOCS_DIR = "documents"  # only Parquet shards (+ _SUCCESS): readable as one dataset by pyarrow / Ray Data
EXCLUSIONS_DIR = "exclusions"  # with write_exclusions: removed documents with stage and reason
STATS_DIR = "shard_stats"  # <shard>.json per shard; written last, so it marks the unit complete
PIPELINE_FILE = "pipeline.json"  # a `sift run` job's record: config and per-stage status, hash, seconds, summary


def init_ray(num_cpus: int | None) -> None:
    """Connect to RAY_ADDRESS (a cluster, or the job's own under `ray job submit`), else start a
    local Ray sized to this machine (or to `num_cpus`)."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
