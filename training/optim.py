"""Loss, gradient clipping, AdamW and the learning-rate schedule, written from their definitions.

- `cross_entropy(logits, targets)`: mean over all positions of -log softmax(logits)[target], computed stably
  (log-sum-exp with the max subtracted) in fp32.
- `clip_gradients(params, max_norm)`: scale every gradient by max_norm / (‖g‖₂ + 1e-6) when the global L2 norm
  over all parameters exceeds max_norm; parameters without gradients are skipped. Returns the norm before clipping.
- `AdamW`: Loshchilov & Hutter 2019, decoupled weight decay, bias-corrected moments, with `torch._foreach_*`
  multi-tensor ops (one kernel launch per operation for the whole parameter group on GPU); `compiled=True` runs the
  same update under torch.compile, fused into a few kernels; `compiled="triton"` (and "auto" on CUDA) as one Triton
  kernel launch that moves each parameter's bytes once (`model.kernels.adamw_triton`).
- `clip_scale(params, max_norm)`: the same clipping factor as a device tensor, applied inside `AdamW.step(grad_scale=)`.
- `lr_cosine_schedule(t, max_lr, min_lr, warmup, cosine)`: linear warm-up to max_lr over `warmup` steps, cosine
  decay to min_lr at step `cosine`, min_lr after.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from model.loss import cross_entropy  # noqa: F401 - the plain name training code imports from here


@torch.no_grad()
def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float, eps: float = 1e-6) -> float:
    parameters = list(parameters)
    total, scale = clip_scale(parameters, max_norm, eps)
    if total > max_norm:
        torch._foreach_mul_([p.grad for p in parameters if p.grad is not None], float(scale))
    return float(total)


@torch.no_grad()
def clip_scale(parameters: Iterable[torch.nn.Parameter], max_norm: float, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """(global L2 norm, clip factor min(1, max_norm / (norm + eps))) as 0-d fp32 tensors on the gradients' device,
    without touching the gradients or waiting for the device: `AdamW.step(grad_scale=factor)` applies the factor
    inside its update (no extra pass over the gradients, no host sync). Same factor as `clip_gradients` and
    `torch.nn.utils.clip_grad_norm_`."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        zero = torch.zeros((), dtype=torch.float32)
        return zero, zero + 1.0
    norms = torch._foreach_norm(grads, 2.0)
    total = torch.linalg.vector_norm(torch.stack([n.to(torch.float32) for n in norms]), 2.0)
    return total, torch.clamp(max_norm / (total + eps), max=1.0)


def lr_cosine_schedule(t: int, max_lr: float, min_lr: float, warmup: int, cosine: int) -> float:
    if t < warmup:
        return t / warmup * max_lr
    if t <= cosine:
        return min_lr + 0.5 * (1 + math.cos(math.pi * (t - warmup) / (cosine - warmup))) * (max_lr - min_lr)
    return min_lr


def adamw_update(ps: list[Tensor], grads: list[Tensor], ms: list[Tensor], vs: list[Tensor], lr: Tensor, step: Tensor,
                 b1: float, b2: float, eps: float, wd: float) -> None:
    """One AdamW update of a list of tensors in place, with the learning rate and step count as 0-d tensors, so that
    `torch.compile` builds it once (a Python float would be baked in and recompiled every step) and fuses the
    whole update into a few horizontal kernels (`AdamW(compiled=True)`)."""
    bc1 = 1 - b1**step
    bc2_sqrt = torch.sqrt(1 - b2**step)
    if wd:
        torch._foreach_mul_(ps, 1 - lr * wd)
    torch._foreach_lerp_(ms, grads, 1 - b1)
    torch._foreach_mul_(vs, b2)
    torch._foreach_addcmul_(vs, grads, grads, 1 - b2)
    denom = torch._foreach_sqrt(vs)
    torch._foreach_div_(denom, bc2_sqrt)
    torch._foreach_add_(denom, eps)
    updates = torch._foreach_div(ms, denom)
    torch._foreach_mul_(updates, -lr / bc1)
    torch._foreach_add_(ps, updates)


class AdamW(torch.optim.Optimizer):
    """`compiled` picks how the update runs:

    - False: `torch._foreach_*` ops, about ten kernels per step (any device);
    - True: the same ops as `adamw_update` under torch.compile (a few fused kernels);
    - "triton": one Triton kernel launch per parameter group (`model.kernels.adamw_triton`: reads p, g, m, v once and
      writes p, m, v once) for contiguous fp32 CUDA tensors; other tensors take the compiled path;
    - "auto": "triton" on CUDA when Triton is installed, else compiled on CUDA, foreach elsewhere.

    `step(grad_scale=t)` multiplies the gradients by the 0-d tensor `t` first (`clip_scale`'s factor): inside the
    Triton kernel, a separate pass otherwise. `low_precision` ({parameter: copy}, from
    `model.precision.attach_low_precision_weights`): after each update the copies hold the new parameters rounded
    to their dtype (stored by the Triton kernel as it writes the parameters; one multi-tensor copy on the other
    paths). Timings in benchmarks/RESULTS.md."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, compiled: bool | str = False,
                 low_precision: dict[Tensor, Tensor] | None = None):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"invalid AdamW hyperparameters: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        if compiled not in (False, True, "auto", "triton"):
            raise ValueError(f"compiled must be False, True, 'auto' or 'triton', not {compiled!r}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.compiled = compiled
        self.low_precision = dict(low_precision or {})
        self._update = None
        self._plans: dict[tuple, Any] = {}

    def _impl_for(self, device: torch.device) -> str:
        """"triton", "compiled" or "foreach" for tensors on `device`."""
        from model.kernels import triton_available

        if self.compiled == "triton" or (self.compiled == "auto" and device.type == "cuda" and triton_available()):
            return "triton"
        if self.compiled is True or (self.compiled == "auto" and device.type == "cuda"):
            return "compiled"
        return "foreach"

    def _run_compiled(self, ps, grads, m, v, lr, t, b1, b2, eps, wd) -> None:
        if self._update is None:
            self._update = torch.compile(adamw_update, fullgraph=True, dynamic=False)
        dev = ps[0].device
        self._update(ps, grads, m, v, torch.tensor(lr, dtype=torch.float32, device=dev),
                     torch.tensor(float(t), dtype=torch.float32, device=dev), b1, b2, eps, wd)

    def _run_triton(self, ps, grads, m, v, lr, t, b1, b2, eps, wd, grad_scale) -> bool:
        """The update as one kernel; False (nothing done) when the tensors do not qualify. The low-precision
        copies are written by the kernel when it can take them, else copied after it."""
        from model.kernels import adamw_triton

        if not adamw_triton.supported([*ps, *grads, *m, *v]):
            return False
        key = (ps[0].device, tuple(p.numel() for p in ps))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = adamw_triton.ChunkPlan(list(key[1]), ps[0].device)
        copies = [self.low_precision.get(p) for p in ps] if self.low_precision else None
        in_kernel = copies is not None and adamw_triton.supported_copies(ps, copies)
        adamw_triton.adamw_step(plan, ps, grads, m, v, lr, t, b1, b2, eps, wd, grad_scale,
                                copies if in_kernel else None)
        if not in_kernel:
            self._refresh_copies(ps)
        return True

    def _refresh_copies(self, ps: list[Tensor]) -> None:
        from model.precision import refresh_low_precision_weights

        refresh_low_precision_weights({p: self.low_precision[p] for p in ps if p in self.low_precision})

    @torch.no_grad()
    def step(self, closure=None, grad_scale: Tensor | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            buckets: dict[int, tuple[list, list, list, list]] = {}  # by step count (params may skip steps)
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                ps, gs, ms, vs = buckets.setdefault(state["step"], ([], [], [], []))
                ps.append(p)
                gs.append(p.grad)
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
            for t, (ps, grads, m, v) in buckets.items():
                impl = self._impl_for(ps[0].device)
                if impl == "triton":
                    if self._run_triton(ps, grads, m, v, lr, t, b1, b2, eps, wd, grad_scale):
                        continue
                    impl = "compiled" if ps[0].device.type == "cuda" else "foreach"  # tensors the kernel does not take
                if grad_scale is not None:
                    torch._foreach_mul_(grads, grad_scale.to(grads[0].device))
                if impl == "compiled":
                    self._run_compiled(ps, grads, m, v, lr, t, b1, b2, eps, wd)
                    self._refresh_copies(ps)
                    continue
                # decoupled weight decay: θ ← θ - lr·λ·θ
                if wd:
                    torch._foreach_mul_(ps, 1 - lr * wd)
                # moments: m ← β1 m + (1-β1) g ; v ← β2 v + (1-β2) g²
                torch._foreach_lerp_(m, grads, 1 - b1)
                torch._foreach_mul_(v, b2)
                torch._foreach_addcmul_(v, grads, grads, 1 - b2)
                # θ ← θ - lr · (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + ε)
                bc1, bc2 = 1 - b1**t, 1 - b2**t
                denom = torch._foreach_sqrt(v)
                torch._foreach_div_(denom, math.sqrt(bc2))
                torch._foreach_add_(denom, eps)
                torch._foreach_addcdiv_(ps, m, denom, -lr / bc1)
                self._refresh_copies(ps)
        return loss

