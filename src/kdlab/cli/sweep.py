"""``kdlab sweep | table``: run a grid of recipes × seeds (locally or on SLURM) and tabulate runs beside the papers."""

from __future__ import annotations

import sys
from pathlib import Path

from kdlab.sweep import Local, cell_state, cells_of, load_spec, read_sweep, run_sweep
from kdlab.sweep.runner import OK
from kdlab.sweep.slurm import Submitit
from kdlab.sweep.spec import SlurmOptions
from kdlab.sweep.table import FORMATS, collect, missing_cells, write_outputs

_NEEDS_ACTION = {"failed", "changed", "blocked"}


def _seeds(text: str | None):
    if text is None:
        return None
    parts = [int(p) for p in text.split(",") if p.strip()]
    return parts[0] if len(parts) == 1 and "," not in text else parts


def slurm_options(args) -> dict:
    """The SLURM options given on the command line (``--partition``, ``--time``, ...)."""
    return {k: v for k, v in (("partition", args.partition), ("gpus_per_cell", args.gpus_per_cell),
                              ("time_min", args.time), ("cpus_per_cell", args.cpus_per_cell),
                              ("array_parallelism", args.array_parallelism)) if v is not None}


def executor_of(args, out: Path, slurm: SlurmOptions, procs_per_cell: int):
    """``(executor, how it runs, cells settled beforehand)`` for ``--executor``: worker processes here, or submitit
    (SLURM or its local executor); cells still running as jobs of an earlier call are settled (skipped)."""
    if args.executor == "local":
        executor = Local(args.jobs, args.threads, procs_per_cell, progress=not args.no_progress)
        how = f"{executor.pool.jobs} at a time, {executor.threads} CPU thread(s) per cell" + (
            f", CUDA devices {' | '.join(executor.devices)}" if executor.devices else "")
        return executor, how, None
    cluster = "slurm" if args.executor == "slurm" else "local"
    executor = Submitit(out / "submitit", cluster, slurm, procs_per_cell, args.threads, wait=not args.no_wait,
                        progress=not args.no_progress)
    return executor, f"through submitit ({cluster})", executor.active(read_sweep(out).get("cells", []))


def _spec(args):
    slurm = slurm_options(args)
    spec = load_spec(args.spec, recipes=args.recipes, seeds=_seeds(args.seeds), teachers=args.teachers,
                     out=args.out, procs_per_cell=args.procs_per_cell)
    if args.overrides:
        spec.overrides = spec.overrides + args.overrides
    if slurm:
        spec.slurm = spec.slurm.model_copy(update=slurm)
    return spec


def _out(args, spec) -> Path:
    if spec.out:
        return Path(spec.out)
    return Path("runs/sweeps") / (Path(args.spec).stem if args.spec else "sweep")


def _sweep(args) -> int:
    spec = _spec(args)
    out = _out(args, spec)
    cells = cells_of(spec, out)
    if args.dry_run:
        for cell in cells:
            st = cell_state(cell)
            print(f"{st.state:11s} {cell.kind:7s} {cell.out_dir}" + (f"  ({st.reason})" if st.reason else ""))
        print(f"{len(cells)} cells; each runs as `kdlab <teacher|train> RECIPE OVERRIDES`, the last one as:\n"
              f"  kdlab {' '.join(cells[-1].argv())}")
        return 0
    executor, how, skip = executor_of(args, out, spec.slurm, spec.procs_per_cell)
    print(f"sweep {out}: {len(cells)} cells, {how}", flush=True)
    try:
        report = run_sweep(cells, out, executor, spec=spec.model_dump(mode="json"), skip=skip)
    finally:
        if isinstance(executor, Local):
            executor.pool.close()
    print(report.summary())
    done = [Path(c.out_dir) for c in cells if c.kind == "student" and report.status(c) in OK]
    if done and not args.no_table:
        print()
        print(write_outputs(collect(done), None, ("md",)))
    print(f"\nrecorded in {out / 'sweep.json'}; tabulate with `kdlab table {out}`")
    return 1 if any(report.status(c) in _NEEDS_ACTION for c in cells) else 0


def _table(args) -> int:
    formats = tuple(f for part in args.format for f in part.split(",") if f)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"--format {bad[0]!r}: choose from {', '.join(FORMATS)}")
    table = collect([Path(p) for p in args.runs], published=args.published)
    text = write_outputs(table, args.out, formats)
    if text:
        sys.stdout.write(text + "\n")
    missing = missing_cells([Path(p) for p in args.runs])
    if missing:
        names = ", ".join(f"{name} ({d.name})" for name, d in missing[:5]) + (" ..." if len(missing) > 5 else "")
        print(f"kdlab: the table is partial: {len(missing)} cell(s) of the sweep have no final.json (not run, "
              f"interrupted or failed): {names}; rerun the same `kdlab sweep` to finish them", file=sys.stderr)
    return 0
