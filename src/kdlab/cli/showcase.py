"""``kdlab demo | experiment``: the method comparison and the fidelity experiments on the bundled MNIST-1D."""

from __future__ import annotations

from pathlib import Path

from kdlab.demo import run_demo
from kdlab.fidelity.experiments import EXPERIMENTS, run_experiment


def _demo(args) -> int:
    run_demo(out_dir=Path(args.out), quick=args.quick, seeds=args.seeds, progress=not args.no_progress)
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


def register(sub) -> None:
    d = sub.add_parser("demo", help="compare every method on MNIST-1D (teacher trained or reused from cache)")
    d.add_argument("--quick", action="store_true", help="a smaller version: 10 epochs, 1 seed (about 40 s on 2 cores)")
    d.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3, 1 with --quick)")
    d.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars (the table is printed all the same)")
    d.set_defaults(func=_demo)

    x = sub.add_parser("experiment", help="run a fidelity experiment of Stanton et al. on MNIST-1D")
    x.add_argument("name", nargs="?", help="experiment name (see --list)")
    x.add_argument("--list", action="store_true", help="list the experiments")
    x.add_argument("--quick", action="store_true",
                   help="fewer variants, seeds and epochs (10-21 s each on 2 cores, docs/fidelity.md)")
    x.add_argument("--seeds", type=int, default=None, help="seeds per variant (default 3, 2 with --quick; min 2)")
    x.add_argument("--epochs", type=int, default=None, help="student epochs (default 30, 10 with --quick)")
    x.add_argument("--out", default=None, help="output directory (default experiments/NAME[_quick])")
    x.add_argument("--no-progress", action="store_true", help="no progress bars (the table is printed all the same)")
    x.set_defaults(func=_experiment)
