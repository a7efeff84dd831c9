"""Variational information distillation (Ahn et al., CVPR 2019): per stage, a regressor predicts the teacher's map
from the student's as the mean of a Gaussian with a learned per-channel variance (docs/methods/vid.md)."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from kdlab.losses import pool_to_match, vid_loss
from kdlab.methods.feature import FeatureLossMethod, StagesParams
from kdlab.methods.registry import register


class VIDParams(StagesParams):
    """mdistiller's CIFAR-100 defaults (``cfg.VID``): CE 1, VID 1, initial variance 5, ε = 1e-5, every stage after
    the stem. ``learn_variance`` (the paper's, and the CRD benchmark's): mdistiller keeps it fixed at its initial
    value (its log-scales are not registered parameters); false reproduces that."""

    init_pred_var: float = Field(5.0, gt=0)
    eps: float = Field(1e-5, gt=0)
    learn_variance: bool = True


class Regressor(nn.Module):
    """μ(f_s) = 1×1 conv (C_s → C_t) → ReLU → 1×1 conv → ReLU → 1×1 conv, no biases; and α [C_t], the
    pre-softplus variance, initialised so that softplus(α) + ε = ``init_var``."""

    def __init__(self, dims: int, c_s: int, c_t: int, init_var: float, eps: float, learn: bool):
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.mean = nn.Sequential(conv(c_s, c_t, 1, bias=False), nn.ReLU(), conv(c_t, c_t, 1, bias=False), nn.ReLU(),
                                  conv(c_t, c_t, 1, bias=False))
        alpha = torch.full((c_t,), math.log(math.expm1(init_var - eps)))
        self.log_scale = nn.Parameter(alpha, requires_grad=learn)


@register("vid")
class VID(FeatureLossMethod):
    """L = w_ce·CE(z, y) + w_vid·Σ_stages mean(½((μ(f_s) − f_t)²/σ²_c + log σ²_c)), maps pooled to a common size
    first; μ and σ² = softplus(α) + ε trained with the student."""

    summary = "VID (Ahn et al. 2019): per stage, a regressor's Gaussian with learned variance explains the teacher"
    Params = VIDParams

    def build_extras(self, student: dict, teacher: dict) -> dict[str, nn.Module]:
        hp = self.hp
        return {"regressors": nn.ModuleList(
            Regressor(f_s.dim() - 2, f_s.shape[1], f_t.shape[1], hp.init_pred_var, hp.eps, hp.learn_variance)
            for f_s, f_t in zip(*self.paired_stages(student, teacher)))}

    def feature_loss(self, student: dict, teacher: dict):
        total = 0
        for reg, f_s, f_t in zip(self.regressors, *self.paired_stages(student, teacher), strict=True):
            f_s, f_t = pool_to_match(f_s, f_t)
            total = total + vid_loss(reg.mean(f_s), f_t, reg.log_scale, self.hp.eps)
        return total
