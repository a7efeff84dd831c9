"""MobileNetV2 (Sandler et al., CVPR 2018) in the CIFAR variant of the KD benchmark ("mobile_half": width 0.5, t=6).

Differences from the ImageNet model, all kept because they fix the benchmark's parameter count and accuracy:
ReLU instead of ReLU6, the expansion 1x1 conv is present even when t = 1, the last 1x1 conv keeps 1280 channels
for width <= 1, and the stem conv has stride 2 (32 → 16 px; final map 2x2).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models._base import ZooModel, check_positive_int, conv_bn, init_weights
from kdlab.models.registry import register

# (expansion t — None means the model's expand_ratio —, output channels c, repeats n, first stride s)
_SETTING = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
            (None, 160, 3, 2), (None, 320, 1, 1)]  # fmt: skip


class InvertedResidual(nn.Module):
    """out = BN(pw(ReLU(BN(dw3x3_s(ReLU(BN(pw(x)))))))) (+ x when stride 1 and widths agree)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_residual = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            *conv_bn(inp, hidden, 1), nn.ReLU(inplace=True),
            *conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU(inplace=True),
            *conv_bn(hidden, oup, 1),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(ZooModel):
    """``stages`` = [stem, blocks[1], blocks[2], blocks[4], blocks[6], conv2] (16², 16², 8², 4², 2², 2²);
    ``pooled`` = GAP(conv2), dim 1280. ``conv2`` is a head stage (:attr:`ZooModel.head_stages`)."""

    head_stages = 1

    def __init__(self, num_classes: int, width_mult: float = 0.5, expand_ratio: int = 6, in_channels: int = 3):
        super().__init__()
        if not float(width_mult) > 0:
            raise ValueError(f"MobileNetV2: width_mult must be > 0, got {width_mult!r}")
        check_positive_int(expand_ratio, "expand_ratio", "MobileNetV2")
        self.in_channels = check_positive_int(in_channels, "in_channels", "MobileNetV2")
        width = int(32 * width_mult)
        self.conv1 = nn.Sequential(*conv_bn(in_channels, width, 3, stride=2), nn.ReLU(inplace=True))
        blocks = []
        for t, c, n, s in _SETTING:
            out = int(c * width_mult)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(width, out, s if i == 0 else 1, expand_ratio if t is None else t))
                width = out
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = nn.Sequential(*conv_bn(width, last, 1), nn.ReLU(inplace=True))
        self.feature_dim = last
        self.classifier = nn.Linear(last, num_classes)
        init_weights(self, linear="normal")

    def _stages(self, x: Tensor) -> list[Tensor]:
        out = self.conv1(x)
        stages = [out]
        for i, block in enumerate(self.blocks):
            out = block(out)
            if i in (1, 2, 4, 6):  # the last block at each resolution
                stages.append(out)
        stages.append(self.conv2(out))
        return stages

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        # stem and head: their BN output (before the ReLU); an inverted residual block ends without a ReLU, so its
        # output is its own pre-activation
        pre = self.conv1[1](self.conv1[0](x))
        out = F.relu(pre)
        stages, preacts = [out], [pre]
        for i, block in enumerate(self.blocks):
            out = block(out)
            if i in (1, 2, 4, 6):
                stages.append(out)
                preacts.append(out)
        pre = self.conv2[1](self.conv2[0](out))
        stages.append(F.relu(pre))
        preacts.append(pre)
        return stages, preacts

    def stage_norms(self) -> list[nn.Module]:
        return [self.conv1[1]] + [self.blocks[i][-1].conv[-1] for i in (1, 2, 4, 6)] + [self.conv2[1]]


@register("MobileNetV2", aliases=("mobile_half",))
def mobilenetv2(num_classes: int, width_mult: float = 0.5, expand_ratio: int = 6, in_channels: int = 3) -> MobileNetV2:
    """MobileNetV2: the benchmark's "mobile_half" (width 0.5, expansion 6) by default."""
    return MobileNetV2(num_classes, width_mult, expand_ratio, in_channels)
