"""The home of feature methods: methods that read intermediate features of student and teacher, and may own
trainable parts sized from them (connectors, regressors, embeddings).

The builder calls :meth:`FeatureMethod.setup` once with a real batch of the run's inputs, before the optimizer is
built. It reads both networks' features on it (the student in eval mode without gradient, so its BatchNorm
statistics are untouched) and hands them to :meth:`FeatureMethod.build_extras`, which returns the trainable modules
sized from the real shapes; they become submodules on the student's device and dtype, so they are optimised,
checkpointed and synchronised under DDP like the student. Per step the method reads features through
:meth:`student_features` and :meth:`teacher_features` (the model's own ``forward_features``, or forward hooks at the
module paths :meth:`stage_paths` names) and picks stages with :meth:`stage` or :meth:`stages`, whose errors name the
method's keys.

:class:`FeatureLossMethod` is the common shape of the feature distillers of mdistiller and the CRD benchmark
(FitNets, AT, NST, PKT, RKD, SP, KDSVD, VID): CE plus one weighted term computed from the two networks' features;
a subclass gives its :class:`FeatureParams` and :meth:`FeatureLossMethod.feature_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from kdlab import distributed as dist
from kdlab._checks import SettingError
from kdlab._modes import eval_mode
from kdlab.methods.base import Adaptation, Method, Params, RunFacts, StepOutput, defaults_left
from kdlab.methods.compose import Served
from kdlab.models import forward_features

__all__ = ["CIFAR_STAGES", "FeatureLossMethod", "FeatureMethod", "FeatureParams", "StagesParams", "picked",
           "size"]

Shapes = Mapping[str, Sequence[tuple[int, ...]]]

#: The stage shapes ([C, H, W] per sample) of the pair the CIFAR-100 feature weights are tuned on (mdistiller's
#: configs/cifar100: resnet32x4 → resnet8x4 on 32×32 images; kdlab.models.stage_shapes, checked by
#: tests/methods/test_feature_adapt.py): the reference a default feature weight is fitted from.
CIFAR_STAGES: dict[str, tuple[tuple[int, ...], ...]] = {
    "student": ((32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8)),
    "teacher": ((32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8)),
}


def size(shape: Sequence[int]) -> tuple[int, int]:
    """(channels C, positions P = H·W or L) of a per-sample stage shape."""
    return shape[0], math.prod(shape[1:])


def picked(shapes: Sequence[tuple[int, ...]], indices: int | Sequence[int] | None) -> list[tuple[int, ...]]:
    """The shapes of the stages ``indices`` picks, as :meth:`FeatureMethod.stages` / :meth:`FeatureMethod.stage`
    pick the maps (None: every stage after the stem). IndexError when the network lacks one."""
    if indices is None:
        indices = list(range(1, len(shapes))) or [1]
    return [shapes[i] for i in ([indices] if isinstance(indices, int) else indices)]


class FeatureMethod(Method):
    """Base of the methods that read features (see the module docstring). Subclasses override
    :meth:`build_extras` (when they own trainable parts) and, where the user chooses stages by module path,
    :meth:`stage_paths`; :meth:`uses_features` says whether the hyperparameters switch the feature level on."""

    _ready: bool = False

    def uses_features(self) -> bool:
        """Whether this run reads features (CAKD's feature level can be off)."""
        return True

    def preact(self, who: str) -> bool:
        """Whether the ``who`` ("student"/"teacher") network's features include ``"preact"``, each stage's
        pre-activation (zoo models only; OFD and ReviewKD read them). Default: no."""
        return False

    def stage_paths(self, who: str) -> list[str] | None:
        """Module paths (``model.named_modules()``) whose outputs are the ``who`` ("student"/"teacher") network's
        stages, read with forward hooks; None: the stages of the model's own ``forward_features``."""
        return None

    def build_extras(self, student: dict[str, Any], teacher: dict[str, Any]) -> dict[str, nn.Module]:
        """Trainable parts sized from the features of a real batch (``{"stages": [...], "pooled": ...}`` of each
        network), by attribute name. Default: none."""
        return {}

    def setup(self, probe: Tensor) -> None:
        if self.uses_features():
            x = probe[:2]
            try:
                with eval_mode(self.student), torch.no_grad():
                    _, s = self.student_features(x)
                _, t = self.teacher_features(x)
            except SettingError:
                raise
            except (ValueError, RuntimeError) as exc:  # a model's own check, a hook on a missing module, shapes
                raise SettingError(f"{self.name}: the student's and the teacher's features could not be read on a "
                                   f"batch of the data: {exc}") from None
            param = next(self.student.parameters(), None)
            where = {"device": param.device, "dtype": param.dtype} if param is not None else {}
            for name, module in self.build_extras(s, t).items():
                setattr(self, name, module.to(**where))
            self.check_features(s, t)
        self._ready = True
        super().setup(probe)

    def check_features(self, student: dict[str, Any], teacher: dict[str, Any]) -> None:
        """Called by :meth:`setup` after :meth:`build_extras` with the probe's features, so that stages that cannot
        be paired fail before training starts. Default: nothing to check."""

    def __call__(self, batch, *args, **kwargs):
        if not self._ready:
            raise RuntimeError(f"method {self.name!r} reads features: call method.setup(x) with a few real inputs "
                               "before training (kdlab.methods.create(..., probe=x) does it)")
        return super().__call__(batch, *args, **kwargs)

    def student_features(self, x: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """(student logits, its features) for ``x``, with gradient (in a combination, computed once per step and
        served to every method: :class:`~kdlab.methods.compose.Served`)."""
        if isinstance(self.student, Served):
            return self.student.served(x, self.stage_paths("student"), preact=self.preact("student"))
        return forward_features(self.student, x, self.stage_paths("student"), preact=self.preact("student"))

    def teacher_features(self, x: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """(teacher logits, its features) from one teacher pass, without gradient."""
        return self.teacher.features(x, self.stage_paths("teacher"), preact=self.preact("teacher"))

    def network(self, who: str) -> nn.Module:
        """The ``who`` ("student"/"teacher") network itself."""
        return self.student if who == "student" else self.teacher.module

    def backbone(self, maps: list[Tensor], who: str) -> list[Tensor]:
        """Per-stage ``maps`` of ``who``'s network without its head stages (``ZooModel.head_stages``: a 1x1 head
        conv such as MobileNetV2's ``conv2``), so multi-stage methods pair backbone stages as mdistiller does."""
        head = getattr(self.network(who), "head_stages", 0)
        return list(maps[: len(maps) - head])

    def stage(self, features: dict[str, Any], who: str, index: int = -1, key: str | None = None) -> Tensor:
        """Stage ``index`` of ``who``'s ``features``; an error names ``key`` (the argument that chose it, default
        ``<who>_stage``) when the network has no such stage."""
        stages = features["stages"]
        key = f"method.args.{key or who + '_stage'}"
        model = self.network(who)
        if not stages:
            children = ", ".join(name for name, _ in model.named_children()) or "none"
            if f"{who}_paths" in type(self.hp).model_fields:  # FeatureParams: the paths have a key of their own
                key = f"method.args.{who}_paths"
            raise SettingError(f"{self.name}: the {who} ({type(model).__name__}) has no forward_features, so name the "
                               f"module whose output is its feature map in {{key}}: a path of model.named_modules() "
                               f"(top-level modules: {children})", key=key)
        if not -len(stages) <= index < len(stages):
            raise SettingError(f"{self.name}: {{key}}={index}, but the {who} ({type(model).__name__}) has "
                               f"{len(stages)} stages (0 to {len(stages) - 1})", key=key)
        return stages[index]

    def stages(self, features: dict[str, Any], who: str, indices: list[int] | None, key: str) -> list[Tensor]:
        """The stages ``indices`` of ``who``'s ``features`` in that order; None: every stage after the stem
        (mdistiller's ``feats[1:]``), or every hooked module when :meth:`stage_paths` names them."""
        n = len(features["stages"])
        if indices is None:
            first = 0 if self.stage_paths(who) else 1
            indices = list(range(first, n)) or [first]
        elif n and not all(-n <= i < n for i in indices):
            model = self.student if who == "student" else self.teacher.module
            raise SettingError(f"{self.name}: {{key}}={indices}, but the {who} ({type(model).__name__}) has {n} "
                               f"stages (0 to {n - 1})", key=f"method.args.{key}")
        return [self.stage(features, who, i, key) for i in indices]


class FeatureParams(Params):
    """What every :class:`FeatureLossMethod` takes: the weights of its two terms (mdistiller's ``CE_WEIGHT`` and
    ``FEAT_WEIGHT``; each method sets its own feature-weight default) and, for networks without
    ``forward_features``, the module paths (``model.named_modules()``) whose outputs are the stages its stage
    indices then count."""

    ce_weight: float = Field(1.0, ge=0)
    feat_weight: float = Field(1.0, ge=0)
    student_paths: list[str] | None = None
    teacher_paths: list[str] | None = None


class StagesParams(FeatureParams):
    """For the methods that pair several stages (AT, NST, KDSVD, VID): indices into each network's stages, paired
    in order; None: every stage after the stem, mdistiller's ``feats[1:]`` (every hooked module with ``*_paths``)."""

    student_stages: list[int] | None = None
    teacher_stages: list[int] | None = None


class FeatureLossMethod(FeatureMethod):
    """L = ce_weight·CE(z, y) + feat_weight·feature_loss(student features, teacher features); the term is logged
    under the method's name. The labels enter only through CE and the teacher's logits not at all (the live teacher
    gives its features, so neither a logit cache nor a top-k store could serve it). A loss that relates the samples
    of a batch to each other (PKT, RKD, SP) reads its inputs through :meth:`global_batch`, so under DDP it is
    computed on the global batch and N processes train as one."""

    Params: ClassVar[type[FeatureParams]] = FeatureParams
    labels_only_in_ce = True

    @classmethod
    def needs_full_teacher_distribution(cls, hp: FeatureParams) -> bool:
        return False  # the teacher's logits are never read by the loss

    def stage_paths(self, who: str) -> list[str] | None:
        return getattr(self.hp, f"{who}_paths")

    @classmethod
    def stiffness(cls, hp: FeatureParams, stages: Shapes) -> float | None:
        """How hard the feature term pulls on the maps it reads, per unit of their relative mismatch, for maps of
        unit RMS (BatchNorm'd) of the ``stages`` shapes (``{"student": [...], "teacher": [...]}``): ‖∂L/∂f‖ up to a
        shape-free factor, summed over the stages ``hp`` picks. None (default): the term's pull does not depend on
        the maps' sizes, so its weight is not adapted."""
        return None

    @classmethod
    def _adaptations(cls, hp: FeatureParams, facts: RunFacts, given: Collection[str] | None) -> list[Adaptation]:
        """w_feat·S_CIFAR/S_run when the weight is left at its CIFAR-100 default and both networks' stage shapes are
        known (``facts.stages``; not with ``*_paths``): S = :meth:`stiffness` of the run's maps and of the pair the
        default is tuned on (:data:`CIFAR_STAGES`, the class's own stage choice). The adapted weight pulls on the
        run's maps as hard as the default pulls on CIFAR-100's, where the same weight on smaller maps or fewer
        channels would pull several times harder (docs/methods/README.md, "Defaults fitted to the maps")."""
        if "feat_weight" not in defaults_left(hp, given) or facts.stages is None or hp.student_paths \
                or hp.teacher_paths:
            return []
        try:
            run = cls.stiffness(hp, facts.stages)
        except IndexError:  # a stage the network lacks: the run's own check names the key
            return []
        ref = cls.stiffness(cls.Params(), CIFAR_STAGES)
        if run is None or ref is None:
            return []
        value = float(f"{hp.feat_weight * ref / run:.3g}")
        if value == hp.feat_weight:
            return []
        return [Adaptation("feat_weight", hp.feat_weight, value,
                           f"the CIFAR-100 weight (resnet32x4 → resnet8x4 maps) × {ref / run:.3g}, so that the "
                           f"{cls.name} term pulls on these stages' maps as hard as on CIFAR-100's")]

    def feature_loss(self, student: dict[str, Any], teacher: dict[str, Any]) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def global_batch(self, t: Tensor) -> Tensor:
        """``t`` over the global batch under DDP (every rank's rows; differentiable), else ``t``."""
        return dist.gather_batch(t)

    def paired_stages(self, student: dict[str, Any], teacher: dict[str, Any]) -> tuple[list[Tensor], list[Tensor]]:
        """The student's and the teacher's maps of ``student_stages`` / ``teacher_stages`` (:class:`StagesParams`),
        paired by position; one-line errors naming the keys."""
        hp = self.hp
        s = self.stages(student, "student", hp.student_stages, "student_stages")
        t = self.stages(teacher, "teacher", hp.teacher_stages, "teacher_stages")
        if len(s) != len(t):
            what = {who: "every stage after the stem" if getattr(hp, f"{who}_stages") is None else "as given"
                    for who in ("student", "teacher")}
            raise SettingError(f"{self.name}: {len(s)} student stages ({{s}}: {what['student']}) cannot be paired "
                               f"with {len(t)} teacher stages ({{t}}: {what['teacher']}); give both lists, one index "
                               "per pair, in stage order", s="method.args.student_stages",
                               t="method.args.teacher_stages")
        return s, t

    def check_features(self, student: dict[str, Any], teacher: dict[str, Any]) -> None:
        """The loss once on the probe (eval mode, no gradient): a stage choice the loss cannot use fails here."""
        keys = [k for k in type(self.hp).model_fields if k.startswith(("student_stage", "teacher_stage"))]
        try:
            with eval_mode(self), torch.no_grad():
                self.feature_loss(student, teacher)
        except SettingError:
            raise
        except (ValueError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not keys:  # a method on the pooled features (PKT, RKD)
                raise SettingError(f"{self.name}: the networks' features cannot be used: {first}") from None
            named = " / ".join("{" + k + "}" for k in keys)
            raise SettingError(f"{self.name}: the chosen stages cannot be paired: {first}; choose others in {named}",
                               **{k: f"method.args.{k}" for k in keys}) from None

    def forward(self, batch, epoch: int) -> StepOutput:
        z, s = self.student_features(batch.x)
        v, t = self.teacher_features(batch.x)
        losses = {"ce": self.hp.ce_weight * self.masked_ce(z, batch),
                  self.name: self.hp.feat_weight * self.feature_loss(s, t)}
        return StepOutput(z, losses, v)
