"""`sift generate`: sample text from a `sift pretrain` checkpoint.

    sift generate --checkpoint runs/demo-model/checkpoint.pt --prompt "The history of" --max-new-tokens 60 \\
        --temperature 0.8 --top-p 0.95 [--num-samples 3] [--tokenizer gpt2|DIR]

The model's shape comes from the checkpoint; the tokenizer from the token shards it was trained on (their
manifest names it) unless --tokenizer says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from model.config import ModelConfig
from model.generate import generate
from model.layers import TransformerLM
from training.checkpoint import load_payload
from pipelines.tokenize import load_tokenizer


def load_model(checkpoint: str | Path, device: str = "cpu") -> tuple[TransformerLM, dict]:
    payload = load_payload(checkpoint)
    if "model_config" not in payload:
        raise ValueError(f"{checkpoint}: not a sift pretrain checkpoint (no model_config)")
    mcfg = ModelConfig.from_dict(payload["model_config"])
    model = TransformerLM.from_config(mcfg)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), payload


def tokenizer_for(payload: dict, override: str | None):
    if override:
        return load_tokenizer(override)
    shards = Path(payload.get("config", {}).get("shards", ""))
    manifest = shards / "tokens" / "manifest.json"
    if not manifest.exists():
        raise ValueError("cannot tell which tokenizer the model was trained with: pass --tokenizer gpt2 or a folder")
    return load_tokenizer(json.loads(manifest.read_text())["tokenizer"]["spec"])


def main(argv: list[str] | None = None, prog: str = "sift generate") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Sample text from a pretrained checkpoint.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prompt", default="")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    try:
        model, payload = load_model(args.checkpoint, args.device)
        tok = tokenizer_for(payload, args.tokenizer)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    eot = tok.eot_id
    ids = tok.encode(args.prompt) if args.prompt else [eot]
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    outs = generate(model, [ids] * args.num_samples, args.max_new_tokens, args.temperature, args.top_p, eot,
                    generator=gen if args.device == "cpu" else None)
    for i, seq in enumerate(outs):
        text = tok.decode([t for t in seq if t != eot])
        print(f"--- sample {i + 1} ---\n{args.prompt}{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
