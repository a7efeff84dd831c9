"""ShuffleNet V1 (Zhang et al., CVPR 2018), g = 3, in the CIFAR form of the KD benchmark ("ShuffleV1").

Stem 1x1 conv (24 channels, stride 1, no max-pool) → stages of 4 / 8 / 4 units with 240 / 480 / 960 output channels,
each stage starting with a stride-2 unit → global average pool → Linear(960, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models._base import ZooModel, channel_shuffle, check_positive_int, conv_bn, preact_stages
from kdlab.models.registry import register


class ShuffleUnit(nn.Module):
    """GConv1x1 → BN → ReLU → shuffle → DWConv3x3_s → BN → ReLU → GConv1x1 → BN, then
    ReLU(out + x) (stride 1) or ReLU(concat(out, AvgPool3x3_s2(x))) (stride 2)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int, first: bool):
        super().__init__()
        mid = out_planes // 4
        # The network's first unit sees only the 24 stem channels: its first 1x1 conv is not grouped (paper, §3.3).
        g1 = 1 if first else groups
        self.groups1 = g1
        self.conv1, self.bn1 = conv_bn(in_planes, mid, 1, groups=g1)
        self.conv2, self.bn2 = conv_bn(mid, mid, 3, stride, groups=mid)
        self.conv3, self.bn3 = conv_bn(mid, out_planes, 1, groups=groups)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.preact(x))

    def preact(self, x: Tensor) -> Tensor:
        """The unit's output before its final ReLU (the concatenation or the residual sum)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.groups1)
        # ReLU after the depthwise conv follows the benchmark code (the paper has none); no parameters involved.
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], dim=1)
        return out + x


class ShuffleNetV1(ZooModel):
    """``stages`` = [stem, layer1, layer2, layer3] (32², 16², 8², 4²); ``pooled`` = GAP(layer3), dim 960."""

    def __init__(
        self,
        num_classes: int,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        in_channels: int = 3,
    ):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels", "ShuffleV1")
        check_positive_int(groups, "groups", "ShuffleV1")
        self.conv1, self.bn1 = conv_bn(in_channels, 24, 1)
        width = 24
        layers = []
        for s, (planes, n) in enumerate(zip(out_planes, num_blocks)):
            units = []
            for i in range(n):
                # The stride-2 unit concatenates its pooled input, so its branch makes only planes - width channels.
                branch = planes - width if i == 0 else planes
                first = s == 0 and i == 0
                if branch % 4 or (branch // 4) % groups or width % (1 if first else groups):
                    raise ValueError(
                        f"ShuffleV1: out_planes {tuple(out_planes)} do not suit groups={groups}: every unit's "
                        "input width and bottleneck width (branch / 4) must be divisible by groups"
                    )
                units.append(ShuffleUnit(width, branch, 2 if i == 0 else 1, groups, first=first))
                width = planes
            layers.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = layers
        self.feature_dim = width
        self.classifier = nn.Linear(width, num_classes)
        # The benchmark code keeps PyTorch's default initialisation for ShuffleNets; so do we.

    def _stages(self, x: Tensor) -> list[Tensor]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f0, f1, f2, f3]

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return preact_stages(self.bn1(self.conv1(x)), (self.layer1, self.layer2, self.layer3))

    def stage_norms(self) -> list[nn.Module | None]:
        # a unit's pre-activation is a sum or a concatenation with its input, not one BatchNorm's output (mdistiller
        # gives no BatchNorm for ShuffleNets either)
        return [self.bn1, None, None, None]


@register("ShuffleV1")
def shufflev1(num_classes: int, in_channels: int = 3) -> ShuffleNetV1:
    """ShuffleV1: ShuffleNet V1 with g = 3 (240/480/960 channels, 4/8/4 units)."""
    return ShuffleNetV1(num_classes, in_channels=in_channels)
