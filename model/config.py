"""One `ModelConfig`, named presets, and parameter / FLOP counts used by training (MFU) and scaling laws."""

from __future__ import annotations

from dataclasses import dataclass, replace


def default_d_ff(d_model: int) -> int:
    """≈ 8/3 d_model rounded to a multiple of 64 (the SwiGLU size that keeps FLOPs equal to a 4x MLP)."""
    return max(64, int(round(8 * d_model / 3 / 64)) * 64)


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 50257
    context_length: int = 1024
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    d_ff: int | None = None
    """Feed-forward width; None = 8/3 d_model rounded to a multiple of 64."""
    rope_theta: float = 10000.0
    attention: str = "auto"
    """auto (PyTorch's SDPA on CUDA, tiled PyTorch FlashAttention-2 on CPU), triton (the project's Triton
    FlashAttention-2), flash_torch, sdpa (PyTorch's fused attention), cudnn (SDPA held to cuDNN, CUDA only) or
    reference."""
    num_kv_heads: int | None = None
    """Grouped-query attention: key/value heads (None: as many as query heads)."""
    qkv_bias: bool = False
    tie_embeddings: bool = False
    norm_eps: float = 1e-5
    vocab_multiple: int = 64
    """Embedding and LM-head rows are padded to a multiple of this (faster GEMMs; 1 = no padding). Logits keep
    exactly vocab_size columns."""
    autocast_residual: bool = True
    """Under bf16 autocast, carry the residual stream in bf16 (not under fp16 autocast, whose range it could
    overflow): the embedding output is cast once, so the residual adds and the norms' inputs move half the bytes
    (gpt2-medium on an H100: +3.4 % tokens/s, the same loss curve). Off: the stream keeps the parameters' dtype
    (fp32 with fp32 weights), as PyTorch's autocast leaves it. No effect without autocast (CPU training, fp32
    evaluation). Configs saved before this field existed mean False (see `from_dict`)."""

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
        if (self.d_model // self.num_heads) % 2:
            raise ValueError("the head dimension must be even (RoPE rotates pairs)")
        if self.num_kv_heads is not None and (self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads):
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if min(self.vocab_size, self.context_length, self.d_model, self.num_layers) < 1:
            raise ValueError("vocab_size, context_length, d_model and num_layers must be positive")

    @property
    def ff(self) -> int:
        return self.d_ff or default_d_ff(self.d_model)

    @property
    def d_head(self) -> int:
        return self.d_model // self.num_heads

    def with_(self, **changes) -> "ModelConfig":
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, saved: dict) -> "ModelConfig":
        """A config saved by any sift version (a checkpoint's model_config, a run's config.json): fields added
        since then take the value the older code behaved as, not today's default."""
        return cls(**{**LEGACY_DEFAULTS, **saved})


# Fields added after checkpoints were first written, with the behaviour of code that predates them.
LEGACY_DEFAULTS: dict[str, object] = {"autocast_residual": False}


# GPT-2 shapes (Radford et al. 2019) with this architecture (RMSNorm, SwiGLU, RoPE, untied head).
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=512, context_length=64, d_model=64, num_layers=2, num_heads=4),
    "small-cpu": ModelConfig(vocab_size=10000, context_length=256, d_model=256, num_layers=4, num_heads=8),
    "gpt2-small": ModelConfig(d_model=768, num_layers=12, num_heads=12),
    "gpt2-medium": ModelConfig(d_model=1024, num_layers=24, num_heads=16),
    "gpt2-large": ModelConfig(d_model=1280, num_layers=36, num_heads=20),
    "gpt2-xl": ModelConfig(d_model=1600, num_layers=48, num_heads=25),
}


def preset(name: str, **changes) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name].with_(**changes)


def parameter_count(cfg: ModelConfig, include_embeddings: bool = True) -> int:
    """Exact number of parameters of `TransformerLM.from_config(cfg)`."""
    d, f = cfg.d_model, cfg.ff
    kv = (cfg.num_kv_heads or cfg.num_heads) * cfg.d_head
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * f + 2 * d  # q, o; k, v; w1, w2, w3; two RMSNorm gains
    if cfg.qkv_bias:
        per_layer += d + 2 * kv
    total = cfg.num_layers * per_layer + d + cfg.vocab_size * d  # + final norm + LM head
    if include_embeddings and not cfg.tie_embeddings:  # a tied head is the embedding table, counted once
        total += cfg.vocab_size * d
    return total


def forward_flops_per_token(cfg: ModelConfig, seq_len: int | None = None, causal: bool = True) -> float:
    """Matmul FLOPs of one forward pass per token (2 per multiply-add), attention scores included.

    Per layer: projections 8 d^2, feed-forward 6 d f, attention QK^T and PV 4 * seq * d (halved when causal,
    counting only the unmasked half, as FlashAttention's FLOP figures do). Plus the LM head 2 d V.
    Elementwise work (norms, softmax, RoPE) is ignored. Training costs about 3x this."""
    s = seq_len or cfg.context_length
    d, f = cfg.d_model, cfg.ff
    kv = (cfg.num_kv_heads or cfg.num_heads) * cfg.d_head
    attn = 4 * s * d * (0.5 if causal else 1.0)
    per_layer = 4 * d * d + 4 * d * kv + 6 * d * f + attn  # q, o: 2 d^2 each; k, v: 2 d kv each
    return cfg.num_layers * per_layer + 2 * d * cfg.vocab_size


def training_flops(cfg: ModelConfig, tokens: float, seq_len: int | None = None) -> float:
    """Forward + backward FLOPs for `tokens` tokens (backward = 2x forward)."""
    return 3 * forward_flops_per_token(cfg, seq_len) * tokens
