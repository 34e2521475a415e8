"""Additive counters keyed `<stage>/<event>`, one file per output shard, merged by summing.

Conventions: `<stage>/in` and `<stage>/out` count documents entering and leaving a stage and
`<stage>/drop_<reason>` each document it removed, so `in == out + sum(drops)` holds per stage.
Other keys (`read/html_bytes`, `read/file_error_*`) are informational.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def merge(counters: Iterable[dict[str, int]]) -> Counter:
    total: Counter = Counter()
    for c in counters:
        total.update(c)
    return total


def stages(counter: dict[str, int], order: Iterable[str] = ()) -> list[str]:
    """Stages that have an `in` key: those named in `order` first (pipeline order), then the rest."""
    present = sorted(k[: -len("/in")] for k in counter if k.endswith("/in"))
    ordered = [s for s in order if s in present]
    return ordered + [s for s in present if s not in ordered]


def drops(counter: dict[str, int], stage: str) -> dict[str, int]:
    prefix = f"{stage}/drop_"
    return {k[len(prefix) :]: v for k, v in counter.items() if k.startswith(prefix)}


def balance_errors(counter: dict[str, int]) -> list[str]:
    """Every stage whose `in != out + drops` (an empty list means the books balance)."""
    errors = []
    for stage in stages(counter):
        n_in, n_out = counter.get(f"{stage}/in", 0), counter.get(f"{stage}/out", 0)
        n_drop = sum(drops(counter, stage).values())
        if n_in != n_out + n_drop:
            errors.append(f"{stage}: in={n_in} != out={n_out} + drops={n_drop}")
    return errors


def funnel(counter: dict[str, int], order: Iterable[str] = ()) -> list[tuple[str, int, int, dict[str, int]]]:
    """(stage, in, out, drops by reason) per stage, for summaries and reports."""
    return [
        (s, counter.get(f"{s}/in", 0), counter.get(f"{s}/out", 0), drops(counter, s))
        for s in stages(counter, order)
    ]
