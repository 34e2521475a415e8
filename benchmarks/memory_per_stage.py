"""Memory a worker needs in each curation stage: peak RSS of every process, sampled while the stage runs.

    python benchmarks/memory_per_stage.py                  # the 8 shared page WARCs (1,082 pages) if present
    python benchmarks/memory_per_stage.py --input data/sample

Runs curate, dedup and tokenize on an embedded Ray with 2 CPUs (dedup and tokenize on their Ray Data paths, as
on a cluster), sampling every 0.1 s the RSS of the Ray worker processes, of the extraction child processes
(`operators.sandbox`) and of the driver. Prints one row per stage.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "warc" / "pages"


def _processes() -> dict[str, list[float]]:
    """RSS in MB of this machine's Ray workers and sandbox children (Linux /proc); "private": the workers' resident
    memory less their shared pages (Ray's object store is shared memory mapped into every worker that reads it)."""
    out: dict[str, list[float]] = {"worker": [], "sandbox": [], "private": []}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            kind = "sandbox" if b"operators.sandbox" in cmd else "worker" if (b"ray::" in cmd or b"default_worker.py" in cmd) else None
            if kind is None:
                continue
            with open(f"/proc/{pid}/statm") as f:
                fields = f.read().split()
            page = os.sysconf("SC_PAGE_SIZE") / 2**20
            out[kind].append(int(fields[1]) * page)
            if kind == "worker":
                out["private"].append((int(fields[1]) - int(fields[2])) * page)
        except (OSError, IndexError):
            continue
    return out


class RSSSampler:
    """Peak RSS of the Ray workers (one, and all together) and of the extraction children while the block runs."""

    def __init__(self, every: float = 0.1):
        self.every, self.peak = every, {"worker": 0.0, "workers": 0.0, "sandbox": 0.0, "private": 0.0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            procs = _processes()
            if procs["worker"]:
                self.peak["worker"] = max(self.peak["worker"], max(procs["worker"]))
                self.peak["workers"] = max(self.peak["workers"], sum(procs["worker"]))
                self.peak["private"] = max(self.peak["private"], max(procs["private"]))
            if procs["sandbox"]:
                self.peak["sandbox"] = max(self.peak["sandbox"], max(procs["sandbox"]))
            self.stop.wait(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", default=str(SHARED) if SHARED.exists() else "data/sample")
    args = ap.parse_args()

    import ray

    from pipelines import curate, dedup, tokenize

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stages = [
            ("curate", lambda: curate.run(curate.CurateConfig(input=(args.input,), output=f"{tmp}/curate"))),
            ("dedup", lambda: dedup.run(dedup.DedupConfig(input=f"{tmp}/curate", output=f"{tmp}/dedup", local_max_docs=0))),
            ("tokenize", lambda: tokenize.run(tokenize.TokenizeConfig(input=f"{tmp}/dedup", output=f"{tmp}/tokens",
                                                                     local_max_docs=0))),
        ]
        for name, fn in stages:
            with RSSSampler() as s:
                t0 = time.perf_counter()
                summary = fn()
                wall = time.perf_counter() - t0
            docs = summary["stats"][{"curate": "write/docs", "dedup": "line_dedup/out", "tokenize": "tokenize/out"}[name]]
            rows.append((name, docs, wall, s.peak))
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ray.shutdown()
    print(f"input: {args.input}; embedded Ray, 2 CPUs; driver peak RSS over all stages {driver:.0f} MB")
    print(f"{'stage':<9} {'docs out':>9} {'wall s':>7} {'peak RSS, one worker MB':>24} {'peak RSS, all workers MB':>25} {'extraction child MB':>20}")
    for name, docs, wall, peak in rows:
        child = f"{peak['sandbox']:.0f}" if peak["sandbox"] else "-"
        print(f"{name:<9} {docs:>9,} {wall:7.1f} {peak['worker']:24.0f} {peak['workers']:25.0f} {child:>20}")


if __name__ == "__main__":
    main()
