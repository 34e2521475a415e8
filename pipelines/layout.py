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
        import logging

        # Ray's own default for a new local cluster (token authentication) stays; only its notice saying so on every
        # start is kept out of the output (setting RAY_AUTH_MODE here instead breaks the start: Ray has already read it)
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)


# Ray errors that mean "the machine failed", not "the code failed": worth a retry of work that writes nothing
_SYSTEM_ERRORS = ("ActorDiedError", "ActorUnavailableError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
                  "ObjectReconstructionFailedError", "WorkerCrashedError", "LocalRayletDiedError", "RaySystemError",
                  "ObjectFetchTimedOutError")


def is_system_failure(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) says a Ray node, worker or object was lost.

    Ray Data re-raises a task's failure as a RayTaskError or, when the original cannot be rebuilt, an
    UnserializableException whose text carries the original's type, so the names are matched in the text too."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in _SYSTEM_ERRORS:
            return True
        if type(exc).__name__ in ("RayTaskError", "UnserializableException") and any(
                f"ray.exceptions.{name}" in str(exc) for name in _SYSTEM_ERRORS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_system_failures(fn, attempts: int, what: str):
    """`fn()`, made again up to `attempts` times in all when a system failure interrupts it (`is_system_failure`).
    Only for work that writes nothing or writes atomically: a rerun must not double anything."""
    import sys
    import time

    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # re-raised unless a system failure with attempts left
            if attempt == attempts or not is_system_failure(exc):
                raise
            print(f"{what}: system failure ({type(exc).__name__}), attempt {attempt} of {attempts}; "
                  f"making it again", file=sys.stderr, flush=True)
            time.sleep(2)
    raise AssertionError("unreachable")
