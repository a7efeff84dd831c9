"""The divergence guard: a run that has collapsed stops with a message instead of reporting a broken student.

The loop calls :meth:`DivergenceGuard.update` once per epoch with the epoch's training summary (the per-example
means it already all-reduces: ``loss``, ``loss_<term>``, ``acc``), so the guard adds no host sync and decides the
same on every rank. Three rules, each over a sustained stretch of epochs (thresholds below; docs/reliability.md):

* **collapse** — the training accuracy's excess over chance, ``e = (acc − chance) / (100 − chance)``, was once
  ``≥ LEARNED`` and has stayed below ``COLLAPSE`` × its best for ``PATIENCE`` epochs (DKD at a too-high lr on a
  BN-free MLP: 56 % → 23 %, chance 10 %);
* **blow-up** — the total loss has stayed above both ``BLOWUP`` × its running minimum and its first-epoch value for
  ``PATIENCE`` epochs (a loss that grows because a method ramps its weight up, e.g. DKD's warm-up, stays within
  ``BLOWUP`` of its minimum on every shipped recipe);
* **no learning** — the training accuracy has stayed within ``STUCK_BAND`` of chance for ``STUCK_EPOCHS``
  epochs in a row (``optim.lr=5`` on the MNIST-1D CNN: 9–12 % for 20 epochs, chance 10 %).

"Chance" is the accuracy of always predicting the most frequent training label. Non-finite losses are caught per
step by the loop (:class:`kdlab.engine.loop.NonFiniteLossError`) before the guard sees the epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DivergenceGuard", "TrainingDiverged"]

PATIENCE = 3  # epochs a collapse or blow-up must last
LEARNED = 0.2  # the excess over chance a run must once reach before "collapse" can apply
COLLAPSE = 0.5  # collapse: excess below this fraction of its best
BLOWUP = 10.0  # blow-up: loss above this multiple of its running minimum (and above its first-epoch value)
STUCK_BAND = 0.02  # no learning: excess over chance at most this ...
STUCK_EPOCHS = 5  # ... for this many epochs in a row


class TrainingDiverged(RuntimeError):
    """Training collapsed or diverged (see :mod:`kdlab.engine.guard`); the last good checkpoint and the best
    weights in out_dir are kept. ``epoch`` is where it was detected, ``rule`` which rule fired."""

    def __init__(self, message: str, epoch: int = 0, rule: str = ""):
        super().__init__(message)
        self.epoch = epoch
        self.rule = rule


@dataclass
class Divergence:
    epoch: int
    rule: str  # "collapse", "blow-up" or "no learning"
    message: str  # what happened, the loss terms and their scale, what to change


@dataclass
class DivergenceGuard:
    """Per-epoch watch over the training summary. ``chance``: accuracy (%) of predicting the most frequent class;
    ``lr`` and ``grad_clip`` are named in the advice."""

    chance: float
    lr: float = 0.0
    grad_clip: float | None = None
    best_excess: float = field(default=-math.inf, init=False)
    best_epoch: int = field(default=0, init=False)
    best_terms: dict[str, float] = field(default_factory=dict, init=False)
    first_loss: float | None = field(default=None, init=False)
    min_loss: float = field(default=math.inf, init=False)
    min_epoch: int = field(default=0, init=False)
    collapsed: int = field(default=0, init=False)  # consecutive epochs each rule has held
    blown_up: int = field(default=0, init=False)
    stuck: int = field(default=0, init=False)

    def excess(self, acc: float) -> float:
        return (acc - self.chance) / max(100.0 - self.chance, 1e-9)

    @property
    def building(self) -> bool:
        """Whether a collapse or blow-up holds at the last epoch (a stretch is building up): that epoch is not a
        "good" state to keep. (A run at chance from the start has no good state to protect.)"""
        return bool(self.collapsed or self.blown_up)

    def update(self, epoch: int, train: dict[str, Any]) -> Divergence | None:
        """Take one epoch's training summary; a :class:`Divergence` when a rule has held long enough."""
        loss = float(train["loss"])
        acc = float(train["acc"]) if train.get("acc") is not None else None  # None: no labelled sample
        terms = {k[len("loss_"):]: float(v) for k, v in train.items() if k.startswith("loss_")}
        e = self.excess(acc) if acc is not None else math.nan
        collapse_at = self.chance + COLLAPSE * self.best_excess * (100.0 - self.chance)
        fell = acc is not None and self.best_excess >= LEARNED and acc < collapse_at
        self.collapsed = self.collapsed + 1 if fell else 0
        self.stuck = self.stuck + 1 if e <= STUCK_BAND else 0  # (False for NaN)
        if self.first_loss is None:
            self.first_loss = loss
        blown = self.min_loss > 0 and loss > BLOWUP * self.min_loss and loss > self.first_loss
        self.blown_up = self.blown_up + 1 if blown else 0
        if e > self.best_excess:  # (False for NaN)
            self.best_excess, self.best_epoch, self.best_terms = e, epoch, terms
        if loss < self.min_loss:
            self.min_loss, self.min_epoch = loss, epoch

        if self.collapsed >= PATIENCE:
            best_acc = self.chance + self.best_excess * (100.0 - self.chance)
            what = (f"training collapsed at epoch {epoch}: train accuracy {acc:.1f}% (chance {self.chance:.1f}%), "
                    f"down from {best_acc:.1f}% at epoch {self.best_epoch}, below {collapse_at:.1f}% for "
                    f"{self.collapsed} epochs")
            return Divergence(epoch, "collapse", self._advice(what, terms))
        if self.blown_up >= PATIENCE:
            what = (f"training diverged at epoch {epoch}: loss {loss:.4g}, {loss / self.min_loss:.0f}x its minimum "
                    f"{self.min_loss:.4g} (epoch {self.min_epoch}) and above its first epoch's {self.first_loss:.4g}, "
                    f"for {self.blown_up} epochs")
            return Divergence(epoch, "blow-up", self._advice(what, terms))
        if self.stuck >= STUCK_EPOCHS:
            what = (f"training is not learning: train accuracy {acc:.1f}% at epoch {epoch}, within "
                    f"{STUCK_BAND * (100.0 - self.chance):.1f} points of chance ({self.chance:.1f}%) for "
                    f"{self.stuck} epochs")
            return Divergence(epoch, "no learning", self._advice(what, terms))
        return None

    def _advice(self, what: str, terms: dict[str, float]) -> str:
        total = sum(abs(v) for v in terms.values()) or 1.0
        shown = ", ".join(f"{k} {v:.4g} ({100 * abs(v) / total:.0f}%)" for k, v in terms.items())
        out = f"{what}. Loss terms now: {shown}"
        if self.best_terms and self.best_epoch != 0:
            out += f"; at epoch {self.best_epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in self.best_terms.items())
        largest = max(terms, key=lambda k: abs(terms[k])) if terms else None
        clip = ("clip the gradients (optim.grad_clip, kdlab.fit's grad_clip, e.g. 5.0)" if self.grad_clip is None
                else f"clip them harder (optim.grad_clip, now {self.grad_clip:g})")
        weight = (f", lower the weight of the largest term '{largest}' (the method's own weight, e.g. DKD's beta)"
                  if len(terms) > 1 else "")
        return f"{out}. To fix: lower the learning rate (now {self.lr:g}){weight}, or {clip}"
