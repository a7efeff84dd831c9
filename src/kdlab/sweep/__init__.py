"""Sweeps: many ordinary runs ("cells": recipes × seeds) on this machine or a cluster, and the paper-style table of
their results beside the published numbers. ``kdlab sweep``, ``kdlab table``, ``kdlab demo`` and
``kdlab experiment`` all run through it.

* :mod:`kdlab.sweep.cell` — a cell and :func:`run_cell`, the one function that trains it wherever it runs;
* :mod:`kdlab.sweep.spec` — the sweep spec (YAML or arguments) and its cells, teacher cells included;
* :mod:`kdlab.sweep.state` — a cell's directory: new, interrupted, finished, or holding another config;
* :mod:`kdlab.sweep.runner` — the engine: skip, resume, report, ``sweep.json``; in-process and local executors;
* :mod:`kdlab.sweep.local` — the worker pool (GPU pinning, CPU threads divided, a progress bar over cells);
* :mod:`kdlab.sweep.slurm` — SLURM through submitit (array jobs, requeue on preemption), and submitit's local executor;
* :mod:`kdlab.sweep.table` — runs → mean ± std over seeds per method and pair, Markdown/CSV; published numbers from
  ``configs/published.yaml`` (:mod:`kdlab.sweep.published`).
"""

from kdlab.sweep.cell import Cell, exit_code, run_cell
from kdlab.sweep.local import Outcome, WorkerPool, device_groups, pool_size
from kdlab.sweep.runner import (
           InProcess,
           Local,
           SweepLocked,
           SweepReport,
           execute,
           read_sweep,
           run_sweep,
)
from kdlab.sweep.spec import SweepSpec, cells_of, load_spec
from kdlab.sweep.state import CellState, cell_state

__all__ = ["Cell", "CellState", "InProcess", "Local", "Outcome", "SweepLocked", "SweepReport", "SweepSpec",
           "WorkerPool", "cell_state", "cells_of", "device_groups", "execute", "exit_code", "load_spec",
           "pool_size", "read_sweep", "run_cell", "run_sweep"]
