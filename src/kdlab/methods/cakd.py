"""CAKD (Zhang et al. 2024, correlation-aware decoupled KL; docs/reference/methods.md §4) at the logit and feature
level.

The exact decomposition KL(p^t‖p^s) = BCD + p^t_S·SCD + p^t_W·WCD (S: classes strongly correlated with the sample,
chosen from the teacher; W: the rest) is turned into a loss by replacing the teacher-dependent coefficients with
hyperparameters: T²·batch-mean(γ·BCD + α·SCD + β·WCD). The paper's rule for S and its per-pair α/β are not public;
``strong_set="topk"`` (k=5) is this project's default and :meth:`CAKD.describe` reports the rule in use.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from kdlab.losses import cakd_loss, kl_decomposition, strong_set_mass, strong_set_target, strong_set_topk
from kdlab._checks import SettingError
from kdlab.methods.base import (CIFAR_CLASSES, Adaptation, Params, StepOutput, defaults_left, scaled_by_classes,
                               scaled_warmup, warmup_factor)
from kdlab.methods.feature import FeatureMethod
from kdlab.methods.registry import register


class CAKDParams(Params):
    """Logit level: DKD's CIFAR-100 recipe (CE 1, T=4, 20-epoch warm-up, β per pair). Feature level: chosen defaults
    (docs/reference/methods.md §4). Left at their defaults, k and the warm-up are fitted to the run
    (:meth:`CAKD._adaptations`)."""

    removed = {"input_shape": "the feature shapes are read from a batch of the data"}

    # logit level
    logit: bool = True
    strong_set: Literal["target", "topk", "mass"] = "topk"
    k: int = Field(5, ge=1)  # topk: size of S
    mass: float = Field(0.9, gt=0, le=1)  # mass: probability that S must reach
    mass_temperature: float = Field(1.0, gt=0)  # mass: S is chosen from softmax(v / this), the teacher's own probs
    gamma: float = Field(1.0, ge=0)  # BCD weight (binary S-vs-W part)
    alpha: float = Field(1.0, ge=0)  # SCD weight (within S)
    beta: float = Field(8.0, ge=0)  # WCD weight (within W)
    temperature: float = Field(4.0, gt=0)
    warmup: int = Field(20, ge=0)  # linear warm-up (epochs) of every distillation term, as in DKD
    ce_weight: float = Field(1.0, ge=0)
    logit_standardization: bool = False
    # feature level (last-stage maps; the paper's recipe is unknown, these are this project's defaults)
    feature: bool = False
    feature_temperature: float = Field(4.0, gt=0)  # τ_f of the per-channel spatial softmax
    feature_top_fraction: float = Field(0.1, gt=0, le=1)  # S = the teacher's top fraction of positions per channel
    feature_gamma: float | None = Field(None, ge=0)  # BCD weight; None: the logit-level γ
    feature_alpha: float = Field(1.0, ge=0)  # α_f, SCD weight
    feature_beta: float = Field(8.0, ge=0)  # β_f, WCD weight
    # the module (a path of model.named_modules(), e.g. "layer3" or "features.5") whose output is the feature map;
    # None: the last stage of the model's own forward_features (every zoo model has one)
    student_stage: str | None = None
    teacher_stage: str | None = None

    @model_validator(mode="after")
    def _some_level(self):
        if not (self.logit or self.feature):
            raise ValueError("at least one of `logit` and `feature` must be true (otherwise CAKD adds no loss)")
        return self


def _conv_bn(dims: int, c_in: int, c_out: int) -> nn.Sequential:
    conv, bn = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
    return nn.Sequential(conv(c_in, c_out, kernel_size=1, bias=False), bn(c_out))


@register("cakd")
class CAKD(FeatureMethod):
    """L = w_ce·CE(z, y) + min(epoch/warmup, 1)·(L_logit + L_feat), where

    L_logit = T²·batch-mean(γ·BCD + α·SCD + β·WCD) on the logits with S from ``strong_set``, and
    L_feat  = τ_f²·mean over (sample, channel) of (γ_f·BCD + α_f·SCD + β_f·WCD) on the last-stage feature maps, each
    channel's map read as a distribution over spatial positions (softmax at τ_f), with S = the teacher's top
    ``feature_top_fraction`` positions of that channel. The student map goes through a trainable 1×1 conv + BN
    connector to the teacher's channel count and is resized (bilinear; linear for 1-D maps) to the teacher's size.
    """

    term_weights = ("gamma", "alpha", "beta")

    summary = "CAKD (Zhang et al. 2024): KL split by classes the teacher finds strongly or weakly related; logits, maps"

    Params = CAKDParams

    @classmethod
    def loss_weights(cls, hp: CAKDParams) -> dict[str, float]:
        """The logit level's γ, α, β where it is on, and the feature level's where it is on."""
        logit = super().loss_weights(hp) if hp.logit else {}
        gamma = hp.gamma if hp.feature_gamma is None else hp.feature_gamma
        feature = {"feature_gamma": gamma, "feature_alpha": hp.feature_alpha, "feature_beta": hp.feature_beta}
        return {**logit, **(feature if hp.feature else {})}

    @classmethod
    def _adaptations(cls, hp, facts, given):
        """Defaults fitted to the run: the top-k strong set keeps at least one weakly correlated class
        (k ≤ C − 1, the CIFAR-100 default k = 5 otherwise leaves W empty or exceeds C), the warm-up is DKD's share of
        the run (:func:`scaled_warmup`), and β, the weight of WCD (a KL between softmaxes over the |W| weakly
        correlated classes: C − k with top-k, C − 1 with S = {y}; 95 and 99 on CIFAR-100), is scaled by
        |W|/|W_CIFAR-100| for fewer classes, because WCD's curvature in the logits is about 1/|W| (as DKD's β,
        :func:`~kdlab.methods.base.scaled_by_classes`; β = 8 diverges on 10-class digits at lr 0.05). The "mass" rule's
        |W| depends on the teacher's outputs, so its β is not adapted."""
        left, c = defaults_left(hp, given), facts.num_classes
        changes = scaled_warmup(hp, facts, given)
        k = hp.k
        if hp.strong_set == "topk":
            if "k" in left and hp.k >= c:
                k = max(1, c - 1)
                changes.append(Adaptation("k", hp.k, k, f"the CIFAR-100 default strong set of {hp.k} "
                                                        f"classes, clamped to C − 1 for {c} classes"))
            elif hp.k > c:
                raise SettingError(f"cakd: {{k}}={hp.k} exceeds the number of classes ({c}); use at most {c - 1}",
                                   k="method.args.k")
        if hp.logit and hp.strong_set != "mass":
            weak, cifar_weak = (c - k, CIFAR_CLASSES - hp.k) if hp.strong_set == "topk" else (c - 1, CIFAR_CLASSES - 1)
            changes += scaled_by_classes(hp, facts, given, "beta", weak, cifar_weak,
                                         f"WCD's weight for CIFAR-100's {cifar_weak} weakly correlated classes, scaled "
                                         f"by |W|/{cifar_weak} to {weak}")
        return changes

    @classmethod
    def cacheable(cls, hp: CAKDParams) -> bool:  # the feature level reads the teacher's maps, which are not cached
        return not hp.feature

    def uses_features(self) -> bool:
        return self.hp.feature

    def stage_paths(self, who: str) -> list[str] | None:
        path = getattr(self.hp, f"{who}_stage")
        return [path] if path else None

    def build_extras(self, student: dict, teacher: dict) -> dict[str, nn.Module]:
        """The connector: a 1×1 conv + BN from the student's last-stage channels to the teacher's."""
        s_map, t_map = self.stage(student, "student"), self.stage(teacher, "teacher")
        if s_map.dim() not in (3, 4) or t_map.dim() != s_map.dim():
            raise SettingError(
                "cakd feature level needs convolutional feature maps of the same kind ([N, C, L] or [N, C, H, W]) "
                f"from student and teacher; got shapes {tuple(s_map.shape)} and {tuple(t_map.shape)}. Name other "
                "modules in {student_stage} / {teacher_stage}, or set {feature} to false for networks without "
                "feature maps", student_stage="method.args.student_stage", teacher_stage="method.args.teacher_stage",
                feature="method.args.feature")
        return {"connector": _conv_bn(s_map.dim() - 2, s_map.shape[1], t_map.shape[1])}

    def strong_mask(self, v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """S per sample from the teacher logits ``v`` (standardised when the switch is on), bool [N, C], no gradient."""
        hp = self.hp
        if hp.strong_set == "target":
            return strong_set_target(target, v.shape[1])
        if hp.strong_set == "topk":
            if hp.k > v.shape[1]:
                raise SettingError(f"cakd: {{k}}={hp.k} exceeds the number of classes ({v.shape[1]}); use at most "
                                   f"{v.shape[1] - 1}", k="method.args.k")
            return strong_set_topk(v, k=hp.k)
        return strong_set_mass(v, threshold=hp.mass, temperature=hp.mass_temperature)

    def feature_loss(self, s_map: torch.Tensor, t_map: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """τ_f²·mean_(n,c)(γ_f·BCD + α_f·SCD + β_f·WCD) between connected student maps and teacher maps."""
        hp = self.hp
        s = self.connector(s_map)
        if s.shape[2:] != t_map.shape[2:]:
            mode = "bilinear" if s.dim() == 4 else "linear"
            s = F.interpolate(s, size=t_map.shape[2:], mode=mode, align_corners=False)
        # every (sample, channel) becomes one row: a distribution over its spatial positions
        s_rows, t_rows = s.flatten(2).flatten(0, 1), t_map.flatten(2).flatten(0, 1)
        positions = t_rows.shape[1]
        if positions < 2:
            raise SettingError(
                f"cakd feature level needs maps with at least 2 spatial positions; the teacher's map has "
                f"{tuple(t_map.shape[2:])}. Use a larger input, an earlier stage in {{stage}}, or set {{feature}} to "
                "false", stage="method.args.teacher_stage", feature="method.args.feature")
        k = min(positions, max(1, round(hp.feature_top_fraction * positions)))
        mask = strong_set_topk(t_rows, k=k)
        bcd, scd, wcd = kl_decomposition(s_rows, t_rows, mask, temperature=hp.feature_temperature)
        gamma = hp.gamma if hp.feature_gamma is None else hp.feature_gamma
        per_row = gamma * bcd + hp.feature_alpha * scd + hp.feature_beta * wcd
        loss = hp.feature_temperature**2 * per_row.mean()
        return loss, {"feat_bcd": bcd.mean().detach(), "feat_scd": scd.mean().detach(), "feat_wcd": wcd.mean().detach()}

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        w = warmup_factor(epoch, hp.warmup)
        losses: dict[str, torch.Tensor] = {}
        if hp.feature:
            z, s_feats = self.student_features(batch.x)
            v, t_feats = self.teacher_features(batch.x)  # one teacher pass gives both its logits and its map
            s_map, t_map = self.stage(s_feats, "student"), self.stage(t_feats, "teacher")
        else:
            z = self.student(batch.x)
            v = self.teacher.logits_for_batch(batch)
        logs: dict[str, torch.Tensor] = {"warmup": torch.tensor(w, device=z.device)}
        losses["ce"] = hp.ce_weight * self.masked_ce(z, batch)
        if hp.logit:
            zs, vs = self.standardize(z, v)
            mask = self.strong_mask(vs, batch.y)
            losses["cakd"] = w * cakd_loss(
                zs, vs, mask, alpha=hp.alpha, beta=hp.beta, gamma=hp.gamma, temperature=hp.temperature
            )
            logs["strong_set_size"] = mask.sum(dim=1).float().mean()
        if hp.feature:
            feat, feat_logs = self.feature_loss(s_map, t_map)
            losses["cakd_feat"] = w * feat
            logs.update(feat_logs)
        return StepOutput(z, losses, v, logs)

    def describe(self) -> dict:
        """The configuration a report must state: which strong-set rule, and which levels."""
        hp = self.hp
        rules = {"target": "S = {y} (equals DKD)", "topk": f"S = teacher top-{hp.k} classes",
                 "mass": f"S = smallest teacher set with softmax(v/{hp.mass_temperature}) mass >= {hp.mass}"}
        rule = rules[hp.strong_set]
        out = {"method": "cakd", "strong_set": hp.strong_set, "strong_set_rule": rule, "logit": hp.logit,
               "feature": hp.feature}
        if hp.feature:
            out["feature_rule"] = (
                f"last-stage maps, 1x1 conv+BN connector, spatial softmax at tau_f={hp.feature_temperature}, "
                f"S = teacher top {hp.feature_top_fraction:.0%} positions per channel"
            )
        return out
