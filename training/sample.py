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


def checkpoint_file(checkpoint: str | Path) -> Path:
    """`--checkpoint` as a file: a folder (a pretrain run's output) means its checkpoint.pt."""
    path = Path(checkpoint)
    if path.is_dir():
        if not (path / "checkpoint.pt").is_file():
            raise ValueError(f"no checkpoint.pt in {path}")
        return path / "checkpoint.pt"
    if not path.exists():
        raise ValueError(f"checkpoint {path} not found")
    return path


def load_model(checkpoint: str | Path, device: str = "cpu") -> tuple[TransformerLM, dict]:
    checkpoint = checkpoint_file(checkpoint)
    try:
        payload = load_payload(checkpoint)  # weights_only: a file that asks to unpickle code is refused
    except (RuntimeError, EOFError, OSError) as exc:  # not a zip archive, truncated, unreadable
        reason = str(exc).split(". ")[0].strip() or "empty or truncated file"
        raise ValueError(f"{checkpoint} is not a sift checkpoint (torch.load cannot read it: {reason})") from exc
    if not isinstance(payload, dict) or "model_config" not in payload or "model" not in payload:
        raise ValueError(f"{checkpoint} is not a sift checkpoint (no model_config: not written by sift pretrain)")
    mcfg = ModelConfig.from_dict(payload["model_config"])
    model = TransformerLM.from_config(mcfg)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), payload


def device_problem(device: str) -> str | None:
    """Why `device` cannot run the model here (None: it can)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        return f"--device {device!r}: {str(exc).splitlines()[0]}"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {device}: CUDA is not available on this machine; use --device cpu"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        return f"--device {device}: MPS is not available on this machine; use --device cpu"
    return None


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
    p.add_argument("--checkpoint", required=True, metavar="FILE|DIR",
                   help="a sift pretrain checkpoint, or a pretrain output folder (its checkpoint.pt)")
    p.add_argument("--prompt", default="", help="text to continue (default: empty, start from end-of-text)")
    p.add_argument("--max-new-tokens", type=int, default=64,
                   help="tokens to generate per sample, at most the model's context length (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="softmax temperature, >= 0; 0 = greedy (always the most likely token) (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=0.95,
                   help="nucleus sampling: keep the most likely tokens up to this probability mass, in (0, 1]; "
                        "1 = no cut (default: %(default)s)")
    p.add_argument("--num-samples", type=int, default=1, help="samples of the same prompt, >= 1 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling on CPU (default: %(default)s)")
    p.add_argument("--tokenizer", metavar="gpt2|DIR",
                   help="tokenizer spec or folder (default: the one named by the token shards the model trained on)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device: cpu, cuda, cuda:N (default: cuda if available, else cpu; here %(default)s)")
    args = p.parse_args(argv)
    if not 0.0 < args.top_p <= 1.0:
        p.error(f"--top-p must be in (0, 1], got {args.top_p}")
    if not args.temperature >= 0.0:
        p.error(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.max_new_tokens < 0:
        p.error(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.num_samples < 1:
        p.error(f"--num-samples must be >= 1, got {args.num_samples}")
    problem = device_problem(args.device)
    if problem:
        p.error(problem)
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
