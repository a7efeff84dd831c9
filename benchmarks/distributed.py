"""1 vs 2 processes: `kdlab train` alone and under `torchrun --nproc_per_node 2` (DDP, gloo on CPU).

    python benchmarks/distributed.py            # MNIST-1D (4000 train signals), KD, mnist1d_cnn → mnist1d_cnn_small
    python benchmarks/distributed.py --quick    # 1000 signals, 2 epochs (smoke run)

Run time on 2 CPU cores: full ~45 s, --quick ~15 s.

Both runs use the same config and global batch (``optim.batch_size`` is global; each of the 2 ranks takes half), one
thread per process, and a randomly initialised teacher checkpoint (speed does not depend on the weights). The epoch
time is the median over epochs after the first (which pays for start-up and the lazy teacher cache's first views).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kdlab import models
from kdlab.models import save_model

try:
    from step_time import machine_line
except ImportError:  # pragma: no cover
    from benchmarks.step_time import machine_line


def run(cfg: Path, out: Path, nproc: int) -> dict:
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [sys.executable, *launcher, "-m", "kdlab", "train", str(cfg), f"out_dir={out}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epoch_s = statistics.median(r["epoch_time_s"] for r in rows[1:]) if len(rows) > 1 else rows[0]["epoch_time_s"]
    return {"wall": wall, "epoch_s": epoch_s, "final": json.loads((out / "final.json").read_text())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1000 signals, 2 epochs")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=128, help="global batch")
    args = ap.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 4)
    n = 1000 if args.quick else 4000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        teacher = tmp / "teacher.safetensors"
        save_model(teacher, models.create("mnist1d_cnn", 10), arch="mnist1d_cnn", num_classes=10)
        cfg = tmp / "run.yaml"
        cfg.write_text(f"""
data: {{name: mnist1d, train_subset: {n}, test_subset: 500}}
teacher: {{checkpoint: {teacher}}}
student: {{arch: mnist1d_cnn_small}}
method: {{name: kd, args: {{temperature: 4.0}}}}
optim: {{epochs: {epochs}, batch_size: {args.batch_size}, lr: 0.05}}
eval: {{every: {epochs}}}
run: {{progress: false, threads: 1, tensorboard: false}}
""")
        results = {p: run(cfg, tmp / f"p{p}", p) for p in (1, 2)}
    base = results[1]["epoch_s"]
    print(f"machine: {machine_line(torch.device('cpu'))}")
    print(f"MNIST-1D KD, mnist1d_cnn → mnist1d_cnn_small, {n} train signals, global batch {args.batch_size}, "
          f"{epochs} epochs, 1 thread per process\n")
    print("| processes | s / epoch | signals / s | speed-up | wall (incl. start-up) | final student acc |")
    print("|---:|---:|---:|---:|---:|---:|")
    for p, r in results.items():
        acc = r["final"]["student"]["last_acc"]
        print(f"| {p} | {r['epoch_s']:.2f} | {n / r['epoch_s']:.0f} | {base / r['epoch_s']:.2f}× | "
              f"{r['wall']:.1f} s | {acc:.2f} |")
    return results


if __name__ == "__main__":
    main()
