"""The language-model loss from its definition (the model computes it in `TransformerLM.forward(x, targets=)`;
`training.optim` re-exports it under the plain name the training code uses)."""

from __future__ import annotations

import torch
from torch import Tensor


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of (..., vocab) logits against (...) integer targets, stable in fp32."""
    x = logits.reshape(-1, logits.shape[-1]).to(torch.float32)  # (N, vocab)
    t = targets.reshape(-1)  # (N,)
    # the shift is only for stability: log-sum-exp does not depend on it, so it carries no gradient (no amax backward)
    m = x.detach().amax(dim=-1, keepdim=True)
    lse = m.squeeze(-1) + torch.log(torch.exp(x - m).sum(dim=-1))  # (N,)
    picked = x.gather(-1, t[:, None]).squeeze(-1)  # (N,)
    return (lse - picked).mean()
