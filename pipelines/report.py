"""`sift stats RUN_DIR`: what is in a run, as tables in the terminal and as an HTML report with plots.

RUN_DIR is any sift output folder (curate, dedup or tokenize). Upstream runs are found by following the
`input` recorded in each run.json (tokenize -> dedup -> curate), so pointing at the last stage shows the whole
path: the funnel (documents and bytes in, kept and dropped by stage and reason), damaged input files (which file,
what is wrong, how many records were kept), languages, quality-score and length distributions, top domains, dedup
cluster sizes and token counts per shard.

Works on a run still in progress: only units whose stats file exists (written last, so complete) are read.

    sift stats runs/demo-tokens            # tables + runs/demo-tokens/report.html
    sift stats runs/demo --no-html --json
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipelines import stats as statslib
from pipelines.layout import DOCS_DIR, STATS_DIR
from pipelines.curate import STAGE_ORDER as CURATE_ORDER
from pipelines.dedup import REMOVED_DIR
from pipelines.dedup import STAGE_ORDER as DEDUP_ORDER
from pipelines.io import OutputDir
from pipelines.tokenize import PART_STATS_DIR, SPLITS, TOKENS_DIR

STAGE_ORDER = CURATE_ORDER + DEDUP_ORDER + ("tokenize",)
DOC_COLUMNS = ("lang", "quality_score", "text_chars", "domain")


@dataclass
class RunInfo:
    kind: str  # curate | dedup | tokenize
    out: OutputDir
    meta: dict[str, Any]

    @property
    def status(self) -> str:
        return self.meta.get("status", "unknown")


def stage_kind(out: OutputDir) -> str | None:
    """'curate', 'dedup' or 'tokenize' for a stage's output folder (None: not one)."""
    if out.exists(PART_STATS_DIR) or out.exists(TOKENS_DIR):
        return "tokenize"
    if out.exists(REMOVED_DIR):
        return "dedup"
    if out.exists(STATS_DIR) or out.exists(DOCS_DIR):
        return "curate"
    return None


def _resolve_input(path: str, relative_to: str) -> str | None:
    if "://" in path or os.path.isabs(path):
        return path
    for base in (os.getcwd(), os.path.dirname(relative_to.rstrip("/"))):
        cand = os.path.join(base, path)
        if os.path.isdir(cand):
            return cand
    return None


def discover_chain(run_dir: str) -> list[RunInfo]:
    """The run at `run_dir` and its upstream runs, upstream first."""
    chain: list[RunInfo] = []
    current: str | None = run_dir
    seen = set()
    while current and current not in seen:
        seen.add(current)
        out = OutputDir(current)
        kind = stage_kind(out)
        if kind is None:
            if not chain:
                raise ValueError(f"{run_dir!r} is not a sift run folder (no documents/, shard_stats/ or tokens/)")
            break
        meta = out.read_json("run.json") if out.exists("run.json") else {}
        chain.append(RunInfo(kind, out, meta))
        if kind == "curate":
            break
        upstream = meta.get("input_run") or meta.get("config", {}).get("input")
        current = _resolve_input(upstream, current) if isinstance(upstream, str) and upstream else None
    return chain[::-1]


@dataclass
class Report:
    runs: list[dict[str, Any]] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    units: dict[str, int] = field(default_factory=dict)  # completed units per run kind
    languages: Counter = field(default_factory=Counter)
    domains: Counter = field(default_factory=Counter)
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0))
    chars: np.ndarray = field(default_factory=lambda: np.zeros(0))
    documents: int = 0
    cluster_sizes: Counter = field(default_factory=Counter)  # cluster size -> removed documents
    removed_by: Counter = field(default_factory=Counter)
    token_shards: list[dict[str, Any]] = field(default_factory=list)
    tokenizer: dict[str, Any] | None = None
    damaged_files: list[dict[str, Any]] = field(default_factory=list)  # curate's input files that were not clean

    def identified_languages(self) -> Counter:
        """Languages fastText found for every page reaching the language-ID stage (from the `langid/lang_*` counts)."""
        return Counter({k[len("langid/lang_"):]: v for k, v in self.counters.items() if k.startswith("langid/lang_") and v})

    def funnel(self) -> list[tuple[str, int, int, dict[str, int]]]:
        return statslib.funnel(self.counters, STAGE_ORDER)

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs, "completed_units": self.units, "funnel": [
                {"stage": s, "in": i, "out": o, "drops": d} for s, i, o, d in self.funnel()
            ],
            "input_bytes": self.counters.get("read/input_bytes", 0), "html_bytes": self.counters.get("read/html_bytes", 0),
            "documents": self.documents, "languages": dict(self.languages.most_common()),
            "top_domains": dict(self.domains.most_common(20)),
            "quality_score": _summary(self.quality), "text_chars": _summary(self.chars),
            "dedup_cluster_sizes": {str(k): v for k, v in sorted(self.cluster_sizes.items())},
            "dedup_removed": dict(self.removed_by), "token_shards": self.token_shards, "tokenizer": self.tokenizer,
            "tokens": sum(s["tokens"] for s in self.token_shards),
            "input_files": self.counters.get("read/files", 0), "resyncs": self.counters.get("read/resyncs", 0),
            "damaged_files": self.damaged_files,
        }


def _summary(x: np.ndarray) -> dict[str, float] | None:
    if len(x) == 0:
        return None
    q = np.percentile(x, [10, 50, 90])
    return {"n": int(len(x)), "mean": float(x.mean()), "p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2])}


def _shown(path: str) -> str:
    """A run folder as the user would type it: a local one relative to the working directory when it lies under
    it (every run of a chain then reads alike, however each recorded its input), else absolute; URIs as given."""
    if "://" in path:
        return path
    rel = os.path.relpath(os.path.realpath(path))
    return rel if not rel.startswith("..") else os.path.realpath(path)


def _completed(out: OutputDir, stats_dir: str) -> list[str]:
    return [n[: -len(".json")] for n in out.list(stats_dir, suffix=".json")]


def collect(run_dir: str) -> Report:
    chain = discover_chain(run_dir)
    rep = Report()
    last_docs: RunInfo | None = None
    for run in chain:
        out = run.out
        rep.runs.append({"kind": run.kind, "path": out.uri, "status": run.status,
                         "started_at": run.meta.get("started_at"), "git_sha": run.meta.get("git_sha")})
        stats_dir = PART_STATS_DIR if run.kind == "tokenize" else STATS_DIR
        done = _completed(out, stats_dir)
        rep.units[run.kind] = len(done)
        unit_stats = [out.read_json(stats_dir, f"{unit}.json") for unit in done]
        rep.counters.update(statslib.merge(unit_stats))
        if run.kind == "curate":
            rep.damaged_files = statslib.damaged_files(unit_stats)
        if run.kind in ("curate", "dedup"):
            last_docs = run
        if run.kind == "dedup":
            for unit in done:
                p = out.path(REMOVED_DIR, f"{unit}.parquet")
                if out.exists(REMOVED_DIR, f"{unit}.parquet"):
                    t = pq.read_table(p, columns=["stage", "reason", "cluster_size"], filesystem=out.fs)
                    for stage, reason, size in zip(*(t.column(c).to_pylist() for c in ("stage", "reason", "cluster_size"))):
                        rep.removed_by[f"{stage}/{reason}"] += 1
                        if size is not None:
                            rep.cluster_sizes[int(size)] += 1
        if run.kind == "tokenize":
            rep.token_shards = _token_shards(out)
            if out.exists(TOKENS_DIR, "manifest.json"):
                rep.tokenizer = out.read_json(TOKENS_DIR, "manifest.json").get("tokenizer")
    if last_docs is not None:
        quality, chars = [], []
        for unit in _completed(last_docs.out, STATS_DIR):
            if not last_docs.out.exists(DOCS_DIR, f"{unit}.parquet"):
                continue
            path = last_docs.out.path(DOCS_DIR, f"{unit}.parquet")
            names = set(pq.read_schema(path, filesystem=last_docs.out.fs).names)
            t = pq.read_table(path, columns=[c for c in DOC_COLUMNS if c in names], filesystem=last_docs.out.fs)
            rep.documents += t.num_rows
            if "lang" in names:
                rep.languages.update(x or "?" for x in t.column("lang").to_pylist())
            if "domain" in names:
                rep.domains.update(x or "?" for x in t.column("domain").to_pylist())
            if "quality_score" in names:
                quality.append(t.column("quality_score").to_numpy(zero_copy_only=False))
            if "text_chars" in names:
                chars.append(t.column("text_chars").to_numpy(zero_copy_only=False))
        rep.quality = np.concatenate(quality).astype(float) if quality else np.zeros(0)
        rep.quality = rep.quality[~np.isnan(rep.quality)]
        rep.chars = np.concatenate(chars).astype(float) if chars else np.zeros(0)
    return rep


def _token_shards(out: OutputDir) -> list[dict[str, Any]]:
    shards = []
    for split in SPLITS:
        for name in out.list(TOKENS_DIR, split, suffix=".json"):
            shards.append(out.read_json(TOKENS_DIR, split, name))
    return shards


# ---------------------------------------------------------------------------------------------------------
# Terminal


def print_report(rep: Report, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for r in rep.runs:
        console.print(f"[bold]{r['kind']}[/bold] {_shown(r['path'])}  status={r['status']}  units done={rep.units.get(r['kind'], 0)}")
    c = rep.counters
    if c.get("read/files"):
        damaged = f", {len(rep.damaged_files):,} of them damaged (table below)" if rep.damaged_files else ""
        resyncs = f", {c['read/resyncs']:,} resyncs after damage" if c.get("read/resyncs") else ""
        mb_in, mb_html = c.get("read/input_bytes", 0) / 1e6, c.get("read/html_bytes", 0) / 1e6
        console.print(f"input: {c.get('read/files', 0):,} files{damaged}, {mb_in:,.1f} MB, "
                      f"{c.get('read/in', 0):,} records{resyncs}, {mb_html:,.1f} MB of HTML")
    t = Table(title="Funnel: documents per stage", show_lines=False)
    for col in ("stage", "in", "out", "kept %", "dropped: reason (count)"):
        t.add_column(col, justify="right" if col in ("in", "out", "kept %") else "left")
    for stage, n_in, n_out, drops in rep.funnel():
        reasons = ", ".join(f"{k} ({v:,})" for k, v in sorted(drops.items(), key=lambda kv: -kv[1]) if v)
        t.add_row(stage, f"{n_in:,}", f"{n_out:,}", f"{100 * n_out / n_in:.1f}" if n_in else "-", reasons)
    console.print(t)
    if rep.damaged_files:
        print_damaged(rep, console)
    if rep.languages:
        t = Table(title=f"Languages of the {rep.documents:,} kept documents")
        t.add_column("language")
        t.add_column("documents", justify="right")
        for lang, n in rep.languages.most_common(15):
            t.add_row(lang, f"{n:,}")
        console.print(t)
    dist = Table(title="Distributions of kept documents")
    for col in ("field", "n", "mean", "p10", "p50", "p90"):
        dist.add_column(col, justify="left" if col == "field" else "right")
    for name, x in (("quality_score", rep.quality), ("text_chars", rep.chars)):
        s = _summary(x)
        if s:
            dist.add_row(name, f"{s['n']:,}", f"{s['mean']:.3g}", f"{s['p10']:.3g}", f"{s['p50']:.3g}", f"{s['p90']:.3g}")
    console.print(dist)
    if rep.domains:
        t = Table(title="Top domains")
        t.add_column("domain")
        t.add_column("documents", justify="right")
        for d, n in rep.domains.most_common(10):
            t.add_row(d, f"{n:,}")
        console.print(t)
    if rep.removed_by:
        t = Table(title="Dedup: removed documents by cluster size")
        t.add_column("cluster size", justify="right")
        t.add_column("removed", justify="right")
        for size, n in sorted(rep.cluster_sizes.items()):
            t.add_row(str(size), f"{n:,}")
        console.print(t)
    if rep.token_shards:
        t = Table(title="Token shards")
        for col in ("file", "documents", "tokens"):
            t.add_column(col, justify="left" if col == "file" else "right")
        for s in rep.token_shards:
            t.add_row(s["file"], f"{s['documents']:,}", f"{s['tokens']:,}")
        for split in SPLITS:
            ss = [s for s in rep.token_shards if s["split"] == split]
            if ss:
                t.add_row(f"[bold]{split} total[/bold]", f"{sum(s['documents'] for s in ss):,}", f"{sum(s['tokens'] for s in ss):,}")
        console.print(t)


MAX_DAMAGED_ROWS = 50  # in the terminal; --json and the HTML report list them all


def print_damaged(rep: Report, console) -> None:
    from rich.table import Table

    base = statslib.common_dir(d["file"] for d in rep.damaged_files)
    where = f", in {base}/" if base else ""
    t = Table(title=f"Damaged input files ({len(rep.damaged_files):,} of {rep.counters.get('read/files', 0):,}{where})")
    names = [d["file"][len(base) + 1:] if base else d["file"] for d in rep.damaged_files[:MAX_DAMAGED_ROWS]]
    t.add_column("file", overflow="fold", min_width=min(max(map(len, names)), 40))  # whole names, to copy them
    t.add_column("error", overflow="fold")
    for col in ("records\nkept", "HTML\npages", "resyncs"):
        t.add_column(col, justify="right")
    for name, d in zip(names, rep.damaged_files):
        t.add_row(name, _damage_text(d), f"{d.get('records_kept', 0):,}", f"{d.get('pages_kept', 0):,}",
                  f"{d.get('resyncs', 0):,}")
    console.print(t)
    if len(rep.damaged_files) > MAX_DAMAGED_ROWS:
        more = len(rep.damaged_files) - MAX_DAMAGED_ROWS
        console.print(f"... and {more:,} more damaged files (--json and the HTML report list them all)")


def _damage_text(d: dict[str, Any]) -> str:
    """What is wrong with a damaged file, for the table's `error` column."""
    if d.get("kind") == "empty":
        return "empty file (0 bytes)"
    if d.get("kind") == "not_a_warc":
        return f"not a WARC or ARC file ({d.get('content') or 'unknown content'})"
    what = {"unreadable": "no record readable", "truncated": "cut short"}.get(d.get("kind"), "damaged")
    return f"{(d.get('format') or 'warc').upper()} {what}: {d.get('error', '')}"


# ---------------------------------------------------------------------------------------------------------
# HTML


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def figures(rep: Report) -> list[tuple[str, str]]:
    """(title, base64 PNG) for each plot the data supports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    funnel = rep.funnel()
    if funnel:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(funnel) + 1))
        names = [f[0] for f in funnel][::-1]
        ax.barh(names, [f[1] for f in funnel][::-1], color="#c8d6e5", label="in")
        ax.barh(names, [f[2] for f in funnel][::-1], color="#2e86de", label="out")
        ax.set_xlabel("documents")
        ax.legend()
        out.append(("Funnel: documents in and out of each stage", _png(fig)))
        reasons = Counter()
        for stage, _, _, drops in funnel:
            for k, v in drops.items():
                if v:
                    reasons[f"{stage}: {k}"] += v
        if reasons:
            top = reasons.most_common(20)[::-1]
            fig, ax = plt.subplots(figsize=(8, 0.3 * len(top) + 1))
            ax.barh([k for k, _ in top], [v for _, v in top], color="#ee5253")
            ax.set_xlabel("documents dropped")
            out.append(("Why documents were dropped", _png(fig)))
    identified = rep.identified_languages()
    if identified or rep.languages:
        fig, ax = plt.subplots(figsize=(7, 3))
        if identified:
            top = identified.most_common(15)
            ax.bar([k for k, _ in top], [v for _, v in top], color="#c8d6e5", label="extracted pages (before the language filter)")
        top = rep.languages.most_common(15)
        ax.bar([k for k, _ in top], [v for _, v in top], color="#10ac84", label="kept documents")
        ax.set_ylabel("documents")
        ax.legend()
        out.append(("Languages", _png(fig)))
    if len(rep.quality):
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.hist(rep.quality, bins=30, range=(0, 1), color="#5f27cd")
        ax.set_xlabel("quality score")
        ax.set_ylabel("documents")
        out.append(("Quality-score distribution", _png(fig)))
    if len(rep.chars):
        fig, ax = plt.subplots(figsize=(7, 3))
        x = np.maximum(rep.chars, 1)
        ax.hist(x, bins=np.logspace(np.log10(x.min()), np.log10(x.max()) + 0.01, 30), color="#ff9f43")
        ax.set_xscale("log")
        ax.set_xlabel("document length (characters)")
        ax.set_ylabel("documents")
        out.append(("Length distribution", _png(fig)))
    if rep.domains:
        top = rep.domains.most_common(15)[::-1]
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(top) + 1))
        ax.barh([k for k, _ in top], [v for _, v in top], color="#576574")
        ax.set_xlabel("kept documents")
        out.append(("Top domains", _png(fig)))
    if rep.cluster_sizes:
        sizes = sorted(rep.cluster_sizes.items())
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.bar([str(k) for k, _ in sizes], [v for _, v in sizes], color="#c44569")
        ax.set_xlabel("duplicate cluster size")
        ax.set_ylabel("documents removed")
        out.append(("Dedup cluster sizes", _png(fig)))
    if rep.token_shards:
        fig, ax = plt.subplots(figsize=(7, 3))
        labels = [s["file"].replace(".arrow", "") for s in rep.token_shards]
        colors = ["#2e86de" if s["split"] == "train" else "#ff9f43" for s in rep.token_shards]
        ax.bar(range(len(labels)), [s["tokens"] for s in rep.token_shards], color=colors)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("tokens")
        out.append(("Tokens per shard (blue: train, orange: validation)", _png(fig)))
    return out


def write_html(rep: Report, path: str | Path) -> Path:
    data = rep.to_json()
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(f['stage'])}</td><td>{f['in']:,}</td><td>{f['out']:,}</td>"
        f"<td>{esc(', '.join(f'{k} ({v:,})' for k, v in sorted(f['drops'].items(), key=lambda kv: -kv[1]) if v))}</td></tr>"
        for f in data["funnel"]
    )
    runs = "".join(f"<li><b>{esc(r['kind'])}</b> <code>{esc(_shown(r['path']))}</code> — {esc(str(r['status']))}</li>" for r in data["runs"])
    plots = "".join(
        f'<figure><figcaption>{esc(title)}</figcaption><img alt="{esc(title)}" src="data:image/png;base64,{png}"></figure>'
        for title, png in figures(rep)
    )
    tokens = f"<p>{data['tokens']:,} tokens in {len(data['token_shards'])} shards</p>" if data["token_shards"] else ""
    damaged = ""
    if data["damaged_files"]:
        drows = "".join(
            f"<tr><td><code>{esc(d['file'])}</code></td><td>{esc(_damage_text(d))}</td>"
            + "".join(f"<td>{d.get(k, 0):,}</td>" for k in ("records_kept", "pages_kept", "resyncs")) + "</tr>"
            for d in data["damaged_files"]
        )
        damaged = (
            f'<h2 id="damaged-files">Damaged input files</h2>\n<p>{len(data["damaged_files"]):,} of '
            f"{data['input_files']:,} input files were not clean WARC/ARC files. <i>records kept</i>: the intact "
            "records read from the file, those before the damage and those after a resync (reading went on at the "
            f"next intact record; {data['resyncs']:,} in all). A file that is not WARC or ARC at all has none.</p>\n"
            '<table class="damaged"><tr><th>file</th><th>error</th><th>records kept</th><th>HTML pages</th>'
            f"<th>resyncs</th></tr>{drows}</table>"
        )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sift stats: {esc(rep.runs[-1]['path'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}}
td:first-child,td:last-child{{text-align:left}}
table.damaged td:nth-child(2){{text-align:left}}table.damaged td:last-child{{text-align:right}}
figure{{margin:1.5em 0}}figcaption{{font-weight:600}}img{{max-width:100%}}</style>
</head><body>
<h1>sift stats</h1>
<ul>{runs}</ul>
<h2>Funnel</h2>
<table><tr><th>stage</th><th>in</th><th>out</th><th>dropped: reason (count)</th></tr>{rows}</table>
<p>{data['input_bytes'] / 1e6:,.1f} MB of WARC in ({data['html_bytes'] / 1e6:,.1f} MB of HTML); {data['documents']:,} documents kept</p>{tokens}
{damaged}
<h2>Plots</h2>
{plots}
<h2>Data</h2>
<pre id="data">{esc(json.dumps(data, indent=1))}</pre>
</body></html>
"""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None, prog: str = "sift stats") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Statistics of a sift run (and its upstream runs).")
    p.add_argument("run_dir", help="a curate, dedup or tokenize output folder")
    p.add_argument("--html", help="where to write the HTML report (default RUN_DIR/report.html)")
    p.add_argument("--no-html", action="store_true")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON instead of tables")
    args = p.parse_args(argv)
    try:
        rep = collect(args.run_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep.to_json(), indent=2))
    else:
        print_report(rep)
    if not args.no_html and "://" not in args.run_dir:
        path = write_html(rep, args.html or Path(args.run_dir) / "report.html")
        print(f"HTML report: {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
