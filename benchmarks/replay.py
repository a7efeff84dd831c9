"""KD at the cost of CE: the training step with replayed crops and stored teacher outputs, against CE and against KD
with the live teacher — ResNet-34 → ResNet-18, 1000 classes, on a generated image folder.

    python benchmarks/replay.py            # 224 px, batch 16, 48 images, 5 interleaved rounds
    python benchmarks/replay.py --quick    # 64 px, batch 8, 16 images, 2 rounds: a smoke run

Run time on 2 CPU cores: full ~5 min, --quick ~12 s.

1. A folder of ImageNet-sized JPEGs (``decode.py``'s generator) is checked and streamed as ``data.name=imagefolder``.
2. ``kdlab.teachers.store_build.build_store`` builds a one-epoch store in each precision (float32, float16, top-10)
   for the same crop schedule (seed 0) — the build time per view is printed.
3. The replaying loader (``kdlab.data.replay``) yields each store's batches: the same crops (same schedule), with
   that store's rows attached. Batches are decoded before timing: decoding is the same work in every row.
4. A step is what the engine does per batch (``benchmarks/step_time.py``): ``method(batch, epoch)``,
   ``method.backward``, ``optimizer.step()``, for CE (no teacher), KD with the live teacher (``FrozenTeacher``) and
   KD with ``StoredTeacher`` on each store, KD at T = 1 (the ImageNet recipe, which a top-k store may serve). Rounds
   are interleaved (each round starting one variant later) and the median step is reported; the ratio column divides
   by the CE step of the same run.
   "teacher ms" is the time inside ``teacher.logits_for_batch`` (the live forward, or the stored rows turned into
   logits), timed around the call (CPU: synchronous), its share of the step the last column.
5. The rows' read from the memory-mapped store (in the loader's workers during training) is timed separately.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from decode import make_folder
from kdlab import methods, models
from kdlab.data import load_image_folder
from kdlab.data.replay import replay_loader
from kdlab.engine.environment import describe_machine
from kdlab.losses import validation
from kdlab.teachers import FrozenTeacher
from kdlab.teachers.store_build import build_store
from kdlab.teachers.stored import StoredTeacher

PRECISIONS = (("float32", None), ("float16", None), ("topk", 10))


class Timed:
    """A teacher whose ``logits_for_batch`` time is added up (``seconds``)."""

    def __init__(self, teacher):
        self.teacher, self.seconds = teacher, 0.0

    def logits_for_batch(self, batch):
        t0 = time.perf_counter()
        out = self.teacher.logits_for_batch(batch)
        self.seconds += time.perf_counter() - t0
        return out

    def __getattr__(self, name):
        return getattr(self.teacher, name)

    def to(self, device):
        self.teacher.to(device)
        return self


def folder(root: Path, n: int) -> Path:
    for c in range(2):
        (root / "train" / f"c{c}").mkdir(parents=True)
        make_folder(root / "train" / f"c{c}", n // 2, seed=c)
        (root / "val" / f"c{c}").mkdir(parents=True)
        make_folder(root / "val" / f"c{c}", 1, seed=10 + c)
    return root


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 px, batch 8, 16 images, 2 rounds (smoke run)")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    size, batch, n, rounds = (64, 8, 16, 2) if args.quick else (224, 16, 48, 5)
    rounds = args.rounds or rounds
    tmp_dir = tempfile.TemporaryDirectory(prefix="kdlab-replay-")  # removed when main returns (or at exit)
    tmp = Path(tmp_dir.name)
    splits = load_image_folder(folder(tmp / "images", n), image_size=size, workers=0, progress=False)
    torch.manual_seed(0)
    teacher = FrozenTeacher(models.create("resnet34", 1000))

    stores, build_s = {}, {}
    for precision, k in PRECISIONS:
        t0 = time.perf_counter()
        stores[precision] = build_store(teacher, splits, tmp / f"store-{precision}", precision=precision, k=k, seed=0,
                                        epochs=1, chunk_size=batch, num_classes=1000, progress=False)
        build_s[precision] = (time.perf_counter() - t0) / n
    batches = {}
    for precision, store in stores.items():
        loader = replay_loader(splits.loader("train", batch, augment=True, shuffle=True, seed=0), store.schedule, store)
        loader.set_epoch(1)
        batches[precision] = list(loader)
    read_ms = {}
    for precision, store in stores.items():
        times = []
        for b in batches[precision]:
            t0 = time.perf_counter()
            store.read(1, b.index.numpy())
            times.append(time.perf_counter() - t0)
        read_ms[precision] = 1e3 * statistics.median(times)

    variants = {"CE": ("ce", None, "float32"), "KD, live teacher": ("kd", teacher, "float32")}
    for precision, store in stores.items():
        label = "top-10" if precision == "topk" else precision
        variants[f"KD, stored outputs ({label})"] = ("kd", StoredTeacher(teacher, store), precision)
    runs = {}
    for name, (method, t, data) in variants.items():
        torch.manual_seed(0)
        timed = Timed(t) if t is not None else None
        m = methods.create(method, models.create("resnet18", 1000), timed, 1000,
                           {"temperature": 1.0} if method == "kd" else {})
        runs[name] = (m, torch.optim.SGD(m.student.parameters(), lr=0.01, momentum=0.9), timed, batches[data])

    def step(m, opt, b):
        with validation(False):  # as in the engine's step
            out = m(b, 1)
        opt.zero_grad(set_to_none=True)
        m.backward(out)
        opt.step()

    for m, opt, timed, bs in runs.values():  # warm-up
        step(m, opt, bs[0])
    times = {k: [] for k in runs}
    teacher_s = {k: [] for k in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # each round starts one variant later
            m, opt, timed, bs = runs[name]
            if timed is not None:
                timed.seconds = 0.0
            t0 = time.perf_counter()
            for b in bs:
                step(m, opt, b)
            times[name].append((time.perf_counter() - t0) / len(bs))
            teacher_s[name].append(timed.seconds / len(bs) if timed is not None else 0.0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {describe_machine()}")
    print(f"resnet34 -> resnet18, 1000 classes, {size} px, batch {batch}, {n} images ({len(batches['float32'])} "
          f"batches per round), median of {rounds} interleaved rounds\n")
    print("| step | ms / step | × CE step | teacher ms / step | teacher share of the step |")
    print("|---|---:|---:|---:|---:|")
    for name in runs:
        tm = 1e3 * statistics.median(teacher_s[name])
        print(f"| {name} | {1e3 * med[name]:.1f} | {med[name] / med['CE']:.3f} | {tm:.2f} | "
              f"{tm / (1e3 * med[name]):.1%} |")
    print("\n| store | bytes / view (1000 classes) | build ms / view (this CPU, incl. decoding) | "
          "read ms / batch (memory map) |")
    print("|---|---:|---:|---:|")
    for precision, store in stores.items():
        print(f"| {precision if precision != 'topk' else 'top-10'} | {store.bytes_per_view} | "
              f"{1e3 * build_s[precision]:.1f} | {read_ms[precision]:.3f} |")


if __name__ == "__main__":
    main()
