"""Attention kernels: FlashAttention-2 as Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1) and as tiled
PyTorch (the specification, and the CPU path).

    flash_attention(q, k, v, causal=True, kind="auto")   # q, k, v: (..., seq, d_head)

kind: "auto" (SDPA on CUDA, the tiled PyTorch version elsewhere), "triton", "flash_torch", or PyTorch's own fused kernels:
"sdpa" (`F.scaled_dot_product_attention`, PyTorch's default choice of backend) and "cudnn" (SDPA held to the cuDNN
backend: FlashAttention-3-style Hopper kernels; CUDA only).
"""

from __future__ import annotations

import os

import torch

from model.kernels.flash_torch import FlashAttentionTorch


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_runs_on(t: torch.Tensor) -> bool:
    """Whether a Triton kernel can take this tensor: a CUDA tensor, or any under TRITON_INTERPRET=1 (CPU tests)."""
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, kind: str = "auto") -> torch.Tensor:
    if kind == "auto":
        # on CUDA, PyTorch's SDPA (cuDNN's FlashAttention-3-style kernels on an H100 with torch 2.11): inside a
        # compiled training step it beat this package's Triton kernels by 3.5 % (gpt2-medium) to 7 % (gpt2-small)
        # of the whole step (benchmarks/RESULTS.md, twelfth session); the Triton kernels stay as kind="triton"
        kind = "sdpa" if q.is_cuda else "flash_torch"
    if kind == "flash_torch":
        return FlashAttentionTorch.apply(q, k, v, causal)
    if kind == "triton":
        if not triton_runs_on(q):
            raise ValueError("the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests)")
        return _triton_attention(q, k, v, causal)
    if kind in ("sdpa", "cudnn"):
        return _sdpa_attention(q, k, v, causal, cudnn=kind == "cudnn")
    raise ValueError(f"unknown attention kind {kind!r}: auto, triton, flash_torch, sdpa or cudnn")


def _sdpa_attention(q, k, v, causal: bool, cudnn: bool):
    """PyTorch's fused attention with this package's causal convention (bottom-right aligned: with fewer queries
    than keys, as when decoding with a cache, the queries are the last positions). SDPA's `is_causal` is top-left
    aligned, so it is used only for square scores; otherwise an explicit mask is passed. `cudnn` holds SDPA to
    cuDNN's kernels for square causal or unmasked attention on CUDA (masked decoding steps take PyTorch's default)."""
    import torch.nn.functional as F

    n, m = q.shape[-2], k.shape[-2]
    if cudnn and not q.is_cuda:
        raise ValueError("attention kind 'cudnn' needs CUDA tensors (use 'sdpa' or 'auto' on CPU)")
    mask = None
    if causal and n != m:
        mask = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(m - n)
    if cudnn and mask is None:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)


def _triton_attention(q, k, v, causal):
    """The Triton kernels as the `sift::flash_attention_fwd/bwd` custom ops: torch.compile compiles the whole model
    around them (before, this function was `torch.compiler.disable`d: one graph break per layer)."""
    from model.kernels.flash_triton import triton_attention

    return triton_attention(q, k, v, causal)


__all__ = ["flash_attention", "FlashAttentionTorch", "triton_available", "triton_runs_on"]
