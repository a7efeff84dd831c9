"""kdlab's progress bar: tqdm's, without its monitor thread.

tqdm starts a monitor thread with the first bar and lets it exit when the last bar closes. A thread that exits while
the process forks (a DataLoader starting its workers right after a bar closed) can leave the forked child stuck for
ever in CPython 3.11's after-fork clean-up, which waits on a lock the exiting thread held: a two-process run hung
so at the start of its evaluation (tests/data/test_data_images_e2e.py, under load). The monitor only forces redraws of
bars whose ``miniters`` was tuned too high, which kdlab's bars do not set, so kdlab's bars run without it.
"""

from __future__ import annotations

from tqdm.auto import tqdm as _tqdm

__all__ = ["tqdm"]


class tqdm(_tqdm):  # noqa: N801 — a drop-in for tqdm.auto.tqdm
    monitor_interval = 0
