"""The method contract: what every distillation method gives the engine, and what it owns.

A ``Method`` owns the student, any trainable extras (auxiliary heads, connectors) and a reference to the frozen
teacher (a :class:`~kdlab.teachers.Teacher`, given once at construction). For each training batch it returns a
``StepOutput`` whose ``losses`` are summed and minimised. The engine never knows which method runs: it calls
``forward = method.prepare_distributed(device, sync_bn)`` once, then per step ``forward(batch, epoch)``,
``method.backward(out)`` and the optimizer. Everything method-specific the engine would otherwise branch on lives
here (the pattern of timm's ``TrainingTask``):

* class-level questions asked *before* the method is built, from its hyperparameters alone:
  :meth:`needs_teacher`, :meth:`cacheable` (may an exact logit cache stand in for the teacher?),
  :meth:`needs_full_teacher_distribution` (would a top-k teacher store change the objective?) and :meth:`adapt`:
  the defaults that only suit CIFAR-100 (class count, 240 epochs), fitted to the run at hand;
* :meth:`setup_data` (the training loader: CRD sizes its memory bank from it) and :meth:`setup` (called once with a
  real batch before the optimizer exists: feature methods size their trainable extras from it) and :meth:`compile` (``run.compile``: every path the method runs the student through);
* :meth:`prepare_distributed` (BatchNorm over the global batch, DDP around the trainable part; DHKD syncs its own
  gradients instead);
* :attr:`report_temperature` (the τ at which reports also give KL), :meth:`eval_model` (the network evaluated and
  saved), :meth:`backward` (DHKD's gradient alignment);
* which distillation-data extras it honours (:attr:`labels_only_in_ce`, :attr:`per_sample_temperature`), checked
  on every batch by the method itself.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from kdlab import distributed as dist
from kdlab._checks import SettingError
from kdlab.losses import logit_standardize
from kdlab.losses import validation as loss_validation
from kdlab.methods.compose import combined_step
from kdlab.methods.second_view import refuse_unusable
from kdlab.models.features import classifier_of
from kdlab.teachers import Teacher


class Params(BaseModel):
    """Base of every method's hyperparameters: unknown keys and non-finite numbers are errors; a key a method no longer takes
    (:attr:`removed`) is an error that says why and what to do."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    #: arguments an earlier version took, with the reason they are gone (an old config that gives one is told)
    removed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _not_removed(cls, data: Any) -> Any:
        for key in sorted(set(data) & set(cls.removed) if isinstance(data, dict) else ()):
            raise ValueError(f"{key!r} is no longer an argument ({cls.removed[key]}); remove it")
        return data


@dataclass
class StepOutput:
    logits: torch.Tensor  # student logits on the clean view (train accuracy, online fidelity)
    losses: dict[str, torch.Tensor]  # weighted terms; their sum is minimised
    teacher_logits: torch.Tensor | None = None  # teacher logits on the same clean view
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # diagnostics, not optimised

    @property
    def total(self) -> torch.Tensor:
        return sum(self.losses.values())


@dataclass(frozen=True)
class RunFacts:
    """What a method's defaults may be adapted to (:meth:`Method.adapt`), known before the method is built."""

    num_classes: int
    epochs: int
    input_shape: tuple[int, ...]  # one sample, e.g. (3, 32, 32)
    # per network ("student", "teacher"): the per-sample shapes of its forward_features stages on this input
    # (kdlab.models.stage_shapes), for the feature methods; None where unknown (a factory or hooked network)
    stages: Mapping[str, tuple[tuple[int, ...], ...]] | None = None


@dataclass(frozen=True)
class Adaptation:
    """One default changed for the run at hand, reported in the log and in ``final.json``."""

    key: str  # the argument, e.g. "beta"
    default: Any  # the class default (a CIFAR-100 recipe value)
    value: Any  # what this run uses
    why: str


def defaults_left(hp: Params, given: Collection[str] | None) -> set[str]:
    """The arguments of ``hp`` the user did not give (``given`` None: unknown, so none is adaptable)."""
    return set() if given is None else set(type(hp).model_fields) - set(given)


def scaled_warmup(hp: Params, facts: RunFacts, given: Collection[str] | None, key: str = "warmup") -> list[Adaptation]:
    """DKD's 20-epoch warm-up is 20 of CIFAR-100's 240 epochs. A shorter run left at the default gets the same share
    of its length, max(1, round(20·epochs/240)), so the warm-up ends as early in training as in the recipe. ``key``:
    another epoch-counted argument scaled the same way (CTKD's curriculum length)."""
    default = type(hp).model_fields[key].default
    if key not in defaults_left(hp, given) or facts.epochs >= CIFAR_EPOCHS or getattr(hp, key) != default \
            or not default:
        return []
    value = max(1, round(default * facts.epochs / CIFAR_EPOCHS))
    what = "warm-up" if key == "warmup" else key
    return [Adaptation(key, default, value, f"the CIFAR-100 {what} of {default} of {CIFAR_EPOCHS} epochs, "
                                           f"scaled to {facts.epochs} epochs")]


#: length of the shared CIFAR-100 recipe (docs/reference/methods.md §10), which epoch-counted defaults belong to
CIFAR_EPOCHS = 240
#: classes of CIFAR-100, which class-count-dependent defaults belong to
CIFAR_CLASSES = 100


def scaled_by_classes(hp: Params, facts: RunFacts, given: Collection[str] | None, key: str, classes: int,
                      cifar_classes: int, why: str) -> list[Adaptation]:
    """The weight ``key`` of a KL term between softmaxes over ``classes`` classes (``cifar_classes`` in the CIFAR-100
    recipe), scaled by ``classes / cifar_classes`` when left at its default on a run with fewer classes.

    Why: the Hessian of KL(p ‖ softmax(z)) in the logits z is diag(q) − qqᵀ, whose eigenvalues are about 1/m while
    q = softmax(z) is spread over m classes (the softened targets of these terms are): a weight w makes the term w/m
    stiff, so the same w is ``cifar_classes / classes`` times stiffer on fewer classes (DKD's β = 8 diverges at lr
    0.05 on 10-class digits), and w·m/m₁₀₀ keeps the recipe's stiffness. ``why``: the adaptation's reason, logged."""
    if key not in defaults_left(hp, given) or classes >= cifar_classes or getattr(hp, key) != \
            type(hp).model_fields[key].default:
        return []
    default = getattr(hp, key)
    return [Adaptation(key, default, default * classes / cifar_classes, why)]


def nckd_beta(hp: Params, facts: RunFacts, given: Collection[str] | None, key: str = "beta",
              term: str = "NCKD") -> list[Adaptation]:
    """The weight ``key`` of a KL between the softmaxes over the C − 1 non-target classes (99 on CIFAR-100): β of
    DKD's NCKD (DKD; SDD's and CTKD's DKD base), γ of NKD's normalised non-target term; scaled by (C − 1)/99
    (:func:`scaled_by_classes`)."""
    m = facts.num_classes - 1
    return scaled_by_classes(hp, facts, given, key, m, CIFAR_CLASSES - 1,
                             f"{term}'s weight for CIFAR-100's 99 non-target classes, scaled by (C − 1)/99 to {m}")


def warmup_factor(epoch: int, warmup: int) -> float:
    """DKD's linear warm-up of the distillation term: min(epoch / warmup, 1), epoch 1-based."""
    return 1.0 if warmup <= 0 else min(epoch / warmup, 1.0)


class Method(nn.Module):
    """Base class. Subclasses set ``Params`` and implement ``forward``; ``self.hp`` holds the validated values."""

    Params: ClassVar[type[Params]] = Params
    name: ClassVar[str] = "?"
    summary: ClassVar[str] = ""  # one plain line for `kdlab methods`: the paper and what the loss matches
    # Distillation-data extras (kdlab.data.policies) a method honours: unlabelled samples need a method whose only use
    # of the labels is `masked_ce`; per-sample temperatures need the method to read batch.temperature.
    labels_only_in_ce: ClassVar[bool] = False
    per_sample_temperature: ClassVar[bool] = False
    #: the ``Params`` fields that weight the distillation terms (named by the divergence guard's advice); None:
    #: every number field named ``*_weight`` but ``ce_weight``
    term_weights: ClassVar[tuple[str, ...] | None] = None
    # The losses' host-synchronising input checks (finite values, label range) are off inside a training forward:
    # the engine validates data where it enters and checks every step's total loss. True turns them back on.
    sync_checks: bool = False

    @classmethod
    def loss_weights(cls, hp: Params) -> dict[str, float]:
        """The distillation terms' weights (:attr:`term_weights`) and their values in ``hp``."""
        keys = cls.term_weights if cls.term_weights is not None else [
            k for k in type(hp).model_fields if k.endswith("_weight") and k != "ce_weight"]
        values = {k: getattr(hp, k, None) for k in keys}
        return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    @classmethod
    def needs_teacher(cls, hp: Params) -> bool:
        """Whether a run of this method with ``hp`` needs a teacher (asked before the method is built)."""
        return True

    @classmethod
    def adapt(cls, hp: Params, facts: RunFacts, given: Collection[str] | None) -> tuple[Params, list[Adaptation]]:
        """``hp`` with the defaults that only suit the CIFAR-100 recipe (100 classes, 240 epochs, 32×32 images)
        fitted to the run described by ``facts``, and what changed. Only arguments the user did not give
        (``given``) change; a given value that cannot work is a :class:`SettingError`. Default: nothing to adapt.

        Logit standardisation (Sun et al. 2024) on 2 classes is refused: it maps a sample's two logits to ±1/√2
        whatever their gap, so every softmax of them is one of two fixed vectors, the distillation term sees only the
        argmax and its gradient is 0 (``kd_ls`` would train on 0.1·CE alone)."""
        if facts.num_classes == 2 and getattr(hp, "logit_standardization", False):
            raise SettingError(f"{cls.name}: logit standardisation maps the 2 logits of a 2-class sample to ±1/√2, so "
                               "its distillation term has no gradient; set {key} to false (method kd for kd_ls)",
                               key="method.args.logit_standardization")
        changes = cls._adaptations(hp, facts, given)
        if not changes:
            return hp, []
        return hp.model_copy(update={c.key: c.value for c in changes}), changes

    @classmethod
    def _adaptations(cls, hp: Params, facts: RunFacts, given: Collection[str] | None) -> list[Adaptation]:
        return []

    @classmethod
    def cacheable(cls, hp: Params) -> bool:
        """Whether an exact (index, view) teacher-logit cache may stand in for the teacher: True only when the method
        reads the teacher solely through ``teacher.logits_for_batch(batch)`` of the loader's own batch. Default
        False (safe); :class:`LogitMethod` says True."""
        return False

    @classmethod
    def second_view_refusal(cls, hp: Params) -> str | None:
        """Why a second view's term (``distill_data.second_view``: this method's own loss without CE on
        (student(x̂), teacher(x̂)), :mod:`kdlab.methods.second_view`) is not defined for this method with ``hp``, or
        None when it is: for a method that reads the teacher only through its logits on the batch
        (:meth:`cacheable`), that term is its distillation loss on x̂."""
        if not cls.needs_teacher(hp):
            return "it has no distillation term"
        if not cls.cacheable(hp):
            return ("it reads the teacher beyond its logits on the batch (features, a pruned ensemble or views of "
                    "its own), so its loss on x̂ is not a function of (student(x̂), teacher(x̂)) alone")
        return None

    @classmethod
    def needs_full_teacher_distribution(cls, hp: Params) -> bool:
        """Whether the method needs the teacher's whole distribution, so that FKD's top-k outputs with the remaining
        mass spread evenly (kdlab.teachers.topk) would change what it optimises: terms over the non-target or tail
        classes (DKD's NCKD), correlations or ranks over all classes (DIST, CMKD), power transforms that lift the
        tail (TTM, WTTM), raw-logit statistics (logit standardisation, BKL). Asked before a top-k teacher store is
        used; default True (safe). KD at its own temperature says False (FKD's case; its error is measured in
        docs/performance.md)."""
        return True

    def __init__(self, student: nn.Module, teacher: Teacher | None, num_classes: int, hp: Params):
        super().__init__()
        if teacher is None and self.needs_teacher(hp):
            raise SettingError(f"method {self.name!r} needs a teacher; set {{teacher}}", teacher="teacher.checkpoint")
        self.student = student
        self.num_classes = num_classes
        self.hp = hp
        # a plain attribute, not a submodule: never trained, saved with the student, or wrapped by DDP
        self.teacher = teacher
        # methods whose terms are added to this one's (method.add; kdlab.methods.compose), and their weights
        self.added = nn.ModuleList()
        self.added_weights: dict[str, float] = {}
        # distill_data.second_view: a SecondView (kdlab.methods.second_view) whose term joins every step, or None
        self.second_view_term = None

    def add(self, part: Method, weight: float = 1.0) -> None:
        """Add ``part``'s distillation terms, each multiplied by ``weight``, to this method's (``method.add``:
        WTTM + CRD, DHKD + ReviewKD, KD + AT; :mod:`kdlab.methods.compose`). ``part`` is built on the same student
        and teacher; it becomes a submodule (its trainable parts are optimised, saved and synchronised with this
        method's), while the student stays this method's alone. A part that would replace the training step itself
        (its own backward, DDP preparation or evaluated network) is refused: it can only be the run's method."""
        if part.student is not self.student or part.teacher is not self.teacher:
            raise ValueError("method.add: an added method must be built on the run's student and teacher")
        overrides = [name for name in ("backward", "prepare_distributed", "eval_model")
                     if getattr(type(part), name) is not getattr(Method, name)]
        if overrides:
            raise SettingError(f"method.add: {part.name!r} replaces the training step's {' and '.join(overrides)} "
                               "(its own head or gradient handling), so it cannot be added to another method; make it "
                               "{key} instead", key="method.name")
        if part.name in ("ce", self.name) or part.name in self.added_weights:
            raise SettingError(f"method.add: {part.name!r} is already the run's method or added once; each method "
                               "is added at most once and CE is counted by the run's method", key="method.add")
        del part._modules["student"]  # shared, not owned: saved and optimised once, as this method's
        object.__setattr__(part, "student", self.student)
        self.added.append(part)
        self.added_weights[part.name] = float(weight)

    def set_second_view(self, view) -> None:
        """Add ``view``'s term (a :class:`~kdlab.methods.second_view.SecondView`) to every training step, after this
        method's own (and its added methods') terms; refused where :meth:`second_view_refusal` says why."""
        refuse_unusable(view.spec.kind, [(type(m), m.hp) for m in (self, *self.added)])
        self.second_view_term = view

    def setup_data(self, train) -> None:
        """Called once with the training loader (a :class:`~kdlab.data.Loader`) before :meth:`setup`, so a method
        whose state is sized or keyed by the training set (CRD's memory bank: one row per sample, negatives drawn
        among the other classes) can read its size and labels, and refuse data whose batch indices are not the
        data set's sample indices. Default: the added methods' ``setup_data``; a subclass that overrides it calls
        ``super().setup_data(train)``."""
        for part in self.added:
            part.setup_data(train)
        if self.second_view_term is not None:
            self.second_view_term.setup_data(train)

    def setup(self, probe: torch.Tensor) -> None:
        """Called once with a real batch of inputs (a few samples of the run's data, on the student's device) before
        the optimizer is built, so trainable extras sized from the networks' real features exist in time
        (:class:`~kdlab.methods.feature.FeatureMethod`). Default: the added methods' setup; a subclass that
        overrides it calls ``super().setup(probe)``."""
        for part in self.added:
            part.setup(probe)
        if self.second_view_term is not None:
            self.second_view_term.check_input(probe)

    def compile(self, **kwargs: Any) -> None:
        """``run.compile``: ``torch.compile`` every path this method runs the student through — its ``forward``
        (training and the evaluated, saved network) and its ``forward_features``, which feature methods and DHKD call
        directly and a compiled ``forward`` alone would bypass. In place: parameters and state-dict keys stay the
        plain model's. ``kwargs`` go to ``torch.compile`` (e.g. ``backend``)."""
        self.student.compile(**kwargs)
        features = getattr(self.student, "forward_features", None)
        if callable(features):
            self.student.forward_features = torch.compile(features, **kwargs)

    def forward(self, batch, epoch: int) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, batch, *args, **kwargs):
        if batch.label_mask is not None and not self.labels_only_in_ce:
            raise ValueError(f"method {self.name!r} uses the labels beyond cross-entropy, so it cannot train on the "
                             "unlabelled inputs that distill_data adds (mixup, noise, extra sources); use method kd")
        if batch.temperature is not None and not self.per_sample_temperature:
            raise ValueError(f"method {self.name!r} does not support distill_data.temperatures (per-source "
                             "temperature); use method kd or remove distill_data.temperatures")
        with loss_validation(self.sync_checks):
            if len(self.added):
                out = combined_step(self, batch, *args, **kwargs)
            else:
                out = super().__call__(batch, *args, **kwargs)
            if self.second_view_term is not None:
                out.losses["second_view"] = self.second_view_term(self, batch, *args, **kwargs)
            return out

    def prepare_distributed(self, device: torch.device, sync_bn: bool | str = "auto") -> Callable:
        """The callable the loop runs each step's forward through. Under torchrun: DistributedDataParallel around
        this method's trainable part (the teacher is not a submodule, so it stays unwrapped); else the method.
        Called before the optimizer is built."""
        self.sync_batchnorm(device, sync_bn)
        return dist.wrap_ddp(self, device) or self

    def sync_batchnorm(self, device: torch.device, sync_bn: bool | str = "auto") -> None:
        """Under torchrun (``sync_bn`` "auto" or True): every BatchNorm of the student and the extras normalises by
        the global batch's statistics, so W processes train as one does (``run.sync_bn``; False keeps per-rank
        statistics). In place: parameters, buffers and state-dict keys stay the plain model's. The teacher is not a
        submodule and is never converted."""
        if sync_bn is False or dist.world_size() == 1 or not dist.has_batchnorm(self):
            return
        dist.convert_sync_batchnorm(self, device)

    def backward(self, out: StepOutput) -> None:
        """Default: minimise the sum of the loss terms. DHKD overrides this (gradient alignment)."""
        out.total.backward()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The trainable parameters in the groups gradient conflicts are measured on (``run.grad_conflict_every``,
        :mod:`kdlab.engine.conflict`): ``classifier`` (the student's final linear layer,
        :func:`~kdlab.models.features.classifier_of`), ``backbone`` (the rest of the student) and ``extras`` (the
        method's own trainable parts: heads, connectors, embeddings). An empty group is left out."""
        head = {id(p) for p in classifier_of(self.student).parameters()}
        student = [p for p in self.student.parameters() if p.requires_grad]
        mine = {id(p) for p in self.student.parameters()}
        groups = {"classifier": [p for p in student if id(p) in head],
                  "backbone": [p for p in student if id(p) not in head],
                  "extras": [p for p in self.parameters() if p.requires_grad and id(p) not in mine]}
        return {name: params for name, params in groups.items() if params}

    def eval_model(self) -> nn.Module:
        """The network used for evaluation and saved as the result (DHKD: the backbone with its CE head)."""
        return self.student

    @property
    def report_temperature(self) -> float | None:
        """The distillation temperature τ at which reports also give KL(teacher ‖ student) (None: T = 1 only)."""
        return getattr(self.hp, "temperature", None)

    def to(self, *args, **kwargs):
        if self.teacher is not None:
            self.teacher.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    # helpers shared by the softmax-based methods
    @staticmethod
    def masked_ce(logits: torch.Tensor, batch) -> torch.Tensor:
        """Mean CE over the labelled samples of ``batch`` (``batch.label_mask``; None = all); 0 when none is."""
        mask = batch.label_mask
        if mask is None:
            return F.cross_entropy(logits, batch.y)
        # Σ over labelled rows / their count, without boolean indexing (no host sync); unlabelled targets may be -1.
        per = F.cross_entropy(logits, batch.y.clamp(min=0), reduction="none")
        return (per * mask).sum() / mask.sum().clamp(min=1)

    def standardize(self, *logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logit standardisation (Sun et al. 2024) when the method's hyperparameters switch it on."""
        if getattr(self.hp, "logit_standardization", False):
            return tuple(logit_standardize(u) for u in logits)
        return logits


class LogitMethod(Method):
    """A method that reads the teacher only through ``teacher.logits_for_batch(batch)`` on the clean view, so the
    exact teacher-logit cache (kdlab.teachers.cache) can serve it."""

    @classmethod
    def cacheable(cls, hp: Params) -> bool:
        return True
