"""A second, augmented view for any logit method (``distill_data.second_view``): R2KD's x̂ (Kim et al. 2023/2024)
for KD, DKD, TTM, DIST and the others, so that "augmentation hurts earlier KD methods but helps R2KD" can be checked.

    L = L_method(x) + w · D_method(x̂),

where ``D_method`` is the method's own loss without its CE term, on (student(x̂), teacher(x̂)), and x̂ is drawn by
:mod:`kdlab.data.second_view` (the same functions as R2KD's). No CE on x̂ (R2KD's rule); the term is logged as
``second_view``. A method for which this is defined says so (:meth:`Method.second_view_refusal`): one whose loss
reads the teacher only through its logits on the batch (:meth:`Method.cacheable`).

* **Teacher.** x̂ is a fresh random view, never a stored one: its teacher logits come from the live teacher
  (``Teacher.logits``). With the exact logit cache, the clean view is served from the cache and x̂ live.
* **Labels.** DKD and NKD read the label in their distillation term: x̂'s is the label of the larger part of each
  mixed sample (:func:`kdlab.data.second_view.draw_view`).
* **Processes.** x̂ is drawn for the *global* batch from torch's global RNG (identical on every process, and
  checkpointed, so a resumed run draws the same views): the inputs are gathered, every process draws the same
  view of the global batch and keeps its own rows, so W processes train as one. CutMixPick's pool is labelled by
  the teacher in W shards, gathered, and picked by entropy over the global pool. One process gathers nothing.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from kdlab import distributed as dist
from kdlab._checks import SettingError
from kdlab.data.batch import Batch
from kdlab.data.second_view import ViewSpec, cutmix_pool, draw_view, most_uncertain, view_input_problem
from kdlab.methods.compose import ServedTeacher, combined_step

__all__ = ["SecondView", "refuse_unusable"]


def refuse_unusable(kind: str, methods) -> None:
    """One line naming the first of ``methods`` (``(class, params)`` pairs: the run's method and its added ones) for
    which a second view ``kind`` is not defined, and why (:meth:`Method.second_view_refusal`)."""
    for cls, hp in methods:
        why = cls.second_view_refusal(hp)
        if why is not None:
            raise SettingError(f"{{view}}={kind} cannot be used with method {cls.name!r}: {why}",
                               view="distill_data.second_view")


class _ViewTeacher(ServedTeacher):
    """The teacher during the second view's step: a :class:`~kdlab.methods.compose.ServedTeacher` of x̂ whose logits
    were computed once (CutMixPick needs them to pick), served for x̂ by batch and by input tensor alike; anything
    else goes to the teacher itself."""

    def __init__(self, teacher, view: Batch, logits: Tensor):
        super().__init__(teacher, view, None, None)
        self._logits = logits

    def logits(self, x: Tensor) -> Tensor:
        return self._logits if x is self.batch.x else self.teacher.logits(x)


def _sharded_logits(teacher, pool: Tensor) -> Tensor:
    """The teacher's logits of every row of ``pool`` (the same on every process): each process labels its
    contiguous share of the rows, then they are gathered (one process: ``teacher.logits(pool)``)."""
    world = dist.world_size()
    if world == 1:
        return teacher.logits(pool)
    n, r = pool.shape[0], dist.rank()
    start = r * (n // world) + min(r, n % world)
    size = n // world + (1 if r < n % world else 0)
    return dist.all_gather_rows(teacher.logits(pool[start:start + size]))[0]


class SecondView:
    """``distill_data.second_view``: called by :class:`~kdlab.methods.Method` after its own step, it returns the
    weighted term ``w · D_method(x̂)`` (module docstring)."""

    def __init__(self, spec: ViewSpec, weight: float = 1.0):
        self.spec, self.weight = spec, float(weight)

    def setup_data(self, train) -> None:
        """AutoAugment works on pixel levels: it undoes the training loader's own normalisation."""
        if self.spec.kind == "autoaugment":
            mean, std = getattr(train, "mean", None), getattr(train, "std", None)
            self.spec = replace(self.spec, mean=None if mean is None else tuple(mean),
                                std=None if std is None else tuple(std))

    def check_input(self, x: Tensor) -> None:
        """Refuse inputs the view cannot take (tabular data for CutMix, signals for AutoAugment), naming the key."""
        problem = view_input_problem(self.spec.kind, x.shape)
        if problem is not None:
            raise SettingError(f"distill_data.{problem}; set {{view}} to mixup or none for these inputs",
                               view="distill_data.second_view")

    def draw(self, batch: Batch, teacher) -> tuple[Batch, Tensor]:
        """(x̂ as a batch of this process's rows, the teacher's logits on it)."""
        spec, n = self.spec, batch.x.shape[0]
        x_all, start = dist.all_gather_rows(batch.x)
        y_all = dist.all_gather_rows(batch.y)[0]
        mine = slice(start, start + n)
        if spec.kind == "cutmixpick":
            pool, y_pool = cutmix_pool(spec, x_all, y_all)
            v_pool = _sharded_logits(teacher, pool)
            keep = most_uncertain(v_pool, x_all.shape[0])[mine]
            x_hat, y_hat, v_hat = pool[keep], y_pool[keep], v_pool[keep]
        else:
            x_view, y_view = draw_view(spec, x_all, y_all)
            x_hat, y_hat = x_view[mine], y_view[mine]
            v_hat = teacher.logits(x_hat)
        # not a stored sample's view: no index, no view id (a cache must never serve it); unlabelled inputs (y −1,
        # from distill_data's sources) stay unlabelled
        view = Batch(x=x_hat, y=y_hat, index=torch.full_like(y_hat, -1), view=None,
                     label_mask=None if batch.label_mask is None else y_hat >= 0)
        return view, v_hat

    def __call__(self, method, batch: Batch, epoch: int) -> Tensor:
        view, v_hat = self.draw(batch, method.teacher)
        parts, teacher = [method, *method.added], method.teacher
        served = _ViewTeacher(teacher, view, v_hat)
        try:
            for m in parts:
                m.teacher = served
            # a separate student forward: the clean batch's BatchNorm statistics are not mixed with x̂'s (as R2KD)
            out = combined_step(method, view, epoch) if len(method.added) else method.forward(view, epoch)
        finally:
            for m in parts:
                m.teacher = teacher
        terms = [t for k, t in out.losses.items() if k != "ce"]  # no CE on x̂
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return self.weight * total

    def describe(self) -> dict:
        return {"second_view": self.spec.kind, "second_view_weight": self.weight}
