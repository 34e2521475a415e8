"""Low-precision weight copies (model.precision): the same forward pass as autocast's own casts, fp32 weight
gradients, copies kept current by every optimizer path (the Triton kernel under TRITON_INTERPRET=1 on CPU), by
state-dict loads and by ZeRO-1's broadcasts."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the AdamW kernel is defined

from model.config import PRESETS
from model.layers import Linear, TransformerLM
from model.precision import (attach_low_precision_weights, detach_low_precision_weights, low_precision_copies,
                             mm_out, refresh_low_precision_weights)
from training.optim import AdamW

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _tiny(**changes) -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM.from_config(PRESETS["tiny"].with_(attention="reference", **changes), device=DEV)


def _skip_without_triton() -> None:
    """The Triton kernels run on CUDA, or on CPU under TRITON_INTERPRET=1 (set above when there is no GPU)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        pytest.skip("needs Triton")
    if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")


def _loss_and_grads(model: TransformerLM, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast(DEV, dtype=torch.bfloat16):
        loss = model(ids[:, :-1], targets=ids[:, 1:])
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_copies_give_autocast_forward_and_fp32_weight_gradients():
    """Under bf16 autocast the copies change nothing the forward pass computes (autocast multiplies by the same
    bf16-rounded weights); weight gradients arrive fp32 and agree with autocast's to bf16 precision."""
    plain, fast = _tiny(), _tiny()
    copies = attach_low_precision_weights(fast)
    linears = [m for m in fast.modules() if isinstance(m, Linear)]
    assert len(copies) == len(linears) == 7 * fast.layers.__len__() + 1  # q, k, v, o, w1, w2, w3 per layer; head
    assert all(c.dtype == torch.bfloat16 and torch.equal(c, w.to(torch.bfloat16)) for w, c in copies.items())
    ids = torch.randint(0, 512, (2, 33), device=DEV)
    loss_a, grads_a = _loss_and_grads(plain, ids)
    loss_b, grads_b = _loss_and_grads(fast, ids)
    torch.testing.assert_close(loss_b, loss_a, atol=0, rtol=0)
    for name, g in grads_a.items():
        assert grads_b[name].dtype == torch.float32
        torch.testing.assert_close(grads_b[name], g, atol=2e-3 * float(g.abs().max()), rtol=1.6e-2, msg=name)
    # no copies outside autocast: the fp32 product
    with torch.no_grad():
        torch.testing.assert_close(fast(ids[:, :-1]), plain(ids[:, :-1]), atol=0, rtol=0)


def test_linear_low_precision_gradients_against_float64():
    """The custom backward: dx = dy W (bf16 operands), dW = dy^T x written as fp32, for 3-d inputs, with a bias."""
    torch.manual_seed(1)
    lin = Linear(24, 40, device=DEV, bias=True)
    attach_low_precision_weights(lin)
    x = torch.randn(3, 5, 24, device=DEV, requires_grad=True)
    dy = torch.randn(3, 5, 40, device=DEV)
    with torch.autocast(DEV, dtype=torch.bfloat16):
        y = lin(x)
    y.backward(dy)
    x16, w16, dy16 = (t.detach().to(torch.bfloat16).double() for t in (x, lin.weight, dy))
    torch.testing.assert_close(y.double(), x16 @ w16.t() + lin.bias.double(), atol=0.05, rtol=1e-2)
    dy_b = dy.to(y.dtype).to(torch.bfloat16).double()  # what the backward multiplies
    # dW: the exact products of the bf16 operands, accumulated and stored in fp32 (no bf16 rounding of the result)
    torch.testing.assert_close(lin.weight.grad.double(), dy_b.reshape(-1, 40).t() @ x16.reshape(-1, 24), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad.double(), dy_b @ w16, atol=0.05, rtol=1e-2)
    assert lin.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32


def test_frozen_weight_or_input_get_no_gradient():
    lin = Linear(16, 8, device=DEV)
    attach_low_precision_weights(lin)
    lin.weight.requires_grad_(False)
    x = torch.randn(4, 16, device=DEV, requires_grad=True)
    with torch.autocast(DEV, dtype=torch.bfloat16):
        lin(x).sum().backward()
    assert lin.weight.grad is None and x.grad is not None
    lin.weight.requires_grad_(True)
    with torch.autocast(DEV, dtype=torch.bfloat16):
        lin(torch.randn(4, 16, device=DEV)).sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.dtype == torch.float32


def test_attach_twice_keeps_the_tensors_and_conversions_drop_them():
    model = _tiny()
    first = attach_low_precision_weights(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)
    second = attach_low_precision_weights(model)
    assert all(second[w] is c for w, c in first.items())  # an optimizer given the first dict stays in step
    assert torch.equal(second[model.lm_head.weight], model.lm_head.weight.detach().bfloat16())  # refreshed
    model.half()  # a conversion: the buffers are new tensors the optimizer does not know
    assert low_precision_copies(model) == {}


def test_mm_out_writes_the_requested_dtype():
    a = torch.randn(8, 16, device=DEV).to(torch.bfloat16)
    b = torch.randn(16, 4, device=DEV).to(torch.bfloat16)
    out = mm_out(a, b, torch.float32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, a.double().mm(b.double()).float(), atol=1e-2, rtol=1e-2)


def test_tied_weights_share_one_copy_and_detach_restores_casts():
    model = _tiny(tie_embeddings=True)
    copies = attach_low_precision_weights(model)
    assert model.lm_head.weight_lp is copies[model.token_embeddings.weight]
    assert len(low_precision_copies(model)) == len(copies)
    state = model.state_dict()
    assert not any(k.endswith("weight_lp") for k in state)  # never in checkpoints
    model.load_state_dict(state, strict=True)  # and a strict load of a checkpoint does not ask for them
    detach_low_precision_weights(model)
    assert low_precision_copies(model) == {}


@pytest.mark.parametrize("compiled, dtype", [(False, torch.bfloat16), (True, torch.bfloat16), ("triton", torch.bfloat16),
                                             ("triton", torch.float16)])
def test_optimizer_keeps_copies_current(compiled, dtype, monkeypatch):
    """Every step leaves each copy equal to its parameter rounded to the copy's dtype (the Triton kernel stores a
    bf16 copy as it writes the parameter; fp16 copies, which it does not take, are copied after it; the compiled
    update, here under the eager backend, copies after it); the parameters follow the same trajectory as without."""
    if compiled is True:
        import torch._dynamo as dynamo

        dynamo.reset()
        real_compile = torch.compile
        monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "eager"}))
    if compiled == "triton":
        _skip_without_triton()
    plain, fast = _tiny(), _tiny()
    copies = attach_low_precision_weights(fast, dtype)
    kw = dict(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, compiled=compiled)
    opt_a, opt_b = AdamW(plain.parameters(), **kw), AdamW(fast.parameters(), **kw, low_precision=copies)
    ids = torch.randint(0, 512, (2, 17), device=DEV)
    for _ in range(3):
        for model, opt in ((plain, opt_a), (fast, opt_b)):
            for p in model.parameters():  # the same gradients on both sides: the optimizer is what is under test
                p.grad = torch.full_like(p, 1e-3) + p.detach() * 1e-2
            opt.step()
        for w, c in copies.items():
            assert torch.equal(c, w.detach().to(dtype))
        for p, q in zip(plain.parameters(), fast.parameters()):
            assert torch.equal(p, q)
    del ids


def test_state_dict_load_refreshes_copies():
    """A checkpoint loaded into a model with copies (a resumed run) updates the copies too."""
    src, dst = _tiny(), _tiny()
    with torch.no_grad():
        for p in src.parameters():
            p.mul_(1.5)
    copies = attach_low_precision_weights(dst)
    dst.load_state_dict(src.state_dict())
    for w, c in copies.items():
        assert torch.equal(c, w.detach().to(torch.bfloat16))
    with torch.no_grad():
        next(iter(copies)).add_(1.0)  # changed outside the optimizer: stale until refreshed
    assert not torch.equal(next(iter(copies.values())), next(iter(copies)).to(torch.bfloat16))
    refresh_low_precision_weights(dst)
    assert torch.equal(next(iter(copies.values())), next(iter(copies)).to(torch.bfloat16))


def test_triton_copy_rounds_to_nearest_even():
    """The kernel's integer rounding equals PyTorch's fp32 -> bf16 conversion on ties, negatives, subnormals,
    infinities, the largest floats and NaN (lr 0: the update leaves the parameter as it is)."""
    _skip_without_triton()
    f32 = torch.finfo(torch.float32)
    special = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), -(1 + 3 * 2**-8), 1 + 2**-8 + 2**-20, f32.max, -f32.max,
               f32.tiny / 3, -f32.tiny / 5, float("inf"), float("-inf"), float("nan"), 0.0, -0.0, 3.0, 1e-30]
    torch.manual_seed(2)
    p = torch.nn.Parameter(torch.cat([torch.tensor(special), torch.randn(5000) * 10.0 ** torch.randint(-20, 20, (5000,))]).to(DEV))
    copy = torch.zeros_like(p, dtype=torch.bfloat16)
    opt = AdamW([p], lr=0.0, weight_decay=0.0, compiled="triton", low_precision={p: copy})
    p.grad = torch.zeros_like(p)
    opt.step()
    expected = p.detach().to(torch.bfloat16)
    assert torch.equal(copy.view(torch.int16)[~expected.isnan()], expected.view(torch.int16)[~expected.isnan()])
    assert torch.equal(copy.isnan(), expected.isnan())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Inductor on CUDA, as `sift pretrain --set compile=true` runs")
def test_compiled_model_with_copies_matches_autocast_casts():
    """torch.compile (one graph, copies as buffers updated in place by the optimizer: no recompiles) gives the same
    losses over optimizer steps as the compiled model without copies, and the GEMM writes fp32 weight gradients."""
    import torch._dynamo

    torch._dynamo.reset()
    plain, fast = _tiny(), _tiny()
    copies = attach_low_precision_weights(fast)
    opts = [AdamW(plain.parameters(), lr=1e-3, compiled="triton"),
            AdamW(fast.parameters(), lr=1e-3, compiled="triton", low_precision=copies)]
    steps = [torch.compile(plain), torch.compile(fast)]
    ids = torch.randint(0, 512, (4, 65), device=DEV)
    losses: list[list[float]] = [[], []]
    for _ in range(4):
        for i in (0, 1):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = steps[i](ids[:, :-1], targets=ids[:, 1:])
            loss.backward()
            assert fast.layers[0].ffn.w1.weight.grad is None or fast.layers[0].ffn.w1.weight.grad.dtype == torch.float32
            opts[i].step()
            opts[i].zero_grad(set_to_none=True)
            losses[i].append(float(loss))
    assert losses[0][0] == losses[1][0]  # the same forward pass
    assert losses[1] == pytest.approx(losses[0], abs=2e-3)
    assert all(torch.equal(c, w.detach().bfloat16()) for w, c in copies.items())


def test_fused_head_reads_the_head_copy():
    """The fused LM head + loss (Triton; the interpreter on CPU) multiplies by the head's copy: the same loss as
    with autocast's cast of the head, the head's gradient fp32, the exact product of the bf16 operands."""
    _skip_without_triton()
    plain, fast = _tiny(), _tiny()
    for m in (plain, fast):
        m.loss_kernel = "fused"
    attach_low_precision_weights(fast)
    ids = torch.randint(0, 512, (2, 17), device=DEV)
    loss_a, grads_a = _loss_and_grads(plain, ids)
    loss_b, grads_b = _loss_and_grads(fast, ids)
    torch.testing.assert_close(loss_b, loss_a, atol=0, rtol=0)
    g_a, g_b = grads_a["lm_head.weight"], grads_b["lm_head.weight"]
    assert g_b.dtype == torch.float32
    torch.testing.assert_close(g_b, g_a, atol=2e-3 * float(g_a.abs().max()), rtol=1.6e-2)
    assert not torch.equal(g_b, g_a)  # not the bf16-rounded product: the copy's path was taken
