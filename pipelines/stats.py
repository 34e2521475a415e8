"""Additive counters keyed `<stage>/<event>`, one file per output shard, merged by summing.

Conventions: `<stage>/in` and `<stage>/out` count documents entering and leaving a stage and
`<stage>/drop_<reason>` each document it removed, so `in == out + sum(drops)` holds per stage.
Other keys (`read/html_bytes`, `read/file_error_*`, `read/resyncs`) are informational.

A curate shard's stats file may also hold one non-counter entry, `damaged_file`: the record of an input file that
was not a WARC/ARC file or was damaged (which file, what went wrong in the reader's own words, how many records were
kept from it). `merge` sums the counters only; `damaged_files` collects those records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

DAMAGED_FILE = "damaged_file"  # the key of a damaged input file's record in its shard's stats file


def counters(stats: dict[str, Any]) -> dict[str, int | float]:
    """The numeric entries of a stats file (anything else, such as a `damaged_file` record, left out)."""
    return {k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def merge(stats: Iterable[dict[str, Any]]) -> Counter:
    """The counters of several stats files, summed (non-numeric entries are not counters and are skipped)."""
    total: Counter = Counter()
    for c in stats:
        total.update(counters(c))
    return total


def damaged_files(stats: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `damaged_file` records of several shard stats files, by file name."""
    found = [s[DAMAGED_FILE] for s in stats if isinstance(s.get(DAMAGED_FILE), dict)]
    return sorted(found, key=lambda r: str(r.get("file", "")))


def common_dir(paths: Iterable[str]) -> str:
    """The folder all `paths` are in ("" when they are in different folders), to print the file names under it."""
    dirs = {p.rsplit("/", 1)[0] if "/" in p else "" for p in paths}
    return dirs.pop() if len(dirs) == 1 else ""


def _n(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def describe_damage(rec: dict[str, Any]) -> str:
    """One line saying what is wrong with a damaged input file and what was kept from it (for summaries)."""
    kind, fmt = rec.get("kind"), (rec.get("format") or "WARC").upper()
    kept, pages, resyncs = rec.get("records_kept", 0), rec.get("pages_kept", 0), rec.get("resyncs", 0)
    error = rec.get("error") or "unknown error"
    pages_note = f" ({_n(pages, 'HTML page')})"
    if kind == "empty":
        return "empty file (0 bytes): nothing read"
    if kind == "not_a_warc":
        return f"not a WARC or ARC file ({rec.get('content') or 'unknown content'}): nothing read"
    if kind == "unreadable":
        return f"{fmt} file, but no record could be read: {error}"
    if kind == "truncated":
        return f"{fmt} cut short: {error}; the {_n(kept, 'complete record')} before the cut were kept{pages_note}"
    if resyncs:
        return (f"{fmt} damaged: {error}; reading went on at the next intact record ({_n(resyncs, 'resync')}): "
                f"{_n(kept, 'record')} kept{pages_note}")
    return f"{fmt} damaged after {_n(kept, 'record')}: {error}; the records before the damage were kept{pages_note}"


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
