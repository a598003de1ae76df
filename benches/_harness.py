"""Shared bench plumbing: each measurement runs in a fresh subprocess (so peak RSS is its own),
timed steps after warm-up, and a side-by-side table with ratios."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from typing import Optional


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM, where getrusage's ru_maxrss would
    also count the memory of the parent that forked it."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step, steps: int, tokens_per_step: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - start
    return {"tokens_per_sec": steps * tokens_per_step / dt, "ms_per_step": dt / steps * 1e3, "peak_rss_mb": peak_rss_mb()}


#: Threads for every side: ferrolm's pool (RAYON_NUM_THREADS) and torch's (set_torch_threads).
THREADS = os.environ.get("BENCH_THREADS", "2")


def measure(script: str, *args: str) -> dict | None:
    """Runs `script --worker args...` and parses its JSON; None when torch is missing."""
    env = {**os.environ, "RAYON_NUM_THREADS": THREADS}
    out = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        if "No module named 'torch'" in out.stderr:
            return None
        raise RuntimeError(f"{args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """The run with the median measure, a worker's first value (tokens/s, ms per turn); its
    peak RSS comes with it."""
    measure = next(iter(runs[0]))
    return sorted(runs, key=lambda r: r[measure])[len(runs) // 2]


def measure_turns(script: str, workers: list[list[str]], repeats: int) -> list[dict | None]:
    """Runs the workers in turns, `repeats` rounds, and returns each one's median run (None for
    a peer when torch is missing). Load on a shared machine drifts; taking turns spreads it
    over every side instead of one."""
    runs: list[list[dict]] = [[] for _ in workers]
    for _ in range(repeats):
        for worker, done in zip(workers, runs):
            run = measure(script, *worker)
            if run is not None:
                done.append(run)
    return [median_run(done) if done else None for done in runs]


def measure_pair(script: str, ours: list[str], theirs: list[str], repeats: int) -> tuple[dict, dict | None]:
    """Our worker's and the peer's median runs, measured in turns (`measure_turns`)."""
    return tuple(measure_turns(script, [ours, theirs], repeats))


def header() -> None:
    if importlib.util.find_spec("torch") is None:
        print("torch is not installed: its columns stay empty (pip install torch)")
    print(f"{'benchmark':<40}{'ferrolm':>12}{'torch':>12}{'ratio':>8}")


def row(label: str, ours: float, theirs: float | None, lower_is_better: bool = False) -> None:
    if theirs is None:
        print(f"{label:<40}{ours:>12,.0f}{'—':>12}{'—':>8}")
        return
    ratio = theirs / ours if lower_is_better else ours / theirs
    print(f"{label:<40}{ours:>12,.0f}{theirs:>12,.0f}{ratio:>8.2f}")


def use_matmul_precision(dtype: str) -> None:
    """Sets ferrolm's matmul precision; on a CPU without AVX512-BF16 "bfloat16" raises (its
    warning as an error), so a bf16 measurement fails instead of silently timing float32."""
    import warnings

    import ferrolm as fl

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fl.set_matmul_precision(dtype)


def bf16_row(label: str, script: str, config: list[str], repeats: int, workers=("ferrolm-bf16", "torch-bf16"),
             torch_f32: Optional[float] = None) -> None:
    """Our bf16 worker against PyTorch's (by default `ferrolm-bf16` against `torch-bf16`,
    autocast), or a note when this CPU has no AVX512-BF16. With `torch_f32` (PyTorch's float32
    speed from the same table), against PyTorch's faster setting, said in the label."""
    try:
        ours, theirs = measure_pair(script, [workers[0], *config], [workers[1], *config], repeats)
    except RuntimeError as e:
        if "AVX512-BF16" not in str(e):
            raise
        print(f"{label:<40}  skipped: this CPU has no AVX512-BF16")
        return
    peer = theirs and theirs["tokens_per_sec"]
    if peer and torch_f32 and torch_f32 > peer:
        label, peer = label.replace("bf16 ", "bf16 vs torch f32 ", 1), torch_f32
    row(label, ours["tokens_per_sec"], peer)


def add_repeats_flag(parser) -> None:
    def at_least_one(text: str) -> int:
        if int(text) < 1:
            raise ValueError(text)
        return int(text)

    parser.add_argument("--repeats", type=at_least_one, default=3,
                        help="runs of each side, taken in turns; the table shows each side's median (default 3)")


def set_torch_threads() -> None:
    import torch

    torch.set_num_threads(int(THREADS))
