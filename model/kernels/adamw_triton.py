"""AdamW's update as one Triton kernel launch for a whole list of parameters ("multi-tensor apply").

Each program updates one chunk of one tensor: it finds the tensor's parameter, gradient and moment buffers through
tables of their addresses, reads p, g, m, v once and writes p, m, v once (28 bytes per fp32 parameter, the least
AdamW can move). Compared with the update written as `torch._foreach_*` ops under `torch.compile`
(`training.optim.adamw_update`), there are no temporaries and one launch; the gradient can be scaled on the way in
by a 0-d device tensor, so global-norm clipping costs no extra pass over the gradients and no host sync
(`training.optim.clip_scale`).

Arithmetic per element, in fp32 (the order of `training.optim.AdamW`'s foreach path, IEEE sqrt and division):

    g = g * scale                                   (when a scale is given)
    p = p * (1 - lr * wd)
    m = m + (1 - b1) * (g - m)
    v = v * b2 + (1 - b2) * g * g
    p = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

With bf16 copies of the parameters (`model.precision`), the program also stores the new p rounded to bf16 (2 more
bytes per parameter); a zero address in the copies' table means the parameter has none.

Parameters, gradients and moments must be contiguous fp32 tensors on one CUDA device (or CPU under
TRITON_INTERPRET=1, for tests); `supported()` says whether a list qualifies, and `training.optim.AdamW` keeps its
other paths for everything else.
"""

from __future__ import annotations

import math
import os

import torch

import triton
import triton.language as tl

BLOCK = 1024
CHUNK = 8 * BLOCK  # elements per program (a loop of BLOCK-wide steps)


@triton.jit
def _adamw_kernel(chunk_tensor, chunk_start, ptrs, sizes, n_tensors, scale_ptr,
                  wd_factor, one_minus_b1, b2, one_minus_b2, step_size, sqrt_bc2, eps,
                  HAS_SCALE: tl.constexpr, HAS_LP: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr):
    pid = tl.program_id(0)
    t = tl.load(chunk_tensor + pid)
    start = tl.load(chunk_start + pid)
    n = tl.load(sizes + t)
    p_ptr = tl.load(ptrs + t).to(tl.pointer_type(tl.float32))
    g_ptr = tl.load(ptrs + n_tensors + t).to(tl.pointer_type(tl.float32))
    m_ptr = tl.load(ptrs + 2 * n_tensors + t).to(tl.pointer_type(tl.float32))
    v_ptr = tl.load(ptrs + 3 * n_tensors + t).to(tl.pointer_type(tl.float32))
    if HAS_SCALE:
        scale = tl.load(scale_ptr)
    if HAS_LP:
        lp_addr = tl.load(ptrs + 4 * n_tensors + t)
    for off in range(0, CHUNK, BLOCK):
        offs = start + off + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(g_ptr + offs, mask=mask, other=0.0)
        if HAS_SCALE:
            g = g * scale
        p = tl.load(p_ptr + offs, mask=mask, other=0.0)
        m = tl.load(m_ptr + offs, mask=mask, other=0.0)
        v = tl.load(v_ptr + offs, mask=mask, other=0.0)
        p = p * wd_factor
        m = m + one_minus_b1 * (g - m)
        v = v * b2 + one_minus_b2 * g * g
        denom = tl.div_rn(tl.sqrt_rn(v), sqrt_bc2) + eps
        p = p - step_size * tl.div_rn(m, denom)
        tl.store(p_ptr + offs, p, mask=mask)
        tl.store(m_ptr + offs, m, mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)
        if HAS_LP:
            if lp_addr != 0:
                # p rounded to bf16, to nearest even, in integer arithmetic (the same bits on the GPU and in the
                # interpreter, whose float conversion truncates): the upper half of p + 0x7FFF + (its lowest kept bit)
                bits = p.to(tl.int32, bitcast=True)
                bits = tl.where(p != p, 0x7FC00000, bits + 0x7FFF + ((bits >> 16) & 1))  # NaN stays a quiet NaN
                tl.store(lp_addr.to(tl.pointer_type(tl.int16)) + offs, (bits >> 16).to(tl.int16), mask=mask)


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def supported_copies(params: list[torch.Tensor], copies: list[torch.Tensor | None]) -> bool:
    """True when the kernel can write these low-precision copies (None: no copy): contiguous bf16, shaped like
    their parameters, on the parameters' device."""
    present = [(p, c) for p, c in zip(params, copies) if c is not None]
    return bool(present) and all(c.dtype == torch.bfloat16 and c.is_contiguous() and c.shape == p.shape
                                 and c.device == p.device for p, c in present)


def supported(tensors: list[torch.Tensor]) -> bool:
    """True when every tensor is contiguous fp32 on one device that the kernel can run on."""
    if not tensors:
        return False
    dev = tensors[0].device
    if dev.type != "cuda" and not (dev.type == "cpu" and _interpret()):
        return False
    return all(t.dtype == torch.float32 and t.is_contiguous() and t.device == dev for t in tensors)


class ChunkPlan:
    """Which tensor and which offset each program takes, for one list of tensor sizes (kept across steps)."""

    def __init__(self, sizes: list[int], device: torch.device):
        tensor_of, start_of = [], []
        for i, n in enumerate(sizes):
            starts = range(0, n, CHUNK)
            tensor_of += [i] * len(starts)
            start_of += list(starts)
        self.sizes = tuple(sizes)
        self.chunk_tensor = torch.tensor(tensor_of, dtype=torch.int32, device=device)
        self.chunk_start = torch.tensor(start_of, dtype=torch.int64, device=device)
        self.size_table = torch.tensor(sizes, dtype=torch.int64, device=device)
        self.programs = len(tensor_of)


def adamw_step(plan: ChunkPlan, ps: list[torch.Tensor], grads: list[torch.Tensor], ms: list[torch.Tensor],
               vs: list[torch.Tensor], lr: float, step: int, b1: float, b2: float, eps: float, wd: float,
               grad_scale: torch.Tensor | None = None, copies: list[torch.Tensor | None] | None = None) -> None:
    """One AdamW update of `ps` in place (step count `step`, 1-based); `grad_scale` multiplies the gradients;
    `copies` (one per parameter, None for none; `supported_copies`) receive the updated parameters rounded."""
    if plan.programs == 0:
        return
    dev = ps[0].device
    has_lp = bool(copies) and any(c is not None for c in copies)
    tables = [t.data_ptr() for group in (ps, grads, ms, vs) for t in group]
    if has_lp:
        tables += [0 if c is None else c.data_ptr() for c in copies]
    # the address tables in one host-to-device copy (gradients are new tensors every step); PyTorch's pinned
    # allocator keeps the host buffer until the asynchronous copy has read it
    addresses = torch.tensor(tables, dtype=torch.int64)
    if dev.type == "cuda":
        addresses = addresses.pin_memory().to(dev, non_blocking=True)
    bc1, bc2 = 1.0 - b1**step, 1.0 - b2**step
    scale = grad_scale if grad_scale is not None else addresses  # any tensor: unused without HAS_SCALE
    _adamw_kernel[(plan.programs,)](
        plan.chunk_tensor, plan.chunk_start, addresses, plan.size_table, len(ps), scale,
        1.0 - lr * wd, 1.0 - b1, b2, 1.0 - b2, lr / bc1, math.sqrt(bc2), eps,
        HAS_SCALE=grad_scale is not None, HAS_LP=has_lp,
        BLOCK=BLOCK, CHUNK=CHUNK,
    )
