"""The home of feature methods: methods that read intermediate features of student and teacher, and may own
trainable parts sized from them (connectors, regressors, embeddings).

The builder calls :meth:`FeatureMethod.setup` once with a real batch of the run's inputs, before the optimizer is
built. It reads both networks' features on it (the student in eval mode without gradient, so its BatchNorm
statistics are untouched) and hands them to :meth:`FeatureMethod.build_extras`, which returns the trainable modules
sized from the real shapes; they become submodules on the student's device and dtype, so they are optimised,
checkpointed and synchronised under DDP like the student. Per step the method reads features through
:meth:`student_features` and :meth:`teacher_features` (the model's own ``forward_features``, or forward hooks at the
module paths :meth:`stage_paths` names) and picks stages with :meth:`stage`, whose errors name the method's keys.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kdlab._checks import SettingError
from kdlab._modes import eval_mode
from kdlab.methods.base import Method
from kdlab.models import forward_features

__all__ = ["FeatureMethod"]


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
        self._ready = True

    def __call__(self, batch, *args, **kwargs):
        if not self._ready:
            raise RuntimeError(f"method {self.name!r} reads features: call method.setup(x) with a few real inputs "
                               "before training (kdlab.methods.create(..., probe=x) does it)")
        return super().__call__(batch, *args, **kwargs)

    def student_features(self, x: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """(student logits, its features) for ``x``, with gradient."""
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
            raise SettingError(f"{self.name}: the {who} ({type(model).__name__}) has no forward_features, so name the "
                               f"module whose output is its feature map in {{key}}: a path of model.named_modules() "
                               f"(top-level modules: {children})", key=key)
        if not -len(stages) <= index < len(stages):
            raise SettingError(f"{self.name}: {{key}}={index}, but the {who} ({type(model).__name__}) has "
                               f"{len(stages)} stages (0 to {len(stages) - 1})", key=key)
        return stages[index]
