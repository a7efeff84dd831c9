"""Many independent trainings ("cells") on this machine: a pool of worker processes, the CPU threads divided between
them, a progress bar over cells. ``kdlab demo`` and ``kdlab experiment`` run through it.

Workers are *spawned* (a forked child of a process that has run torch's thread pool can hang) and call
:func:`train_cell`, which builds and trains one run from a recipe and overrides exactly as ``kdlab teacher`` /
``kdlab train`` would.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, Callable, Hashable

import torch
from tqdm.auto import tqdm

from kdlab import build

__all__ = ["pool_size", "run_cells", "train_cell"]


def pool_size(workers: int | None = None) -> tuple[int, int]:
    """``(workers, threads per worker)``: by default 2 workers (or 1 on a 1-core machine), the cores split evenly."""
    cores = os.cpu_count() or 1
    workers = workers or max(1, min(2, cores))
    return workers, max(1, cores // workers)


def train_cell(recipe: str, overrides: list[str], teacher: bool, threads: int) -> dict[str, Any]:
    """Train one run (``kdlab teacher`` when ``teacher`` else ``kdlab train``) in this process; its final.json."""
    torch.set_num_threads(threads)
    cfg = build.load_config(recipe, overrides)
    return (build.train_teacher if teacher else build.distil)(cfg)


def run_cells(fn: Callable[..., Any], cells: dict[Hashable, tuple], workers: int, progress: bool, desc: str,
              postfix: Callable[[Hashable, Any], str] | None = None) -> dict[Hashable, Any]:
    """``{key: fn(*args)}`` for every ``key: args`` of ``cells``, ``workers`` at a time in spawned processes.

    A failing cell raises its exception here (after the pool is shut down), so a caller never averages over a
    silently missing cell.
    """
    if not cells:
        return {}
    results: dict[Hashable, Any] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fn, *args): key for key, args in cells.items()}
        bar = tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not progress)
        for fut in bar:
            key = futures[fut]
            results[key] = fut.result()
            if postfix is not None:
                bar.set_postfix_str(postfix(key, results[key]))
    return {key: results[key] for key in cells}  # in the order the cells were given
