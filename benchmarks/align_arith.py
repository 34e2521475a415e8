"""Alignment on a GPU, end to end on a verifiable task: train a BPE on generated arithmetic text, SFT a fresh model on
reference solutions, then GRPO it (Ray rollout actor when Ray is importable); held-out accuracy before and after.
Also rollout throughput of the KV-cache sampler against recomputing the whole prefix at every step.

    python benchmarks/align_arith.py --out DIR [--difficulty 2] [--sft-steps 1500] [--grpo-steps 60] [--small]

Writes DIR/align_arith.json (the summary), DIR/sft/ and DIR/grpo/ (metrics.jsonl, curves.png, checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import preset  # noqa: E402
from model.generate import generate  # noqa: E402
from model.layers import TransformerLM  # noqa: E402
from operators.bpe import save_vocab_merges, train_bpe  # noqa: E402
from training.align.grpo import AlignConfig, grpo, load_task, sft  # noqa: E402

EOT = "<|endoftext|>"


def build_tokenizer(cfg: AlignConfig, out: Path, vocab_size: int) -> Path:
    d = out / "tokenizer"
    d.mkdir(parents=True, exist_ok=True)
    text = EOT.join(e.prompt + e.solution for e in load_task(cfg, "train"))
    (d / "corpus.txt").write_text(text)
    vocab, merges = train_bpe(d / "corpus.txt", vocab_size, [EOT])
    save_vocab_merges(vocab, merges, d / "vocab.json", d / "merges.txt")
    (d / "special_tokens.txt").write_text(EOT + "\n")
    (d / "corpus.txt").unlink()
    return d


@torch.no_grad()
def rollout_throughput(device: str, small: bool) -> list[dict]:
    """Generated tokens/s with and without the KV cache (same model, prompts, seed; temperature 1)."""
    rows = []
    cfg = preset("tiny" if small else "gpt2-small", vocab_size=512 if small else 50257,
                 context_length=256 if small else 1024, attention="reference")  # no per-length autotuning in the no-cache baseline
    model = TransformerLM.from_config(cfg).to(device)
    batch, plen, new = (4, 16, 32) if small else (16, 128, 256)
    prompt = torch.randint(0, cfg.vocab_size, (batch, plen), device=device)
    for use_cache in (True, False):
        g = torch.Generator(device=device).manual_seed(0)
        generate(model, prompt[:, :8], 4, 1.0, 1.0, None, g, use_cache)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = generate(model, prompt, new, 1.0, 1.0, None, g, use_cache)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        rows.append({"model": "tiny" if small else "gpt2-small", "kv_cache": use_cache, "batch": batch, "prompt": plen,
                     "new_tokens": new, "tokens_per_s": sum(map(len, out)) / dt, "seconds": dt})
    return rows


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.environ.get("OUT", "runs/align-arith"))
    p.add_argument("--difficulty", type=int, default=1)
    p.add_argument("--sft-steps", type=int, default=1500)
    p.add_argument("--grpo-steps", type=int, default=60)
    p.add_argument("--small", action="store_true", help="CPU smoke sizes")
    p.add_argument("--vocab-size", type=int, default=257, help="BPE vocabulary (257: bytes and end-of-text only)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import ray  # noqa: F401
        use_ray = True
    except ImportError:
        use_ray = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = {"context_length": 160, "attention": "reference"} if args.small else \
        {"d_model": 384, "num_layers": 6, "num_heads": 6, "context_length": 192, "attention": "reference"}
    base = dict(tokenizer="", preset="tiny", model=model, task="arithmetic", difficulty=args.difficulty,
                train_size=2000 if args.small else 50_000, eval_size=32 if args.small else 256, device=dev, seed=0,
                max_new_tokens=64, template="plain")
    # bytes only by default: every digit its own token (BPE merges "84" into one token, and a small model then has to
    # memorise sums of number-tokens instead of learning to add digits)
    tok = build_tokenizer(AlignConfig(output=str(out), **{**base, "tokenizer": "x"}), out, args.vocab_size)
    base["tokenizer"] = str(tok)
    t0 = time.perf_counter()
    s = sft(AlignConfig(output=str(out / "sft"), **base, lr=1e-3, sft_steps=args.sft_steps,
                        sft_batch_size=16 if args.small else 64))
    sft_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = grpo(AlignConfig(output=str(out / "grpo"), **{**base, "model": None}, checkpoint=str(out / "sft" / "checkpoint.pt"),
                         lr=5e-5 if not args.small else 1e-4, grpo_steps=args.grpo_steps,
                         rollout_batch_size=16 if args.small else 128, group_size=8, micro_batch_size=16 if args.small else 64,
                         loss_type="grpo_clip", epochs_per_rollout_batch=2, cliprange=0.2, temperature=1.0,
                         eval_every=max(1, args.grpo_steps // 10), use_ray=use_ray, rollout_gpus=0.5 if dev == "cuda" and use_ray else 0.0))
    grpo_s = time.perf_counter() - t0
    summary = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "difficulty": args.difficulty,
               "sft": {**s, "seconds": sft_s}, "grpo": {**g, "seconds": grpo_s, "ray": use_ray},
               "rollout_throughput": rollout_throughput(dev, args.small)}
    (out / "align_arith.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
