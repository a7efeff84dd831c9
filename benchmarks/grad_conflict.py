"""The cost of gradient-conflict logging (`run.grad_conflict_every`) on an MNIST-1D DHKD run.

    python benchmarks/grad_conflict.py            # 4000 train signals, 5 epochs, 2 interleaved rounds
    python benchmarks/grad_conflict.py --quick    # 1000 signals, 3 epochs, 1 round (smoke run)

Run time on 2 CPU cores: full ~3 min, --quick ~40 s.

The shipped recipe `mnist1d/dhkd` (mnist1d_cnn → mnist1d_cnn_small, nonlinear head with gradient alignment, batch
64) trained in this process with the option off, every 50 steps and every step, the variants interleaved round by
round, one thread, a randomly initialised teacher (speed does not depend on the weights) and the evaluation only after
the last epoch. The epoch time is the median over the epochs after the first (which fills the lazy teacher cache) and
before the last (which evaluates). A measured step costs one `torch.autograd.grad` per loss term (here 2) on top of
the step; the table gives the extra per epoch and per measured step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from kdlab import builder, models
from kdlab.models import save_model

try:
    from step_time import machine_line
except ImportError:  # pragma: no cover
    from benchmarks.step_time import machine_line

SETTINGS = (("off", 0), ("every 50 steps", 50), ("every step", 1))


def epoch_times(teacher: Path, out: Path, every: int, n: int, epochs: int) -> tuple[list[float], int]:
    cfg = builder.load_config("mnist1d/dhkd", [
        f"teacher.checkpoint={teacher}", f"data.train_subset={n}", "data.test_subset=500", f"optim.epochs={epochs}",
        f"eval.every={epochs}", f"out_dir={out}", "run.progress=false", "run.threads=1", "run.tensorboard=false",
        f"run.grad_conflict_every={every}"])
    builder.distil(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = rows[0].get("grad_conflict", {}).get("steps", 0)
    return [r["epoch_time_s"] for r in rows[1:-1]], steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1000 signals, 3 epochs, 1 round")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2; --quick 1)")
    args = ap.parse_args(argv)
    n, epochs = (1000, 3) if args.quick else (4000, 5)
    rounds = args.rounds or (1 if args.quick else 2)
    times: dict[str, list[float]] = {name: [] for name, _ in SETTINGS}
    measured: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        teacher = tmp / "teacher.safetensors"
        save_model(teacher, models.create("mnist1d_cnn", 10), arch="mnist1d_cnn", num_classes=10)
        for r in range(rounds):
            for name, every in SETTINGS:
                t, measured[name] = epoch_times(teacher, tmp / f"{every}-{r}", every, n, epochs)
                times[name] += t
    steps = -(-n // 64)
    base = statistics.median(times["off"])
    print(f"machine: {machine_line(torch.device('cpu'))}")
    print(f"mnist1d/dhkd, {n} train signals ({steps} steps of 64 per epoch), {epochs} epochs × {rounds} round(s), "
          "1 thread; median epoch time over the epochs between the first and the last\n")
    print("| run.grad_conflict_every | measured steps / epoch | s / epoch | × off | extra ms / measured step |")
    print("|---|---:|---:|---:|---:|")
    for name, every in SETTINGS:
        t = statistics.median(times[name])
        extra = f"{1000 * (t - base) / measured[name]:.1f}" if measured[name] else "—"
        print(f"| {every} ({name}) | {measured[name]} | {t:.3f} | {t / base:.2f}× | {extra} |")
    return times


if __name__ == "__main__":
    main()
