"""Low-precision copies of the weights for mixed-precision training, kept current by the optimizer.

Under bf16 autocast every `Linear` casts its fp32 weight to bf16 in each forward pass (a kernel per weight, 6 bytes
moved per parameter), and the backward pass casts the weight's bf16 gradient back to fp32 (another kernel, another
6 bytes). With a copy attached (`attach_low_precision_weights`), the forward pass multiplies by the copy and the
backward GEMM writes the fp32 weight gradient directly (`torch.mm(..., out_dtype=torch.float32)` on CUDA: the
products accumulate in fp32 and are stored without a bf16 rounding, so the gradient is, if anything, more precise).
The copies are refreshed once per optimizer step, by `training.optim.AdamW(low_precision=...)` (inside its Triton
kernel: 2 more bytes written per parameter) or `refresh_low_precision_weights`. With gradient accumulation the
forward casts saved are one per micro-batch.

The fp32 weights stay the parameters: checkpoints, `state_dict`, gradients and optimizer state are unchanged; the
copies are non-persistent buffers (`Linear.weight_lp`) and are refreshed whenever a state dict is loaded; moving
or converting the model (`.to`, `.half()`) drops them (attach again, and give the optimizer the new copies).
Anything else that changes a weight in place must call `refresh_low_precision_weights` afterwards.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def attach_low_precision_weights(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> dict[nn.Parameter, Tensor]:
    """Give every fp32 `model.layers.Linear` of `model` a `dtype` copy of its weight; returns {weight: copy} (tied
    weights share one copy) for the optimizer to keep current. A copy already attached (same dtype, shape and
    device) is kept and refreshed, so calling this twice returns the same tensors."""
    from model.layers import Linear

    copies: dict[nn.Parameter, Tensor] = {}
    for mod in model.modules():
        if not isinstance(mod, Linear) or mod.weight.dtype != torch.float32:
            continue
        lp = copies.get(mod.weight)
        if lp is None:
            old, w = mod.weight_lp, mod.weight
            if old is not None and old.dtype == dtype and old.shape == w.shape and old.device == w.device:
                with torch.no_grad():
                    lp = old.copy_(w)
            else:
                lp = w.detach().to(dtype)
            copies[w] = lp
        mod.weight_lp = lp
    if copies and not getattr(model, "_sift_lp_hook", False):
        # a loaded state dict overwrites the fp32 weights in place: the copies follow
        model.register_load_state_dict_post_hook(lambda module, _keys: refresh_low_precision_weights(module))
        model._sift_lp_hook = True
    return copies


def low_precision_copies(model: nn.Module) -> dict[nn.Parameter, Tensor]:
    """{weight: copy} for the copies attached to `model` (empty when none are)."""
    from model.layers import Linear

    return {m.weight: m.weight_lp for m in model.modules() if isinstance(m, Linear) and m.weight_lp is not None}


def copy_only_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weights with an attached copy that no module other than a `Linear` with that copy holds (a weight tied to
    an embedding is read in fp32 by the lookup): under autocast to the copies' dtype the forward and backward passes
    read only their copies, so a ZeRO-1 rank that does not own one can receive its copy instead of its fp32 value
    (`training.ddp.ShardedOptimizer(copy_only=...)`)."""
    from model.layers import Linear

    copies = low_precision_copies(model)
    held_elsewhere = {id(p) for m in model.modules() if not (isinstance(m, Linear) and m.weight_lp is not None)
                      for p in m.parameters(recurse=False)}
    return [w for w in copies if id(w) not in held_elsewhere]


@torch.no_grad()
def refresh_low_precision_weights(model_or_copies: nn.Module | dict[nn.Parameter, Tensor]) -> None:
    """Copy the fp32 weights into their low-precision copies (one multi-tensor launch)."""
    copies = low_precision_copies(model_or_copies) if isinstance(model_or_copies, nn.Module) else model_or_copies
    if copies:
        torch._foreach_copy_(list(copies.values()), list(copies.keys()))


def detach_low_precision_weights(model: nn.Module) -> None:
    """Drop the copies: every `Linear` casts its fp32 weight under autocast again."""
    from model.layers import Linear

    for m in model.modules():
        if isinstance(m, Linear):
            m.weight_lp = None


def mm_out(a: Tensor, b: Tensor, out_dtype: torch.dtype) -> Tensor:
    """a @ b stored as `out_dtype` without a rounding to the inputs' dtype first: on CUDA the GEMM writes it
    directly from its fp32 accumulators; elsewhere the operands are widened and multiplied in `out_dtype`."""
    if out_dtype == a.dtype:
        return torch.mm(a, b)
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=out_dtype)
    return torch.mm(a.to(out_dtype), b.to(out_dtype))


class LinearLowPrecision(torch.autograd.Function):
    """y = x W^T with W's low-precision copy; the gradient goes to the fp32 weight, written by the GEMM in fp32."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, weight_lp: Tensor) -> Tensor:
        x = x.to(weight_lp.dtype)
        ctx.save_for_backward(x, weight_lp)
        ctx.weight_dtype = weight.dtype
        return x @ weight_lp.t()

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, w = ctx.saved_tensors
        dy = dy.to(w.dtype)
        dx = dy @ w if ctx.needs_input_grad[0] else None
        dw = None
        if ctx.needs_input_grad[1]:
            dw = mm_out(dy.reshape(-1, dy.shape[-1]).t(), x.reshape(-1, x.shape[-1]), ctx.weight_dtype)
        return dx, dw, None


def linear_low_precision(x: Tensor, weight: Tensor, weight_lp: Tensor) -> Tensor:
    return LinearLowPrecision.apply(x, weight, weight_lp)
