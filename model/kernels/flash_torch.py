"""FlashAttention-2 in plain PyTorch: the readable specification of the Triton kernels.

Forward (Dao 2023, Algorithm 1): for each tile of queries, loop over key tiles keeping a running row max m,
row sum l and unnormalised output acc (online softmax, all fp32); O = acc / l and the row logsumexp
L = m + log(l) are all that is saved. Backward (Algorithm 2): recompute P = exp(S - L) tile by tile, with
D = rowsum(dO * O): dV += P^T dO, dP = dO V^T, dS = P * (dP - D), dQ += dS K / sqrt(d), dK += dS^T Q / sqrt(d).

Causal masking is bottom-right aligned (query i sits at key position m - n + i, as in FlashAttention-2 and
a KV-cache decode step); with n == m it is the usual lower triangle. Key tiles entirely above the diagonal
are skipped. Inputs are (..., seq, d_head) with any leading dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Q_TILE = 64
K_TILE = 64


def _causal_mask(q0: int, k0: int, bq: int, bk: int, offset: int, device) -> Tensor:
    """True where query (q0 + i) may attend key (k0 + j): k0 + j <= q0 + i + offset."""
    qi = torch.arange(q0, q0 + bq, device=device)[:, None]
    kj = torch.arange(k0, k0 + bk, device=device)[None, :]
    return kj <= qi + offset


def flash_forward(q: Tensor, k: Tensor, v: Tensor, causal: bool, q_tile: int = Q_TILE, k_tile: int = K_TILE):
    """(O in q's dtype, L fp32 (..., n)) for q (..., n, d), k/v (..., m, d)."""
    n, m, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d)
    offset = m - n
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
    for q0 in range(0, n, q_tile):
        qi = q[..., q0 : q0 + q_tile, :].to(torch.float32)  # (..., bq, d)
        bq = qi.shape[-2]
        m_i = torch.full(qi.shape[:-1], float("-inf"), dtype=torch.float32, device=q.device)  # (..., bq)
        l_i = torch.zeros_like(m_i)
        acc = torch.zeros_like(qi)  # (..., bq, d)
        k_end = min(m, q0 + bq + offset) if causal else m  # keys after the tile's last query's diagonal: skipped
        for k0 in range(0, max(k_end, 0), k_tile):
            kj = k[..., k0 : k0 + k_tile, :].to(torch.float32)  # (..., bk, d)
            vj = v[..., k0 : k0 + k_tile, :].to(torch.float32)
            s = (qi @ kj.transpose(-1, -2)) * scale  # (..., bq, bk)
            if causal and k0 + kj.shape[-2] - 1 > q0 + offset:
                s = s.masked_fill(~_causal_mask(q0, k0, bq, kj.shape[-2], offset, q.device), float("-inf"))
            m_new = torch.maximum(m_i, s.amax(dim=-1))
            safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # rows with nothing yet
            p = torch.exp(s - safe[..., None])
            alpha = torch.exp(m_i - safe)
            l_i = alpha * l_i + p.sum(dim=-1)
            acc = alpha[..., None] * acc + p @ vj
            m_i = m_new
        empty = l_i == 0  # rows that may attend nothing (causal with n > m): output 0, L = -inf
        l_safe = torch.where(empty, torch.ones_like(l_i), l_i)
        out[..., q0 : q0 + bq, :] = (acc / l_safe[..., None]).to(q.dtype)
        lse[..., q0 : q0 + bq] = torch.where(empty, torch.full_like(l_i, float("-inf")), m_i + torch.log(l_safe))
    return out, lse


def flash_backward(q, k, v, out, lse, dout, causal: bool, q_tile: int = Q_TILE, k_tile: int = K_TILE):
    n, m, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d)
    offset = m - n
    q32, k32, v32, do32 = (t.to(torch.float32) for t in (q, k, v, dout))
    delta = (do32 * out.to(torch.float32)).sum(dim=-1)  # D = rowsum(dO ∘ O), (..., n)
    dq = torch.zeros_like(q32)
    dk = torch.zeros_like(k32)
    dv = torch.zeros_like(v32)
    lse_safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    for k0 in range(0, m, k_tile):
        kj, vj = k32[..., k0 : k0 + k_tile, :], v32[..., k0 : k0 + k_tile, :]
        bk = kj.shape[-2]
        q_start = max(0, k0 - offset) if causal else 0  # queries before the diagonal never see this tile
        q_start -= q_start % q_tile
        for q0 in range(q_start, n, q_tile):
            qi, doi = q32[..., q0 : q0 + q_tile, :], do32[..., q0 : q0 + q_tile, :]
            bq = qi.shape[-2]
            s = (qi @ kj.transpose(-1, -2)) * scale  # (..., bq, bk)
            p = torch.exp(s - lse_safe[..., q0 : q0 + bq, None])
            if causal:
                p = p.masked_fill(~_causal_mask(q0, k0, bq, bk, offset, q.device), 0.0)
            p = p.masked_fill(torch.isinf(lse[..., q0 : q0 + bq, None]), 0.0)
            dv[..., k0 : k0 + bk, :] += p.transpose(-1, -2) @ doi
            dp = doi @ vj.transpose(-1, -2)
            ds = p * (dp - delta[..., q0 : q0 + bq, None])
            dq[..., q0 : q0 + bq, :] += (ds @ kj) * scale
            dk[..., k0 : k0 + bk, :] += (ds.transpose(-1, -2) @ qi) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class FlashAttentionTorch(torch.autograd.Function):
    """Tiled attention saving only O and L (no n x m matrix is kept for the backward pass)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, causal: bool = False) -> Tensor:
        out, lse = flash_forward(q, k, v, causal)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal = causal
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_backward(q, k, v, out, lse, dout, ctx.causal)
        return dq, dk, dv, None
