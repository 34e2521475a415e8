"""Data parallelism written by the project (CS336 assignment 2 style): bucketed gradient all-reduce overlapped with
the backward pass, and optimizer-state sharding (ZeRO-1).

    model = DDPBucketed(model, bucket_mb=25)          # broadcasts rank 0's parameters at construction
    loss.backward()                                   # buckets are all-reduced asynchronously as they fill
    model.finish_gradient_synchronization()           # wait, average
    opt = ShardedOptimizer(model.parameters(), AdamW, lr=...)   # each rank keeps the state of its shard only

Works with any torch.distributed backend (gloo on CPU, NCCL on GPUs); the process group is created by the
launcher (Ray Train's TorchTrainer, torchrun, or `torch.multiprocessing` in tests).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from model.precision import refresh_low_precision_weights


class DDPBucketed(nn.Module):
    def __init__(self, module: nn.Module, bucket_mb: float = 25.0):
        super().__init__()
        self.module = module
        self.world = dist.get_world_size()
        # NCCL averages in the collective; gloo has no AVG, so its sum is divided afterwards (`_to_mean`)
        self._op = dist.ReduceOp.AVG if dist.get_backend() == "nccl" else dist.ReduceOp.SUM
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t, src=0)
        params = [p for p in module.parameters() if p.requires_grad]
        # buckets in reverse order of registration: gradients of the last layers are ready first in backward
        limit = bucket_mb * 1024 * 1024
        self.buckets: list[list[nn.Parameter]] = [[]]
        size = 0
        for p in reversed(params):
            nbytes = p.numel() * p.element_size()
            if self.buckets[-1] and (size + nbytes > limit or p.dtype != self.buckets[-1][0].dtype):
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += nbytes
        self._bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b}
        self._pending = [0] * len(self.buckets)
        self._handles: list[tuple[Any, torch.Tensor, int]] = []
        self.sync = True
        """False during the first micro-batches of a gradient-accumulation step: gradients only accumulate locally."""
        self._reset()
        for p in params:
            p.register_post_accumulate_grad_hook(self._grad_ready)

    def _reset(self) -> None:
        self._pending = [len(b) for b in self.buckets]
        self._handles = []

    def _grad_ready(self, p: nn.Parameter) -> None:
        if not self.sync:
            return
        i = self._bucket_of[id(p)]
        self._pending[i] -= 1
        if self._pending[i] == 0:  # the whole bucket is ready: all-reduce it while backward continues
            flat = _flatten_dense_tensors([q.grad for q in self.buckets[i]])
            self._handles.append((dist.all_reduce(flat, op=self._op, async_op=True), flat, i))

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def finish_gradient_synchronization(self) -> None:
        for handle, flat, i in self._handles:
            handle.wait()
            self._to_mean(flat)
            # each gradient becomes a view into the reduced bucket (no copy back); the bucket lives as long as they do
            for q, g in zip(self.buckets[i], _unflatten_dense_tensors(flat, [q.grad for q in self.buckets[i]])):
                q.grad = g
        if any(self._pending):  # parameters that got no gradient this step: reduce what exists, synchronously
            for i, left in enumerate(self._pending):
                if left:
                    for q in self.buckets[i]:
                        if q.grad is None:
                            q.grad = torch.zeros_like(q)
                        dist.all_reduce(q.grad, op=self._op)
                        self._to_mean(q.grad)
        self._reset()

    def _to_mean(self, reduced: torch.Tensor) -> None:
        """After an all-reduce with `self._op`: the mean over ranks, in place."""
        if self._op == dist.ReduceOp.SUM:
            reduced.div_(self.world)


class ShardedOptimizer(torch.optim.Optimizer):
    """ZeRO-1: rank r updates (and keeps optimizer state for) only the parameters assigned to it, then every
    parameter is broadcast from its owner. Assignment: greedy by size, so shards hold similar bytes.

    `low_precision` ({parameter: bf16 copy}, as for `AdamW`): every rank keeps all copies current. `copy_only`:
    parameters the forward pass reads only through their copy (`model.precision.copy_only_weights` under bf16
    autocast). For those the owner broadcasts the copy instead of the fp32 value: half the bytes. Their fp32 values
    on the other ranks then lag behind until `sync_parameters()` (call it before reading them: a checkpoint, an
    evaluation without autocast)."""

    def __init__(self, params, optimizer_cls: type[torch.optim.Optimizer], copy_only=(), **kwargs: Any):
        self.all_params = [p for p in params]
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        load = [0] * self.world
        self.owner: dict[int, int] = {}
        for p in sorted(self.all_params, key=lambda t: -t.numel()):
            r = min(range(self.world), key=lambda k: load[k])
            self.owner[id(p)] = r
            load[r] += p.numel()
        mine = [p for p in self.all_params if self.owner[id(p)] == self.rank]
        self.local = optimizer_cls(mine or [torch.nn.Parameter(torch.zeros(0))], **kwargs)
        # low-precision weight copies (`AdamW(low_precision=...)`): the local optimizer refreshes its own shard's,
        # `step` the rest (received as copies, or refreshed from the received fp32 values)
        self.low_precision = dict(kwargs.pop("low_precision", None) or {})
        self.copy_only = {id(p) for p in copy_only if p in self.low_precision}
        self.stale = False  # fp32 values of copy-only parameters behind their owners' (until sync_parameters)
        super().__init__(self.all_params, kwargs)
        self.param_groups = self.local.param_groups  # the schedule sets lr on these

    def _broadcast(self, items: list[tuple[torch.nn.Parameter, torch.Tensor]]) -> None:
        """One broadcast per (owner, dtype) of the given (parameter, tensor to send) pairs: the owner's tensors
        flattened into a single buffer (one collective per rank instead of one per parameter, which is
        latency-bound on NCCL). Owners go one after another, so the extra memory is one shard, not a model."""
        groups: dict[tuple[int, torch.dtype], list[torch.Tensor]] = {}
        for p, t in items:
            groups.setdefault((self.owner[id(p)], t.dtype), []).append(t)
        for (src, dtype), tensors in groups.items():
            if src == self.rank:
                dist.broadcast(_flatten_dense_tensors(tensors), src=src)
            else:
                flat = torch.empty(sum(t.numel() for t in tensors), dtype=dtype, device=tensors[0].device)
                dist.broadcast(flat, src=src)
                for t, v in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
                    t.copy_(v)
                del flat

    @torch.no_grad()
    def step(self, closure=None, grad_scale: torch.Tensor | None = None):
        """Update the own shard (gradients times `grad_scale` when given, as `AdamW.step`), then broadcast every
        parameter from its owner: the bf16 copy of a copy-only parameter, the parameter itself otherwise."""
        loss = self.local.step(closure, grad_scale=grad_scale) if grad_scale is not None else self.local.step(closure)
        self._broadcast([(p, self.low_precision[p] if id(p) in self.copy_only else p.data) for p in self.all_params])
        refresh_low_precision_weights({p: c for p, c in self.low_precision.items()
                                       if self.owner[id(p)] != self.rank and id(p) not in self.copy_only})
        self.stale = self.stale or bool(self.copy_only)
        return loss

    @torch.no_grad()
    def sync_parameters(self) -> None:
        """Bring every rank's fp32 copy-only parameters up to their owners' values (their bf16 copies already are);
        a no-op when nothing lags. Collective: every rank must call it."""
        if self.stale:
            self._broadcast([(p, p.data) for p in self.all_params if id(p) in self.copy_only])
            self.stale = False

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.all_params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self):
        return self.local.state_dict()

    def load_state_dict(self, state):
        self.local.load_state_dict(state)
