"""FlashAttention-2: the tiled PyTorch implementation and the Triton kernels (under TRITON_INTERPRET=1 on CPU)
against naive attention, forward and gradients, on awkward shapes."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined

from model.kernels import FlashAttentionTorch, flash_attention  # noqa: E402
from model.layers import attend  # noqa: E402


def naive(q, k, v, causal):
    """Naive attention; with causal and more queries than keys, the first n - m queries see no key: their
    output (and gradient) is defined as 0, as the kernels do, where a plain softmax would give NaN."""
    n, m = q.shape[-2], k.shape[-2]
    if causal and n > m:
        e = n - m
        visible = attend(q[..., e:, :], k, v, True, kind="reference")
        return torch.cat([q[..., :e, :] * 0.0, visible], dim=-2)
    return attend(q, k, v, causal, kind="reference")


def _grads(fn, q, k, v, do):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    out.backward(do)
    return out.detach(), q.grad, k.grad, v.grad


SHAPES = [  # (n queries, m keys, head dim)
    (1, 1, 16), (17, 17, 16), (64, 64, 32), (100, 100, 64), (5, 37, 32), (70, 130, 16),
]


@pytest.mark.parametrize("n, m, d", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_flash_torch_matches_naive(n, m, d, causal):
    torch.manual_seed(n * 1000 + m + d)
    q, k, v = torch.randn(2, 3, n, d), torch.randn(2, 3, m, d), torch.randn(2, 3, m, d)
    do = torch.randn(2, 3, n, d)
    ref = _grads(lambda a, b, c: naive(a, b, c, causal), q.double(), k.double(), v.double(), do.double())
    got = _grads(lambda a, b, c: FlashAttentionTorch.apply(a, b, c, causal), q, k, v, do)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g.double(), r, atol=2e-5, rtol=2e-5)


def test_causal_query_rows_with_no_keys_are_zero():
    """Bottom-right causal with more queries than keys: the first n - m queries see nothing."""
    q, k, v = torch.randn(1, 6, 8), torch.randn(1, 2, 8), torch.randn(1, 2, 8)
    out = FlashAttentionTorch.apply(q, k, v, True)
    assert torch.equal(out[:, :4], torch.zeros(1, 4, 8))


TRITON_SHAPES = [(1, 1, 16), (17, 17, 16), (33, 33, 32), (5, 21, 16), (40, 24, 16), (32, 32, 16), (48, 64, 16), (64, 32, 32),
                 (19, 19, 24), (9, 13, 80)]  # head dims that are not powers of two are padded in registers


@pytest.mark.parametrize("n, m, d", TRITON_SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_triton_kernels_match_naive(n, m, d, causal):
    pytest.importorskip("triton")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(n * 7 + m + d)
    q, k, v = (torch.randn(2, s, d, device=dev) for s in (n, m, m))
    do = torch.randn(2, n, d, device=dev)
    ref = _grads(lambda a, b, c: naive(a, b, c, causal), q.double(), k.double(), v.double(), do.double())
    got = _grads(lambda a, b, c: flash_attention(a, b, c, causal=causal, kind="triton"), q, k, v, do)
    for name, g, r in zip(("out", "dq", "dk", "dv"), got, ref):
        torch.testing.assert_close(g.double(), r, atol=1e-4, rtol=1e-4, msg=lambda s, name=name: f"{name}: {s}")


@pytest.mark.parametrize("n, m, d", [(n, m, d) for n, m, d in SHAPES if n <= m])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_kind_matches_naive_with_bottom_right_causal(n, m, d, causal):
    """kind="sdpa" is PyTorch's fused attention under this package's convention: with fewer queries than keys
    (decoding with a cache) causal masking is bottom-right aligned, where SDPA's own is_causal is top-left."""
    torch.manual_seed(n * 31 + m + d)
    q, k, v = torch.randn(2, 3, n, d), torch.randn(2, 3, m, d), torch.randn(2, 3, m, d)
    do = torch.randn(2, 3, n, d)
    ref = _grads(lambda a, b, c: naive(a, b, c, causal), q.double(), k.double(), v.double(), do.double())
    got = _grads(lambda a, b, c: flash_attention(a, b, c, causal=causal, kind="sdpa"), q, k, v, do)
    for name, g, r in zip(("out", "dq", "dk", "dv"), got, ref):
        torch.testing.assert_close(g.double(), r, atol=2e-5, rtol=2e-5, msg=lambda s, name=name: f"{name}: {s}")


def test_cudnn_kind_on_gpu_matches_naive_and_needs_cuda():
    """kind="cudnn" holds SDPA to cuDNN's kernels (bf16 on CUDA); on CPU tensors it is a clear error."""
    q = torch.randn(1, 2, 8, 16)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA"):
            flash_attention(q, q, q, kind="cudnn")
        pytest.skip("the cuDNN kernels need CUDA")
    torch.manual_seed(3)
    q, k, v, do = (torch.randn(2, 4, 256, 64, device="cuda") for _ in range(4))
    ref = _grads(lambda a, b, c: naive(a, b, c, True), q.double(), k.double(), v.double(), do.double())
    got = _grads(lambda a, b, c: flash_attention(a, b, c, causal=True, kind="cudnn"),
                 q.bfloat16(), k.bfloat16(), v.bfloat16(), do.bfloat16())
    for name, g, r in zip(("out", "dq", "dk", "dv"), got, ref):
        torch.testing.assert_close(g.double(), r, atol=3e-2, rtol=3e-2, msg=lambda s, name=name: f"{name}: {s}")


def test_dispatch():
    q = torch.randn(1, 4, 8)
    torch.testing.assert_close(flash_attention(q, q, q, kind="auto"), FlashAttentionTorch.apply(q, q, q, True))
    with pytest.raises(ValueError, match="unknown attention kind"):
        flash_attention(q, q, q, kind="magic")


def test_triton_attention_is_a_custom_op_torch_compile_traces_through():
    """The Triton kernels are registered as `sift::flash_attention_fwd/bwd`: opcheck validates their fake (meta)
    functions and autograd registration against the real kernels, and a whole model traces as one graph (before,
    attention was `torch.compiler.disable`d: a graph break in every layer)."""
    pytest.importorskip("triton")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    from model.kernels.flash_triton import flash_attention_fwd
    from model.layers import TransformerLM

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 24, 16, device=dev, requires_grad=True) for _ in range(3))
    torch.library.opcheck(flash_attention_fwd, (q, k, v, True))
    model = TransformerLM(vocab_size=64, context_length=32, d_model=32, num_layers=2, num_heads=2, attention="triton").to(dev)
    ids = torch.randint(0, 64, (2, 24), device=dev)
    explanation = torch._dynamo.explain(model)(ids)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    # traced forward and backward (AOTAutograd, as Inductor sees them) equal eager
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out_c = compiled(ids)
    out_c.float().square().mean().backward()
    grads_c = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out_e = model(ids)
    out_e.float().square().mean().backward()
    torch.testing.assert_close(out_c, out_e)
    for gc, p in zip(grads_c, model.parameters()):
        torch.testing.assert_close(gc, p.grad)


@pytest.mark.parametrize("causal", [False, True])
def test_triton_kernels_read_strided_layouts_and_write_seq_major(causal):
    """The model hands the kernels (b, h, s, d) views of (b, s, h, d) memory (and v may be a column slice of a wider
    projection): the kernels read those strides without copies, and O, dQ, dK, dV come back laid out (b, s, h, d),
    so `out.transpose(1, 2).flatten(2)` is a view for the output projection."""
    pytest.importorskip("triton")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(3)
    b, s, h, d = 2, 37, 3, 16
    base = torch.randn(b, s, 3 * h * d + 8, device=dev)  # a fused projection's output with extra columns
    do = torch.randn(b, s, h, d, device=dev).transpose(1, 2)  # the output projection's gradient layout

    def run(fn, dtype):
        qkv = base.to(dtype).requires_grad_()
        q, k, v = (qkv[..., i * h * d:(i + 1) * h * d].unflatten(-1, (h, d)).transpose(1, 2) for i in range(3))
        assert q.stride() == (s * (3 * h * d + 8), d, 3 * h * d + 8, 1)  # strided views, not copies
        out = fn(q, k, v)
        out.backward(do.to(dtype))
        return out, qkv.grad

    out_ref, grad_ref = run(lambda q, k, v: naive(q, k, v, causal), torch.float64)
    out, grad = run(lambda q, k, v: flash_attention(q, k, v, causal=causal, kind="triton"), torch.float32)
    torch.testing.assert_close(out.double(), out_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grad.double(), grad_ref, atol=1e-4, rtol=1e-4)
    assert out.shape == (b, h, s, d) and out.transpose(1, 2).is_contiguous()
    from model.kernels.flash_triton import triton_backward, triton_forward

    q, k, v = (base[..., i * h * d:(i + 1) * h * d].unflatten(-1, (h, d)).transpose(1, 2) for i in range(3))
    o, lse = triton_forward(q, k, v, causal)
    for g in triton_backward(q, k, v, o, lse, do, causal):
        assert g.transpose(1, 2).is_contiguous()
