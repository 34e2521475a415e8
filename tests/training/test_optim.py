"""Loss, clipping, AdamW and schedule against PyTorch's own, step for step."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is defined (the AdamW kernel test)

from model.config import PRESETS
from model.layers import TransformerLM
from training.optim import AdamW, clip_gradients, clip_scale, cross_entropy, lr_cosine_schedule


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


def _interpreted_triton() -> bool:
    """The Triton AdamW kernel runs here: on CUDA, or on CPU under TRITON_INTERPRET=1 (set by the test modules)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.parametrize("clip", [None, 0.05])
def test_triton_adamw_matches_torch_step_for_step(clip):
    """AdamW(compiled="triton"): one kernel launch for the whole list (fp32, contiguous), against torch.optim.AdamW
    (with torch's own clip_grad_norm_ when clipping), including a parameter that skips a step (its own step count)."""
    if not _interpreted_triton():
        pytest.skip("needs Triton (CUDA, or TRITON_INTERPRET=1 on CPU)")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    ours = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"), device=dev)
    ref = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"), device=dev)
    ref.load_state_dict(ours.state_dict())
    kw = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt_a, opt_b = AdamW(ours.parameters(), **kw, compiled="triton"), torch.optim.AdamW(ref.parameters(), **kw)
    ids = torch.randint(0, 512, (4, 17), device=dev)
    for step in range(5):
        for model, opt in ((ours, opt_a), (ref, opt_b)):
            for group in opt.param_groups:
                group["lr"] = 3e-3 * (1 + step) / 5
            loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
            opt.zero_grad()
            loss.backward()
            if step == 2:
                model.lm_head.weight.grad = None
            if model is ours:
                norm, scale = clip_scale(model.parameters(), clip) if clip else (None, None)
                opt.step(grad_scale=scale)
            else:
                ref_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip) if clip else None
                opt.step()
        if clip:
            torch.testing.assert_close(norm, ref_norm, atol=1e-6, rtol=1e-5)
            assert float(scale) < 1.0  # the tiny model's gradients are clipped at this norm
        for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=lambda s, n=name, k=step: f"step {k} {n}: {s}")
    # chunk plans: all parameters; all but the head (the step it skipped, then the rest one step ahead); the head alone
    assert len(opt_a._plans) == 3


def test_clip_scale_applied_by_every_path_equals_clip_gradients():
    """`clip_scale` + `step(grad_scale=)` (foreach path) equals `clip_gradients` + `step()`, clipped or not."""
    torch.manual_seed(0)
    for max_norm in (0.01, 1e6):
        a = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))
        b = TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference"))
        b.load_state_dict(a.state_dict())
        opt_a, opt_b = AdamW(a.parameters(), lr=1e-3), AdamW(b.parameters(), lr=1e-3)
        ids = torch.randint(0, 512, (2, 9))
        for model in (a, b):
            cross_entropy(model(ids[:, :-1]), ids[:, 1:]).backward()
        norm, scale = clip_scale(a.parameters(), max_norm)
        opt_a.step(grad_scale=scale)
        assert float(norm) == pytest.approx(clip_gradients(b.parameters(), max_norm), rel=1e-6)
        opt_b.step()
        assert (float(scale) < 1.0) == (max_norm == 0.01)
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, atol=1e-7, rtol=1e-6)
    none, one = clip_scale([torch.nn.Parameter(torch.zeros(2))], 1.0)
    assert float(none) == 0.0 and float(one) == 1.0
    with pytest.raises(ValueError, match="compiled must be"):
        AdamW([torch.nn.Parameter(torch.zeros(1))], compiled="fused")
