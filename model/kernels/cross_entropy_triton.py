"""The LM head and the cross-entropy loss as one differentiable op, with the loss's gradient made in the forward pass.

    loss = linear_cross_entropy(h, weight, targets, vocab_size)   # mean over rows; h (N, d), weight (V_pad, d)

Unfused, a training step moves the (N, V) logits five times: the head GEMM writes them, the loss's forward reads
them (max, then sum of exponentials), its backward reads them again and writes the gradient, and the two backward
GEMMs read that. Here one Triton program per row reads the row once for the log-sum-exp (online max and sum over
column blocks), then a second time (mostly from L2) to write softmax - one_hot *into the logits buffer*: the
backward is the two GEMMs alone. The gradient is written unscaled; the upstream gradient of each row's loss (1/N
from the mean, or any other weighting) is applied to the GEMMs' small operands in the backward (a row scale of h
for dW and of dh), so no pass over the (N, V) buffer depends on it and no host sync is needed.

Columns at and past `vocab_size` (the padding rows of the head) are excluded from the softmax and get gradient 0.
A target outside [0, vocab_size) gives that row a NaN loss (visible, where a gather would read out of bounds).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _ce_rows(logits_ptr, stride_row, targets_ptr, loss_ptr, n_vocab, n_cols,
             WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    offs = tl.arange(0, BLOCK)
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_vocab, BLOCK):  # per-lane online max and sum of exponentials
        cols = start + offs
        x = tl.load(base + cols, mask=cols < n_vocab, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        s = s * tl.exp(m - m_new) + tl.exp(x - m_new)
        m = m_new
    # a lane that never saw a column (vocabulary narrower than a block) has m = -inf and s = NaN: left out here
    m_row = tl.max(m, axis=0)
    s_row = tl.sum(tl.where(m > float("-inf"), s * tl.exp(m - m_row), 0.0), axis=0)
    lse = m_row + tl.log(s_row)
    t = tl.load(targets_ptr + row).to(tl.int64)
    valid = (t >= 0) & (t < n_vocab)
    x_t = tl.load(base + t, mask=valid, other=float("nan")).to(tl.float32)
    tl.store(loss_ptr + row, lse - x_t)
    if WRITE_GRAD:
        for start in range(0, n_cols, BLOCK):  # softmax - one_hot, in place; padding columns get 0
            cols = start + offs
            x = tl.load(base + cols, mask=cols < n_vocab, other=float("-inf")).to(tl.float32)
            g = tl.exp(x - lse)
            g = tl.where(cols == t, g - 1.0, g)
            tl.store(base + cols, g.to(logits_ptr.dtype.element_ty), mask=cols < n_cols)


def _rows(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int, grad: bool):
    if h.dim() != 2 or weight.dim() != 2 or h.shape[1] != weight.shape[1]:
        raise ValueError(f"h {tuple(h.shape)} and weight {tuple(weight.shape)}: expected (N, d) and (V, d)")
    if targets.shape != h.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)}: expected ({h.shape[0]},)")
    if not 0 < vocab_size <= weight.shape[0]:
        raise ValueError(f"vocab_size {vocab_size} outside (0, {weight.shape[0]}]")
    logits = h @ weight.t()  # (N, V_pad), h's dtype
    loss = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    if h.shape[0]:
        _ce_rows[(h.shape[0],)](logits, logits.stride(0), targets.contiguous(), loss, vocab_size, logits.shape[1],
                                WRITE_GRAD=grad, BLOCK=4096 if h.is_cuda else 64, num_warps=16 if h.is_cuda else 1)
    return loss, logits if grad else logits.new_empty(0)


@torch.library.custom_op("sift::linear_cross_entropy", mutates_args=())
def linear_cross_entropy_rows(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                              grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row losses (fp32, N) and, when `grad`, the unscaled gradient of each row's loss w.r.t. its logits (N, V_pad)."""
    return _rows(h, weight, targets, vocab_size, grad)


@linear_cross_entropy_rows.register_fake
def _(h, weight, targets, vocab_size, grad):
    loss = h.new_empty(h.shape[0], dtype=torch.float32)
    return loss, h.new_empty(h.shape[0], weight.shape[0]) if grad else h.new_empty(0)


def _setup_context(ctx, inputs, output):
    h, weight, _, _, grad = inputs
    ctx.grad = grad
    ctx.save_for_backward(h, weight, output[1])


def _grads(h, weight, g_logits, d_loss, dw_dtype=None):
    """(dh, dW) from the logits' unscaled gradient; dW written as `dw_dtype` by the GEMM (fp32 for a weight kept as
    a low-precision copy: `model.precision.mm_out`), else in the operands' dtype."""
    from model.precision import mm_out

    scale = d_loss.to(torch.float32)[:, None]  # each row's upstream gradient, applied to the small operands
    dh = (g_logits @ weight).float().mul_(scale).to(h.dtype)
    hs = (h.float() * scale).to(h.dtype)
    dw = mm_out(g_logits.t(), hs, dw_dtype) if dw_dtype is not None else g_logits.t() @ hs
    return dh, dw


def _backward(ctx, d_loss, _d_logits):
    if not ctx.grad:
        raise RuntimeError("linear_cross_entropy_rows was called with grad=False: it has no gradient")
    h, weight, g_logits = ctx.saved_tensors
    dh, dw = _grads(h, weight, g_logits, d_loss)
    return dh, dw, None, None, None


linear_cross_entropy_rows.register_autograd(_backward, setup_context=_setup_context)


class _LowPrecisionHead(torch.autograd.Function):
    """The op with the weight's low-precision copy as its operand; the gradient goes to the fp32 weight, written in
    fp32 by the backward GEMM (no cast of the weight in the forward pass, none of its gradient in the backward)."""

    @staticmethod
    def forward(ctx, h, weight, weight_lp, targets, vocab_size):
        loss, g_logits = linear_cross_entropy_rows(h, weight_lp, targets, vocab_size, True)
        ctx.save_for_backward(h, weight_lp, g_logits)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, d_loss):
        h, weight_lp, g_logits = ctx.saved_tensors
        dh, dw = _grads(h, weight_lp, g_logits, d_loss, ctx.weight_dtype)
        return dh, dw, None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int | None = None,
                         reduction: str = "mean", weight_lp: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of `h @ weight.T` (first `vocab_size` columns) against `targets`, without keeping the logits:
    h (..., d), weight (V_pad, d), targets (...). Under CUDA autocast both operands are cast to its dtype, as
    `nn.Linear` would be, unless `weight_lp`, a copy of the weight in that dtype (`model.precision`), is given: then
    it is the operand and the weight's gradient is written in fp32. reduction: "mean", "sum" or "none" (per-position
    losses, shaped like targets)."""
    lead = targets.shape
    h2 = h.reshape(-1, h.shape[-1])
    vocab = int(vocab_size or weight.shape[0])
    if torch.is_autocast_enabled(h.device.type):
        h2 = h2.to(torch.get_autocast_dtype(h.device.type))
    use_lp = weight_lp is not None and weight_lp.dtype == h2.dtype
    grad = torch.is_grad_enabled() and (h2.requires_grad or weight.requires_grad)
    if use_lp and grad:
        loss = _LowPrecisionHead.apply(h2, weight, weight_lp, targets.reshape(-1), vocab)
    else:
        operand = weight_lp if use_lp else weight.to(h2.dtype)
        loss, _ = linear_cross_entropy_rows(h2, operand, targets.reshape(-1), vocab, grad)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss.view(lead)
    raise ValueError(f"reduction {reduction!r}: mean, sum or none")
