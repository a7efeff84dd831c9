"""ImageNet MobileNetV2 (Sandler et al., CVPR 2018) with torchvision's parameter and buffer names and shapes, so a
torchvision state dict loads as it is (docs/reference/imagenet.md §3).

``features`` = stem conv3x3/2-BN-ReLU6, 17 inverted residual blocks (t, c, n, s) = (1, 16, 1, 1), (6, 24, 2, 2),
(6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1), and a 1x1 conv to 1280, each with
ReLU6 → global average pool → ``classifier`` = Dropout(0.2) → Linear. Unlike the CIFAR ``MobileNetV2`` of the KD
benchmark (width 0.5, ReLU, an expansion conv even where t = 1), this is torchvision's network.
"""

from __future__ import annotations

from torch import Tensor, nn

from kdlab.models._base import (ZooModel, check_positive_int, init_weights, preact_sequential,
                               sequential_stages)
from kdlab.models.registry import register

# (expansion t, output channels c, repeats n, first stride s), torchvision's inverted_residual_setting
_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1)]  # fmt: skip
# the last block of each resolution, and the final 1x1 conv: the indices in `features` returned as stages
_STAGE_ENDS = (0, 3, 6, 13, 17, 18)


def _divisible(v: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, never more than 10% below ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn_relu6(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: [Conv2d (no bias), BatchNorm2d, ReLU6] (keys ``.0`` and ``.1``)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """out = BN(pw(dw3x3_s(pw_expand(x)))) (+ x when stride 1 and widths agree); no expansion conv when t = 1."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = [_conv_bn_relu6(inp, hidden, 1)] if expand_ratio != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class ImageNetMobileNetV2(ZooModel):
    """``stages`` = outputs of features[0, 3, 6, 13, 17, 18] (strides 2, 4, 8, 16, 32, 32); ``pooled`` = GAP of the
    last, dimension 1280 (for width ≤ 1). ``classifier`` is torchvision's Sequential(Dropout(p), Linear). The last
    stage (``features[18]``, the 1x1 conv to 1280) is a head stage (:attr:`ZooModel.head_stages`)."""

    head_stages = 1

    def __init__(self, num_classes: int, width_mult: float = 1.0, dropout: float = 0.2, in_channels: int = 3):
        super().__init__()
        if not float(width_mult) > 0:
            raise ValueError(f"mobilenet_v2: width_mult must be > 0, got {width_mult!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"mobilenet_v2: dropout must be in [0, 1), got {dropout!r}")
        self.in_channels = check_positive_int(in_channels, "in_channels", "mobilenet_v2")
        width = _divisible(32 * width_mult)
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, width, 3, stride=2)]
        for t, c, n, s in _SETTING:
            out = _divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(width, out, s if i == 0 else 1, t))
                width = out
        last = _divisible(1280 * max(1.0, width_mult))
        layers.append(_conv_bn_relu6(width, last, 1))
        self.features = nn.Sequential(*layers)
        self.feature_dim = last
        self.classifier = nn.Sequential(nn.Dropout(p=float(dropout)), nn.Linear(last, num_classes))
        init_weights(self, linear="normal")

    def _stages(self, x: Tensor) -> list[Tensor]:
        return sequential_stages(self.features, x, _STAGE_ENDS)

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return preact_sequential(self.features, x, _STAGE_ENDS)

    def stage_norms(self) -> list[nn.Module]:
        # the stem's and the head's BN; an inverted residual block's last BN (its output is linear, no ReLU follows)
        return [self.features[i][1] if i in (0, 18) else self.features[i].conv[-1] for i in _STAGE_ENDS]


@register("mobilenet_v2")
def mobilenet_v2(num_classes: int, width_mult: float = 1.0, dropout: float = 0.2,
                 in_channels: int = 3) -> ImageNetMobileNetV2:
    """mobilenet_v2: torchvision's MobileNetV2 (width 1.0, ReLU6, dropout 0.2); 3.50M parameters at 1000 classes."""
    return ImageNetMobileNetV2(num_classes, width_mult, dropout, in_channels)
