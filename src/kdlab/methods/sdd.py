"""SDD (Wei & Bai et al., CVPR 2024, scale decoupled distillation; docs/reference/methods.md §22).

Both networks' final feature maps (before global pooling) are average-pooled onto a 4×4 grid, and from it onto
2×2 and 1×1 (the released ``SPP`` module); each region's pooled feature goes through the network's own classifier,
giving logits per region [N, C, R] (region 0 = the 1×1 one = the global logits when the map's side is a multiple of
4). A logit loss (KD or DKD) is applied to every region, regions whose teacher prediction disagrees in correctness
with the global one weighted up (``kdlab.losses.sdd_loss``). The teacher's maps come from a live forward, so no
logit cache can serve SDD.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from kdlab._checks import SettingError
from kdlab.losses import sdd_loss
from kdlab.methods.base import Method, Params, StepOutput, nckd_beta, scaled_warmup, warmup_factor
from kdlab.methods.registry import register
from kdlab.models import forward_features
from kdlab.models.features import classifier_of
from kdlab.teachers import Ensemble

#: side of the grid every region is pooled from (the released SPP pools the map to 4×4 first)
GRID = 4


def region_logits(feature_map: torch.Tensor, classifier: nn.Module, scales: list[int]) -> torch.Tensor:
    """[N, C, R] logits of the regions of ``feature_map`` ([N, D, H, W] or [N, D, L]): the map average-pooled onto a
    4×4 (1-D: 4) grid, each scale s of ``scales`` pooled from that grid to s×s, the regions in order (scale by scale,
    row-major), each region's D-vector through ``classifier``."""
    pool = F.adaptive_avg_pool2d if feature_map.dim() == 4 else F.adaptive_avg_pool1d
    grid = pool(feature_map, GRID)
    parts = [(grid if s == GRID else pool(grid, s)).flatten(2) for s in scales]
    regions = torch.cat(parts, dim=2)  # [N, D, R]
    return classifier(regions.transpose(1, 2)).transpose(1, 2)


class SDDParams(Params):
    """Class defaults: SD-DKD on CIFAR-100 as released (scales 1, 2, 4; DKD α = 1, β = 8, T = 4, CE 1, 20-epoch
    warm-up; complementary regions weighted 2). SD-KD: ``base: kd`` with CE 0.1, weight 0.9, no warm-up."""

    base: Literal["kd", "dkd"] = "dkd"
    scales: list[int] = Field(default_factory=lambda: [1, 2, 4])  # the released M: [1,2,4] or [1,2]
    temperature: float = Field(4.0, gt=0)
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0)  # weight of the SDD term
    alpha: float = Field(1.0, ge=0)  # base dkd: TCKD weight
    beta: float = Field(8.0, ge=0)  # base dkd: NCKD weight
    warmup: int = Field(20, ge=0)  # linear warm-up of the SDD term (the released SD-DKD: 20; SD-KD: none)
    complementary_weight: float = Field(2.0, ge=0)
    logit_standardization: bool = False
    # the module (a path of model.named_modules()) whose output is the final feature map; None: the last stage of
    # the model's own forward_features (every zoo model has one)
    student_stage: str | None = None
    teacher_stage: str | None = None

    @field_validator("scales")
    @classmethod
    def _scales(cls, value: list[int]) -> list[int]:
        if not value or value[0] != 1 or any(s not in (1, 2, GRID) for s in value) or value != sorted(set(value)):
            raise ValueError(f"scales must be increasing, start with 1 (the global region) and use only 1, 2 and "
                             f"{GRID} (the released M: [1, 2, 4] or [1, 2]); got {value}")
        return value


@register("sdd")
class SDD(Method):
    """L = w_ce·CE(z, y) + min(epoch/warmup, 1)·w·sdd_loss(z_regions, v_regions, y), the regions' logits from the
    final feature maps through each network's classifier (:func:`region_logits`)."""

    term_weights = ("kd_weight", "complementary_weight", "alpha", "beta")

    summary = "SDD (Wei & Bai CVPR 2024): KD or DKD on the logits of multi-scale pooled regions of the feature map"

    Params = SDDParams

    @classmethod
    def _adaptations(cls, hp, facts, given):
        """The warm-up scaled to a shorter run; with base dkd, β·(C − 1)/99 for fewer classes, as DKD's
        (:meth:`~kdlab.methods.dkd.DKD._adaptations`: NCKD's stiffness grows as 1/(C − 1))."""
        return scaled_warmup(hp, facts, given) + (nckd_beta(hp, facts, given) if hp.base == "dkd" else [])

    def __init__(self, student, teacher, num_classes, params):
        super().__init__(student, teacher, num_classes, params)
        if isinstance(teacher.module, Ensemble):
            raise SettingError("sdd needs the teacher's feature map and classifier, which an ensemble teacher does "
                               "not have; give one {teacher}", teacher="teacher.checkpoint")
        classifier_of(student), classifier_of(teacher.module)  # both must have one (ValueError naming the model)

    def _map(self, model: nn.Module, feats: dict, who: str, head: nn.Module) -> torch.Tensor:
        if not feats["stages"]:
            children = ", ".join(name for name, _ in model.named_children()) or "none"
            raise SettingError(
                f"sdd: the {who} ({type(model).__name__}) has no forward_features, so name the module whose output "
                f"is its final feature map (the one its classifier's input is pooled from) in {{stage}}: a path of "
                f"model.named_modules() (top-level modules: {children})", stage=f"method.args.{who}_stage")
        fmap = feats["stages"][-1]
        if fmap.dim() not in (3, 4) or fmap.shape[1] != head.in_features:
            raise SettingError(
                f"sdd: the {who}'s final feature map has shape {tuple(fmap.shape)}, but its classifier takes "
                f"{head.in_features} features; name the module whose output is pooled into the classifier in "
                "{stage}", stage=f"method.args.{who}_stage")
        return fmap

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        s_path, t_path = hp.student_stage, hp.teacher_stage
        z, s_feats = forward_features(self.student, batch.x, [s_path] if s_path else None)
        v, t_feats = self.teacher.features(batch.x, [t_path] if t_path else None)
        # the heads are looked up, not stored: a stored module would become a submodule (the teacher's too)
        s_head, t_head = classifier_of(self.student), classifier_of(self.teacher.module)
        s_map = self._map(self.student, s_feats, "student", s_head)
        t_map = self._map(self.teacher.module, t_feats, "teacher", t_head)
        zr = region_logits(s_map, s_head, hp.scales)
        with torch.no_grad():
            vr = region_logits(t_map, t_head, hp.scales)
        zr, vr = self.standardize_regions(zr, vr)
        w = warmup_factor(epoch, hp.warmup)
        term = sdd_loss(zr, vr, batch.y, base=hp.base, temperature=hp.temperature, alpha=hp.alpha, beta=hp.beta,
                        complementary_weight=hp.complementary_weight)
        losses = {"ce": hp.ce_weight * self.masked_ce(z, batch), "sdd": w * hp.kd_weight * term}
        return StepOutput(z, losses, v, logs={"warmup": torch.tensor(w, device=z.device)})

    def standardize_regions(self, zr: torch.Tensor, vr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logit standardisation of every region's logits (over classes) when the switch is on."""
        if not self.hp.logit_standardization:
            return zr, vr
        zs, vs = self.standardize(zr.transpose(1, 2).flatten(0, 1), vr.transpose(1, 2).flatten(0, 1))
        n, c, r = zr.shape
        return zs.view(n, r, c).transpose(1, 2), vs.view(n, r, c).transpose(1, 2)

    def describe(self) -> dict:
        hp = self.hp
        return {"method": "sdd", "base": hp.base, "scales": hp.scales}
