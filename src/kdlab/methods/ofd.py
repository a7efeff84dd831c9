"""OFD (Heo et al., ICCV 2019, "A Comprehensive Overhaul of Feature Distillation"; docs/reference/methods.md §14).

The student's pre-ReLU stage features, through a trainable conv + BN connector each, are matched to the teacher's
pre-ReLU features with OFD's partial L2 distance (:func:`kdlab.losses.ofd_loss`); the teacher's per-channel margins
come from the BatchNorm before each of its stage ReLUs (:func:`kdlab.losses.ofd_margin`), computed once.

Stages: the backbone stages after the first (the stem) of each network, paired from the deepest one back, as many
as both have (``stages`` pairs fewer) — the released OFD code's positions and mdistiller's rule. Where the stage
lists of kdlab's zoo and mdistiller's models differ (mdistiller's MobileNetV1 list lacks the stem, so it pairs one
stage fewer there), kdlab follows the paper's code; docs/methods/ofd.md says where.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from pydantic import Field, model_validator
from torch import nn

from kdlab import distributed as dist
from kdlab._checks import SettingError
from kdlab.losses import ofd_loss, ofd_margin
from kdlab.methods.base import Params, StepOutput
from kdlab.methods.feature import FeatureMethod
from kdlab.methods.registry import register


class OFDParams(Params):
    """mdistiller's CIFAR-100 defaults (``engine/cfg.py``: CE 1, feature weight 10⁻³, 1×1 connectors)."""

    ce_weight: float = Field(1.0, ge=0)
    feat_weight: float = Field(1e-3, ge=0)  # 1e-4 on ImageNet (mdistiller configs/imagenet/r50_mv1/ofd.yaml)
    connector_kernel: int = Field(1, ge=1)  # odd: the connector keeps the student's spatial size
    stages: int | None = Field(None, ge=1)  # pair only the deepest `stages` stages; None: as many as both have
    # the teacher's BatchNorms normalise by the batch's statistics, as the OFD authors' code and mdistiller run the
    # teacher in training mode (its running statistics are left as they are); false: the frozen teacher's
    teacher_batch_statistics: bool = True

    @model_validator(mode="after")
    def _odd_kernel(self):
        if self.connector_kernel % 2 == 0:
            raise ValueError(f"connector_kernel must be odd (the connector keeps the map size); got "
                             f"{self.connector_kernel}")
        return self


def connector(dims: int, c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """conv(k×k, no bias) + BN from the student's channels to the teacher's; conv ~ N(0, 2/(k^d·C_out)), BN γ=1 β=0
    (the reference's initialisation)."""
    conv_cls, bn_cls = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
    conv = conv_cls(c_in, c_out, kernel, padding=(kernel - 1) // 2, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel**dims * c_out)))
    bn = bn_cls(c_out)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return nn.Sequential(conv, bn)


class Margins(nn.Module):
    """The teacher's per-channel margins, one buffer per paired stage (not persistent: a function of the frozen
    teacher, computed again at set-up)."""

    def __init__(self, margins: list[torch.Tensor]):
        super().__init__()
        self.count = len(margins)
        for i, m in enumerate(margins):
            self.register_buffer(f"m{i}", m, persistent=False)

    def values(self) -> list[torch.Tensor]:
        return [getattr(self, f"m{i}") for i in range(self.count)]


@register("ofd")
class OFD(FeatureMethod):
    """L = w_ce·CE(z, y) + w_feat·Σ_i 2^−(k−1−i)·(1/N)·Σ d_p(connector_i(s_i), t_i), over the k paired stages.

    s_i, t_i: pre-ReLU features of the paired stages (the teacher's average-pooled to the student's size; by default
    its BatchNorms normalise by the batch's statistics, as the reference runs the teacher in training mode); d_p:
    OFD's partial L2 with the teacher's margins (:func:`kdlab.losses.ofd_loss`).
    """

    summary = "OFD (Heo et al. ICCV 2019): pre-ReLU stage features, margin from the teacher's BN, partial L2"

    Params = OFDParams
    labels_only_in_ce = True  # the labels enter through CE alone: distill_data's unlabelled inputs are fine

    def preact(self, who: str) -> bool:
        return True

    def pairs(self, student: dict, teacher: dict) -> list[tuple[int, int]]:
        """(student stage, teacher stage) indices of the paired stages, shallowest first."""
        s_n = len(self.backbone(student["preact"], "student"))
        t_n = len(self.backbone(teacher["preact"], "teacher"))
        k = min(s_n, t_n) - 1
        if k < 1:
            raise SettingError(
                f"ofd pairs the stages after the first (the stem) of both networks, but the student "
                f"({type(self.student).__name__}) has {s_n} and the teacher ({type(self.teacher.module).__name__}) "
                f"{t_n} backbone stages; choose a {{student}} and a {{teacher}} with at least 2 stages each",
                student="student.arch", teacher="teacher.arch")
        if self.hp.stages is not None:
            if self.hp.stages > k:
                raise SettingError(f"ofd: {{stages}}={self.hp.stages}, but the student and the teacher have only {k} "
                                   f"stage pairs after their stems", stages="method.args.stages")
            k = self.hp.stages
        return [(s_n - k + i, t_n - k + i) for i in range(k)]

    def build_extras(self, student: dict, teacher: dict) -> dict[str, nn.Module]:
        """One connector per stage pair, and the teacher's margins from the BatchNorm before each paired ReLU."""
        self._pairs = self.pairs(student, teacher)
        norms = self.teacher.module.stage_norms()
        connectors, margins = [], []
        for s_i, t_i in self._pairs:
            s, t = student["preact"][s_i], teacher["preact"][t_i]
            if s.dim() not in (3, 4) or t.dim() != s.dim():
                raise SettingError(f"ofd needs convolutional maps of one kind from both networks ([N, C, L] or "
                                   f"[N, C, H, W]); student stage {s_i} is {tuple(s.shape)}, teacher stage {t_i} "
                                   f"{tuple(t.shape)}: choose another {{student}} or {{teacher}}",
                                   student="student.arch", teacher="teacher.arch")
            bn = norms[t_i]
            if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.affine:
                raise SettingError(
                    f"ofd computes its margin from the BatchNorm before the teacher's ReLU, but the teacher "
                    f"({type(self.teacher.module).__name__}) has none before stage {t_i}; choose a {{teacher}} whose "
                    f"stages end in BatchNorm and ReLU (a ShuffleNet's end in a sum or a concatenation: mdistiller "
                    f"refuses it as an OFD teacher too)", teacher="teacher.arch")
            connectors.append(connector(s.dim() - 2, s.shape[1], t.shape[1], self.hp.connector_kernel))
            margins.append(ofd_margin(bn.weight, bn.bias).float())
        return {"connectors": nn.ModuleList(connectors), "margins": Margins(margins)}

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z, s_feats = self.student_features(batch.x)
        with dist.batch_statistics(self.teacher.module) if hp.teacher_batch_statistics else nullcontext():
            v, t_feats = self.teacher_features(batch.x)  # one teacher pass: its logits and pre-activations
        students = [c(s_feats["preact"][s_i]) for c, (s_i, _) in zip(self.connectors, self._pairs)]
        teachers = [t_feats["preact"][t_i] for _, t_i in self._pairs]
        losses = {"ce": hp.ce_weight * self.masked_ce(z, batch),
                  "ofd": hp.feat_weight * ofd_loss(students, teachers, self.margins.values())}
        return StepOutput(z, losses, v)
