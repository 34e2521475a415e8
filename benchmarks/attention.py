"""FlashAttention-2 Triton kernels on a CUDA GPU: correctness grid, then TFLOP/s next to PyTorch SDPA.

    python benchmarks/attention.py --check --bench [--out DIR] [--quick]

--check  forward and backward against a float64 reference on the GPU, fp32 and bf16, a grid of shapes
         (ragged lengths, causal and not, head dims 16..128, sequences up to 8192); prints ‖x - ref‖ / ‖ref‖
         for O, dQ, dK, dV and fails above the tolerances (fp32 1e-5; bf16 2e-2).
--bench  bf16, head dim 64 and 128, sequence 512..16384 with batch x seq = 16,384 tokens and 2048 model dim
         (heads = 2048 / head dim), causal and not: forward and forward+backward TFLOP/s (median of
         triton.testing.do_bench) of the Triton kernel, SDPA's flash backend and SDPA's cuDNN backend.
         FLOPs: forward 4·b·h·n²·d (halved when causal), backward 2.5x forward (FlashAttention-2's convention).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.kernels.flash_triton import FlashAttentionTriton  # noqa: E402


def reference(q, k, v, causal):
    """float64 attention with bottom-right causal alignment (the kernels' definition)."""
    n, m = q.shape[-2], k.shape[-2]
    s = (q.double() @ k.double().transpose(-1, -2)) / q.shape[-1] ** 0.5
    if causal:
        mask = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(m - n)
        s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return p @ v.double()


def rel(x, ref):
    # relative L2 error; where the reference is ~0 (e.g. dQ with a single key), relative to 1 instead
    return ((x.double() - ref).norm() / ref.norm().clamp_min(1.0 if ref.norm() < 1e-6 else 0.0)).item()


def check(out_lines: list[str]) -> bool:
    shapes = [  # batch, heads, n, m, d
        (2, 3, 1, 1, 16), (2, 3, 17, 17, 32), (1, 4, 127, 127, 64), (2, 2, 200, 333, 64), (1, 2, 300, 100, 128),
        (2, 4, 1024, 1024, 64), (1, 8, 1000, 1000, 128), (1, 2, 4096, 4096, 64), (1, 1, 8192, 8192, 128),
    ]
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
    ok = True
    out_lines.append(f"{'dtype':<9}{'shape (b,h,n,m,d)':<26}{'causal':<8}{'O':>10}{'dQ':>10}{'dK':>10}{'dV':>10}")
    for dtype in (torch.float32, torch.bfloat16):
        for b, h, n, m, d in shapes:
            for causal in (False, True):
                if n > 2048 and dtype == torch.float32 and causal is False:
                    continue  # the float64 reference of the longest fp32 cases costs more than it tells
                torch.manual_seed(n + m + d)
                q = torch.randn(b, h, n, d, device="cuda", dtype=dtype, requires_grad=True)
                k = torch.randn(b, h, m, d, device="cuda", dtype=dtype, requires_grad=True)
                v = torch.randn(b, h, m, d, device="cuda", dtype=dtype, requires_grad=True)
                do = torch.randn(b, h, n, d, device="cuda", dtype=dtype)
                out = FlashAttentionTriton.apply(q, k, v, causal)
                out.backward(do)
                got = [out.detach(), q.grad, k.grad, v.grad]
                qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
                ref = reference(qd, kd, vd, causal)
                ref.backward(do.double())
                errs = [rel(g, r) for g, r in zip(got, [ref.detach(), qd.grad, kd.grad, vd.grad])]
                bad = any(not (e <= tol[dtype]) for e in errs) or any(not torch.isfinite(g).all() for g in got)
                ok &= not bad
                out_lines.append(f"{str(dtype).split('.')[-1]:<9}{str((b, h, n, m, d)):<26}{str(causal):<8}"
                                 + "".join(f"{e:>10.2e}" for e in errs) + ("  FAIL" if bad else ""))
    out_lines.append(f"tolerances (relative L2): fp32 {tol[torch.float32]:.0e}, bf16 {tol[torch.bfloat16]:.0e}: "
                     + ("all passed" if ok else "FAILURES"))
    return ok


def bench(quick: bool) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from triton.testing import do_bench

    rows = []
    seqs = [1024, 8192] if quick else [512, 1024, 2048, 4096, 8192, 16384]
    for d in (64, 128):
        h = 2048 // d
        for causal in (False, True):
            for n in seqs:
                b = max(1, 16384 // n)
                torch.manual_seed(0)
                q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
                do = torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16)
                fwd_flops = 4 * b * h * n * n * d * (0.5 if causal else 1.0)
                impls = {
                    "triton": lambda: FlashAttentionTriton.apply(q, k, v, causal),
                    "sdpa_flash": lambda: _sdpa(q, k, v, causal, SDPBackend.FLASH_ATTENTION, sdpa_kernel),
                    "sdpa_cudnn": lambda: _sdpa(q, k, v, causal, SDPBackend.CUDNN_ATTENTION, sdpa_kernel),
                }
                row = {"d": d, "causal": causal, "seq": n, "batch": b, "heads": h}
                with torch.no_grad():  # the tuned kernel must still agree with SDPA at this shape
                    row["rel_err_vs_flash"] = rel(impls["triton"](), impls["sdpa_flash"]().double())
                for name, fn in impls.items():
                    try:
                        with torch.no_grad():
                            t_f = do_bench(fn, warmup=25, rep=100, return_mode="median")
                        t_fb = do_bench(lambda: fn().backward(do), warmup=25, rep=100, grad_to_none=[q, k, v],
                                        return_mode="median")
                        row[f"{name}_fwd"] = fwd_flops / t_f / 1e9  # TFLOP/s (ms -> s, 1e12)
                        row[f"{name}_fwdbwd"] = 3.5 * fwd_flops / t_fb / 1e9
                    except Exception as exc:  # a backend that does not support the shape
                        row[f"{name}_fwd"] = row[f"{name}_fwdbwd"] = None
                        row[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
                rows.append(row)
                print(_fmt(row), flush=True)
    return rows


def _sdpa(q, k, v, causal, backend, sdpa_kernel):
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _fmt(r: dict) -> str:
    def f(x):
        return f"{x:7.0f}" if x else "      -"

    ratio_f = r["triton_fwd"] / r["sdpa_flash_fwd"] if r.get("triton_fwd") and r.get("sdpa_flash_fwd") else None
    ratio_b = r["triton_fwdbwd"] / r["sdpa_flash_fwdbwd"] if r.get("triton_fwdbwd") and r.get("sdpa_flash_fwdbwd") else None
    return (f"d={r['d']:<4}{'causal' if r['causal'] else 'full':<7} n={r['seq']:<6} | fwd: triton {f(r.get('triton_fwd'))} "
            f"flash {f(r.get('sdpa_flash_fwd'))} cudnn {f(r.get('sdpa_cudnn_fwd'))} | fwd+bwd: triton {f(r.get('triton_fwdbwd'))} "
            f"flash {f(r.get('sdpa_flash_fwdbwd'))} cudnn {f(r.get('sdpa_cudnn_fwdbwd'))} | x flash "
            f"{ratio_f or 0:.2f} / {ratio_b or 0:.2f} | err {r.get('rel_err_vs_flash', float('nan')):.1e}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true")
    p.add_argument("--bench", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark runs on a GPU")
        return 1
    import triton

    out = Path(args.out)
    head = (f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
            f"python {platform.python_version()}")
    print(head, flush=True)
    result: dict = {"device": head}
    ok = True
    if args.check:
        import model.kernels.flash_triton as ft

        ft.AUTOTUNE = False  # many shapes: one fixed tile configuration (the benchmark checks the tuned ones)
        t = time.time()
        lines: list[str] = []
        ok = check(lines)
        print("\n".join(lines), flush=True)
        print(f"check took {time.time() - t:.0f}s", flush=True)
        result["check"] = lines
    if args.bench:
        t = time.time()
        import model.kernels.flash_triton as ft

        ft.AUTOTUNE = True
        result["bench"] = bench(args.quick)
        print(f"bench took {time.time() - t:.0f}s", flush=True)
    (out / "attention.json").write_text(json.dumps(result, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
