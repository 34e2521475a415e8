"""Data parallelism on CPU with 2 gloo processes: replicas stay identical and equal single-process training on
the same global batch, with bucketed overlapped all-reduce and with ZeRO-1 sharded optimizer state."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.config import PRESETS
from model.layers import Linear, TransformerLM
from model.precision import attach_low_precision_weights, copy_only_weights, low_precision_copies
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
    dist.barrier()  # both ranks done before either tears gloo down (else a peer's closed socket can abort it)
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


def _zero1_worker(rank: int, world: int, store: str, copy_only: bool, out: str) -> None:
    """ZeRO-1 under bf16 autocast (the forward pass reads the Linear weights through their bf16 copies), the owners
    broadcasting either every fp32 parameter or, for copy-only weights, their bf16 copies."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    model = _model()
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    ddp = DDPBucketed(model, bucket_mb=1.0)
    copies = attach_low_precision_weights(model)
    opt = ShardedOptimizer(model.parameters(), AdamW, copy_only=copy_only_weights(model) if copy_only else (),
                           lr=1e-2, weight_decay=0.1, low_precision=copies)
    per = GLOBAL_BATCH // world
    for ids in _batches():
        mine = ids[rank * per : (rank + 1) * per]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = cross_entropy(ddp(mine[:, :-1]).float(), mine[:, 1:])
        loss.backward()
        ddp.finish_gradient_synchronization()
        opt.step()
        opt.zero_grad()
    # before the sync: which fp32 weights this rank never received (still their initial values)
    behind = sorted(n for n, p in model.named_parameters() if torch.equal(p.detach(), initial[n]))
    opt.sync_parameters()
    stale_copies = [n for n, p in model.named_parameters() if p in copies and not torch.equal(copies[p], p.detach().bfloat16())]
    torch.save({"state": {k: v.detach().clone() for k, v in model.state_dict().items()}, "behind": behind,
                "stale copies": stale_copies,
                "not owned": sorted(n for n, p in model.named_parameters() if opt.owner[id(p)] != rank)}, f"{out}.{rank}")
    dist.barrier()  # both ranks done before either tears gloo down (else a peer's closed socket can abort it)
    dist.destroy_process_group()


def test_zero1_broadcasting_bf16_copies_equals_fp32_broadcast(tmp_path):
    """Receiving a weight's bf16 copy instead of its fp32 value leaves training unchanged bit for bit (the forward
    pass only reads the copy); the fp32 values lag on non-owners until `sync_parameters`, then match."""
    runs = {}
    for copy_only in (False, True):
        out = str(tmp_path / f"state-{copy_only}")
        mp.spawn(_zero1_worker, args=(2, str(tmp_path / f"rendezvous-{copy_only}"), copy_only, out), nprocs=2, join=True)
        runs[copy_only] = [torch.load(f"{out}.{r}") for r in (0, 1)]
    for rank in (0, 1):
        full, lazy = runs[False][rank], runs[True][rank]
        assert full["stale copies"] == [] and lazy["stale copies"] == []
        assert full["behind"] == []
        # every weight this rank does not own and reads only through its copy was not sent in fp32 ...
        lagging = [n for n in lazy["not owned"] if n.endswith("weight") and "ln" not in n and "embeddings" not in n]
        assert lagging and lazy["behind"] == lagging
        # ... and after the sync both runs hold the same parameters, bit for bit
        for k, v in full["state"].items():
            assert torch.equal(v, lazy["state"][k]), k
    for k in runs[True][0]["state"]:
        assert torch.equal(runs[True][0]["state"][k], runs[True][1]["state"][k]), f"replicas differ at {k}"


def test_copy_only_weights_excludes_a_weight_tied_to_the_embedding():
    untied = TransformerLM.from_config(PRESETS["tiny"])
    attach_low_precision_weights(untied)
    names = {id(p): n for n, p in untied.named_parameters()}
    assert {names[id(p)] for p in copy_only_weights(untied)} == {n for n, m in untied.named_modules() if isinstance(m, Linear) for n in [f"{n}.weight"]}
    tied = TransformerLM.from_config(PRESETS["tiny"].with_(tie_embeddings=True))
    attach_low_precision_weights(tied)
    assert tied.lm_head.weight in low_precision_copies(tied)
    assert all(p is not tied.lm_head.weight for p in copy_only_weights(tied))
    assert len(copy_only_weights(tied)) == len(copy_only_weights(untied)) - 1
