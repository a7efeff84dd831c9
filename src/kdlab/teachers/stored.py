"""A student run's teacher from a teacher-output store, and the decision whether a run may use one.

:class:`StoredTeacher` answers ``logits_for_batch`` with the rows the replaying loader read from the store for the
batch's (epoch, index) pairs (:mod:`kdlab.data.replay`), so the teacher's forward pass is gone from the step; anything
else (evaluation inputs, features, batches without stored rows) goes to the live teacher, never approximated.

:func:`choose_store` is ``teacher.cache`` for streamed data: with ``enabled: auto`` a run replays the store at
``teacher.cache.store`` when it exists and fits, and otherwise runs the live teacher, recording why; with
``enabled: true`` a store that does not fit is an error naming the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdlab._io import StaleCacheError
from kdlab.teachers.frozen import FrozenTeacher
from kdlab.teachers.store import TeacherStore

__all__ = ["StoreChoice", "StoredTeacher", "choose_store"]


class StoredTeacher(FrozenTeacher):
    """A :class:`FrozenTeacher` whose training-batch logits come from a :class:`TeacherStore` (module docstring);
    ``logits`` and ``features`` of other inputs are the live teacher's."""

    def __init__(self, teacher: FrozenTeacher, store: TeacherStore):
        if not isinstance(teacher, FrozenTeacher):
            raise ValueError(f"teacher must be a kdlab FrozenTeacher; got {type(teacher).__name__}")
        super().__init__(teacher.module)
        self.store = store

    def logits_for_batch(self, batch) -> torch.Tensor:
        """The stored outputs of the batch's crops as float32 logits (top-k: reconstructed); a batch without stored
        rows goes to the live teacher."""
        rows = getattr(batch, "stored", None)
        if rows is None:
            return self.logits(batch.x)
        return self.store.expand(rows).to(batch.x.device)

    def describe(self) -> dict:
        return {**super().describe(), "store": self.store.describe()}


@dataclass
class StoreChoice:
    """The outcome for one run: the store (or None for the live teacher), the ``final.json`` record and the entries
    the run's identity gains (a resumed run must replay the same store, or run live again)."""

    store: TeacherStore | None
    record: dict[str, Any]
    identity: dict[str, Any] = field(default_factory=dict)


def choose_store(path: str | None, enabled: bool | str, *, streamed: bool, expected: dict | None, epochs: int,
                 method: str, cacheable: bool, needs_full: bool, random_crops: bool = True) -> StoreChoice:
    """Open and check the store at ``path`` for a run (module docstring). ``expected``: the ``teacher`` and ``data``
    sections the store must hold (:func:`kdlab.teachers.store.store_expectation`); ``cacheable`` /
    ``needs_full``: the method's ``Method.cacheable(hp)`` / ``Method.needs_full_teacher_distribution(hp)``."""

    def live(reason: str, error: type[Exception] = ValueError) -> StoreChoice:
        if enabled is True and path:
            raise error(f"teacher.cache.enabled=true but the teacher store cannot be used: {reason}. Set "
                        "teacher.cache.enabled to auto to run the live teacher instead")
        return StoreChoice(None, {"source": "live teacher", "store": path, "reason": reason})

    if enabled is False:
        return live("teacher.cache.enabled=false")
    if not path:
        return live("teacher.cache.store is not set")
    if not streamed:
        return live("the data is held in memory: the exact (index, view) teacher cache serves it instead")
    if not random_crops:
        return live("data.augment is not 'default': the training crops are the fixed centre crop, not a schedule")
    if not cacheable:
        return live(f"method {method!r} reads the teacher beyond its logits on the training batch (features, a "
                    "pruned ensemble or extra views)")
    if not Path(path).exists():
        return live(f"no store at {path}; build it with `kdlab teacher cache CONFIG --precision ...`")
    try:
        store = TeacherStore.open(path)
        store.check(expected)
    except StaleCacheError as e:
        return live(str(e), StaleCacheError)
    except FileNotFoundError as e:
        return live(str(e))
    if not store.complete:
        return live(f"the store at {path} is {store.done_fraction:.0%} built; rerun `kdlab teacher cache` to finish it")
    if store.epochs < epochs:
        return live(f"the store at {path} holds {store.epochs} epochs of crops but the run trains {epochs}")
    if store.precision == "topk" and needs_full:
        return live(f"method {method!r} needs the teacher's full distribution, which a top-k store (k={store.k}) "
                    "cannot give; build a float32 or float16 store for it")
    record = {"source": "store", **store.describe()}
    return StoreChoice(store, record, {"teacher.store_sha256": store.identity})
