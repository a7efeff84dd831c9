"""The divergence guard: a run that has diverged or collapsed stops with a message instead of reporting a broken
student.

Two watches (thresholds below; docs/reliability.md):

**Every step** (:meth:`DivergenceGuard.step`), from the run's first step on: the global gradient norm (what
``optim.grad_clip`` clips) must be finite, and neither the loss nor the gradient norm may exceed ``EXPLODE`` × its
value at the run's first step — the untrained network's, about the largest either has in a healthy run (measured on
every shipped MNIST-1D recipe, ``benchmarks/guard_margins.py``: at most 2.7× the loss and 18× the gradient norm).
``optim.lr=50`` on the MNIST-1D CNN passes 10⁴× within 3–4 steps and ran to a loss of 10²³ before. On CPU in one process each step is checked at once
(a host sync costs nothing there); on GPUs and under torchrun the maxima stay on the device and are compared at the
epoch's end (all-reduced, so every rank decides the same): such a run stops at the end of its first epoch.

**Every epoch** (:meth:`DivergenceGuard.update`, with the summary the loop already all-reduces: ``loss``,
``loss_<term>``, ``acc``, and the watch's own ``weight_change``), each rule over a sustained stretch of epochs:

* **collapse** — the training accuracy's excess over chance, ``e = (acc − chance) / (100 − chance)``, was once
  ``≥ LEARNED`` and has stayed below ``COLLAPSE`` × its best for ``PATIENCE`` epochs (DKD at a too-high lr on a
  BN-free MLP: 56 % → 23 %, chance 10 %);
* **blow-up** — the total loss has stayed above both ``BLOWUP`` × its running minimum and its first-epoch value for
  ``PATIENCE`` epochs (a loss that grows because a method ramps its weight up, e.g. DKD's warm-up, stays within
  ``BLOWUP`` of its minimum on every shipped recipe);
* **no learning** — the training accuracy has stayed within ``STUCK_BAND`` of chance for ``STUCK_EPOCHS`` epochs in
  a row. Which way the learning rate is wrong is read from how far the weights move: by more than ``SLOW_MOTION`` of
  their norm per epoch while the accuracy stays at chance (``optim.lr=5`` on the MNIST-1D CNN: 90–160 % per epoch) the
  learning rate is too high; by less, it is too low (``optim.lr=1e-5``: 0.02 % per epoch) — and while the loss
  still falls by ``PROGRESS`` over the stretch such a run is learning slowly, not stuck, and is not stopped
  (``mnist1d/ce optim.lr=0.002`` on 600 samples: 0.4 % per epoch, loss −1.7 % over 5 epochs, accuracy rising).

"Chance" is the accuracy of always predicting the most frequent training label. A non-finite loss is caught per
step by the loop (:class:`NonFiniteLossError`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from kdlab import distributed as dist

__all__ = ["DivergenceGuard", "NonFiniteLossError", "TrainingDiverged", "grad_norm", "margins", "overshot"]

PATIENCE = 3  # epochs a collapse or blow-up must last
LEARNED = 0.2  # the excess over chance a run must once reach before "collapse" can apply
COLLAPSE = 0.5  # collapse: excess below this fraction of its best
BLOWUP = 10.0  # blow-up: loss above this multiple of its running minimum (and above its first-epoch value)
STUCK_BAND = 0.02  # no learning: excess over chance at most this ...
STUCK_EPOCHS = 5  # ... for this many epochs in a row
EXPLODE = 1e4  # a step's loss or gradient norm above this multiple of the run's first step's
SLOW_MOTION = 0.05  # no learning: weights moving less than this fraction of their norm per epoch: the lr is too low
PROGRESS = 0.01  # ... unless the loss fell by at least this fraction over the stretch: learning slowly
ENDED_WITHIN = 2  # a run that ends while a rule has held this many epochs (short of its patience) is reported


class TrainingDiverged(RuntimeError):
    """Training collapsed or diverged (see :mod:`kdlab.engine.guard`); the last good checkpoint and the best
    weights in out_dir are kept. ``epoch`` is where it was detected, ``rule`` which rule fired."""

    def __init__(self, message: str, epoch: int = 0, rule: str = ""):
        super().__init__(message)
        self.epoch = epoch
        self.rule = rule


class NonFiniteLossError(TrainingDiverged, FloatingPointError):
    """A loss (or the gradient) became NaN/inf. The last good checkpoint in out_dir is kept."""


def overshot(what: str, epoch: int, lr: float) -> NonFiniteLossError:
    """The stop of a run whose training losses stayed finite while ``what`` (its weights, its test logits: said in
    full) went NaN or inf in ``epoch``: the last step overshot."""
    return NonFiniteLossError(
        f"{what}: a step overshot. Training stopped; the last good checkpoint is kept. Lower the learning rate "
        f"(now {lr:g}) or clip the gradients (optim.grad_clip)", epoch, "non-finite")


@dataclass
class Divergence:
    epoch: int
    rule: str  # "explosion", "collapse", "blow-up" or "no learning"
    message: str  # what happened, the loss terms and their scale, what to change


def grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """The global gradient norm of ``params`` (what ``optim.grad_clip`` clips), on the device (no host sync); the
    gradients are left as they are (scaled by exactly 1.0)."""
    return torch.nn.utils.clip_grad_norm_(params, math.inf)


def margins(records: list[dict[str, Any]], chance: float) -> dict[str, float]:
    """How close a finished run came to each rule, from its ``metrics.jsonl`` records: the largest step loss and
    step gradient norm over the first step's (``explode_loss``, ``explode_grad``: explosion above ``EXPLODE``), the
    lowest excess over chance as a fraction of the best so far once ``LEARNED`` (``collapse_ratio``: below
    ``COLLAPSE``), the highest loss over its running minimum while above its first epoch's (``blowup``: at
    ``BLOWUP``), the longest stretch at chance (``stuck``: at ``STUCK_EPOCHS``) and the largest ``weight_change``
    after epoch 1."""
    out = dict(explode_loss=0.0, explode_grad=0.0, collapse_ratio=1.0, blowup=0.0, stuck=0, weight_change=0.0)
    best, low, first, stuck = -math.inf, math.inf, None, 0
    for r in records:
        t = r["train"]
        acc, loss = t["acc"], t["loss"]
        e = (acc - chance) / (100 - chance)
        if best >= LEARNED:
            out["collapse_ratio"] = min(out["collapse_ratio"], e / best)
        first = loss if first is None else first
        if 0 < low < math.inf and loss > first:
            out["blowup"] = max(out["blowup"], loss / low)
        stuck = stuck + 1 if e <= STUCK_BAND else 0
        out["stuck"] = max(out["stuck"], stuck)
        best, low = max(best, e), min(low, loss)
        if "step_loss_max" in t:
            out["explode_loss"] = max(out["explode_loss"], t["step_loss_max"] / t["step_loss_first"])
            out["explode_grad"] = max(out["explode_grad"], t["grad_norm_max"] / t["grad_norm_first"])
        if r["epoch"] > 1 and t.get("weight_change") is not None:
            out["weight_change"] = max(out["weight_change"], t["weight_change"])
    return out


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


@dataclass
class DivergenceGuard:
    """Per-step and per-epoch watch over training (module docstring). ``chance``: accuracy (%) of predicting the
    most frequent class; ``lr``, ``grad_clip`` and the method's term ``weights`` (:meth:`Method.loss_weights`) are
    named in the advice; ``immediate``: check every step at once (CPU, one process) instead of at the epoch's end."""

    chance: float
    lr: float = 0.0
    grad_clip: float | None = None
    immediate: bool = False
    weights: dict[str, float] = field(default_factory=dict)
    best_excess: float = field(default=-math.inf, init=False)
    best_epoch: int = field(default=0, init=False)
    best_terms: dict[str, float] = field(default_factory=dict, init=False)
    first_loss: float | None = field(default=None, init=False)
    min_loss: float = field(default=math.inf, init=False)
    min_epoch: int = field(default=0, init=False)
    collapsed: int = field(default=0, init=False)  # consecutive epochs each rule has held
    blown_up: int = field(default=0, init=False)
    stuck: int = field(default=0, init=False)
    first_step: tuple[float, float] | None = field(default=None, init=False)  # (loss, gradient norm) of step 1
    recent: deque = field(default_factory=lambda: deque(maxlen=STUCK_EPOCHS), init=False)  # (loss, weight change)
    last: tuple[float | None, float, dict[str, float]] | None = field(default=None, init=False)  # acc, loss, terms
    # the epoch's step maxima (loss, gradient norm) and "a gradient norm was not finite"; deferred: the steps' values
    # on the device until epoch_stats
    _max: tuple[float, float] | None = field(default=None, init=False, repr=False)
    _bad: bool | None = field(default=None, init=False, repr=False)
    _steps: list[torch.Tensor] = field(default_factory=list, init=False, repr=False)
    _counts: list[int] = field(default_factory=list, init=False, repr=False)
    _start: list[torch.Tensor] | None = field(default=None, init=False, repr=False)

    def excess(self, acc: float) -> float:
        return (acc - self.chance) / max(100.0 - self.chance, 1e-9)

    @property
    def building(self) -> bool:
        """Whether a collapse or blow-up holds at the last epoch (a stretch is building up): that epoch is not a
        "good" state to keep. (A run at chance from the start has no good state to protect.)"""
        return bool(self.collapsed or self.blown_up)

    # ------------------------------------------------------------------------------------------------ per step
    def epoch_start(self, params: list[torch.Tensor]) -> None:
        """Remember the weights at the epoch's start (for ``weight_change``) and reset the step maxima."""
        self._start = [p.detach().clone() for p in params]
        self._max = self._bad = None
        self._steps, self._counts = [], []

    def step(self, loss: torch.Tensor, norm: torch.Tensor, epoch: int, step: int, n: int = 1) -> Divergence | None:
        """Take one step's (finite) total loss — the mean over this process's ``n`` samples — and the global
        gradient norm; in ``immediate`` mode a :class:`Divergence` (or :class:`NonFiniteLossError`) as soon as the
        step explodes. Deferred, each step's (loss·n, norm) stays on the device until :meth:`epoch_stats`, which
        turns the losses into the global batches' means: the same numbers as one process computes."""
        if self.immediate:  # CPU, one process: plain numbers
            pair = (float(loss.detach()), float(norm))
            if self.first_step is None:
                self.first_step = pair
            if not math.isfinite(pair[1]):
                self._non_finite(f"step {step} of epoch {epoch}")
            self._max = pair if self._max is None else (max(self._max[0], pair[0]), max(self._max[1], pair[1]))
            return self._explosion(epoch, f"step {step} of epoch {epoch}", pair)
        self._steps.append(torch.stack([loss.detach().float().reshape(()) * n, norm.detach().float().reshape(())]))
        self._counts.append(n)
        return None
    def _non_finite(self, where: str) -> None:
        raise NonFiniteLossError(
            f"non-finite gradient norm at {where} (the loss was finite). Training stopped; the last good checkpoint "
            "is kept. Lower the learning rate, check the inputs for NaN/inf, or clip the gradients (optim.grad_clip)")

    def _explosion(self, epoch: int, where: str, top: tuple[float, float]) -> Divergence | None:
        """The step maxima ``top`` (loss, gradient norm) against ``EXPLODE`` × the first step's."""
        ref = self.first_step
        ratio = [t / r if r > 0 else (math.inf if t > 0 else 0.0) for t, r in zip(top, ref)]
        if max(ratio) <= EXPLODE:
            return None
        i = 0 if ratio[0] >= ratio[1] else 1
        what = ("loss", "gradient norm")[i]
        message = (f"training exploded at {where}: the {what} reached {top[i]:.4g}, {ratio[i]:.3g}x its value at "
                   f"the run's first step ({ref[i]:.4g}; the guard stops at {EXPLODE:g}x)")
        return Divergence(epoch, "explosion", self._advice(message, {}))

    def epoch_stats(self, params: list[torch.Tensor]) -> dict[str, float]:
        """The epoch's step maxima, the first step's values and how far the weights moved (``weight_change``:
        ‖θ_end − θ_start‖ / ‖θ_start‖), for the epoch's record. Deferred mode: one all-reduce of the steps' sums per
        epoch, every rank gets the same numbers, and the next :meth:`update` judges them."""
        out: dict[str, float] = {}
        if not self.immediate and self._steps:
            steps = torch.stack(self._steps)  # [S, 2]: (loss·n, gradient norm) of this process
            counts = torch.tensor(self._counts, dtype=steps.dtype, device=steps.device)
            total = dist.all_reduce_sum(torch.cat([steps[:, 0], counts]))  # the global batches' loss sums and sizes
            loss, norm = total[:len(counts)] / total[len(counts):], steps[:, 1]  # (norms: equal on every rank)
            bad = ~torch.isfinite(norm)
            pair = torch.stack([loss, norm], 1).where(~bad.unsqueeze(1), torch.zeros_like(steps))
            top = torch.cat([pair.max(0).values, pair[0], bad.any().float().reshape(1)]).tolist()  # the host sync
            self._max, self._bad = (top[0], top[1]), top[4] > 0
            if self.first_step is None:
                self.first_step = (top[2], top[3])
            self._steps, self._counts = [], []
        if self._max is not None:
            out.update(step_loss_max=self._max[0], grad_norm_max=self._max[1], step_loss_first=self.first_step[0],
                       grad_norm_first=self.first_step[1])
        if self._start is not None:
            moved = _norm([p.detach() - q for p, q in zip(params, self._start)])
            out["weight_change"] = float(moved / _norm(self._start).clamp_min(1e-12))
            self._start = None
        return out

    # ----------------------------------------------------------------------------------------------- per epoch
    def update(self, epoch: int, train: dict[str, Any]) -> Divergence | None:
        """Take one epoch's training summary (with :meth:`epoch_stats`); a :class:`Divergence` when a step exploded
        (deferred mode) or a rule has held long enough."""
        if self.first_step is None and "step_loss_first" in train:  # replayed from the log on resume
            self.first_step = (float(train["step_loss_first"]), float(train["grad_norm_first"]))
        exploded = None
        if not self.immediate and self._max is not None:  # the deferred check of the epoch's steps
            if self._bad:
                self._non_finite(f"epoch {epoch}")
            exploded = self._explosion(epoch, f"epoch {epoch}", self._max)
        self._max = self._bad = None
        moved = train.get("weight_change")
        if moved is not None and not math.isfinite(moved):
            raise overshot(f"the weights became non-finite (NaN or inf) in epoch {epoch} while its losses and "
                           "gradients were finite", epoch, self.lr)
        loss = float(train["loss"])
        acc = float(train["acc"]) if train.get("acc") is not None else None  # None: no labelled sample
        terms = {k[len("loss_"):]: float(v) for k, v in train.items() if k.startswith("loss_")}
        self.recent.append((loss, train.get("weight_change")))
        self.last = (acc, loss, terms)
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

        if exploded is not None:
            return exploded
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
            return self._not_learning(epoch, acc, terms)
        return None

    def finish(self, epoch: int) -> Divergence | None:
        """At the run's last epoch: a rule that has held for ``ENDED_WITHIN`` epochs or more but less than its
        patience (a run too short for it to stop), as a :class:`Divergence` to report. The run is not stopped, but
        its result is not a healthy run's (``optim.lr=5`` for 4 epochs: at chance throughout)."""
        held = {"collapse": (self.collapsed, PATIENCE), "blow-up": (self.blown_up, PATIENCE),
                "no learning": (self.stuck, STUCK_EPOCHS)}
        rule, (n, patience) = max(held.items(), key=lambda kv: kv[1][0])
        if n < ENDED_WITHIN or self.last is None:
            return None
        acc, loss, terms = self.last
        if rule == "no learning":
            motion = self._motion()
            if motion is None or motion < SLOW_MOTION:
                return None  # a short run with small steps: under-trained, not diverged
            what = self._not_learning(epoch, acc, terms).message
        else:
            accuracy = f"train accuracy {acc:.1f}%, " if acc is not None else ""
            what = self._advice(f"training {'collapsed' if rule == 'collapse' else 'diverged'}: {accuracy}loss "
                                f"{loss:.4g} at epoch {epoch}", terms)
        return Divergence(epoch, rule, f"the run ended while the divergence guard's '{rule}' rule had held for {n} "
                                       f"of the {patience} epochs that stop a run: {what}")

    def _motion(self) -> float | None:
        """Mean ``weight_change`` over the epochs at chance (None where one is unknown)."""
        window = list(self.recent)[-self.stuck:]
        moves = [m for _, m in window if m is not None]
        return sum(moves) / len(moves) if window and len(moves) == len(window) else None

    def _not_learning(self, epoch: int, acc: float, terms: dict[str, float]) -> Divergence | None:
        what = (f"training is not learning: train accuracy {acc:.1f}% at epoch {epoch}, within "
                f"{STUCK_BAND * (100.0 - self.chance):.1f} points of chance ({self.chance:.1f}%) for "
                f"{self.stuck} epochs")
        motion = self._motion()
        if motion is None:  # weight motion unknown (a log from an older kdlab): the general advice
            return Divergence(epoch, "no learning", self._advice(what, terms))
        window = list(self.recent)[-self.stuck:]
        first, last = window[0][0], window[-1][0]
        fell = (first - last) / abs(first) if first else 0.0
        if motion >= SLOW_MOTION:
            what += (f", while the weights change by {100 * motion:.0f}% of their norm per epoch: the learning rate "
                     "is too high")
            return Divergence(epoch, "no learning", self._advice(what, terms))
        if fell >= PROGRESS:
            return None  # small steps and a falling loss: learning slowly, not stuck
        what += (f"; the weights change by only {100 * motion:.2g}% of their norm per epoch and the loss moved "
                 f"{-100 * fell:+.2g}% over those epochs: the learning rate looks too low. To fix: raise the learning "
                 f"rate (now {self.lr:g}) or check that the labels match the inputs")
        return Divergence(epoch, "no learning", what)

    def _advice(self, what: str, terms: dict[str, float]) -> str:
        total = sum(abs(v) for v in terms.values()) or 1.0
        out = what
        if terms:
            out += ". Loss terms now: " + ", ".join(f"{k} {v:.4g} ({100 * abs(v) / total:.0f}%)"
                                                    for k, v in terms.items())
        if self.best_terms and self.best_epoch != 0:
            out += f"; at epoch {self.best_epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in self.best_terms.items())
        largest = max(terms, key=lambda k: abs(terms[k])) if terms else None
        clip = ("clip the gradients (optim.grad_clip, kdlab.fit's grad_clip, e.g. 5.0)" if self.grad_clip is None
                else f"clip them harder (optim.grad_clip, now {self.grad_clip:g})")
        named = ", ".join(f"{k} {v:g}" for k, v in self.weights.items())
        where = (f"the method's weights, method.args / kdlab.fit's method_args: {named}" if named
                 else "the method's own weight, e.g. DKD's beta")
        weight = f", lower the weight of the largest term '{largest}' ({where})" if len(terms) > 1 else ""
        return f"{out}. To fix: lower the learning rate (now {self.lr:g}){weight}, or {clip}"
