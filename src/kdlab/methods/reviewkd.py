"""ReviewKD (Chen et al., CVPR 2021, "Distilling Knowledge via Knowledge Review"; docs/reference/methods.md §16).

The student's features are reviewed from the deepest to the shallowest: an attention-based fusion module (ABF) per
level maps the student's feature to a mid width, fuses it with the (upsampled) result of the level below, and maps
it to the teacher's width and size; the hierarchical context loss (:func:`kdlab.losses.hcl_loss`) compares each
level's output with the teacher's pre-ReLU feature of that level.

Levels: the teacher's backbone stages after its stem plus its pooled feature (as a 1×1 map), and as many of the
student's last backbone stages plus its pooled feature (post-ReLU features, or pre-ReLU with ``student_preact``, as
mdistiller's ``STU_PREACT``). Channels and sizes are read from a real batch, so every pair works without the
per-pair channel lists of the released configs (which this rule reproduces, docs/methods/reviewkd.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdlab._checks import SettingError
from kdlab.losses import hcl_loss
from kdlab.methods.base import Params, StepOutput, scaled_warmup, warmup_factor
from kdlab.methods.feature import FeatureMethod
from kdlab.methods.registry import register


class ReviewKDParams(Params):
    """mdistiller's CIFAR-100 defaults (``engine/cfg.py``; the weight 1 there, 5 in its resnet32x4 → resnet8x4
    config); the mid width as the released code. Left at its default, the warm-up is fitted to the run's length."""

    ce_weight: float = Field(1.0, ge=0)
    reviewkd_weight: float = Field(1.0, ge=0)
    warmup: int = Field(20, ge=0)  # epochs of linear warm-up of the ReviewKD term (1 on ImageNet)
    student_preact: bool = False  # the student's pre-ReLU features (mdistiller's STU_PREACT; True on ImageNet)
    mid_channels: int | None = Field(None, ge=1)  # the ABFs' width; None: min(512, student's pooled width)


class ABF(nn.Module):
    """Attention-based fusion: x ← BN(conv1×1(x)) to the mid width; with a residual y from the level below,
    x ← x·a₀ + up(y)·a₁ where (a₀, a₁) = σ(conv1×1([x, up(y)])) per position and up is nearest-neighbour resizing
    to x's size; x is resized (nearest) to the teacher's size; output BN(conv3×3(x)) at the teacher's width, and x
    as the residual of the next level."""

    def __init__(self, dims: int, c_in: int, mid: int, c_out: int, fuse: bool):
        super().__init__()
        conv, bn = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
        self.conv1 = nn.Sequential(conv(c_in, mid, 1, bias=False), bn(mid))
        self.conv2 = nn.Sequential(conv(mid, c_out, 3, padding=1, bias=False), bn(c_out))
        self.att_conv = nn.Sequential(conv(2 * mid, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)  # the reference's initialisation
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_size: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=x.shape[2:], mode="nearest")
            att = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * att[:, :1] + residual * att[:, 1:2]
        if tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.conv2(x), x


def _as_map(pooled: Tensor, dims: int) -> Tensor:
    """The pooled feature [N, C] as a 1×1 (or length-1) map."""
    return pooled.view(*pooled.shape, *([1] * dims))


@register("reviewkd")
class ReviewKD(FeatureMethod):
    """L = w_ce·CE(z, y) + min(epoch/warmup, 1)·w_review·HCL(review(student levels), teacher levels).

    review: from the deepest level (the pooled feature) up, out_l, r_l = ABF_l(s_l, r_(l+1)); HCL
    (:func:`kdlab.losses.hcl_loss`) sums over the levels.
    """

    summary = "ReviewKD (Chen et al. CVPR 2021): student levels fused deep-to-shallow (ABF), hierarchical context loss"

    Params = ReviewKDParams
    labels_only_in_ce = True  # the labels enter through CE alone: distill_data's unlabelled inputs are fine

    @classmethod
    def _adaptations(cls, hp, facts, given):
        """The 20-epoch warm-up of the CIFAR-100 recipe, as DKD's, scaled to a shorter run (:func:`scaled_warmup`)."""
        return scaled_warmup(hp, facts, given)

    def preact(self, who: str) -> bool:
        return who == "teacher" or self.hp.student_preact

    def levels(self, features: dict, who: str) -> list[Tensor]:
        """``who``'s review levels, shallowest first: backbone stages (the teacher's after its stem; pre-ReLU for the
        teacher and with ``student_preact``) and the pooled feature as a 1×1 map."""
        maps = self.backbone(features["preact" if self.preact(who) else "stages"], who)
        if who == "teacher":
            maps = maps[1:]
        net = type(self.network(who)).__name__
        if not maps:
            raise SettingError(f"reviewkd reads the {who}'s stage features, but the {who} ({net}) gives none (a kdlab "
                               f"zoo architecture has them): choose a zoo network as {{net}}", net=f"{who}.arch")
        if maps[-1].dim() not in (3, 4):
            raise SettingError(f"reviewkd needs convolutional stage maps ([N, C, L] or [N, C, H, W]) from the {who} "
                               f"({net}); choose another {{net}}", net=f"{who}.arch")
        return maps + [_as_map(features["pooled"], maps[-1].dim() - 2)]

    def build_extras(self, student: dict, teacher: dict) -> dict[str, nn.Module]:
        """One ABF per level, from the student's channels to the teacher's, at the mid width."""
        s, t = self.levels(student, "student"), self.levels(teacher, "teacher")
        n = min(len(s), len(t))
        s, t = s[-n:], t[-n:]
        self._n = n
        self._out_sizes = [tuple(m.shape[2:]) for m in t]
        for i, (a, b) in enumerate(zip(s, t)):
            if a.dim() != b.dim():
                raise SettingError(f"reviewkd: student level {i} is {tuple(a.shape)} but the teacher's is "
                                   f"{tuple(b.shape)}; choose a {{student}} and {{teacher}} with maps of one kind",
                                   student="student.arch", teacher="teacher.arch")
        mid = self.hp.mid_channels or min(512, s[-1].shape[1])
        dims = s[-1].dim() - 2
        abfs = [ABF(dims, a.shape[1], mid, b.shape[1], fuse=i < n - 1) for i, (a, b) in enumerate(zip(s, t))]
        return {"abfs": nn.ModuleList(abfs)}

    def review(self, levels: list[Tensor]) -> list[Tensor]:
        """The fused student levels, shallowest first, each at the teacher's width and size."""
        out, residual = [], None
        for i in reversed(range(self._n)):
            y, residual = self.abfs[i](levels[i], residual, self._out_sizes[i])
            out.append(y)
        return out[::-1]

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z, s_feats = self.student_features(batch.x)
        v, t_feats = self.teacher_features(batch.x)
        students = self.review(self.levels(s_feats, "student")[-self._n:])
        teachers = self.levels(t_feats, "teacher")[-self._n:]
        w = warmup_factor(epoch, hp.warmup)
        losses = {"ce": hp.ce_weight * self.masked_ce(z, batch),
                  "reviewkd": w * hp.reviewkd_weight * hcl_loss(students, teachers)}
        return StepOutput(z, losses, v, logs={"warmup": torch.tensor(w, device=z.device)})
