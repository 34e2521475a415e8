"""Curation lift (issue 11): the same model, trained for the same number of tokens on (a) sift's curated shards and
(b) the unfiltered extracted text of the same WARCs, scored on clean held-out text neither saw (WikiText-2 test).

    python benchmarks/curation_lift.py prepare --shared ../shared/data --out runs/lift      # CPU: both corpora
    python benchmarks/curation_lift.py train --out runs/lift --results $OUT [--steps 400]   # GPU (or CPU, slowly)

prepare runs `sift run` (curate -> dedup -> tokenize) on `shared/data/warc/pages` twice: with the demo's filters
(English, Gopher, quality, PII, then exact + fuzzy + line dedup) and with every filter and dedup off (extraction
only); draws "raw-matched", random unfiltered documents up to the curated corpus's size (same repetition at a fixed
training length); and writes the WikiText-2 test set as GPT-2 tokens. train trains one model per corpus with identical settings and
seeds, evaluating on WikiText-2 test every `--eval-every` steps, and writes lift.json and lift.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RAW_OFF = ["curate.langid.enabled=false", "curate.gopher.enabled=false", "curate.quality.enabled=false",
           "curate.pii.enabled=false", "curate.blocklist.enabled=false"]


def prepare(shared: Path, out: Path) -> None:
    from pipelines.config import parse_set, resolve
    from pipelines.run import RunConfig, run_pipeline
    from pipelines.tokenize import load_tokenizer

    demo = Path(__file__).resolve().parents[1] / "configs" / "run-demo.yaml"
    common = [f"curate.input=[{shared / 'warc' / 'pages'}]", "tokenize.shard_tokens=1000000",
              "tokenize.validation_fraction=0.05", "report=false"]
    for name, stages, extra in (("curated", "[curate, dedup, tokenize]", []),
                                ("raw", "[curate, tokenize]", RAW_OFF)):
        run_pipeline(resolve(RunConfig, str(demo), parse_set([f"output={out / name}", f"stages={stages}",
                                                              *common, *extra])))
    matched_subset(out)
    tok = load_tokenizer("gpt2")
    ids = np.array(tok.encode((shared / "text" / "lm" / "wikitext-2-test.txt").read_text(encoding="utf-8")), np.uint16)
    ids.tofile(out / "wikitext-2-test.gpt2.u16")
    print(f"WikiText-2 test: {len(ids):,} GPT-2 tokens")


def matched_subset(out: Path, seed: int = 0) -> None:
    """raw-matched: random whole documents of the unfiltered corpus up to the curated corpus's training tokens, so
    both are repeated equally often at a fixed training length (quality per token, not quantity, differs)."""
    import pyarrow.parquet as pq

    from pipelines.tokenize import read_token_shard

    def train_docs(run: Path):
        root = run / "tokens" / "tokens"
        manifest = json.loads((root / "manifest.json").read_text())
        for e in manifest["shards"]["train"]:
            toks = read_token_shard(root / e["file"])
            meta = pq.read_table(root / e["file"].replace(".arrow", ".docs.parquet")).to_pylist()
            for m in meta:  # the document and its end-of-text token
                yield toks[m["token_offset"]: m["token_offset"] + m["num_tokens"] + 1]

    target = sum(len(d) for d in train_docs(out / "curated"))
    docs = list(train_docs(out / "raw"))
    order = np.random.default_rng(seed).permutation(len(docs))
    picked, total = [], 0
    for i in order:
        if total >= target:
            break
        picked.append(docs[i])
        total += len(docs[i])
    np.concatenate(picked).astype(np.uint16).tofile(out / "raw-matched.u16")
    (out / "raw-matched.json").write_text(json.dumps({"documents": len(picked), "tokens": total, "target": target}))
    print(f"raw-matched: {len(picked)} of {len(docs)} unfiltered documents, {total:,} tokens (curated: {target:,})")


def wikitext_loss(model, tokens: np.ndarray, context: int, device, batch: int = 32) -> float:
    """Mean next-token loss over the held-out text in non-overlapping windows."""
    import torch

    from training.optim import cross_entropy

    n = (len(tokens) - 1) // context
    x = torch.from_numpy(tokens[: n * context].astype(np.int64)).view(n, context)
    y = torch.from_numpy(tokens[1: n * context + 1].astype(np.int64)).view(n, context)
    model.eval()
    total = 0.0
    auto = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), auto:
        for i in range(0, n, batch):
            xb, yb = x[i: i + batch].to(device), y[i: i + batch].to(device)
            total += float(cross_entropy(model(xb), yb)) * len(xb)
    model.train()
    return total / n


def train_both(out: Path, results: Path, steps: int, eval_every: int, device: str, held_tokens: int = 0) -> dict:
    from model.config import ModelConfig
    from model.layers import TransformerLM
    from training.pretrain import TrainConfig, resolve_device, train
    from training.checkpoint import load_payload

    results.mkdir(parents=True, exist_ok=True)
    held = np.fromfile(out / "wikitext-2-test.gpt2.u16", dtype=np.uint16)
    if held_tokens:  # a smoke test's cap
        held = held[:held_tokens]
    dev = resolve_device(device)
    base = TrainConfig(preset="tiny", model={"d_model": 384, "num_layers": 6, "num_heads": 6, "context_length": 256},
                       steps=steps, batch_size=32, context_length=256, max_lr=1e-3, min_lr=1e-4,
                       warmup_steps=max(1, steps // 10), eval_every=eval_every, eval_batches=16,
                       checkpoint_every=eval_every, device=device, resume=True, seed=0)
    report: dict = {"steps": steps, "tokens": steps * 32 * 256, "device": str(dev), "runs": {}}
    for name in ("curated", "raw", "raw-matched"):
        if name == "raw-matched":
            info = json.loads((out / "raw-matched.json").read_text())
            cfg = replace(base, shards=str(out / "raw-matched.u16"), output=str(out / f"model-{name}"),
                          model={**base.model, "vocab_size": 50257})
        else:
            manifest = json.loads((out / name / "tokens" / "tokens" / "manifest.json").read_text())
            info = {"tokens": sum(e["tokens"] for e in manifest["shards"]["train"]),
                    "documents": sum(e.get("documents", 0) for e in manifest["shards"]["train"])}
            cfg = replace(base, shards=str(out / name / "tokens"), output=str(out / f"model-{name}"))
        curve = []
        t0 = time.perf_counter()
        for done in range(eval_every, steps + 1, eval_every):
            train(replace(cfg, stop_after=eval_every if done < steps else 0))
            ckpt = load_payload(Path(cfg.output) / "checkpoint.pt")
            model = TransformerLM.from_config(ModelConfig.from_dict(ckpt["model_config"]), device=dev)
            model.load_state_dict(ckpt["model"])
            curve.append({"step": done, "tokens": done * 32 * 256, "wikitext_loss": wikitext_loss(model, held, 256, dev)})
            print(f"{name} step {done}: WikiText-2 test loss {curve[-1]['wikitext_loss']:.4f}", flush=True)
        rows = [json.loads(line) for line in (Path(cfg.output) / "metrics.jsonl").read_text().split("\n") if line]
        report["runs"][name] = {
            "train_tokens_available": info["tokens"], "documents": info["documents"],
            "wall_s": time.perf_counter() - t0, "curve": curve,
            "train_loss": [(r["step"], r["loss"]) for r in rows],
            "own_validation_loss": [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r],
        }
    c, r, m = (report["runs"][k]["curve"][-1]["wikitext_loss"] for k in ("curated", "raw", "raw-matched"))
    report["final_wikitext_loss"] = {"curated": c, "raw": r, "raw-matched": m, "lift_vs_raw_nats": r - c,
                                      "lift_vs_raw_matched_nats": m - c}
    (results / "lift.json").write_text(json.dumps(report, indent=1))
    _plot(report, results / "lift.png")
    print(json.dumps(report["final_wikitext_loss"]))
    return report


def _plot(report: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, colour in (("curated", "C0"), ("raw", "C3"), ("raw-matched", "C1")):
        run = report["runs"][name]
        axes[0].plot([p["tokens"] / 1e6 for p in run["curve"]], [p["wikitext_loss"] for p in run["curve"]], "o-",
                     color=colour, label=f"{name} ({run['train_tokens_available'] / 1e6:.2f} M tokens available)")
        axes[1].plot([s * 32 * 256 / 1e6 for s, _ in run["train_loss"]], [v for _, v in run["train_loss"]],
                     color=colour, lw=0.8, label=name)
    axes[0].set(xlabel="training tokens (M)", ylabel="WikiText-2 test loss (nats/token)", title="held-out clean text")
    axes[1].set(xlabel="training tokens (M)", ylabel="training loss", title="training loss (own data)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["prepare", "train"])
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--out", default="runs/lift")
    p.add_argument("--results", default="runs/lift/results")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--device", default="auto")
    p.add_argument("--held-tokens", type=int, default=0, help="cap the held-out tokens (smoke tests)")
    a = p.parse_args()
    if a.command == "prepare":
        prepare(Path(a.shared), Path(a.out))
    else:
        train_both(Path(a.out), Path(a.results), a.steps, a.eval_every, a.device, a.held_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
