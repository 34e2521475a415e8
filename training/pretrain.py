"""`sift pretrain`: train the project's TransformerLM on the token shards of a `sift tokenize` run.

    sift pretrain --shards runs/demo-tokens --output runs/demo-model --preset tiny --steps 300
    python -m training.pretrain --shards ... --resume      # continue bit for bit from the last checkpoint
    sift pretrain ... --num-workers 4 --use-gpu            # data parallel on Ray Train (one worker per GPU)
    torchrun --nproc-per-node 2 -m training.pretrain ...   # the same without Ray

One process (CPU, or one GPU with bf16 autocast and optional torch.compile). Per step: `grad_accum` micro-batches
from a seeded, resumable sampler; the loss from the model itself (`forward(x, targets=y)`: on CUDA the LM head
and cross-entropy fused into one Triton op, elsewhere the logits and the project's `cross_entropy`), global-norm
clipping (`clip_scale`, applied inside the update), `AdamW` and cosine schedule.
Writes <output>/metrics.jsonl (loss, lr, grad norm, tokens/s, MFU on GPUs), periodic validation loss,
checkpoints (model, optimizer, step, config, sampler position, RNG states; atomic) and loss.png.
With several workers (Ray Train or torchrun) the project's DDP (training/ddp.py) synchronises gradients.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import LEGACY_DEFAULTS, ModelConfig, forward_flops_per_token, parameter_count, preset
from model.layers import TransformerLM
from model.precision import attach_low_precision_weights, copy_only_weights
from pipelines.config import parse_set, resolve, config_parser
from training.configs import TrainConfig  # noqa: F401 - re-exported (`from training.pretrain import TrainConfig`)
from training.checkpoint import load_checkpoint, load_payload, save_checkpoint
from training.data import BatchSampler, TokenDataset, validation_batches
from training.optim import AdamW, clip_scale, lr_cosine_schedule

# dense bf16 peak of the cards MFU is reported against (FLOP/s)
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def resolve_device(name: str) -> torch.device:
    """auto: cuda when available, else cpu; anything else as torch names it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this torch sees no CUDA GPU (use device=auto or cpu)")
    return device


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def mfu(flops_per_step: float, seconds: float, peak_per_device: float | None, world: int = 1) -> float | None:
    """Model FLOPs utilisation: the step's model FLOPs (summed over all ranks) per second over the peak of all
    `world` devices. None when the device's peak is unknown (CPU, unlisted GPU)."""
    if not peak_per_device or seconds <= 0:
        return None
    return flops_per_step / seconds / (peak_per_device * world)


def load_data(cfg: TrainConfig) -> tuple[TokenDataset, TokenDataset | None, int | None]:
    path = Path(cfg.shards)
    if path.is_dir():
        train = TokenDataset.from_run(path, "train")
        try:
            val = TokenDataset.from_run(path, "validation")
        except ValueError:
            val = None
        return train, val, getattr(train, "vocab_size", None)
    if path.is_file():
        return TokenDataset.from_file(path), None, None
    raise ValueError(f"--shards {cfg.shards!r}: neither a `sift tokenize` output folder nor a token file")


def check_splits(train: TokenDataset, val: TokenDataset | None, cfg: TrainConfig, warn: bool = True) -> TokenDataset | None:
    """A training split must hold one window of context_length + 1 tokens (else: ValueError); a validation split
    too short for one window is dropped with a warning, as is a missing one (no validation loss either way)."""
    if not train.windows(cfg.context_length).any():
        raise ValueError(f"--shards {cfg.shards!r}: no training shard holds context_length + 1 = "
                         f"{cfg.context_length + 1} tokens (largest: {int(train.sizes.max(initial=0))}); lower context_length")
    if val is None:
        if warn:
            print(f"warning: {cfg.shards} has no validation split, so no validation loss (tokenize with --set "
              "validation_fraction=0.05)", file=sys.stderr)
        return None
    if not any(len(a) > cfg.context_length for a in val.arrays):
        if warn:
            print(f"warning: the validation split of {cfg.shards} ({val.num_tokens:,} tokens) has no shard longer than "
              f"context_length {cfg.context_length}: no validation loss", file=sys.stderr)
        return None
    return val


@torch.no_grad()
def evaluate(model, val: TokenDataset, cfg: TrainConfig, device, autocast) -> float:
    model.eval()
    losses = []
    for x, y in validation_batches(val, cfg.batch_size, cfg.context_length, cfg.eval_batches, device):
        with autocast():  # the training loss path (on CUDA the fused head + loss: no (batch, seq, vocab) logits)
            losses.append(float(model(x, targets=y)))
    model.train()
    return float(np.mean(losses)) if losses else float("nan")


def _check_fits(ckpt: Path, out: Path, mcfg: ModelConfig) -> None:
    """--resume into a run made with another model shape: a ValueError naming the differing settings (before
    loading, instead of a state-dict size mismatch)."""
    try:
        saved = json.loads((out / "config.json").read_text())["model"]
    except (OSError, ValueError, KeyError):
        return
    shape = ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "num_kv_heads", "tie_embeddings")
    now = asdict(mcfg)
    diff = [f"{k} {saved[k]} (checkpoint) vs {now[k]} (now)" for k in shape if k in saved and k in now and saved[k] != now[k]]
    if diff:
        raise ValueError(f"--resume: {ckpt} was trained with another model: {'; '.join(diff)}. Use the run's own "
                         "--preset and settings (its config.json), or choose another --output")


def _as_started(mcfg: ModelConfig, out: Path, overrides: dict[str, Any]) -> ModelConfig:
    """On resume, model settings added to sift after the run started keep the value the run was trained with
    (recorded in its config.json), unless the command sets them explicitly."""
    try:
        saved = json.loads((out / "config.json").read_text())["model"]
    except (OSError, ValueError, KeyError):
        return mcfg
    # the value the run was started with: as recorded (a resumed run rewrites config.json with it), else the
    # behaviour of the code that wrote a config without the field
    keep = {k: saved.get(k, old) for k, old in LEGACY_DEFAULTS.items() if k not in overrides}
    return mcfg.with_(**keep) if keep else mcfg


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train on one process, or as one rank of an initialised torch.distributed group (Ray Train, torchrun):
    then every rank draws its own micro-batches (seed + rank), gradients are all-reduced in buckets during
    backward, and rank 0 alone writes metrics and checkpoints (plus one optimizer shard per rank with ZeRO-1)."""
    import torch.distributed as dist

    if not cfg.shards or not cfg.output:
        raise ValueError("pretrain needs --shards and --output")
    if cfg.compile_mode not in ("model", "blocks"):
        raise ValueError(f"compile_mode {cfg.compile_mode!r}: expected model or blocks")
    if cfg.cuda_graphs and not (cfg.compile and cfg.compile_mode == "model"):
        raise ValueError("cuda_graphs needs compile=true with compile_mode=model")
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = resolve_device(cfg.device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    train_ds, val_ds, vocab = load_data(cfg)
    val_ds = check_splits(train_ds, val_ds, cfg, warn=rank == 0)
    mcfg: ModelConfig = preset(cfg.preset, **{"context_length": cfg.context_length, **cfg.model,
                                              **({"vocab_size": vocab} if vocab else {})})
    if cfg.context_length > mcfg.context_length:
        raise ValueError(f"context_length {cfg.context_length} exceeds the model's {mcfg.context_length}")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    if not cfg.resume and not cfg.overwrite and (ckpt.exists() or (out / "metrics.jsonl").exists()):
        raise ValueError(f"{out} already holds a pretraining run: pass --resume to continue it, --set overwrite=true "
                         "to train it again from scratch, or choose another --output")
    if cfg.resume and ckpt.exists():
        mcfg = _as_started(mcfg, out, cfg.model)
        _check_fits(ckpt, out, mcfg)
    torch.manual_seed(cfg.seed)
    model = TransformerLM.from_config(mcfg, device=device)
    ddp = None
    if distributed:
        from training.ddp import DDPBucketed, ShardedOptimizer

        # one rank has nothing to all-reduce: no buckets or hooks (they cost 2.6 ms a gpt2-medium step on an H100)
        ddp = DDPBucketed(model, bucket_mb=cfg.bucket_mb) if world > 1 else None
    # bf16 weight copies the optimizer keeps current (refreshed on every state-dict load, so also after a resume)
    copies = attach_low_precision_weights(model) if cfg.bf16_weights and device.type == "cuda" else {}
    # with torch.compile, the optimizer step is compiled too (on CUDA): one fused update instead of ~10 foreach kernels
    opt_kw = dict(lr=cfg.max_lr, betas=cfg.betas, weight_decay=cfg.weight_decay, compiled="auto" if cfg.compile else False,
                  low_precision=copies)
    if distributed and cfg.zero1:
        # the forward pass (bf16 autocast on CUDA) reads these weights only through their copies: their owners
        # broadcast the copies, half the bytes; the fp32 values are synchronised before each checkpoint
        opt = ShardedOptimizer(model.parameters(), AdamW, copy_only=copy_only_weights(model) if copies else (), **opt_kw)
    else:
        opt = AdamW(model.parameters(), **opt_kw)
    sampler = BatchSampler(train_ds, cfg.batch_size, cfg.context_length, cfg.seed + rank, device)
    shard_file = out / f"optimizer-rank{rank}.pt"
    start = 0
    if cfg.resume and ckpt.exists():
        try:
            start, extra = load_checkpoint(ckpt, model, None if (distributed and cfg.zero1) else opt, return_extra=True)
        except RuntimeError as exc:  # a state dict of another shape (a run without config.json to compare)
            raise ValueError(f"--resume: {ckpt} does not fit this model: {str(exc).splitlines()[0]} ...") from None
        if start >= cfg.steps and rank == 0:
            print(f"{out}: already trained {start} steps (steps={cfg.steps}): nothing to do", file=sys.stderr)
        sampler.load_state_dict(extra["samplers"][rank] if "samplers" in extra else extra["sampler"])
        if distributed and cfg.zero1:
            opt.load_state_dict(load_payload(shard_file))
    elif rank == 0 and not cfg.resume:  # a fresh run (or overwrite=true): nothing of an earlier one stays behind
        for old in [out / "metrics.jsonl", ckpt, out / "loss.png", *out.glob("optimizer-rank*.pt")]:
            old.unlink(missing_ok=True)
    if distributed:
        dist.barrier()
    step_model = ddp or model
    graphs = cfg.cuda_graphs and device.type == "cuda"  # CUDA graphs: nothing to replay on other devices
    if cfg.compile and cfg.compile_mode == "blocks":
        for layer in model.layers:
            layer.compile()
    elif cfg.compile:
        step_model = torch.compile(ddp or model, mode="reduce-overhead" if graphs else None)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext
    tokens_per_step = cfg.batch_size * cfg.context_length * cfg.grad_accum * world
    flops_per_step = 3 * forward_flops_per_token(mcfg, cfg.context_length) * tokens_per_step
    # the PaLM / nanoGPT count (attention as if unmasked), for comparison with numbers other tools print
    flops_per_step_palm = 3 * forward_flops_per_token(mcfg, cfg.context_length, causal=False) * tokens_per_step
    peak = _peak_flops(device)
    if rank == 0:
        (out / "config.json").write_text(json.dumps({"train": asdict(cfg), "model": asdict(mcfg), "world_size": world,
                                                     "parameters": parameter_count(mcfg)}, indent=2, default=list))
    history: list[dict[str, Any]] = []
    metrics = open(out / "metrics.jsonl", "a") if rank == 0 else open(os.devnull, "w")

    def checkpoint(step_done: int) -> None:
        samplers = [None] * world
        if distributed:
            dist.all_gather_object(samplers, sampler.state_dict())
        else:
            samplers = [sampler.state_dict()]
        if distributed and cfg.zero1:
            opt.sync_parameters()  # fp32 weights received as bf16 copies since the last checkpoint
            torch.save(opt.state_dict(), shard_file)
        if rank == 0:
            save_checkpoint(model, None if (distributed and cfg.zero1) else opt,
                            step_done, ckpt, config=asdict(cfg), model_config=asdict(mcfg), samplers=samplers,
                            sampler=samplers[0])
        if distributed:
            dist.barrier()

    try:
        from tqdm import tqdm

        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="pretrain", disable=None)
        t_last = t_begin = t_logged = time.perf_counter()
        for step in bar:
            if cfg.stop_after and step - start >= cfg.stop_after:
                checkpoint(step)
                break
            lr = lr_cosine_schedule(step, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.steps)
            for group in opt.param_groups:
                group["lr"] = lr
            total = torch.zeros((), device=device)  # summed on the device: no host sync per micro-batch
            if graphs:  # a new step: outputs of the last step's graphs may be overwritten from here on
                torch.compiler.cudagraph_mark_step_begin()
            for micro in range(cfg.grad_accum):
                if ddp is not None:
                    ddp.sync = micro == cfg.grad_accum - 1  # all-reduce once, during the last backward
                x, y = sampler.next()
                with autocast():
                    # the model computes the loss: on CUDA the LM head and cross-entropy as one fused op
                    # (model.kernels.cross_entropy_triton), else its logits and `cross_entropy`
                    loss = step_model(x, targets=y) / cfg.grad_accum
                loss.backward()
                total += loss.detach().float()
            if ddp is not None:
                ddp.finish_gradient_synchronization()
                dist.all_reduce(total)
                total /= world
            # the clip factor stays on the device and is applied inside the optimizer's update
            norm_t, clip = clip_scale(model.parameters(), cfg.grad_clip)
            opt.step(grad_scale=clip)
            opt.zero_grad(set_to_none=True)
            norm, total = float(norm_t), float(total)  # the step's one host sync
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            dt, t_last = now - t_last, now
            row = {"step": step + 1, "loss": total, "lr": lr, "grad_norm": norm, "tokens": (step + 1) * tokens_per_step,
                   "tokens_per_s": tokens_per_step / dt, "mfu": mfu(flops_per_step, dt, peak, world),
                   "mfu_palm": mfu(flops_per_step_palm, dt, peak, world)}
            if rank == 0 and val_ds is not None and cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
                row["val_loss"] = evaluate(model, val_ds, cfg, device, autocast)
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            history.append(row)
            bar.set_postfix(loss=f"{total:.3f}", lr=f"{lr:.1e}")
            if bar.disable and rank == 0:  # no terminal (a log file, a Ray job): a line every 10 % of the run or 30 s
                log_every = max(1, (cfg.steps - start) // 10)
                if (step + 1 - start) % log_every == 0 or step + 1 == cfg.steps or now - t_logged >= 30:
                    t_logged = now
                    eta = (cfg.steps - step - 1) * (now - t_begin) / (step + 1 - start)
                    val = f" val {row['val_loss']:.3f}" if "val_loss" in row else ""
                    print(f"pretrain step {step + 1}/{cfg.steps} loss {total:.3f}{val} {row['tokens_per_s']:,.0f} tok/s "
                          f"eta {eta:.0f}s", file=sys.stderr, flush=True)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                checkpoint(step + 1)
    finally:
        metrics.close()
    if rank != 0:
        return {"rank": rank, "losses": [r["loss"] for r in history]}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    plot_losses(rows, out / "loss.png")
    final = rows[-1] if rows else {}
    return {"output": str(out), "steps": final.get("step", start), "final_loss": final.get("loss"),
            "val_loss": next((r["val_loss"] for r in reversed(rows) if "val_loss" in r), None),
            "parameters": parameter_count(mcfg), "losses": [r["loss"] for r in rows]}


def plot_losses(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        return
    try:
        import matplotlib
    except ImportError:  # a bare GPU image: metrics.jsonl has the numbers, plot them elsewhere
        print("matplotlib is not installed: no loss.png", file=sys.stderr)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train", lw=1)
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def unigram_entropy(ds: TokenDataset) -> float:
    """Entropy (nats) of the token frequencies: the loss of a model that ignores context."""
    counts = np.zeros(int(max(int(a.max()) for a in ds.arrays)) + 1, np.int64)
    for a in ds.arrays:
        counts += np.bincount(np.asarray(a, dtype=np.int64), minlength=len(counts))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _ray_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: the process group (gloo on CPU, NCCL on GPUs) is already set up by TorchTrainer."""
    from pipelines.config import build

    train(build(TrainConfig, config["cfg"]))


def launch(cfg: TrainConfig, num_workers: int, use_gpu: bool) -> dict[str, Any]:
    """Data-parallel training as a Ray Train job: one worker per GPU (or CPU slot), the project's DDP inside."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.layout import init_ray

    init_ray(None)
    out = Path(cfg.output).resolve()
    import importlib

    # by reference to the importable module: under `python -m training.pretrain` this file is __main__, whose
    # functions cloudpickle would ship by value, without their module's globals
    worker = importlib.import_module("training.pretrain")._ray_worker
    trainer = TorchTrainer(
        worker,
        train_loop_config={"cfg": {**asdict(cfg), "output": str(out), "shards": str(Path(cfg.shards).resolve())}},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(storage_path=str(out / "ray"), name="pretrain"),
    )
    trainer.fit()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    return {"output": str(out), "workers": num_workers, "steps": rows[-1]["step"] if rows else 0,
            "final_loss": rows[-1]["loss"] if rows else None, "losses": [r["loss"] for r in rows]}


def main(argv: list[str] | None = None, prog: str = "python -m training.pretrain") -> int:
    p = config_parser(prog, "Pretrain a TransformerLM on sift token shards.", TrainConfig)
    p.add_argument("--shards", help="a sift tokenize output folder (or a flat uint16 token file)")
    p.add_argument("--output", "-o")
    p.add_argument("--preset", help="model preset: tiny, small-cpu, gpt2-small, gpt2-medium, ...")
    p.add_argument("--steps", type=int)
    p.add_argument("--config", "-c")
    p.add_argument("--resume", action="store_true", default=None)
    p.add_argument("--num-workers", type=int, default=1, help="data-parallel workers, launched with Ray Train when > 1")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per Ray Train worker (NCCL); else gloo on CPU")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    try:
        overrides = parse_set(args.set)
        for key in ("shards", "output", "preset", "steps", "resume"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        cfg = resolve(TrainConfig, args.config, overrides)
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun: join its process group
            import torch.distributed as dist

            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            dist.init_process_group(backend)
            try:
                result = train(cfg)
            finally:
                dist.destroy_process_group()
            if int(os.environ["RANK"]) != 0:
                return 0
        else:
            result = launch(cfg, args.num_workers, args.use_gpu) if args.num_workers > 1 else train(cfg)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.pop("losses")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
