"""A kdlab process's fixed cost: `kdlab --help`, and a 1-epoch `kdlab train mnist1d/kd` (or a CIFAR-shaped
`cifar100/resnet32x4-resnet8x4/kd`) broken down the way its final.json's ``overhead`` records it, optionally
interleaved with another checkout (``--base``).

    python benchmarks/overhead.py                    # 5 rounds; the whole MNIST-1D set (4,000 training samples)
    python benchmarks/overhead.py --quick            # 1 round on 512 training samples (smoke run)
    python benchmarks/overhead.py --base OLD         # interleaved with the checkout OLD (its src/ on PYTHONPATH)
    python benchmarks/overhead.py --cifar 2000       # CIFAR-100-format archive, 2,000/400 random images,
                                                     # resnet32x4 (random weights) -> resnet8x4, batch 64

Run time on 2 CPU cores: full ~1 min (~2 min with --base), --quick ~30 s.
(--cifar 512 with --base, 1 round: ~5 min at load 8.)

Every measurement is a fresh process (``python -m kdlab ...`` with the checkout's ``src`` first on PYTHONPATH, the
same interpreter and packages); the checkouts alternate in each round and the table gives medians of wall time and
of the process's CPU time (user + system). The teacher (``mnist1d_cnn``) is trained for one epoch
here (``--cifar``: resnet32x4 with random weights, saved
once): its accuracy does not change the cost of a run. One untimed run per checkout first generates the data set and
stores the teacher's test-set logits, as a user's second run finds them. The breakdown is this checkout's
``overhead`` (``final.json``); "after final.json" is the rest of the process's wall time: the interpreter's exit
(and ``curves.png`` in a checkout that draws it for every run, as 0abb493 does). Each checkout has its own data
directory, and a run that rebuilds a cache fails the benchmark. Each checkout's metrics are compared (``fidelity`` and
``student`` of final.json must be equal).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from teacher_passes import cifar_folder

from kdlab import models
from kdlab.engine.environment import describe_machine
from kdlab.models import save_model

PARTS = {"startup_s": "start-up (interpreter, imports)", "data_s": "data, loaders, networks, method",
         "teacher_s": "teacher outputs (cache, test logits)", "epochs_s": "epochs (training + evaluation)",
         "loop_other_s": "loop outside the epochs (optimizer, checkpoints)", "report_s": "report (final.json)"}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _kdlab(src: Path, args: list[str], data: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``python -m kdlab ARGS`` run from ``src`` (one child at a time, so the CPU time of
    the reaped children grows by exactly this one's)."""
    env = {**os.environ, "PYTHONPATH": str(src), "KDLAB_DATA": str(data)}
    cpu, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kdlab", *args], env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if proc.returncode:
        raise SystemExit(f"kdlab {' '.join(args)} failed ({src}):\n{proc.stderr[-2000:]}")
    if "is invalid" in proc.stderr:  # a data or teacher cache rebuilt: the run timed more than a user's second run
        raise SystemExit(f"kdlab {' '.join(args)} rebuilt a cache ({src}):\n{proc.stderr[-2000:]}")
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 512 training samples, 1 round")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 5, 1 with --quick)")
    p.add_argument("--epochs", type=int, default=1, help="epochs of each `kdlab train` run (default 1)")
    p.add_argument("--base", default=None, help="another kdlab checkout, timed in the same rounds")
    p.add_argument("--cifar", type=int, default=None, metavar="N",
                   help="time the CIFAR-shaped run instead: N generated training images, N/5 test images")
    args = p.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    here = Path(__file__).resolve().parents[1]
    checkouts = {"this checkout": here / "src"}
    if args.base:
        checkouts["base"] = Path(args.base).resolve() / "src"
    work = Path(tempfile.mkdtemp(prefix="kdlab_overhead_"))
    try:
        # one data directory per checkout: checkouts that write their data caches differently (0abb493's MNIST-1D
        # cache has no content checksum, so today's rebuilds it and 0abb493 then rebuilds today's) would each
        # regenerate the data set in every timed run in a shared one
        data = {name: work / "data" / name.replace(" ", "_") for name in checkouts}
        subset = ["data.train_subset=512"] if args.quick and not args.cifar else []
        common = [*subset, "run.progress=false", "run.tensorboard=false"]
        teacher = work / "teacher"
        if args.cifar:
            for folder in data.values():  # read as the extracted archive is: the same for every checkout
                cifar_folder(folder, args.cifar, max(args.cifar // 5, 1))
            torch.manual_seed(0)
            teacher.mkdir()
            save_model(teacher / "model.safetensors", models.create("resnet32x4", 100), arch="resnet32x4",
                       num_classes=100)
            recipe = "cifar100/resnet32x4-resnet8x4/kd"
        else:
            _kdlab(checkouts["this checkout"], ["teacher", "mnist1d/teacher", *common, "optim.epochs=1",
                                                f"out_dir={teacher}"], data["this checkout"])
            recipe = "mnist1d/kd"
        train = ["train", recipe, *common, f"optim.epochs={args.epochs}",
                 f"teacher.checkpoint={teacher / 'model.safetensors'}"]
        for name, src in checkouts.items():  # untimed: stores the teacher's test-set logits (each checkout's key)
            _kdlab(src, [*train, f"out_dir={work / 'warm' / name.replace(' ', '_')}"], data[name])
        times: dict[str, dict[str, list[float]]] = {name: {"help_wall": [], "help_cpu": [], "wall": [], "cpu": []}
                                                    for name in checkouts}
        breakdown: list[dict[str, float]] = []
        finals: dict[str, dict] = {}
        for r in range(rounds):
            for name, src in (checkouts.items() if r % 2 == 0 else reversed(checkouts.items())):
                t = times[name]
                wall, cpu = _kdlab(src, ["--help"], data[name])
                t["help_wall"].append(wall)
                t["help_cpu"].append(cpu)
                out = work / "runs" / f"{name.replace(' ', '_')}{r}"
                wall, cpu = _kdlab(src, [*train, f"out_dir={out}"], data[name])
                t["wall"].append(wall)
                t["cpu"].append(cpu)
                finals[name] = json.loads((out / "final.json").read_text())
                if name == "this checkout":
                    overhead = finals[name]["overhead"]
                    breakdown.append({**overhead, "after": wall - sum(v or 0.0 for v in overhead.values())})
                shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{describe_machine()}; load average {load:.1f} at the end; {rounds} round(s), medians; "
          f"`kdlab train {recipe} optim.epochs={args.epochs}`{' ' + ' '.join(subset) if subset else ''}"
          f"{f' on {args.cifar} generated images' if args.cifar else ''}\n")
    base = med.get("base")
    print("| checkout | `kdlab --help` wall s | `kdlab --help` CPU s | train process wall s | train process CPU s |"
          + (" wall × base | CPU × base |" if base else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|---:|" if base else ""))
    for name, m in med.items():
        ratio = f" {m['wall'] / base['wall']:.2f} | {m['cpu'] / base['cpu']:.2f} |" if base else ""
        print(f"| {name} | {m['help_wall']:.2f} | {m['help_cpu']:.2f} | {m['wall']:.2f} | {m['cpu']:.2f} |{ratio}")
    if base:
        same = all(finals[n][k] == finals["base"][k] for n in finals for k in ("fidelity", "student"))
        print(f"\nmetrics of the last runs equal (fidelity, student): {'yes' if same else 'NO'}")
    print("\n| part of this checkout's train process | wall s (median) | share |")
    print("|---|---:|---:|")
    wall = med["this checkout"]["wall"]
    for key, label in [*PARTS.items(), ("after", "after final.json (exit; curves.png with run.curves=true)")]:
        values = [b[key] for b in breakdown if b.get(key) is not None]
        if values:
            s = statistics.median(values)
            print(f"| {label} | {s:.2f} | {100 * s / wall:.0f}% |")


if __name__ == "__main__":
    main()
