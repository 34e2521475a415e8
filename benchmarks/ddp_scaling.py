"""Weak scaling of data-parallel pretraining: the same per-GPU batch on 1, 2, 4, 8 GPUs, with the project's bucketed
DDP (all-reduce overlapped with backward) and with ZeRO-1 (sharded AdamW state). One script, unchanged at any size:

    torchrun --nproc-per-node N benchmarks/ddp_scaling.py --models gpt2-small,gpt2-medium --out DIR   # N = 1, 2, 4, 8
    python benchmarks/ddp_scaling.py --summarize DIR        # the table: tokens/s, MFU, efficiency vs 1 GPU

Per (model, mode), after warm-up (and compilation with --compile: one graph by default, or with --compile-mode blocks
each transformer block on its own, so a block's buckets are all-reduced while earlier blocks are still in backward):
  step_ms        the full training step (forward, backward, gradient all-reduce, clipping, AdamW [+ ZeRO-1 broadcasts])
  nosync_ms      the same step without the gradient all-reduce: exposed communication = step_ms - nosync_ms
  allreduce_ms   one blocking all-reduce of every gradient (fp32), what the overlap hides
  opt_ms         the optimizer step alone (with ZeRO-1 this includes broadcasting every parameter from its owner)
Efficiency at N GPUs = tokens/s(N) / (N x tokens/s(1)) of the same model and mode. Random tokens, context 1024,
bf16 autocast, the project's model (its loss from `forward(x, targets=y)`: the fused LM head + cross-entropy on
CUDA), AdamW (the Triton kernel when compiled on CUDA) and clipping inside the update, as `sift pretrain` runs
them. CPU (gloo) works for a smoke test.
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
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import forward_flops_per_token, parameter_count, preset  # noqa: E402
from model.layers import TransformerLM  # noqa: E402
from model.precision import attach_low_precision_weights, copy_only_weights  # noqa: E402
from training.ddp import DDPBucketed, ShardedOptimizer  # noqa: E402
from training.optim import AdamW, clip_scale  # noqa: E402

PEAK = 989e12  # dense bf16, H100/H200 SXM
BATCH = {"gpt2-small": 32, "gpt2-medium": 16, "gpt2-large": 8}


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, n: int, device) -> float:
    times = []
    for _ in range(n):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(mname: str, mode: str, args, device, rank: int, world: int) -> dict:
    ctx = args.context
    cfg = preset(mname, context_length=ctx, **({"attention": args.attention} if args.attention else {}))
    batch = args.batch or BATCH.get(mname, 8)
    torch.manual_seed(0)
    model = TransformerLM.from_config(cfg, device=device)
    ddp = DDPBucketed(model, bucket_mb=args.bucket_mb)
    # bf16 weight copies kept current by the optimizer, as `sift pretrain` (TrainConfig.bf16_weights) on CUDA
    copies = attach_low_precision_weights(model) if device.type == "cuda" and not args.no_bf16_weights else {}
    kw = dict(lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, compiled="auto" if args.compile else False,
              low_precision=copies)
    opt = (ShardedOptimizer(model.parameters(), AdamW, copy_only=copy_only_weights(model), **kw) if mode == "zero1"
           else AdamW(model.parameters(), **kw))
    fwd = ddp
    if args.compile:
        if args.compile_mode == "blocks":
            for layer in model.layers:
                layer.compile()
        else:  # one graph: gradients all appear at the end of backward (no overlap), more fusion
            fwd = torch.compile(ddp)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    g = torch.Generator(device=device).manual_seed(1000 + rank)
    ids = torch.randint(0, cfg.vocab_size, (batch, ctx + 1), device=device, generator=g)
    x, y = ids[:, :-1], ids[:, 1:]

    def step(sync: bool = True):
        ddp.sync = sync
        with autocast:
            loss = fwd(x, targets=y)
        loss.backward()
        if sync:
            ddp.finish_gradient_synchronization()
        else:
            ddp._reset()
        _, clip = clip_scale(model.parameters(), 1.0)
        opt.step(grad_scale=clip)
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    step_s = _timed(step, args.steps, device)
    nosync_s = _timed(lambda: step(False), args.steps, device)
    # the raw cost the overlap hides: one blocking all-reduce of every gradient
    flat = torch.zeros(sum(p.numel() for p in model.parameters()), device=device)
    allreduce_s = _timed(lambda: dist.all_reduce(flat), max(3, args.steps // 2), device) if world > 1 else 0.0
    del flat
    step()  # leave gradients in place for a lone optimizer step

    def opt_only():
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        opt.step()

    opt_s = _timed(opt_only, max(3, args.steps // 2), device)
    tokens = batch * ctx * world
    tps = tokens / step_s
    ft = forward_flops_per_token(cfg, ctx)
    mem = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    row = {"model": mname, "mode": mode, "world": world, "per_gpu_batch": batch, "context": ctx,
           "params": parameter_count(cfg), "compile": args.compile_mode if args.compile else False, "buckets": len(ddp.buckets),
           "bf16_weights": bool(copies),
           "bucket_mb": args.bucket_mb,
           "tokens_per_s": tps, "tokens_per_s_per_gpu": tps / world, "mfu": tps / world * 3 * ft / PEAK,
           "step_ms": step_s * 1e3, "nosync_ms": nosync_s * 1e3, "exposed_comm_ms": (step_s - nosync_s) * 1e3,
           "allreduce_ms": allreduce_s * 1e3, "opt_ms": opt_s * 1e3, "max_mem_gb": mem,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    del model, ddp, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return row


def summarize(folder: Path) -> int:
    rows = []
    files = sorted(folder.glob("ddp_scaling-*.json")) or sorted(folder.glob("ddp_scaling.json"))  # per run, or merged
    for f in files:
        rows += json.loads(f.read_text())
    if not rows:
        print(f"no ddp_scaling-*.json under {folder}", file=sys.stderr)
        return 2
    def key(r):
        return r["model"], r["mode"], str(r["compile"]), r.get("bucket_mb", 25.0), r.get("bf16_weights", False)

    base = {key(r): r["tokens_per_s"] for r in rows if r["world"] == 1}
    print(f"{'model':<12} {'mode':<6} {'compile':<7} {'bucket':>6} {'bf16w':>5} {'GPUs':>4} {'tokens/s':>11} {'per GPU':>9} {'MFU':>6} {'eff.':>6} {'step ms':>8} "
          f"{'exposed comm':>12} {'all-reduce':>10} {'opt ms':>7} {'mem GB':>6}")
    for r in sorted(rows, key=lambda r: (*key(r), r["world"])):
        b = base.get(key(r))
        r["efficiency"] = r["tokens_per_s"] / (r["world"] * b) if b else None
        eff = f"{100 * r['efficiency']:5.1f}%" if r["efficiency"] else "   n/a"
        mem = f"{r['max_mem_gb']:6.1f}" if r.get("max_mem_gb") else "     -"
        print(f"{r['model']:<12} {r['mode']:<6} {str(r['compile']):<7} {r.get('bucket_mb', 25.0):>6g} {'yes' if r.get('bf16_weights') else 'no':>5} {r['world']:>4} {r['tokens_per_s']:>11,.0f} {r['tokens_per_s_per_gpu']:>9,.0f} "
              f"{100 * r['mfu']:5.1f}% {eff} {r['step_ms']:8.1f} {r['exposed_comm_ms']:9.1f} ms {r['allreduce_ms']:7.1f} ms "
              f"{r['opt_ms']:7.1f} {mem}")
    (folder / "ddp_scaling.json").write_text(json.dumps(rows, indent=1))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="gpt2-small,gpt2-medium")
    p.add_argument("--modes", default="ddp,zero1")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", type=int, default=0, help="per-GPU batch (default: 32 small, 16 medium)")
    p.add_argument("--bucket-mb", type=float, default=25.0)
    p.add_argument("--no-bf16-weights", action="store_true",
                   help="cast weights under autocast each step instead of keeping bf16 copies (TrainConfig.bf16_weights)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-mode", choices=["blocks", "model"], default="model",
                   help="model: one graph (pretraining's default); blocks: each transformer block compiled on its own "
                        "(its buckets all-reduced while earlier blocks are still in backward)")
    p.add_argument("--tag", default="", help="suffix of the result file (to keep variants apart)")
    p.add_argument("--attention", default=None, help="model attention kind (default: the preset's auto)")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--summarize", metavar="DIR")
    args = p.parse_args()
    if args.summarize:
        return summarize(Path(args.summarize))
    if "RANK" not in os.environ:  # plain `python`: a world of one
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        torch.backends.cuda.matmul.allow_tf32 = True
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    rows = []
    try:
        for mname in args.models.split(","):
            for mode in args.modes.split(","):
                try:
                    row = measure(mname, mode, args, device, rank, world)
                except torch.OutOfMemoryError as exc:
                    row = {"model": mname, "mode": mode, "world": world, "error": f"OOM: {str(exc)[:120]}"}
                rows.append(row)
                if rank == 0:
                    print(json.dumps(row), flush=True)
                    out = Path(args.out)
                    out.mkdir(parents=True, exist_ok=True)
                    (out / f"ddp_scaling-{world}{args.tag}.json").write_text(json.dumps([r for r in rows if "error" not in r], indent=1))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
