"""Attention kernels: FlashAttention-2 as Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1) and as tiled
PyTorch (the specification, and the CPU path).

    flash_attention(q, k, v, causal=True, kind="auto")   # q, k, v: (..., seq, d_head)

kind: "auto" (Triton on CUDA, PyTorch elsewhere), "triton", "flash_torch".
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


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, kind: str = "auto") -> torch.Tensor:
    if kind == "auto":
        kind = "triton" if q.is_cuda and triton_available() else "flash_torch"
    if kind == "flash_torch":
        return FlashAttentionTorch.apply(q, k, v, causal)
    if kind == "triton":
        if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests)")
        return _triton_attention(q, k, v, causal)
    raise ValueError(f"unknown attention kind {kind!r}: auto, triton or flash_torch")


def _triton_attention(q, k, v, causal):
    """The Triton kernels as the `sift::flash_attention_fwd/bwd` custom ops: torch.compile compiles the whole model
    around them (before, this function was `torch.compiler.disable`d: one graph break per layer)."""
    from model.kernels.flash_triton import triton_attention

    return triton_attention(q, k, v, causal)


__all__ = ["flash_attention", "FlashAttentionTorch", "triton_available"]
