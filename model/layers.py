"""Transformer LM building blocks, from first principles.

Only `nn.Parameter`, `nn.Module` and container modules are used as building blocks: no `nn.Linear`,
no `torch.nn.functional` layers. Every function and module accepts arbitrary leading batch dimensions
(`...` in the shape comments).
"""

from __future__ import annotations

import math

import torch
from einops import einsum, rearrange
from torch import Tensor, nn

from model.config import default_d_ff  # noqa: F401 - re-exported (the SwiGLU default width)
from model.loss import cross_entropy


def _trunc_normal_(w: Tensor, std: float) -> Tensor:
    return nn.init.trunc_normal_(w, mean=0.0, std=std, a=-3 * std, b=3 * std)


class Linear(nn.Module):
    """y = x W^T, W stored (out, in); init N(0, 2/(in+out)) truncated at ±3σ.

    `weight_lp` (a non-persistent buffer, None by default) is an optional low-precision copy of the weight kept
    current by the optimizer (`model.precision`): under autocast to its dtype the product uses it, not a fresh cast
    of the fp32 weight, and the weight's gradient is computed in fp32 (written so by the backward GEMM on CUDA). A
    conversion or move of the module (`.to`, `.half()`) drops the copy."""

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        _trunc_normal_(self.weight, math.sqrt(2.0 / (in_features + out_features)))
        # an optional bias (Qwen2's q/k/v projections have one); absent by default, so no state-dict entry
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        self.register_buffer("weight_lp", None, persistent=False)

    def _apply(self, fn, recurse: bool = True):
        before = self.weight_lp
        out = super()._apply(fn, recurse)
        if before is not None and self.weight_lp is not before:
            # moved or converted (`.to`, `.half()`): no longer the tensor the optimizer keeps current; attach again
            self.weight_lp = None
        return out

    def forward(self, x: Tensor) -> Tensor:
        lp = self.weight_lp
        if (lp is not None and torch.is_autocast_enabled(x.device.type)
                and torch.get_autocast_dtype(x.device.type) == lp.dtype):
            from model.precision import linear_low_precision

            y = linear_low_precision(x, self.weight, lp)
            return y + self.bias if self.bias is not None else y
        # (..., in) @ (in, out) -> (..., out). A plain matmul against the transposed view: cuBLAS then sees the
        # same layout as F.linear (an einsum here picked a slow pre-Hopper GEMM for the odd 50,257-wide head)
        y = x @ self.weight.t()
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"


class Embedding(nn.Module):
    """Lookup table (vocab, d_model); init N(0, 1) truncated at ±3."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        _trunc_normal_(self.weight, 1.0)

    def forward(self, token_ids: Tensor) -> Tensor:
        # (...) int -> (..., d_model)
        return self.weight[token_ids]


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g, computed in fp32 and returned in the input dtype."""

    def __init__(self, d_model: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        in_dtype = x.dtype
        x32 = x.to(torch.float32)
        rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return (x32 * rms * self.weight.to(torch.float32)).to(in_dtype)


def silu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class SwiGLU(nn.Module):
    """W2 (SiLU(W1 x) ⊙ W3 x)."""

    def __init__(self, d_model: int, d_ff: int | None = None, device=None, dtype=None):
        super().__init__()
        d_ff = d_ff or default_d_ff(d_model)
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)
        self.w3 = Linear(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(silu(self.w1(x)) * self.w3(x))


class RotaryEmbedding(nn.Module):
    """RoPE on interleaved pairs (x[2j], x[2j+1]) rotated by angle pos * theta^(-2j/d_k).

    cos/sin tables (max_seq_len, d_k/2) are precomputed non-persistent buffers, indexed by token positions."""

    def __init__(self, theta: float, d_k: int, max_seq_len: int, device=None):
        super().__init__()
        if d_k % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {d_k}")
        inv_freq = theta ** (-torch.arange(0, d_k, 2, device=device, dtype=torch.float64) / d_k)  # (d_k/2,)
        angles = torch.arange(max_seq_len, device=device, dtype=torch.float64)[:, None] * inv_freq[None, :]
        self.register_buffer("cos", angles.cos().to(torch.float32), persistent=False)  # (max_seq_len, d_k/2)
        self.register_buffer("sin", angles.sin().to(torch.float32), persistent=False)

    def forward(self, x: Tensor, token_positions: Tensor) -> Tensor:
        # x (..., seq, d_k); token_positions (..., seq) broadcastable to x's leading dims
        cos = self.cos[token_positions]  # (..., seq, d_k/2)
        sin = self.sin[token_positions]
        pairs = rearrange(x.to(torch.float32), "... (j two) -> ... j two", two=2)  # (..., seq, d_k/2, 2)
        x0, x1 = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)  # (..., seq, d_k/2, 2)
        return rearrange(rotated, "... j two -> ... (j two)").to(x.dtype)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Numerically stable softmax: subtract the max before exponentiating."""
    shifted = x - x.amax(dim=dim, keepdim=True)
    e = torch.exp(shifted)
    return e / e.sum(dim=dim, keepdim=True)


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d_k)) v; `mask` True = may attend. q (..., n, d_k), k (..., m, d_k), v (..., m, d_v)."""
    scores = einsum(q, k, "... n d, ... m d -> ... n m") / math.sqrt(q.shape[-1])  # (..., n, m)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return einsum(softmax(scores, dim=-1), v, "... n m, ... m d -> ... n d")


class MultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention with RoPE on queries and keys.

    `attention` picks the kernel: "auto" (PyTorch's SDPA on CUDA, the tiled PyTorch FlashAttention-2 of
    model.kernels on CPU), "flash_torch", "triton" (the project's Triton FlashAttention-2), "sdpa" (PyTorch's fused
    attention), "cudnn" (SDPA's cuDNN backend, CUDA only), or "reference" (`scaled_dot_product_attention` above)."""

    def __init__(self, d_model: int, num_heads: int, max_seq_len: int = 2048, rope_theta: float = 10000.0,
                 attention: str = "auto", device=None, dtype=None, num_kv_heads: int | None = None,
                 qkv_bias: bool = False):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        kv = num_kv_heads or num_heads
        if num_heads % kv:
            raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {kv}")
        self.d_model, self.num_heads, self.d_head = d_model, num_heads, d_model // num_heads
        self.num_kv_heads = kv  # grouped-query attention: each key/value head serves num_heads / kv query heads
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype, bias=qkv_bias)
        self.k_proj = Linear(d_model, kv * self.d_head, device=device, dtype=dtype, bias=qkv_bias)
        self.v_proj = Linear(d_model, kv * self.d_head, device=device, dtype=dtype, bias=qkv_bias)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.rope = RotaryEmbedding(rope_theta, self.d_head, max_seq_len, device=device) if rope_theta else None
        self.attention = attention

    def forward(self, x: Tensor, token_positions: Tensor | None = None, cache: "LayerKVCache | None" = None) -> Tensor:
        *lead, seq, _ = x.shape
        # (..., seq, d_model) -> (..., seq, heads, d_head): RoPE runs in the projections' own layout, then the
        # (..., heads, seq, d_head) views go to attention, which reads those strides (no transposing copies), and
        # returns its output laid out (..., seq, heads, d_head), so the output projection needs no copy either
        q = self.q_proj(x).unflatten(-1, (self.num_heads, self.d_head))
        k = self.k_proj(x).unflatten(-1, (self.num_kv_heads, self.d_head))
        v = self.v_proj(x).unflatten(-1, (self.num_kv_heads, self.d_head))
        if self.rope is not None:
            if token_positions is None:
                start = cache.length if cache is not None else 0
                token_positions = torch.arange(start, start + seq, device=x.device)  # (seq,)
            pos = token_positions.unsqueeze(-1)  # (..., seq, 1): the same angle for every head
            q, k = self.rope(q, pos), self.rope(k, pos)
        q, k, v = q.transpose(-3, -2), k.transpose(-3, -2), v.transpose(-3, -2)  # (..., heads, seq, d_head)
        if cache is not None:  # decoding: the new queries attend every cached key (bottom-right causal)
            k, v = cache.append(k, v)  # (..., kv heads, cached + seq, d_head)
        if self.num_kv_heads != self.num_heads:  # query head i reads key/value head i // group
            group = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
        out = attend(q, k, v, causal=True, kind=self.attention)  # (..., heads, seq, d_head)
        # (..., heads, seq, d_head) -> (..., seq, d_model): a view for the Triton kernel's (..., seq, heads, d) output
        return self.output_proj(out.transpose(-3, -2).flatten(-2))


def attend(q: Tensor, k: Tensor, v: Tensor, causal: bool, kind: str = "auto") -> Tensor:
    """Attention over (..., heads, seq, d_head) tensors with the chosen implementation."""
    if kind == "reference":
        n, m = q.shape[-2], k.shape[-2]
        mask = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(m - n) if causal else None
        return scaled_dot_product_attention(q, k, v, mask)
    from model.kernels import flash_attention

    return flash_attention(q, k, v, causal=causal, kind=kind)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then + ffn(norm(x))."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int | None, max_seq_len: int, rope_theta: float,
                 attention: str = "auto", device=None, dtype=None, num_kv_heads: int | None = None,
                 qkv_bias: bool = False, norm_eps: float = 1e-5):
        super().__init__()
        self.ln1 = RMSNorm(d_model, eps=norm_eps, device=device, dtype=dtype)
        self.attn = MultiHeadSelfAttention(d_model, num_heads, max_seq_len, rope_theta, attention, device=device,
                                           dtype=dtype, num_kv_heads=num_kv_heads, qkv_bias=qkv_bias)
        self.ln2 = RMSNorm(d_model, eps=norm_eps, device=device, dtype=dtype)
        self.ffn = SwiGLU(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x: Tensor, token_positions: Tensor | None = None, cache: "LayerKVCache | None" = None) -> Tensor:
        x = x + self.attn(self.ln1(x), token_positions, cache)
        return x + self.ffn(self.ln2(x))


class TransformerLM(nn.Module):
    """Token embedding -> blocks -> final RMSNorm -> untied LM head; returns logits (..., seq, vocab)."""

    def __init__(self, vocab_size: int, context_length: int, d_model: int, num_layers: int, num_heads: int,
                 d_ff: int | None = None, rope_theta: float = 10000.0, attention: str = "auto", device=None, dtype=None,
                 num_kv_heads: int | None = None, qkv_bias: bool = False, tie_embeddings: bool = False,
                 norm_eps: float = 1e-5, vocab_multiple: int = 64, autocast_residual: bool = True):
        super().__init__()
        self.vocab_size, self.context_length = vocab_size, context_length
        self.autocast_residual = autocast_residual
        # the embedding and LM head are padded to a multiple of 64 rows: GEMMs with an odd width (50,257) run on
        # slower kernels. The padded logits are never seen: forward returns the first vocab_size columns.
        self.padded_vocab = -(-vocab_size // vocab_multiple) * vocab_multiple if vocab_multiple > 1 else vocab_size
        self.token_embeddings = Embedding(self.padded_vocab, d_model, device=device, dtype=dtype)
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, num_heads, d_ff, context_length, rope_theta, attention, device=device, dtype=dtype,
                             num_kv_heads=num_kv_heads, qkv_bias=qkv_bias, norm_eps=norm_eps)
            for _ in range(num_layers)
        )
        self.ln_final = RMSNorm(d_model, eps=norm_eps, device=device, dtype=dtype)
        self.lm_head = Linear(d_model, self.padded_vocab, device=device, dtype=dtype)
        if tie_embeddings:  # one matrix for the input lookup and the output projection
            self.lm_head.weight = self.token_embeddings.weight
        self._register_load_state_dict_pre_hook(self._pad_vocab_rows)

    def _pad_vocab_rows(self, state_dict, prefix, *args) -> None:
        """Accept state dicts with exactly vocab_size rows (older checkpoints, Hugging Face weights): zero rows are
        appended up to the padded size."""
        for name in ("token_embeddings.weight", "lm_head.weight"):
            w = state_dict.get(prefix + name)
            if w is not None and w.shape[0] == self.vocab_size < self.padded_vocab:
                state_dict[prefix + name] = torch.cat([w, w.new_zeros(self.padded_vocab - self.vocab_size, *w.shape[1:])])

    @classmethod
    def from_config(cls, cfg, device=None, dtype=None) -> "TransformerLM":
        return cls(cfg.vocab_size, cfg.context_length, cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.d_ff,
                   cfg.rope_theta, cfg.attention, device=device, dtype=dtype,
                   num_kv_heads=getattr(cfg, "num_kv_heads", None), qkv_bias=getattr(cfg, "qkv_bias", False),
                   tie_embeddings=getattr(cfg, "tie_embeddings", False), norm_eps=getattr(cfg, "norm_eps", 1e-5),
                   vocab_multiple=getattr(cfg, "vocab_multiple", 64),
                   autocast_residual=getattr(cfg, "autocast_residual", True))

    loss_kernel: str = "auto"
    """How `forward(..., targets=)` computes the loss: "fused" (`model.kernels.cross_entropy_triton`: the LM head and
    the loss as one op, the logits' gradient made in the forward pass, the logits never returned), "logits" (the
    head's logits, then `model.loss.cross_entropy`), or "auto" (fused on CUDA with Triton, else logits)."""

    def forward(self, token_ids: Tensor, token_positions: Tensor | None = None, cache: "KVCache | None" = None,
                targets: Tensor | None = None) -> Tensor:
        """Logits (..., seq, vocab_size); with `targets` (..., seq), the mean next-token cross-entropy instead."""
        total = token_ids.shape[-1] + (cache.length if cache is not None else 0)
        if total > self.context_length:
            raise ValueError(f"sequence of {total} tokens exceeds the context length {self.context_length}")
        x = self.token_embeddings(token_ids)  # (..., seq, d_model)
        if (self.autocast_residual and torch.is_autocast_enabled(x.device.type)
                and torch.get_autocast_dtype(x.device.type) == torch.bfloat16):
            # the residual stream in bf16: every block's adds and norm reads then move 2 bytes per element, not 4
            # (not under fp16 autocast: a residual stream that large would overflow fp16's range)
            x = x.to(torch.bfloat16)
        for i, layer in enumerate(self.layers):
            x = layer(x, token_positions, cache.layers[i] if cache is not None else None)
        x = self.ln_final(x)
        if targets is not None and self._fused_loss(x):
            from model.kernels.cross_entropy_triton import linear_cross_entropy

            return linear_cross_entropy(x, self.lm_head.weight, targets, self.vocab_size, weight_lp=self.lm_head.weight_lp)
        logits = self.lm_head(x)  # (..., seq, padded vocab)
        logits = logits[..., : self.vocab_size] if self.padded_vocab != self.vocab_size else logits
        if targets is None:
            return logits
        return cross_entropy(logits, targets)

    def _fused_loss(self, x: Tensor) -> bool:
        if self.loss_kernel not in ("auto", "fused", "logits"):
            raise ValueError(f"loss_kernel {self.loss_kernel!r}: auto, fused or logits")
        if self.lm_head.bias is not None or self.loss_kernel == "logits":
            return False
        from model.kernels import triton_available, triton_runs_on

        if self.loss_kernel == "fused":
            if not triton_runs_on(x):
                raise ValueError("loss_kernel 'fused' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests)")
            return True
        return x.is_cuda and triton_available()


class LayerKVCache:
    """Keys and values of one attention layer, preallocated (..., heads, max_len, d_head)."""

    def __init__(self, k: Tensor, v: Tensor):
        self.k, self.v = k, v
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        n = k.shape[-2]
        if self.length + n > self.k.shape[-2]:
            raise ValueError(f"KV cache full: {self.length} + {n} > {self.k.shape[-2]}")
        self.k[..., self.length : self.length + n, :] = k
        self.v[..., self.length : self.length + n, :] = v
        self.length += n
        return self.k[..., : self.length, :], self.v[..., : self.length, :]


class KVCache:
    """Per-layer KV caches for incremental decoding; `length` tokens are cached so far."""

    def __init__(self, model: "TransformerLM", batch_shape: tuple[int, ...], max_len: int | None = None):
        attn = model.layers[0].attn
        max_len = max_len or model.context_length
        p = model.lm_head.weight
        shape = (*batch_shape, attn.num_kv_heads, max_len, attn.d_head)  # grouped-query: only the kv heads
        self.layers = [LayerKVCache(torch.empty(shape, device=p.device, dtype=p.dtype),
                                    torch.empty(shape, device=p.device, dtype=p.dtype)) for _ in model.layers]

    @property
    def length(self) -> int:
        return self.layers[0].length
