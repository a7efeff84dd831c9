"""Training-step time: CE only vs KD with the live teacher vs KD with the exact teacher-logit cache.

    python benchmarks/step_time.py                 # resnet32x4→resnet8x4 (CIFAR-shaped) and the MNIST-1D pair
    python benchmarks/step_time.py --quick         # a smoke run: 2 batches of 16, 2 rounds, CIFAR cache warmed lazily
    python benchmarks/step_time.py --device cuda --precision bf16 --channels-last   # the GPU device path

Run time on 2 CPU cores: full ~15–40 min (not re-measured), --quick ~11 s.

A step is what the engine does per batch: ``method(batch, epoch)``, ``method.backward``, ``optimizer.step()``, on
the same student. The benchmark set is 4 batches (256 samples); a table of at most 50,000 (sample, view) pairs is
precomputed before timing (both default pairs: 256×162 CIFAR views, 256×9 MNIST-1D shifts; the CIFAR fill, 41,472
resnet32x4 forwards, is most of the full run), larger ones are warmed lazily on the timed views; either way the timed
steps are the steady state of a filled cache (every step a hit). ``--quick`` times 2 batches of 16 and precomputes
only tables of at most 1,000 pairs (MNIST-1D's 32×9), so the CIFAR cache takes the lazy path: both paths run, each on
a few batches. Methods are timed in interleaved rounds and the median step of each is reported, so a slow period of
a shared machine hits all three alike; the ratio column divides by the CE step of the same round set (one run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdlab import methods, models
from kdlab.losses import validation
from kdlab.data import BatchLoader
from kdlab.data.views import CropFlip, Shift1D
from kdlab.engine.environment import describe_machine
from kdlab.engine.precision import resolve
from kdlab.teachers.cache import CachedTeacher
from kdlab.teachers.frozen import FrozenTeacher

# (label, teacher, student, input shape, classes, augmentation, batch size)
PAIRS = {
    "cifar": ("resnet32x4 → resnet8x4 (3×32×32, 100 classes)", "resnet32x4", "resnet8x4", (3, 32, 32), 100,
              lambda: CropFlip(32, padding=4), 64),
    "mnist1d": ("mnist1d_cnn → mnist1d_cnn_small (1×40, 10 classes)", "mnist1d_cnn", "mnist1d_cnn_small", (1, 40),
                10, lambda: Shift1D(4), 64),
}


def machine_line(device: torch.device) -> str:
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU used"
    return describe_machine() + gpu


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_loader(shape, n, num_classes, augment, batch_size, device) -> BatchLoader:
    """A loader over ``n`` random samples: uint8 pixels for images (as the CIFAR loader keeps them), floats else."""
    g = torch.Generator().manual_seed(0)
    if len(shape) == 3:
        x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
        mean, std = [0.507, 0.487, 0.441], [0.267, 0.256, 0.276]
    else:
        x = torch.randn(n, *shape, generator=g)
        mean = std = None
    y = torch.randint(0, num_classes, (n,), generator=g)
    return BatchLoader(x, y, batch_size, augment=augment, mean=mean, std=std, seed=0, device=device)


def build_method(method_name: str, s_arch: str, num_classes: int, teacher, dp, device):
    """The benchmarked student (seed 0, on the device path) wrapped in ``ce`` or ``kd`` (T = 4)."""
    torch.manual_seed(0)
    student = dp.model(models.create(s_arch, num_classes).to(device))
    if dp.compile:
        student.compile()
    return methods.create(method_name, student, teacher, num_classes,
                         {"temperature": 4.0} if method_name == "kd" else {})


def _batches(shape, num_classes, augment, batch_size, num_batches, device):
    loader = synthetic_loader(shape, batch_size * num_batches, num_classes, augment, batch_size, device)
    loader.set_epoch(1)
    return loader, list(loader)


def bench_pair(key: str, rounds: int, steps: int, device: torch.device, precision: str, channels_last: bool,
               compile: bool, batch_size: int | None = None, num_batches: int = 4,
               precompute_limit: int = 50_000) -> dict:
    label, t_arch, s_arch, shape, c, make_aug, bs = PAIRS[key]
    bs = batch_size or bs
    dp = resolve(device, precision, channels_last, compile)
    loader, batches = _batches(shape, c, make_aug(), bs, num_batches, device)
    batches = [type(b)(x=dp.input(b.x), y=b.y, index=b.index, view=b.view) for b in batches]
    torch.manual_seed(0)
    teacher = FrozenTeacher(dp.model(models.create(t_arch, c).to(device)))
    with dp.autocast():
        # a table within the limit is precomputed, as the demo does; a larger one is warmed lazily on exactly the
        # views the timed steps use (the full run precomputes both default pairs; --quick leaves CIFAR's lazy)
        precompute = loader.num_samples * loader.augment.num_views <= precompute_limit
        cached = CachedTeacher(teacher, loader, dtype="float16" if not dp.bf16 else "bfloat16",
                               precompute=precompute, progress=False)
        for b in batches:
            cached.logits_for_batch(b)
    runs = {}
    for name, method_name, t in (("CE only", "ce", None), ("KD, live teacher", "kd", teacher),
                                 ("KD, cached teacher", "kd", cached)):
        m = build_method(method_name, s_arch, c, t, dp, device)
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
        runs[name] = (m, opt)

    def step(m, opt, batch):
        with dp.autocast(), validation(False):  # as in the engine's step
            out = m(batch, 1)
        opt.zero_grad(set_to_none=True)
        m.backward(out)
        opt.step()

    times: dict[str, list[float]] = {k: [] for k in runs}
    for name, (m, opt) in runs.items():  # warm-up (allocator, kernels, compile)
        for b in batches:
            step(m, opt, b)
    for _ in range(rounds):
        for name, (m, opt) in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            for i in range(steps):
                step(m, opt, batches[i % len(batches)])
            _sync(device)
            times[name].append((time.perf_counter() - t0) / steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"label": label, "batch": bs, "median_s": med, "ratio": {k: v / med["CE only"] for k, v in med.items()},
            "cache": "precomputed" if precompute else "lazy, warm"}


def table(results: list[dict]) -> str:
    lines = ["| pair | batch | step | ms / step | × CE step |", "|---|---:|---|---:|---:|"]
    for r in results:
        for k, s in r["median_s"].items():
            name = f"{k} ({r['cache']})" if "cached" in k else k
            lines.append(f"| {r['label']} | {r['batch']} | {name} | {1000 * s:.2f} | {r['ratio'][k]:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 batches of 16, 2 rounds, only tables of <= 1,000 pairs precomputed")
    ap.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=["cifar", "mnist1d"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    rounds = args.rounds or (2 if args.quick else 5)
    results = []
    for key in args.pairs:
        steps = (1 if args.quick else 4) if key == "cifar" else (10 if args.quick else 50)
        size = {"batch_size": 16, "num_batches": 2, "precompute_limit": 1_000} if args.quick else {}
        results.append(bench_pair(key, rounds, steps, device, args.precision, args.channels_last, args.compile,
                                  **size))
    print(f"machine: {machine_line(device)}")
    print(f"device path: precision={args.precision}, channels_last={args.channels_last}, compile={args.compile}; "
          f"median of {rounds} interleaved rounds\n")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
