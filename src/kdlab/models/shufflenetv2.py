"""ShuffleNet V2 1x (Ma et al., ECCV 2018) in the CIFAR form of the KD benchmark ("ShuffleV2").

Stem 1x1 conv (24 channels, stride 1, no max-pool) → three stages (116 / 232 / 464 channels), each a down-sampling
unit followed by 3 / 7 / 3 basic units → 1x1 conv to 1024 → global average pool → Linear(1024, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models._base import ZooModel, channel_shuffle, check_positive_int, conv_bn, preact_stages
from kdlab.models.registry import register


class BasicUnit(nn.Module):
    """Split channels in half (x1, x2); x2 → 1x1-BN-ReLU → DW3x3-BN → 1x1-BN-ReLU; shuffle(concat(x1, x2'))."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1, self.bn1 = conv_bn(half, half, 1)
        self.conv2, self.bn2 = conv_bn(half, half, 3, groups=half)
        self.conv3, self.bn3 = conv_bn(half, half, 1)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([x1, out], dim=1), 2)

    def preact(self, x: Tensor) -> Tensor:
        """The unit's output before its ReLU, in the output's channel order: shuffle(concat(x1, BN(conv3(...)))).
        ``x1`` passes unchanged (it is the previous stage's ReLU output, so ReLU leaves it as it is)."""
        x1, x2 = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        return channel_shuffle(torch.cat([x1, self.bn3(self.conv3(out))], dim=1), 2)


class DownUnit(nn.Module):
    """Both branches see all of x: left DW3x3_s2-BN → 1x1-BN-ReLU; right 1x1-BN-ReLU → DW3x3_s2-BN → 1x1-BN-ReLU;
    shuffle(concat(left, right)); each branch makes out_channels / 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.conv1, self.bn1 = conv_bn(in_channels, in_channels, 3, 2, groups=in_channels)
        self.conv2, self.bn2 = conv_bn(in_channels, mid, 1)
        self.conv3, self.bn3 = conv_bn(in_channels, mid, 1)
        self.conv4, self.bn4 = conv_bn(mid, mid, 3, 2, groups=mid)
        self.conv5, self.bn5 = conv_bn(mid, mid, 1)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class ShuffleNetV2(ZooModel):
    """``stages`` = [stem, layer1, layer2, layer3, conv2] (32², 16², 8², 4², 4²); ``pooled`` = GAP(conv2), dim 1024.
    ``conv2`` is a head stage (:attr:`ZooModel.head_stages`)."""

    head_stages = 1

    def __init__(
        self,
        num_classes: int,
        out_channels: tuple[int, int, int, int] = (116, 232, 464, 1024),
        num_blocks: tuple[int, int, int] = (3, 7, 3),
        in_channels: int = 3,
    ):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels", "ShuffleV2")
        if any(c % 2 for c in out_channels[:3]):
            raise ValueError(f"ShuffleV2: stage widths must be even (they are split in half), got {out_channels}")
        self.conv1, self.bn1 = conv_bn(in_channels, 24, 1)
        width = 24
        layers = []
        for c, n in zip(out_channels[:3], num_blocks):
            layers.append(nn.Sequential(DownUnit(width, c), *[BasicUnit(c) for _ in range(n)]))
            width = c
        self.layer1, self.layer2, self.layer3 = layers
        self.conv2, self.bn2 = conv_bn(width, out_channels[3], 1)
        self.feature_dim = out_channels[3]
        self.classifier = nn.Linear(out_channels[3], num_classes)
        # The benchmark code keeps PyTorch's default initialisation for ShuffleNets; so do we.

    def _stages(self, x: Tensor) -> list[Tensor]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = F.relu(self.bn2(self.conv2(f3)))
        return [f0, f1, f2, f3, f4]

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        stages, preacts = preact_stages(self.bn1(self.conv1(x)), (self.layer1, self.layer2, self.layer3))
        p = self.bn2(self.conv2(stages[-1]))
        stages.append(F.relu(p))
        preacts.append(p)
        return stages, preacts

    def stage_norms(self) -> list[nn.Module | None]:
        # half of a unit's output bypasses its last BatchNorm (mdistiller gives none for ShuffleNets either)
        return [self.bn1, None, None, None, self.bn2]


@register("ShuffleV2")
def shufflev2(num_classes: int, in_channels: int = 3) -> ShuffleNetV2:
    """ShuffleV2: ShuffleNet V2 with net size 1 (116/232/464/1024 channels, 3/7/3 basic units)."""
    return ShuffleNetV2(num_classes, in_channels=in_channels)
