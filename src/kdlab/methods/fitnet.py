"""FitNets (Romero et al., ICLR 2015): the student's hint layer, through a trainable convolutional regressor, is
fitted to the teacher's guided layer by mean squared error — trained jointly with CE, as mdistiller and the CRD
benchmark do (the paper's two stages are not implemented; docs/methods/fitnet.md)."""

from __future__ import annotations

import math

from pydantic import Field
from torch import nn

from kdlab._checks import SettingError
from kdlab.losses import fitnet_loss
from kdlab.methods.feature import FeatureLossMethod, FeatureParams, picked, size
from kdlab.methods.registry import register

_LAYERS = {1: (nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)}


class FitNetParams(FeatureParams):
    """mdistiller's CIFAR-100 defaults (``cfg.FITNET``): CE 1, hint 100, hint layer 2 of both networks."""

    feat_weight: float = Field(100.0, ge=0)
    student_stage: int = 2  # mdistiller's HINT_LAYER: an index into forward_features' stages (0 = the stem)
    teacher_stage: int = 2


def regressor(s_shape: tuple[int, ...], t_shape: tuple[int, ...]) -> nn.Sequential:
    """mdistiller's ConvReg, for 1-D or 2-D maps: conv → BN → ReLU from the student's map [N, C_s, H_s, ...] to the
    teacher's [N, C_t, H_t, ...]. H_s = 2·H_t: 3×3 conv, stride 2; 2·H_s = H_t: 4×4 transposed conv, stride 2;
    H_s ≥ H_t otherwise: a conv of kernel 1 + H_s − H_t (per axis), without padding."""
    conv, up, bn = _LAYERS[len(s_shape) - 2]
    (c_s, h_s), (c_t, h_t) = s_shape[1:3], t_shape[1:3]
    if h_s == 2 * h_t:
        layer = conv(c_s, c_t, 3, stride=2, padding=1)
    elif 2 * h_s == h_t:
        layer = up(c_s, c_t, 4, stride=2, padding=1)
    elif h_s >= h_t:
        layer = conv(c_s, c_t, tuple(1 + a - b for a, b in zip(s_shape[2:], t_shape[2:])))
    else:
        raise SettingError(f"fitnet: the student's hint map {tuple(s_shape[1:])} is smaller than the teacher's "
                           f"{tuple(t_shape[1:])} by other than a factor 2, which the regressor cannot map; choose "
                           "other stages in {s} / {t}", s="method.args.student_stage", t="method.args.teacher_stage")
    return nn.Sequential(layer, bn(c_t), nn.ReLU())


@register("fitnet")
class FitNet(FeatureLossMethod):
    """L = w_ce·CE(z, y) + w_hint·mean((r(f_s) − f_t)²), f_s and f_t the maps of stages ``student_stage`` and
    ``teacher_stage``, r the regressor (:func:`regressor`), trained with the student."""

    summary = "FitNets (Romero et al. 2015): the student's hint map, through a conv regressor, matches the teacher's"
    Params = FitNetParams

    @classmethod
    def stiffness(cls, hp, stages):
        """1/√(C_t·P_t) of the teacher's hint stage: the mean over the C_t·P_t values of the regressor's output gives
        each value a gradient 2Δ/(C_t·P_t), and Δ ~ δ for a relative mismatch δ of unit-RMS maps, so
        ‖∂L/∂r‖ = 2δ/√(C_t·P_t). On the MNIST-1D hint (64 channels × 20) that is 5.1× CIFAR-100's (128 × 16×16), so
        the default weight 100 becomes 19.8."""
        c, p = size(picked(stages["teacher"], hp.teacher_stage)[0])
        return 1 / math.sqrt(c * p)

    def hint_maps(self, student: dict, teacher: dict):
        return self.stage(student, "student", self.hp.student_stage), self.stage(teacher, "teacher",
                                                                                 self.hp.teacher_stage)

    def build_extras(self, student: dict, teacher: dict) -> dict[str, nn.Module]:
        f_s, f_t = self.hint_maps(student, teacher)
        if f_s.dim() not in (3, 4) or f_t.dim() != f_s.dim():
            raise SettingError(f"fitnet: the hint maps must be feature maps of one kind ([N, C, L] or [N, C, H, W]); "
                               f"got {tuple(f_s.shape)} and {tuple(f_t.shape)}: choose other stages in {{s}} / {{t}}",
                               s="method.args.student_stage", t="method.args.teacher_stage")
        return {"regressor": regressor(tuple(f_s.shape), tuple(f_t.shape))}

    def feature_loss(self, student: dict, teacher: dict):
        f_s, f_t = self.hint_maps(student, teacher)
        return fitnet_loss(self.regressor(f_s), f_t)
