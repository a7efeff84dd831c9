"""Forward+backward time of every kdlab.losses function, printed as a Markdown table.

    python benchmarks/losses.py            # (N=256, C=100) and (N=1024, C=1000), median of several repeats
    python benchmarks/losses.py --quick    # (N=256, C=100) and (N=256, C=1000), fewer repeats (a smoke run)

Run time on 2 CPU cores: full ~80 s, --quick ~8 s.

Uses torch's default thread count (set OMP_NUM_THREADS / torch.set_num_threads outside to change it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import kdlab.losses as L
from kdlab.engine.environment import describe_machine

SHAPES = ((256, 100), (1024, 1000))
QUICK_SHAPES = ((256, 100), (256, 1000))  # the O(N·C²) soft ranks at N = 1024, C = 1000 take seconds per call


def _cases(v: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    # masks and labels are built once outside the timed region, as a method would build them from the teacher
    topk = L.strong_set_topk(v, 5)
    return {
        "kd_loss": lambda z: L.kd_loss(z, v),
        "dkd_loss": lambda z: L.dkd_loss(z, v, y),
        "cakd_loss (topk 5)": lambda z: L.cakd_loss(z, v, topk),
        "ttm_loss": lambda z: L.ttm_loss(z, v),
        "wttm_loss": lambda z: L.wttm_loss(z, v),
        "dist_loss": lambda z: L.dist_loss(z, v),
        "binary_kl_loss": lambda z: L.binary_kl_loss(z, v),
        "binary_kl_norm_loss": lambda z: L.binary_kl_norm_loss(z, v),
        "r2kd_value_loss": lambda z: L.r2kd_value_loss(z, v),
        "spearman_loss (hard, fwd only)": lambda z: L.spearman_loss(z, v),
        "spearman_loss (soft)": lambda z: L.spearman_loss(z, v, soft=True),
        "cmkd_loss": lambda z: L.cmkd_loss(z, v),
    }


def _time(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, warmup: int, repeats: int) -> float:
    def step() -> None:
        z.grad = None
        out = fn(z)
        if out.requires_grad:
            out.backward()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="N=256 only, 1 warm-up and 3 repeats per case (default N=256 and 1024, 2 and 10)")
    args = parser.parse_args(argv)
    warmup, repeats = (1, 3) if args.quick else (2, 10)

    print(f"machine: {describe_machine()}; float32; "
          f"median of {repeats} after {warmup} warm-up\n")
    print("| loss | shape (N, C) | ms fwd+bwd |")
    print("|---|---|---:|")
    for n, c in QUICK_SHAPES if args.quick else SHAPES:
        g = torch.Generator().manual_seed(0)
        z = (2 * torch.randn(n, c, generator=g)).requires_grad_(True)
        v = 2 * torch.randn(n, c, generator=g)
        y = torch.randint(0, c, (n,), generator=g)
        for name, fn in _cases(v, y).items():
            # the O(N·C²) soft ranks are slow at C = 1000: fewer repeats keep the run short
            reps = max(1, repeats // 3) if ("soft" in name or "cmkd" in name) and c >= 1000 else repeats
            ms = _time(fn, z, warmup=1 if reps < repeats else warmup, repeats=reps)
            print(f"| {name} | ({n}, {c}) | {ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
