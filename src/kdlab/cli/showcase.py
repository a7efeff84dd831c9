"""``kdlab demo | experiment``: the method comparison and the fidelity experiments on the bundled MNIST-1D."""

from __future__ import annotations

from pathlib import Path

from kdlab.demo import run_demo
from kdlab.fidelity.experiments import EXPERIMENTS, run_experiment


def _demo(args) -> int:
    run_demo(out_dir=Path(args.out), quick=args.quick, seeds=args.seeds, progress=not args.no_progress,
             features=args.features)
    return 0


def _experiment(args) -> int:
    if args.list or not args.name:
        for name, (_, title) in EXPERIMENTS.items():
            print(f"{name:28s} {title}")
        return 0
    out = Path(args.out or f"experiments/{args.name}{'_quick' if args.quick else ''}")
    run_experiment(args.name, out, quick=args.quick, seeds=args.seeds, progress=not args.no_progress,
                   epochs=args.epochs)
    return 0
