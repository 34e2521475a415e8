"""Training throughput on one GPU: sift's model + optimizer vs a plain PyTorch reference of the same architecture.

    python benchmarks/train_throughput.py [--models gpt2-small,gpt2-medium] [--steps 20] [--out DIR]
    python benchmarks/train_throughput.py --no-eager --variants a:,b:vocab_multiple=1 --name ab   # A/B in one run
    python benchmarks/train_throughput.py --profile --models gpt2-medium     # top kernels + time by category

Both sides: bf16 autocast, the same shapes (RMSNorm, SwiGLU, interleaved RoPE, causal attention, untied head),
random tokens, context 1024. sift: `TransformerLM` as `sift pretrain` runs it (attention "auto" = PyTorch SDPA on
CUDA; the loss from the model's `forward(x, targets=y)`, i.e. the fused LM head + cross-entropy Triton op), the
project's AdamW, with and without torch.compile. Reference: nn.Linear / nn.Embedding / nn.RMSNorm, SDPA,
torch.compile, fused torch.optim.AdamW. Reported: tokens/s (median step time over `--steps` after warm-up) and
MFU = 3 x forward FLOPs (model.config.forward_flops_per_token: matmuls incl. LM head and causal attention) per
token over the card's dense bf16 peak (989 TFLOP/s for H100/H200 SXM). Also reported, as `mfu_palm`: the PaLM /
nanoGPT convention, 6 N + 12 L d s per token (N: parameters without the input embedding; attention counted as if
unmasked), about 7 % higher for these two models. `--accum K` times K micro-batches per optimizer step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import forward_flops_per_token, parameter_count, preset  # noqa: E402
from model.layers import TransformerLM  # noqa: E402
from model.precision import attach_low_precision_weights  # noqa: E402
from training.optim import AdamW  # noqa: E402

PEAK = 989e12


class RefRope(nn.Module):
    def __init__(self, d: int, n: int, theta: float = 10000.0):
        super().__init__()
        inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None]
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)

    def forward(self, x):  # (b, h, s, d)
        s = x.shape[-2]
        x0, x1 = x.float()[..., 0::2], x.float()[..., 1::2]
        c, si = self.cos[:s], self.sin[:s]
        return torch.stack((x0 * c - x1 * si, x0 * si + x1 * c), dim=-1).flatten(-2).to(x.dtype)


class RefBlock(nn.Module):
    def __init__(self, d, h, f, n):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.RMSNorm(d, eps=1e-5), nn.RMSNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.w1, self.w3 = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
        self.w2 = nn.Linear(f, d, bias=False)
        self.rope = RefRope(d // h, n)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, d))
        y = self.ln2(x)
        return x + self.w2(F.silu(self.w1(y)) * self.w3(y))


class RefLM(nn.Module):
    def __init__(self, cfg, bf16_residual: bool = False):
        super().__init__()
        self.bf16_residual = bf16_residual
        self.emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(RefBlock(cfg.d_model, cfg.num_heads, cfg.ff, cfg.context_length) for _ in range(cfg.num_layers))
        self.ln = nn.RMSNorm(cfg.d_model, eps=1e-5)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, ids):
        x = self.emb(ids)
        if self.bf16_residual and torch.is_autocast_enabled("cuda"):
            x = x.to(torch.bfloat16)  # the same residual-stream choice as sift's ModelConfig.autocast_residual
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def run(name: str, model: nn.Module, opt, loss_fn, batch: int, ctx: int, vocab: int, steps: int, flops_tok: float,
        accum: int = 1, flops_tok_palm: float | None = None) -> dict:
    """Median step time over `steps` optimizer steps of `accum` micro-batches of `batch` sequences each."""
    ids = torch.randint(0, vocab, (accum, batch, ctx + 1), device="cuda")

    def step():
        torch.compiler.cudagraph_mark_step_begin()  # a new training iteration (CUDA-graph trees; no-op otherwise)
        for i in range(accum):
            x, y = ids[i, :, :-1], ids[i, :, 1:]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(x, targets=y) if loss_fn is None else loss_fn(model(x), y)
            (loss / accum if accum > 1 else loss).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    dt = statistics.median(times)
    tps = accum * batch * ctx / dt
    return {"impl": name, "tokens_per_s": tps, "mfu": tps * 3 * flops_tok / PEAK,
            "mfu_palm": tps * 3 * flops_tok_palm / PEAK if flops_tok_palm else None, "step_ms": dt * 1e3,
            "accum": accum, "max_mem_gb": torch.cuda.max_memory_allocated() / 1e9}


def _sift(base, overrides: dict, compiled: bool, compile_mode: str | None):
    """(config, model, AdamW, the callable to step, the overrides applied) for one sift variant: ModelConfig
    overrides plus `optimizer=` (OPTIMIZERS) and `loss=` (TransformerLM.loss_kernel); the loss is computed inside
    the model's forward, as `sift pretrain` does."""
    ov = dict(overrides)
    opt_mode = OPTIMIZERS[ov.pop("optimizer", "auto")]
    opt_mode = opt_mode if compiled else False  # the eager run: plain foreach AdamW
    loss_kernel = ov.pop("loss", "auto")
    bf16_weights = bool(ov.pop("bf16_weights", True))
    cfg = base.with_(**ov)
    torch.manual_seed(0)
    m = TransformerLM.from_config(cfg, device="cuda")
    m.loss_kernel = loss_kernel
    copies = attach_low_precision_weights(m) if bf16_weights else {}  # as `sift pretrain` (TrainConfig.bf16_weights)
    opt = AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, compiled=opt_mode, low_precision=copies)
    return cfg, m, opt, (torch.compile(m, mode=compile_mode) if compiled else m), {
        **ov, "loss": loss_kernel, "bf16_weights": bf16_weights}


def _kernel_category(name: str) -> str:
    n = name.lower()
    if "cudnn" in n or "sdpa" in n or "pytorch_flash" in n or "fmha" in n:
        return "attention (PyTorch SDPA / cuDNN)"
    if "flash_attention" in n or "_fwd_kernel" in n or "_bwd_" in n:
        return "attention (sift Triton)"
    if "nvjet" in n or "gemm" in n or "cutlass" in n or "sm90_xmma" in n:
        return "GEMM (cuBLAS)"
    if "adamw" in n or "foreach" in n or "multi_tensor" in n:
        return "optimizer"
    if n.startswith("triton_"):
        return "Inductor Triton (elementwise, norms, RoPE, loss)"
    return "other"


def profile(mname: str, overrides: dict, out: str | None = None, batch: int | None = None,
            compile_mode: str | None = None) -> int:
    """Top CUDA kernels of three compiled sift steps, and their time by category; written to `out` too."""
    from torch.profiler import ProfilerActivity, profile as prof

    cfg, m, opt, fwd, _ = _sift(preset(mname, context_length=1024), overrides, True, compile_mode)
    batch = batch or (32 if mname == "gpt2-small" else 16)
    ids = torch.randint(0, cfg.vocab_size, (batch, 1025), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(ids[:, :-1], targets=ids[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(4):
        step()
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as pr:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    table = pr.key_averages().table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=90)
    cats: dict[str, float] = {}
    total = 0.0
    spans = []  # (start, end, name) of every kernel / copy on the GPU, microseconds
    for e in pr.events():
        if e.name.startswith(("Optimizer.", "##", "Torch-Compiled", "CompiledFunction")):
            continue  # profiler ranges with device time (the optimizer step, compiled-graph calls), not kernels
        if getattr(e, "device_type", None) is not None and str(e.device_type).endswith("CUDA"):
            us = getattr(e, "device_time", None) or getattr(e, "cuda_time", 0.0) or 0.0
            cats[_kernel_category(e.name)] = cats.get(_kernel_category(e.name), 0.0) + us
            total += us
            spans.append((e.time_range.start, e.time_range.end, e.name))
    lines = [f"{mname} batch {batch} overrides {overrides}: CUDA kernel time per step by category"]
    for k, us in sorted(cats.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {k:<50} {us / 3e3:8.2f} ms  {100 * us / max(total, 1e-9):5.1f} %")
    lines.append(f"  {'total':<50} {total / 3e3:8.2f} ms")
    lines += _idle_report(spans, steps=3)
    text = table + "\n" + "\n".join(lines)
    print(text, flush=True)
    if out:
        tag = "-".join(f"{k}{v}" for k, v in overrides.items()) or "default"
        Path(out, f"profile-{mname}-{tag}.txt").write_text(text)
    del m, opt, fwd
    torch.cuda.empty_cache()
    return 0


def _idle_report(spans: list[tuple[float, float, str]], steps: int) -> list[str]:
    """GPU idle time between the first and last kernel (no kernel running), per step, and the kernels the largest
    idle stretches follow: where the CPU (launches, Python, syncs) keeps the GPU waiting."""
    if not spans:
        return []
    spans.sort()
    end, prev, idle = spans[0][1], spans[0][2], 0.0
    after: dict[str, tuple[float, int]] = {}
    for start, stop, name in spans[1:]:
        if start > end:
            gap = start - end
            idle += gap
            key = f"{prev[:60]} -> {name[:40]}"
            t, n = after.get(key, (0.0, 0))
            after[key] = (t + gap, n + 1)
        if stop > end:
            end, prev = stop, name
    span = end - spans[0][0]
    lines = [f"GPU idle between kernels: {idle / steps / 1e3:.2f} ms per step of a {span / steps / 1e3:.2f} ms span "
             f"({100 * idle / max(span, 1e-9):.1f} %); largest, per step (after -> before):"]
    for key, (t, n) in sorted(after.items(), key=lambda kv: -kv[1][0])[:10]:
        lines.append(f"  {t / steps / 1e3:7.3f} ms  x{n / steps:5.1f}  {key}")
    return lines


def optimizer_steps(mname: str, steps: int = 20) -> list[dict]:
    """Milliseconds per optimizer step over the model's parameters (random gradients): sift's AdamW (foreach and
    compiled) against torch.optim.AdamW (foreach and fused)."""
    m = TransformerLM.from_config(preset(mname, context_length=1024), device="cuda")
    for p in m.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    rows = []
    for name, make in (("sift AdamW, foreach", lambda ps: AdamW(ps, lr=1e-4, weight_decay=0.1)),
                       ("sift AdamW, compiled", lambda ps: AdamW(ps, lr=1e-4, weight_decay=0.1, compiled=True)),
                       ("sift AdamW, triton", lambda ps: AdamW(ps, lr=1e-4, weight_decay=0.1, compiled="triton")),
                       ("torch AdamW, foreach", lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.1, foreach=True)),
                       ("torch AdamW, fused", lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.1, fused=True))):
        opt = make(m.parameters())
        for i in range(3):
            opt.param_groups[0]["lr"] = 1e-4 * (i + 1)  # a changing lr must not recompile
            opt.step()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(steps):
            opt.param_groups[0]["lr"] = 1e-4 / (i + 1)
            opt.step()
        torch.cuda.synchronize()
        rows.append({"model": mname, "optimizer": name, "ms_per_step": (time.perf_counter() - t) / steps * 1e3})
        print(f"{mname:<12} {name:<24} {rows[-1]['ms_per_step']:.2f} ms/step", flush=True)
    return rows


OPTIMIZERS = {"auto": "auto", "compiled": True, "triton": "triton", "foreach": False}
"""`optimizer=` in a variant: what `sift pretrain --set compile=true` uses ("auto": the Triton kernel on CUDA; the
default), sift's AdamW update under torch.compile, as one Triton kernel, or as plain foreach ops."""


def _parse_overrides(spec: str) -> dict:
    """"vocab_multiple=1+attention=triton" -> {"vocab_multiple": 1, "attention": "triton"} (ModelConfig overrides;
    integers as int, true/false as bool, anything else as str)."""
    out: dict = {}
    for item in filter(None, spec.split("+")):
        key, val = item.split("=", 1)
        out[key] = int(val) if val.lstrip("-").isdigit() else {"true": True, "false": False}.get(val.lower(), val)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="gpt2-small,gpt2-medium")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one compiled sift step")
    p.add_argument("--optimizer", action="store_true", help="time the optimizer step alone")
    p.add_argument("--variants", default="",
                   help="compiled sift variants to time, comma-separated LABEL:KEY=VAL+KEY=VAL (ModelConfig overrides, "
                        "plus optimizer=auto|compiled|triton|foreach and loss=auto|fused|logits: TransformerLM.loss_kernel), e.g. 'pad64:,nopad:vocab_multiple=1'; empty: the "
                        "default config")
    p.add_argument("--no-eager", action="store_true", help="skip the eager sift run")
    p.add_argument("--no-reference", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--reference-bf16-residual", action="store_true",
                   help="also time the reference with its residual stream cast to bf16 (sift's autocast_residual)")
    p.add_argument("--batch", type=int, default=0, help="sequences per micro-batch (0: 32 for gpt2-small, 16 otherwise)")
    p.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step (gradient accumulation, both "
                                                        "sides); tokens/s counts every micro-batch")
    p.add_argument("--name", default="train_throughput", help="output file stem")
    p.add_argument("--inductor", default="", help="torch._inductor.config settings for every compiled run (sift and "
                                                  "the reference), e.g. 'coordinate_descent_tuning=true'")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode for every compiled run (sift and the reference), e.g. reduce-overhead "
                        "(CUDA graphs)")
    args = p.parse_args()
    import torch._inductor.config as inductor_config

    for key, val in _parse_overrides(args.inductor).items():
        setattr(inductor_config, key, val)
    variants = [(v.split(":", 1)[0], _parse_overrides(v.split(":", 1)[1] if ":" in v else ""))
                for v in args.variants.split(",") if v] or [("", {})]
    if args.optimizer:
        rows = [r for mname in args.models.split(",") for r in optimizer_steps(mname)]
        Path(args.out, "optimizer_step.json").write_text(json.dumps(rows, indent=1))
        return 0
    if args.profile:
        for mname in args.models.split(","):
            for _, ov in variants:
                profile(mname, ov, args.out, args.batch or None, args.compile_mode)
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__}", flush=True)
    rows = []
    for mname in args.models.split(","):
        base = preset(mname, context_length=1024)
        batch = args.batch or (32 if mname == "gpt2-small" else 16)
        ft = forward_flops_per_token(base, 1024)
        ft_palm = forward_flops_per_token(base, 1024, causal=False)  # 6 N + 12 L d s: attention not halved
        info = {"model": mname, "params": parameter_count(base), "non_embedding": parameter_count(base, include_embeddings=False),
                "batch": batch, "ctx": 1024, "device": torch.cuda.get_device_name(), "inductor": args.inductor,
                "compile_mode": args.compile_mode}
        runs = ([] if args.no_eager else [("", {}, False)]) + [(label, ov, True) for label, ov in variants]
        results = []
        for label, ov, compiled in runs:
            name = f"sift{' +compile' if compiled else ''}{f' [{label}]' if label else ''}"
            cfg, m, opt, fwd, ov = _sift(base, ov, compiled, args.compile_mode)
            try:
                results.append({**run(name, fwd, opt, None, batch, 1024, cfg.vocab_size, args.steps, ft, args.accum,
                                      ft_palm), "overrides": ov})
            except Exception as exc:
                results.append({"impl": name, "overrides": ov, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            del m, opt, fwd
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        for ref_bf16 in [] if args.no_reference else [False, True] if args.reference_bf16_residual else [False]:
            torch.manual_seed(0)
            ref = RefLM(base, bf16_residual=ref_bf16).cuda()
            ropt = torch.optim.AdamW(ref.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
            rc = torch.compile(ref, mode=args.compile_mode)
            rname = "reference (nn.Linear, SDPA, compile, fused AdamW)" + (" [bf16 residual]" if ref_bf16 else "")
            try:
                results.append(run(rname, rc, ropt,
                                   lambda lg, t: F.cross_entropy(lg.float().view(-1, lg.shape[-1]), t.reshape(-1)), batch,
                                   1024, base.vocab_size, args.steps, ft, args.accum, ft_palm))
            except Exception as exc:
                results.append({"impl": "reference", "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            del ref, ropt, rc
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        ref_tps = next((v["tokens_per_s"] for v in results if v["impl"].startswith("reference (") and "error" not in v
                        and "bf16" not in v["impl"]), None)
        for v in results:
            if ref_tps and "error" not in v:
                v["vs_reference"] = v["tokens_per_s"] / ref_tps
            row = {**info, **v}
            rows.append(row)
            if "error" in v:
                print(f"{mname:<12} {v['impl']:<52} ERROR {v['error']}", flush=True)
            else:
                print(f"{mname:<12} {v['impl']:<52} {v['tokens_per_s']:>10,.0f} tok/s  MFU {100 * v['mfu']:5.1f} % "
                      f"({100 * v['mfu_palm']:5.1f} % PaLM)  "
                      f"step {v['step_ms']:7.1f} ms  mem {v['max_mem_gb']:.1f} GB  x{v.get('vs_reference', float('nan')):.3f}",
                      flush=True)
        Path(args.out, f"{args.name}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
