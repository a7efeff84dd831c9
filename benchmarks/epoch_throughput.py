"""Images (signals) per second of one full training epoch through the engine's loop.

    python benchmarks/epoch_throughput.py            # CIFAR-shaped resnet32x4→resnet8x4 and the MNIST-1D pair
    python benchmarks/epoch_throughput.py --quick    # smaller epochs: 64 CIFAR-shaped images, 1000 signals (smoke run)
    python benchmarks/epoch_throughput.py --device cuda --precision bf16 --channels-last --cifar-samples 50000

Run time on 2 CPU cores: full ~2 min, --quick ~15 s.

An epoch is :func:`kdlab.engine.loop.train_loop` for one epoch (in-memory loader with its augmentation, step,
per-example sums, one host sync at the end), without evaluation. Data are synthetic with the real shapes (the speed
does not depend on the pixel values). "KD, cached teacher" runs after the cache has been filled for the epoch's
(index, view) pairs (MNIST-1D: the whole table, precomputed, whose one-off cost is printed separately), i.e. the
steady state of a cache shared across seeds and methods.
"""

from __future__ import annotations

import argparse
import time

import torch

from kdlab import models
from kdlab.data.views import CropFlip, Shift1D
from kdlab.engine.loop import LoopSettings, train_loop
from kdlab.engine.precision import resolve
from kdlab.teachers.cache import CachedTeacher
from kdlab.teachers.frozen import FrozenTeacher

try:  # run as a script from the repository root
    from step_time import build_method, machine_line, synthetic_loader
except ImportError:  # pragma: no cover - imported as benchmarks.epoch_throughput
    from benchmarks.step_time import build_method, machine_line, synthetic_loader


def bench(label, t_arch, s_arch, shape, c, augment, n, bs, device, dp, precompute: bool) -> dict:
    """``precompute``: fill every (sample, view) first (cheap teachers); else fill the views epoch 1 draws."""
    loader = synthetic_loader(shape, n, c, augment, bs, device)
    torch.manual_seed(0)
    teacher = FrozenTeacher(dp.model(models.create(t_arch, c).to(device)))
    rows = {}
    t0 = time.perf_counter()
    with dp.autocast():
        cached = CachedTeacher(teacher, loader, dtype="bfloat16" if dp.bf16 else "float16", precompute=precompute,
                               progress=False)
        if not precompute:
            loader.set_epoch(1)
            for b in loader:  # fill exactly the views the timed epoch (epoch 1) draws
                cached.logits_for_batch(dp_batch(b, dp))
    fill_s = time.perf_counter() - t0
    # the first epoch in a process pays one-off costs (allocator, kernel selection): an untimed CE epoch takes them
    for name, m_name, t in (("warm-up", "ce", None), ("CE only", "ce", None), ("KD, live teacher", "kd", teacher),
                            ("KD, cached teacher", "kd", cached)):
        method = build_method(m_name, s_arch, c, t, dp, device)
        s = LoopSettings(epochs=1, lr=0.05, progress=False, device_path=dp)
        res = train_loop(method, loader, None, c, s)
        secs = res.history[0]["epoch_time_s"]
        if name != "warm-up":
            rows[name] = {"s": secs, "ips": n / secs}
    return {"label": label, "n": n, "batch": bs, "rows": rows,
            "fill": f"{'precomputed all' if precompute else 'filled this epoch'}: {fill_s:.1f} s"}


def dp_batch(b, dp):
    return type(b)(x=dp.input(b.x), y=b.y, index=b.index, view=b.view)


def table(results) -> str:
    lines = ["| pair | samples | batch | epoch | s / epoch | samples / s | × CE time |", "|---|---:|---:|---|---:|---:|---:|"]
    for r in results:
        ce = r["rows"]["CE only"]["s"]
        for k, v in r["rows"].items():
            name = f"{k} ({r['fill']})" if "cached" in k else k
            lines.append(f"| {r['label']} | {r['n']} | {r['batch']} | {name} | {v['s']:.2f} | {v['ips']:.0f} | "
                         f"{v['s'] / ce:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 64 CIFAR-shaped samples, 1000 MNIST-1D signals")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--cifar-samples", type=int, default=None, help="epoch size for the CIFAR-shaped pair")
    ap.add_argument("--mnist1d-samples", type=int, default=None, help="epoch size for MNIST-1D (4000 = full)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dp = resolve(device, args.precision, args.channels_last, args.compile)
    n_cifar = args.cifar_samples or (64 if args.quick else 512)
    n_m1d = args.mnist1d_samples or (1000 if args.quick else 4000)
    results = [
        bench("resnet32x4 → resnet8x4 (3×32×32)", "resnet32x4", "resnet8x4", (3, 32, 32), 100, CropFlip(32, 4),
              n_cifar, 64, device, dp, precompute=False),  # 162 views × resnet32x4: too slow to fill on CPU
        bench("mnist1d_cnn → mnist1d_cnn_small (1×40)", "mnist1d_cnn", "mnist1d_cnn_small", (1, 40), 10,
              Shift1D(4), n_m1d, 64, device, dp, precompute=True),
    ]
    print(f"machine: {machine_line(device)}")
    print(f"device path: precision={dp.precision}, channels_last={dp.channels_last}, compile={dp.compile}\n")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
