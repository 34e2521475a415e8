"""The training stages' configs, importable without torch: `sift run` (pipelines/run.py) validates a whole job's
config, curation stages included, before any stage runs, and a curation-only driver need not load torch (~1.5 s).
The modules that run them re-export them (`training.pretrain.TrainConfig`, `training.align.grpo.AlignConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALIGN_COMMANDS = ("sft", "ei", "grpo", "dpo")
"""`sift align` commands, in the order a job runs them (training.align.grpo.COMMANDS maps each to its loop)."""


@dataclass(frozen=True)
class TrainConfig:
    shards: str = ""
    """A finished `sift tokenize` output folder (tokens/manifest.json), or a flat uint16 token file."""
    output: str = ""
    preset: str = "tiny"
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of the preset's ModelConfig fields (vocab_size comes from the shards' tokenizer)."""
    steps: int = 300
    batch_size: int = 16
    context_length: int = 64
    grad_accum: int = 1
    max_lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 50
    eval_batches: int = 8
    checkpoint_every: int = 100
    device: str = "auto"
    compile: bool = False
    compile_mode: str = "model"
    """model: one graph (fastest: 319k vs 242k tokens/s for gpt2-small on an H100); with DDP all gradients then appear
    at the end of backward and their buckets are all-reduced without overlap. blocks: each transformer block compiled
    on its own, so buckets are all-reduced while earlier blocks are still in backward (for slow interconnects)."""
    bf16_weights: bool = True
    """On CUDA (bf16 autocast): every Linear (the LM head too) multiplies by a bf16 copy of its weight that the
    optimizer refreshes as it updates the fp32 weight (`model.precision`), instead of casting the weight in every
    forward pass and the weight's gradient in every backward pass. The fp32 weights, gradients and optimizer state are unchanged."""
    cuda_graphs: bool = False
    """With compile on CUDA: torch.compile's "reduce-overhead" mode (CUDA graphs: the step's kernels replayed without
    a launch each from Python). One optimizer step is one graph generation; micro-batches record their own graphs. Measured on H100s:
    1.6x the tokens/s of gpt2-small at micro-batch 8 on one GPU, 1.8x with DDP on two; no gain once the GPU is the
    bottleneck (micro-batch 16 and up)."""
    resume: bool = False
    overwrite: bool = False
    """Train again from scratch into an output that already holds a run (its checkpoint and metrics are replaced);
    without it (or --resume) such an output is refused."""
    zero1: bool = False
    """With several workers: shard the optimizer state across them (ZeRO-1). Each weight's owner updates it and
    broadcasts it (with bf16_weights on CUDA: its bf16 copy, half the bytes; the fp32 weights are synchronised before
    each checkpoint). gpt2-medium on 4 H100s: 92.3 % weak-scaling efficiency, 2.4 GB less memory than DDP."""
    bucket_mb: float = 25.0
    """With several workers: gradient all-reduce bucket size (buckets are reduced during the backward pass)."""
    stop_after: int = 0
    """Stop this invocation after so many steps (0: run to `steps`); with --resume, a time-limited or
    preemptible job continues in the next invocation exactly as if it had not stopped."""


TEMPLATES = {
    "r1_zero": None,  # rewards.PROMPT, the DeepSeek-R1-Zero style instruction
    "plain": "{question}\n<think>",  # short, for small models with short contexts
}


@dataclass(frozen=True)
class AlignConfig:
    output: str = ""
    tokenizer: str = ""
    """A tokenizer folder (`sift train-tokenizer` output) or "gpt2"."""
    checkpoint: str = ""
    """A `sift pretrain` (or `sift align sft`) checkpoint, or a Hugging Face Llama/Mistral/Qwen2 folder
    (model/hf.py); empty: a fresh model of `preset` (tests, smoke runs)."""
    preset: str = "tiny"
    model: dict[str, Any] | None = None
    task: str = "arithmetic"
    """arithmetic (generated, `difficulty`), gsm8k or countdown (from `data` JSONL files)."""
    data: str = ""
    difficulty: int = 1
    template: str = "plain"
    train_size: int = 512
    eval_size: int = 64
    seed: int = 0
    device: str = "auto"
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # SFT
    sft_steps: int = 100
    sft_batch_size: int = 16
    # GRPO
    grpo_steps: int = 20
    rollout_batch_size: int = 16
    group_size: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 48
    epochs_per_rollout_batch: int = 1
    micro_batch_size: int = 8
    loss_type: str = "reinforce_with_baseline"
    cliprange: float = 0.2
    use_std_normalization: bool = True
    save_pairs: bool = True
    """Append (chosen, rejected) pairs from groups with mixed rewards to <output>/pairs.jsonl (for DPO)."""
    format_bonus: float = 0.0
    """Added to the reward of a well-formed response (0: the answer alone counts, the R1-Zero rule)."""
    advantage_eps: float = 1e-6
    length_normalization: str = "mean"
    eval_every: int = 5
    use_ray: bool = True
    # expert iteration
    ei_steps: int = 5
    ei_sft_epochs: int = 2
    # DPO
    dpo_steps: int = 50
    dpo_batch_size: int = 16
    dpo_beta: float = 0.1
    pairs: str = ""
    """JSONL of {"prompt", "chosen", "rejected"}; empty: pairs built from the task (the reference solution against
    the same worked solution with a wrong final answer)."""
    rollout_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.task not in ("arithmetic", "gsm8k", "countdown"):
            raise ValueError(f"task {self.task!r}: arithmetic, gsm8k or countdown")
        if self.template not in TEMPLATES:
            raise ValueError(f"template {self.template!r}: one of {', '.join(TEMPLATES)}")
        if self.rollout_batch_size % self.group_size:
            raise ValueError("rollout_batch_size must be a multiple of group_size")
        if self.loss_type not in ("no_baseline", "reinforce_with_baseline", "grpo_clip"):
            raise ValueError(f"loss_type {self.loss_type!r}")
        if self.loss_type != "grpo_clip" and self.epochs_per_rollout_batch > 1:
            raise ValueError("several epochs per rollout batch are off-policy: use loss_type grpo_clip")
