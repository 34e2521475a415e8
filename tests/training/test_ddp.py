"""Data parallelism on CPU with 2 gloo processes: replicas stay identical and equal single-process training on
the same global batch, with bucketed overlapped all-reduce and with ZeRO-1 sharded optimizer state."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.config import PRESETS
from model.layers import TransformerLM
from model.precision import attach_low_precision_weights
from training.ddp import DDPBucketed, ShardedOptimizer
from training.optim import AdamW, cross_entropy

STEPS, GLOBAL_BATCH = 4, 8


def _batches():
    g = torch.Generator().manual_seed(123)
    return [torch.randint(0, 512, (GLOBAL_BATCH, 17), generator=g) for _ in range(STEPS)]


def _model():
    torch.manual_seed(0)
    return TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))


def _single() -> dict[str, torch.Tensor]:
    model = _model()
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for ids in _batches():
        loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world: int, store: str, zero: bool, bucket_mb: float, out: str) -> None:
    # a file rendezvous: no TCP port to race for with the Ray processes of the same test session
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(rank)  # different init on purpose: DDP must broadcast rank 0's weights
    model = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))
    if rank == 0:
        model.load_state_dict(_model().state_dict())
    ddp = DDPBucketed(model, bucket_mb=bucket_mb)
    # bf16 weight copies (unused by this fp32 CPU forward): each rank must keep all of them current, those of the
    # parameters it owns and those it receives by broadcast under ZeRO-1
    copies = attach_low_precision_weights(model)
    opt = ShardedOptimizer(model.parameters(), AdamW, lr=1e-2, weight_decay=0.1, low_precision=copies) if zero else \
        AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, low_precision=copies)
    per = GLOBAL_BATCH // world
    for ids in _batches():
        mine = ids[rank * per : (rank + 1) * per]
        loss = cross_entropy(ddp(mine[:, :-1]), mine[:, 1:])
        loss.backward()
        ddp.finish_gradient_synchronization()
        opt.step()
        opt.zero_grad()
    stale = [n for n, p in model.named_parameters() if p in copies and not torch.equal(copies[p], p.detach().bfloat16())]
    if zero:
        assert any(opt.owner[id(p)] != rank for p in copies)  # some copies are refreshed after a broadcast
    torch.save({**{k: v.detach().clone() for k, v in model.state_dict().items()}, "stale copies": stale}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.parametrize("zero, bucket_mb", [(False, 0.05), (True, 1.0), (False, 1e6)])
def test_two_gloo_workers_equal_single_process(tmp_path, zero, bucket_mb):
    out = str(tmp_path / "state")
    mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), zero, bucket_mb, out), nprocs=2, join=True)
    a, b = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert a.pop("stale copies") == [] and b.pop("stale copies") == []
    ref = _single()
    for k in ref:
        assert torch.equal(a[k], b[k]), f"replicas differ at {k}"
        torch.testing.assert_close(a[k], ref[k], atol=2e-5, rtol=1e-4, msg=lambda s, k=k: f"{k}: {s}")
