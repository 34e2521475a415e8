"""Loss, clipping, AdamW and schedule against PyTorch's own, step for step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.config import PRESETS
from model.layers import TransformerLM
from training.optim import AdamW, clip_gradients, cross_entropy, lr_cosine_schedule


def test_cross_entropy_matches_torch_and_is_stable():
    logits = torch.randn(2, 5, 11) * 3
    targets = torch.randint(0, 11, (2, 5))
    torch.testing.assert_close(cross_entropy(logits, targets), F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1)))
    big = logits + 1e4
    assert torch.isfinite(cross_entropy(big, targets))
    torch.testing.assert_close(cross_entropy(big, targets), cross_entropy(logits, targets), atol=1e-2, rtol=1e-3)


def test_clip_gradients_matches_torch():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 4)) for _ in range(3)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    no_grad = torch.nn.Parameter(torch.randn(3))
    for x, y in zip(a, b):
        g = torch.randn_like(x) * 5
        x.grad, y.grad = g.clone(), g.clone()
    norm = clip_gradients(a + [no_grad], 1.0)
    ref = torch.nn.utils.clip_grad_norm_(b, 1.0)
    assert norm == pytest.approx(float(ref), rel=1e-6)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, atol=1e-6, rtol=1e-5)
    assert clip_gradients([no_grad], 1.0) == 0.0


def test_adamw_matches_torch_step_for_step():
    torch.manual_seed(0)
    ours = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))
    ref = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))
    ref.load_state_dict(ours.state_dict())
    kw = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt_a, opt_b = AdamW(ours.parameters(), **kw), torch.optim.AdamW(ref.parameters(), **kw)
    ids = torch.randint(0, 512, (4, 17))
    for step in range(8):
        for model, opt in ((ours, opt_a), (ref, opt_b)):
            loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
            opt.zero_grad()
            loss.backward()
            if step == 3:  # a parameter that gets no gradient this step keeps its own step count
                model.lm_head.weight.grad = None
            opt.step()
        for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=lambda s, n=name, k=step: f"step {k} {n}: {s}")


def test_cosine_schedule():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup=10, cosine=110)
    assert lr_cosine_schedule(0, **kw) == 0.0
    assert lr_cosine_schedule(5, **kw) == 0.5
    assert lr_cosine_schedule(10, **kw) == 1.0
    assert lr_cosine_schedule(60, **kw) == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi / 2)) * 0.9)
    assert lr_cosine_schedule(110, **kw) == pytest.approx(0.1)
    assert lr_cosine_schedule(500, **kw) == 0.1
    with pytest.raises(ValueError):
        AdamW([torch.nn.Parameter(torch.zeros(1))], lr=-1)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_adamw_update_matches_the_foreach_steps(backend, monkeypatch):
    """AdamW(compiled=True) runs `adamw_update` (lr and step as tensors) under torch.compile; here with the eager
    and AOTAutograd backends (Inductor on the GPU benchmark): the same parameters as the plain foreach path, step
    for step, including a parameter that skips a step and an lr that changes every step (no recompiles)."""
    import torch._dynamo

    torch._dynamo.reset()
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": backend}))
    torch.manual_seed(0)
    a = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))
    b = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))
    b.load_state_dict(a.state_dict())
    kw = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt_a, opt_b = AdamW(a.parameters(), **kw), AdamW(b.parameters(), **kw, compiled=True)
    ids = torch.randint(0, 512, (4, 17))
    for step in range(6):
        for model, opt in ((a, opt_a), (b, opt_b)):
            for group in opt.param_groups:
                group["lr"] = 3e-3 * (1 + step) / 6
            loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
            opt.zero_grad()
            loss.backward()
            if step == 2:
                model.lm_head.weight.grad = None
            opt.step()
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=lambda s, n=name, k=step: f"step {k} {n}: {s}")
    assert opt_b._update is not None
