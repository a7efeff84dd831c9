"""``kdlab demo | experiment``: the method comparison on the bundled MNIST-1D, and the papers' named experiments."""

from __future__ import annotations

from pathlib import Path

from kdlab.demo import run_demo
from kdlab.cli.sweep import executor_of, slurm_options
from kdlab.fidelity.experiments import run_named
from kdlab.fidelity.specs import experiment_names, load_experiment
from kdlab.sweep import Local
from kdlab.sweep.spec import SlurmOptions


def _demo(args) -> int:
    run_demo(out_dir=Path(args.out), quick=args.quick, seeds=args.seeds, progress=not args.no_progress,
             features=args.features)
    return 0


def _experiment(args) -> int:
    if args.list or not args.name:
        for name in experiment_names():
            spec = load_experiment(name)
            print(f"{name:28s} {spec.paper:8s} {spec.title} (pairs: {', '.join(spec.pairs)})")
        return 0
    spec = load_experiment(args.name)  # a bad NAME is one line listing the valid ones
    stem = Path(args.name).stem
    pair = args.pair or next(iter(spec.pairs))
    if pair not in spec.pairs:
        raise ValueError(f"experiment {stem}: unknown --pair {pair!r}; choose one of: {', '.join(spec.pairs)}")
    default_out = f"experiments/{stem}" + (f"_{pair}" if args.pair else "") + ("_quick" if args.quick else "")
    out = Path(args.out or default_out)
    slurm = SlurmOptions().model_copy(update=slurm_options(args))
    executor, how, _ = executor_of(args, out if spec.kind == "sweep" else out / "runs", slurm,
                                   args.procs_per_cell or 1)
    print(f"experiment {stem} on {pair}: cells {how}", flush=True)
    try:
        results = run_named(args.name, out, executor=executor, pair=args.pair, recipe=args.recipe,
                            teacher_recipe=args.teacher_recipe, seeds=args.seeds, quick=args.quick,
                            overrides=args.overrides, epochs=args.epochs, teacher_epochs=args.teacher_epochs,
                            procs_per_cell=args.procs_per_cell or 1, progress=not args.no_progress)
    finally:
        if isinstance(executor, Local):
            executor.pool.close()
    return 1 if results and results.get("problems") else 0
