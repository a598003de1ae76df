"""Core kernels side by side with numpy (and PyTorch when installed), in one run.

    python benches/bench_core.py [--quick]

Prints GFLOP/s for matrix products (square and transformer shapes, plain and with a
transposed operand), bf16 products (ferrolm's bfloat16 matmul precision against PyTorch's bf16
autocast, both from float32 tensors) and milliseconds for fused attention forward+backward,
with ratios (> 1 means ferrolm is faster).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import ferrolm as fl
import ferrolm.functional as F
from _harness import use_matmul_precision

try:
    import torch
except ImportError:  # optional peer
    torch = None


def best_time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def settle() -> None:
    """Lets other libraries' worker threads (OpenBLAS, OpenMP) stop spinning before timing."""
    time.sleep(1.0)


def matmul_table(quick: bool) -> None:
    shapes = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
              (768, 128, 384), (768, 384, 1536), (4096, 384, 1152), (4096, 1536, 384)]
    if quick:
        shapes = [s for s in shapes if s[0] * s[1] * s[2] <= 1024**3]
    rng = np.random.default_rng(0)
    cases = []
    for m, k, n in shapes:
        for transposed in (False, True):
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((n, k) if transposed else (k, n), dtype=np.float32)
            cases.append((m, k, n, transposed, a, b))

    def gflops(run) -> list[float]:
        """GFLOP/s of `run(a, b, transposed)` on every case; one library at a time."""
        settle()
        out = []
        for m, k, n, transposed, a, b in cases:
            reps = 3 if m * n * k >= 1024**3 else 20
            out.append(2.0 * m * n * k / best_time(run(a, b, transposed), reps) / 1e9)
        return out

    def ferrolm_run(a, b, transposed):
        ta, tb = fl.tensor(a), fl.tensor(b)
        return lambda: F.linear(ta, tb) if transposed else ta @ tb

    with fl.no_grad():
        ours = gflops(ferrolm_run)
    theirs = gflops(lambda a, b, t: (lambda: a @ b.T) if t else (lambda: a @ b))
    torch_numbers = None
    if torch:
        torch_numbers = gflops(lambda a, b, t: (lambda pa, pb: (lambda: pa @ pb.T) if t else (lambda: pa @ pb))(torch.from_numpy(a), torch.from_numpy(b)))
    print(f"threads: ferrolm {fl.num_threads()}" + (f", torch {torch.get_num_threads()}" if torch else ""))
    head = f"{'matmul (M×K)·(K×N)':<28}{'ferrolm':>10}{'numpy':>10}{'ratio':>8}"
    print(head + (f"{'torch':>10}{'ratio':>8}" if torch else ""))
    for i, (m, k, n, transposed, _, _) in enumerate(cases):
        label = f"({m}×{k})·({k}×{n})" + ("ᵀ" if transposed else "")
        row = f"{label:<28}{ours[i]:>10.1f}{theirs[i]:>10.1f}{ours[i] / theirs[i]:>8.2f}"
        if torch_numbers:
            row += f"{torch_numbers[i]:>10.1f}{ours[i] / torch_numbers[i]:>8.2f}"
        print(row)


def bf16_table() -> None:
    """x·Wᵀ with operands rounded to bfloat16 and float32 sums, from float32 inputs."""
    try:
        use_matmul_precision("bfloat16")
    except UserWarning:
        print("\nbf16 products: skipped (this CPU has no AVX512-BF16)")
        return
    rng = np.random.default_rng(2)
    print(f"\n{'bf16 x·Wᵀ (M×K)·(K×N)':<28}{'ferrolm':>10}" + (f"{'torch':>10}{'ratio':>8}" if torch else ""))
    try:
        for m, k, n in [(1024, 1024, 1024), (768, 384, 1536), (4096, 384, 1152), (4096, 1536, 384)]:
            x, w = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((n, k), dtype=np.float32)
            tx, tw = fl.tensor(x), fl.tensor(w)
            settle()
            with fl.no_grad():
                ours = 2.0 * m * n * k / best_time(lambda: F.linear(tx, tw), 10) / 1e9
            row = f"{f'({m}×{k})·({k}×{n})':<28}{ours:>10.1f}"
            if torch:
                px, pw = torch.from_numpy(x), torch.from_numpy(w)

                def theirs():
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        torch.nn.functional.linear(px, pw)

                settle()
                t = 2.0 * m * n * k / best_time(theirs, 10) / 1e9
                row += f"{t:>10.1f}{ours / t:>8.2f}"
            print(row)
    finally:
        fl.set_matmul_precision("float32")


def numpy_attention_fwd_bwd(q, k, v, g):
    """Reference causal attention forward + backward in numpy (what a user would write)."""
    d = q.shape[-1]
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    t = q.shape[2]
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = p @ v
    dv = p.transpose(0, 1, 3, 2) @ g
    dp = g @ v.transpose(0, 1, 3, 2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / np.sqrt(d)
    return o, ds @ k, ds.transpose(0, 1, 3, 2) @ q, dv


def attention_table(quick: bool) -> None:
    configs = [(12, 4, 64, 32), (16, 6, 256, 64)]
    if not quick:
        configs.append((8, 12, 512, 64))
    rng = np.random.default_rng(1)
    print(f"\n{'attention fwd+bwd (B,H,T,D)':<28}{'ferrolm ms':>11}{'numpy ms':>10}{'ratio':>8}" + (f"{'torch ms':>10}{'ratio':>8}" if torch else ""))
    for b, h, t, d in configs:
        q, k, v, g = (rng.standard_normal((b, h, t, d), dtype=np.float32) for _ in range(4))

        def ours():
            tq, tk, tv = (fl.tensor(x, requires_grad=True) for x in (q, k, v))
            F.attention(tq, tk, tv, causal=True).backward(g)

        settle()
        ms = best_time(ours, 5) * 1e3
        settle()
        ms_np = best_time(lambda: numpy_attention_fwd_bwd(q, k, v, g), 5) * 1e3
        row = f"{str((b, h, t, d)):<28}{ms:>11.2f}{ms_np:>10.2f}{ms_np / ms:>8.2f}"
        if torch:
            def theirs():
                tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
                torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(torch.from_numpy(g))
            settle()
            ms_t = best_time(theirs, 5) * 1e3
            row += f"{ms_t:>10.2f}{ms_t / ms:>8.2f}"
        print(row)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the largest shapes")
    args = parser.parse_args()
    matmul_table(args.quick)
    bf16_table()
    attention_table(args.quick)
