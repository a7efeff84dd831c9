"""Whole-process time of a short `kdlab train` run and the teacher's share of it: the first run of a teacher (its
test-set logits computed once and stored) vs the next seed (stored logits reused: no teacher pass over the test set),
optionally vs an older checkout ("before": e.g. one that ran the teacher over the test set twice per run).

    python benchmarks/teacher_passes.py                  # CIFAR-format archive, 5,000/500 images, resnet32x4 → resnet8x4
    python benchmarks/teacher_passes.py --quick          # 256/256 images, resnet8 → resnet8, 1 round (smoke run)
    python benchmarks/teacher_passes.py --baseline-src OLD/src   # add the "before" column (an older kdlab checkout)

Run time on 2 CPU cores: full ~14 min (1 of 3 rounds measured), --quick ~15 s.

Each setting is a fresh ``python -m kdlab train`` process (1 epoch, live teacher on the train views: the point is
the test-set passes); settings alternate in rounds and the median wall time of each is reported, with ratios to
the first setting of the same run. The teacher's share is the time of one teacher pass over the test set (measured
in this process on the same data) times the number of passes each setting makes. The archive is generated (random
pixels, in the real archive's format).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kdlab import builder, models
from kdlab.engine.environment import describe_machine
from kdlab.engine.loop import collect_logits
from kdlab.models import save_model
from kdlab.teachers import FrozenTeacher


def cifar_folder(root: Path, n_train: int, n_test: int) -> None:
    """A CIFAR-100 python-format folder of random images (the loader reads extracted folders like archives); bytes
    keys and names, as in the real archive's Python 2 pickles."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        blob = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": fine.tolist(),
                b"coarse_labels": (fine // 5).tolist(), b"filenames": [f"{i}.png".encode() for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(blob, protocol=3))
    meta = {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=3))


def _run(src: str, data: Path, args: list[str], out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": src, "KDLAB_DATA": str(data), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kdlab", "train", *args, f"out_dir={out}"], env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"kdlab train failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 256/256 images, resnet8 → resnet8, 1 round")
    p.add_argument("--rounds", type=int, default=None, help="rounds of every setting (default 3, 1 with --quick)")
    p.add_argument("--baseline-src", default=None, help="src/ of an older kdlab checkout, timed as 'before'")
    args = p.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    here = str(Path(__file__).resolve().parents[1] / "src")
    work = Path(tempfile.mkdtemp(prefix="kdlab_teacher_passes_"))
    try:
        recipe, nc = "cifar100/resnet32x4-resnet8x4/kd", 100
        # --quick: the same path on a small archive with cheap models (resnet32x4 costs ~20-60 ms per image on a CPU)
        arch, student, n_train, n_test = ("resnet8", "resnet8", 256, 256) if args.quick else (
            "resnet32x4", "resnet8x4", 5000, 500)
        cifar_folder(work / "cifar", n_train, n_test)
        data_args = [f"data.root={work / 'cifar'}", f"teacher.arch={arch}", f"student.arch={student}"]
        torch.manual_seed(0)
        teacher = work / "teacher.safetensors"
        save_model(teacher, models.create(arch, nc), arch=arch, num_classes=nc)
        train_args = [recipe, *data_args, f"teacher.checkpoint={teacher}", "optim.epochs=1", "run.progress=false",
                      "run.tensorboard=false", "teacher.cache.enabled=false"]

        # one teacher pass over the test set, timed in this process on the same data; the parsed archive is cached
        # beside it (shared by every run), base/ is the bare data directory every setting starts from
        base = work / "base"
        base.mkdir()
        os.environ["KDLAB_DATA"] = str(base)
        cfg = builder.load_config(recipe, [*data_args, f"teacher.checkpoint={teacher}"])
        splits = builder.load_data(cfg)
        _, test = builder.make_loaders(splits, 64, cfg.eval.batch_size, 0, "cpu", augment=False)
        frozen = FrozenTeacher(builder.load_teacher_module(cfg.teacher, splits.num_classes))
        start = time.perf_counter()
        collect_logits(frozen.logits, test)
        test_pass = time.perf_counter() - start

        settings = {"first run (1 test pass)": (here, 1), "next seed (0 passes)": (here, 0)}
        if args.baseline_src:
            settings = {"before (baseline checkout)": (args.baseline_src, 2), **settings}
        times: dict[str, list[float]] = {name: [] for name in settings}
        for r in range(rounds):
            for name, (src, _) in settings.items():
                data = work / f"data_{r}_{name.split()[0]}"
                # the next seed starts from the store the first run left behind, the others from the bare data
                shutil.copytree(work / f"data_{r}_first" if name.startswith("next seed") else base, data)
                times[name].append(_run(src, data, [*train_args, f"seed={r + 1}"], work / f"out_{r}_{len(name)}"))
        first = statistics.median(next(iter(times.values())))
        print(f"machine: {describe_machine()}")
        print(f"setup: CIFAR-format {n_train}/{n_test}, {arch} → {student}, 1 epoch, "
              f"live teacher on the train views; one teacher pass over the test set: {test_pass:.1f} s; "
              f"{rounds} round(s)\n")
        print("| setting | process wall time (median) | ratio | teacher test-set passes | their share |")
        print("|---|---:|---:|---:|---:|")
        for name, (_, passes) in settings.items():
            t = statistics.median(times[name])
            print(f"| {name} | {t:.1f} s | {t / first:.2f} | {passes}"
                  f"{' (assumed)' if name.startswith('before') else ''} | {100 * passes * test_pass / t:.0f}% |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
