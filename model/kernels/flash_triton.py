"""FlashAttention-2 forward and backward as Triton kernels (same algorithm as `flash_torch`).

- q, k, v, dO are read through their batch / head / seq strides (the model passes (b, h, s, d) views of (b, s, h, d)
  memory, no copies); O, dQ, dK, dV are allocated laid out (..., seq, heads, d) (`new_attention_output`).
- forward: one program per (query tile, batch*head); loop over key tiles with an online softmax in fp32
  (exp2 with log2(e) folded into the scale); causal programs stop at their last query's diagonal, so fully
  masked tiles are never loaded; saves O and the natural-log logsumexp L.
- backward: a pre-pass D = rowsum(dO * O); one kernel per key tile accumulates dK and dV over the query tiles
  that can see it (causal: from the diagonal on), one kernel per query tile accumulates dQ over its key tiles;
  P is recomputed from L, nothing n x m is stored, no atomics.
- any sequence lengths (ragged last tiles are masked), head dims 16..128 (padded to a power of two in
  registers), bf16 / fp16 / fp32 inputs (fp32 dots use IEEE precision, not TF32).
- tile sizes, warps and stages are autotuned on CUDA; under TRITON_INTERPRET=1 (CPU tests) a fixed small
  configuration is used.

Causal masking is bottom-right aligned, as in `flash_torch`.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _fwd_kernel(Q, K, V, O, L, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh,
                stride_vn, stride_ob, stride_oh, stride_on, H, N, M, offset, qk_scale, D: tl.constexpr,
                BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    O += b * stride_ob + h * stride_oh
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q = tl.load(Q + offs_m[:, None] * stride_qn + offs_d[None, :], mask=(offs_m[:, None] < N) & d_ok[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hi = M
    if CAUSAL:
        hi = tl.minimum(M, (pid_m + 1) * BLOCK_M + offset)
    k_base = K
    v_base = V
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None], mask=(cols[None, :] < M) & d_ok[:, None], other=0.0)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        ok = cols[None, :] < M
        if CAUSAL:
            ok = ok & (cols[None, :] <= offs_m[:, None] + offset)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :], mask=(cols[:, None] < M) & d_ok[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(O + offs_m[:, None] * stride_on + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=(offs_m[:, None] < N) & d_ok[None, :])
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
    tl.store(L + bh * N + offs_m, lse, mask=offs_m < N)


@triton.jit
def _bwd_delta_kernel(O, DO, Delta, stride_ob, stride_oh, stride_on, stride_dob, stride_doh, stride_don, H, N,
                      D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < N) & (offs_d[None, :] < D)
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :], mask=mask,
                other=0.0).to(tl.float32)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_don + offs_d[None, :], mask=mask,
                 other=0.0).to(tl.float32)
    tl.store(Delta + bh * N + offs_m, tl.sum(o * do, 1), mask=offs_m < N)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, L, Delta, DK, DV, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
                     stride_vb, stride_vh, stride_vn, stride_dob, stride_doh, stride_don, stride_dkb, stride_dkh,
                     stride_dkn, stride_dvb, stride_dvh, stride_dvn, H, N, M, offset, sm_scale,
                     D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
    """One key tile: dV = sum_q P^T dO, dK = scale * sum_q dS^T Q over the query tiles that see it."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    DK += b * stride_dkb + h * stride_dkh
    DV += b * stride_dvb + h * stride_dvh
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    kv_mask = (offs_n[:, None] < M) & d_ok[None, :]
    k = tl.load(K + offs_n[:, None] * stride_kn + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + offs_n[:, None] * stride_vn + offs_d[None, :], mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    lo = 0
    if CAUSAL:
        lo = tl.maximum(pid_n * BLOCK_N - offset, 0)
        lo = (lo // BLOCK_M) * BLOCK_M
    qk_scale = sm_scale * 1.4426950408889634
    for start_m in range(lo, N, BLOCK_M):
        rows = start_m + offs_m
        row_ok = rows < N
        q = tl.load(Q + rows[:, None] * stride_qn + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        do = tl.load(DO + rows[:, None] * stride_don + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        lse = tl.load(L + bh * N + rows, mask=row_ok, other=float("-inf"))
        delta = tl.load(Delta + bh * N + rows, mask=row_ok, other=0.0)
        # transposed scores: (BLOCK_N, BLOCK_M) = K Q^T
        st = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
        lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)  # empty rows -> p = 0
        pt = tl.math.exp2(st - lse2[None, :])
        ok = (offs_n[:, None] < M) & row_ok[None, :]
        if CAUSAL:
            ok = ok & (offs_n[:, None] <= rows[None, :] + offset)
        pt = tl.where(ok, pt, 0.0)
        dv += tl.dot(pt.to(do.dtype), do, input_precision=PRECISION)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M) = (dO V^T)^T
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q, input_precision=PRECISION)
    dk = dk * sm_scale
    tl.store(DK + offs_n[:, None] * stride_dkn + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + offs_n[:, None] * stride_dvn + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, L, Delta, DQ, stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
                   stride_vb, stride_vh, stride_vn, stride_dob, stride_doh, stride_don, stride_dqb, stride_dqh, stride_dqn,
                   H, N, M, offset, sm_scale, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr):
    """One query tile: dQ = scale * sum_k dS K over the key tiles it sees."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    DQ += b * stride_dqb + h * stride_dqh
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    row_ok = offs_m < N
    q = tl.load(Q + offs_m[:, None] * stride_qn + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    do = tl.load(DO + offs_m[:, None] * stride_don + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    lse = tl.load(L + bh * N + offs_m, mask=row_ok, other=float("-inf"))
    delta = tl.load(Delta + bh * N + offs_m, mask=row_ok, other=0.0)
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
    qk_scale = sm_scale * 1.4426950408889634
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hi = M
    if CAUSAL:
        hi = tl.minimum(M, (pid_m + 1) * BLOCK_M + offset)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < M
        kt = tl.load(K + cols[None, :] * stride_kn + offs_d[:, None], mask=col_ok[None, :] & d_ok[:, None], other=0.0)
        vt = tl.load(V + cols[None, :] * stride_vn + offs_d[:, None], mask=col_ok[None, :] & d_ok[:, None], other=0.0)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        p = tl.math.exp2(s - lse2[:, None])
        ok = col_ok[None, :] & row_ok[:, None]
        if CAUSAL:
            ok = ok & (cols[None, :] <= offs_m[:, None] + offset)
        p = tl.where(ok, p, 0.0)
        dp = tl.dot(do, vt, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + offs_m[:, None] * stride_dqn + offs_d[None, :], dq.to(DQ.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])


# Candidate tiles for Hopper (H100/H200): the autotuner times each once per (N, M, D, causal, precision) and keeps
# the fastest; configurations that exceed shared memory are skipped by Triton.
_FWD_CONFIGS = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 32, 4, 4), (64, 128, 4, 3),
                (128, 64, 4, 4), (128, 128, 8, 2)]
_BWD_CONFIGS = [(64, 64, 4, 2), (64, 64, 8, 3), (32, 64, 4, 2), (64, 128, 8, 2), (128, 64, 8, 2), (32, 128, 4, 2),
                (64, 32, 4, 3), (128, 128, 8, 2)]


def _configs(kind: str) -> list[triton.Config]:
    table = _FWD_CONFIGS if kind == "fwd" else _BWD_CONFIGS
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st) for bm, bn, w, st in table]


_KEY = ["N", "M", "D", "CAUSAL", "PRECISION"]
_fwd_tuned = triton.autotune(configs=_configs("fwd"), key=_KEY)(_fwd_kernel)
_dkdv_tuned = triton.autotune(configs=_configs("bwd"), key=_KEY, reset_to_zero=[])(_bwd_dkdv_kernel)
_dq_tuned = triton.autotune(configs=_configs("bwd"), key=_KEY)(_bwd_dq_kernel)
_INTERPRET_TILE = 16
# SIFT_FLASH_AUTOTUNE=0: one fixed tile configuration (correctness runs over many shapes skip the tuning cost)
AUTOTUNE = os.environ.get("SIFT_FLASH_AUTOTUNE", "1") != "0"
_FIXED = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}


def _as4d(x: torch.Tensor) -> torch.Tensor:
    """(..., heads, seq, d) -> a (batch, heads, seq, d) view (a copy only where the leading dims cannot be merged or
    the last dim is strided): the kernels read any batch / head / seq strides, so transposed views such as
    (b, s, h, d) memory seen as (b, h, s, d) need no copy."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    if x.dim() < 3:
        return x.reshape(1, 1, *x.shape[-2:])
    return x.reshape(-1, *x.shape[-3:])


def _strides(x4: torch.Tensor) -> tuple[int, int, int]:
    return x4.stride(0), x4.stride(1), x4.stride(2)


def new_attention_output(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised tensor of x's shape (..., heads, seq, d) whose memory is laid out (..., seq, heads, d): the
    layout of the projections around attention, so that `(..., h, s, d) -> (..., s, h * d)` is a view. The kernels'
    outputs (O, dQ, dK, dV) and the custom ops' fake functions both allocate through this (same strides)."""
    if x.dim() < 3:
        return x.new_empty(x.shape, dtype=dtype)
    *lead, h, s, d = x.shape
    return x.new_empty((*lead, s, h, d), dtype=dtype).transpose(-3, -2)


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def triton_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool):
    q4, k4, v4 = _as4d(q), _as4d(k), _as4d(v)
    bsz, h, n, d = q4.shape
    m = k4.shape[2]
    if d > 256:
        raise ValueError(f"head dimension {d} is above 256")
    out = new_attention_output(q)
    o4 = _as4d(out)
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)  # contiguous (..., heads, seq)
    args = (q4, k4, v4, o4, lse, *_strides(q4), *_strides(k4), *_strides(v4), *_strides(o4), h, n, m, m - n,
            LOG2E / math.sqrt(d))
    meta = dict(D=d, BLOCK_D=max(16, triton.next_power_of_2(d)), CAUSAL=causal, PRECISION=_precision(q.dtype))
    bh = bsz * h
    if _interpret():
        _fwd_kernel[(triton.cdiv(n, _INTERPRET_TILE), bh)](*args, **meta, BLOCK_M=_INTERPRET_TILE, BLOCK_N=_INTERPRET_TILE)
    elif not AUTOTUNE:
        _fwd_kernel[(triton.cdiv(n, _FIXED["BLOCK_M"]), bh)](*args, **meta, **_FIXED)
    else:
        _fwd_tuned[lambda c: (triton.cdiv(n, c["BLOCK_M"]), bh)](*args, **meta)
    return out, lse


def triton_backward(q, k, v, out, lse, dout, causal: bool):
    q4, k4, v4, o4, do4 = _as4d(q), _as4d(k), _as4d(v), _as4d(out), _as4d(dout)
    bsz, h, n, d = q4.shape
    m = k4.shape[2]
    bh = bsz * h
    lse2 = lse.reshape(bh, n).contiguous()
    delta = torch.empty_like(lse2)
    block_d = max(16, triton.next_power_of_2(d))
    _bwd_delta_kernel[(triton.cdiv(n, 64), bh)](o4, do4, delta, *_strides(o4), *_strides(do4), h, n, D=d, BLOCK_D=block_d,
                                                BLOCK_M=64)
    dq, dk, dv = new_attention_output(q), new_attention_output(k), new_attention_output(v)
    dq4, dk4, dv4 = _as4d(dq), _as4d(dk), _as4d(dv)
    common = (h, n, m, m - n, 1.0 / math.sqrt(d))
    meta = dict(D=d, BLOCK_D=block_d, CAUSAL=causal, PRECISION=_precision(q.dtype))
    qkv_do = (*_strides(q4), *_strides(k4), *_strides(v4), *_strides(do4))
    kv_args = (q4, k4, v4, do4, lse2, delta, dk4, dv4, *qkv_do, *_strides(dk4), *_strides(dv4), *common)
    q_args = (q4, k4, v4, do4, lse2, delta, dq4, *qkv_do, *_strides(dq4), *common)
    if _interpret():
        t = _INTERPRET_TILE
        _bwd_dkdv_kernel[(triton.cdiv(m, t), bh)](*kv_args, **meta, BLOCK_M=t, BLOCK_N=t)
        _bwd_dq_kernel[(triton.cdiv(n, t), bh)](*q_args, **meta, BLOCK_M=t, BLOCK_N=t)
    elif not AUTOTUNE:
        _bwd_dkdv_kernel[(triton.cdiv(m, _FIXED["BLOCK_N"]), bh)](*kv_args, **meta, **_FIXED)
        _bwd_dq_kernel[(triton.cdiv(n, _FIXED["BLOCK_M"]), bh)](*q_args, **meta, **_FIXED)
    else:
        _dkdv_tuned[lambda c: (triton.cdiv(m, c["BLOCK_N"]), bh)](*kv_args, **meta)
        _dq_tuned[lambda c: (triton.cdiv(n, c["BLOCK_M"]), bh)](*q_args, **meta)
    return dq, dk, dv


class FlashAttentionTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool = False):
        if k.shape[:-2] != q.shape[:-2] or v.shape != k.shape:
            raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: leading dims and k/v shapes must match")
        out, lse = triton_forward(q, k, v, causal)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal = causal
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = triton_backward(q, k, v, out, lse, dout, ctx.causal)
        return dq, dk, dv, None


# -- the same kernels as torch custom ops: torch.compile traces through them (no graph break per layer) and treats
# each as one opaque node with known output shapes, instead of stopping the graph at every attention call

@torch.library.custom_op("sift::flash_attention_fwd", mutates_args=())
def flash_attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if k.shape[:-2] != q.shape[:-2] or v.shape != k.shape:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: leading dims and k/v shapes must match")
    return triton_forward(q, k, v, causal)


@flash_attention_fwd.register_fake
def _(q, k, v, causal):
    # the fakes must have the real outputs' strides: O laid out (..., seq, heads, d), L contiguous
    return new_attention_output(q), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("sift::flash_attention_bwd", mutates_args=())
def flash_attention_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                        dout: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return triton_backward(q, k, v, out, lse, dout, causal)


@flash_attention_bwd.register_fake
def _(q, k, v, out, lse, dout, causal):
    return new_attention_output(q), new_attention_output(k), new_attention_output(v)


def _setup_context(ctx, inputs, output):
    q, k, v, causal = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.causal = causal


def _backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = flash_attention_bwd(q, k, v, out, lse, dout, ctx.causal)
    return dq, dk, dv, None


flash_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """FlashAttention-2 through the custom op (differentiable, traceable by torch.compile)."""
    return flash_attention_fwd(q, k, v, causal)[0]
