"""``kdlab plot RUN...``: a run's ``curves.png`` from its ``metrics.jsonl`` and ``final.json``. Runs draw it
themselves only with ``run.curves=true`` (docs/performance.md: the matplotlib import and the drawing were a fifth
of a 1-epoch MNIST-1D process)."""

from __future__ import annotations

from kdlab.plots import run_curves


def _plot(args) -> int:
    for run in args.runs:
        print(f"wrote {run_curves(run)}")
    return 0
