"""The fused LM head + cross-entropy (Triton; under TRITON_INTERPRET=1 on CPU) against the unfused head and the
project's `cross_entropy`: losses and gradients, padding columns, row weights, stability, and the model's
`forward(..., targets=)` with either loss kernel."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel is defined

pytest.importorskip("triton")
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from model.kernels.cross_entropy_triton import linear_cross_entropy, linear_cross_entropy_rows  # noqa: E402
from model.layers import TransformerLM  # noqa: E402
from training.optim import cross_entropy  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _case(n: int, d: int, v_pad: int, vocab: int, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(n, d, generator=g) * scale).to(DEV)
    w = (torch.randn(v_pad, d, generator=g) / d**0.5).to(DEV)
    t = torch.randint(0, vocab, (n,), generator=g).to(DEV)
    return h, w, t


def _grads(fn, h, w):
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    out = fn(h, w)
    out.backward()
    return out.detach(), h.grad, w.grad


@pytest.mark.parametrize("n, d, v_pad, vocab", [(37, 16, 80, 70), (5, 8, 16, 10), (64, 32, 192, 192), (3, 16, 300, 257)])
def test_fused_matches_head_then_cross_entropy(n, d, v_pad, vocab):
    """Several column blocks (the CPU block is 64 wide), a vocabulary narrower than one block (lanes that never see
    a column), padding columns past vocab_size."""
    h, w, t = _case(n, d, v_pad, vocab, seed=n + d + v_pad)
    ref = _grads(lambda a, b: F.cross_entropy((a @ b.t())[:, :vocab], t), h.double(), w.double())
    got = _grads(lambda a, b: linear_cross_entropy(a, b, t, vocab), h, w)
    for name, g, r in zip(("loss", "dh", "dw"), got, ref):
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=1e-5, msg=lambda s, name=name: f"{name}: {s}")
    assert torch.count_nonzero(got[2][vocab:]) == 0  # padding rows of the head get no gradient


def test_row_weights_reach_the_gradient_through_the_small_operands():
    """Any upstream weighting of the per-row losses (not just the mean's 1/N) gives the same gradients as unfused."""
    h, w, t = _case(23, 16, 128, 100, seed=1)
    wt = torch.rand(23, device=DEV) * torch.tensor([0.0, 3.0] * 11 + [1.0], device=DEV)
    ref = _grads(lambda a, b: (F.cross_entropy((a @ b.t())[:, :100], t, reduction="none") * wt.double()).sum(),
                 h.double(), w.double())
    got = _grads(lambda a, b: (linear_cross_entropy(a, b, t, 100, reduction="none") * wt).sum(), h, w)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g.double(), r, atol=1e-5, rtol=1e-5)


def test_large_logits_are_stable_and_bad_targets_give_nan_rows():
    h, w, t = _case(9, 16, 64, 64, seed=2, scale=300.0)  # logits in the thousands: exp would overflow unshifted
    loss = linear_cross_entropy(h, w, t, 64, reduction="none")
    ref = F.cross_entropy((h @ w.t()).double(), t, reduction="none")
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-3)
    t_bad = t.clone()
    t_bad[[2, 5]] = torch.tensor([64, -1], device=DEV)  # past the vocabulary (a padding column) and negative
    bad = linear_cross_entropy(h, w, t_bad, 64, reduction="none")
    assert bad[[2, 5]].isnan().all() and bad[[0, 1, 3, 4, 6, 7, 8]].isfinite().all()


def test_without_grad_no_gradient_buffer_and_clear_errors():
    h, w, t = _case(7, 8, 32, 30, seed=3)
    with torch.no_grad():
        loss, g = linear_cross_entropy_rows(h, w, t, 30, False)
    assert g.numel() == 0 and loss.shape == (7,)
    torch.testing.assert_close(loss.mean(), cross_entropy((h @ w.t())[:, :30], t))
    with pytest.raises(ValueError, match="vocab_size"):
        linear_cross_entropy(h, w, t, 33)
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(h, w, t, 30, reduction="max")


def test_custom_op_registration():
    """opcheck: the fake (meta) function's shapes and strides, and the autograd registration, against the kernel."""
    h, w, t = _case(6, 8, 64, 50, seed=4)
    torch.library.opcheck(linear_cross_entropy_rows, (h.requires_grad_(), w.requires_grad_(), t, 50, True))


def test_model_loss_fused_equals_logits_path():
    """TransformerLM(..., targets=): the fused loss and the logits path agree in value and in every gradient."""
    torch.manual_seed(0)
    model = TransformerLM(vocab_size=70, context_length=16, d_model=32, num_layers=2, num_heads=2, attention="flash_torch",
                          vocab_multiple=64).to(DEV)  # padded to 128 head rows
    ids = torch.randint(0, 70, (3, 17), device=DEV)
    results = []
    for kind in ("logits", "fused"):
        model.zero_grad(set_to_none=True)
        model.loss_kernel = kind
        loss = model(ids[:, :-1], targets=ids[:, 1:])
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][0], cross_entropy(model(ids[:, :-1]), ids[:, 1:]))
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    model.loss_kernel = "magic"
    with pytest.raises(ValueError, match="loss_kernel"):
        model(ids[:, :-1], targets=ids[:, 1:])
