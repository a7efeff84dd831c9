"""CIFAR ResNets (He et al., CVPR 2016, §4.2) as used by the CIFAR-100 KD benchmark (CRD, DKD).

Stem 3x3 conv → three stages of n BasicBlocks (depth = 6n + 2) at 32², 16², 8² → global average pool → Linear.
Projection shortcuts (1x1 conv + BN) wherever the shape changes (the benchmark's "option B"), including the
first block of stage 1 in the x4 models (32 → 64 channels).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models._base import ZooModel, check_positive_int, conv_bn, init_weights, preact_stages
from kdlab.models.registry import register


class BasicBlock(nn.Module):
    """out = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x))."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_planes, planes, 3, stride)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3)
        self.downsample = (
            nn.Sequential(*conv_bn(in_planes, planes, 1, stride)) if stride != 1 or in_planes != planes else None
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.preact(x))

    def preact(self, x: Tensor) -> Tensor:
        """The block's output before its final ReLU: BN(conv3x3(...)) + shortcut(x)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut

    @property
    def out_norm(self) -> nn.BatchNorm2d:
        """The BatchNorm before the final ReLU (the residual is added to its output)."""
        return self.bn2


class CifarResNet(ZooModel):
    """ResNet-(6n+2) with stage widths ``channels = (stem, stage1, stage2, stage3)``.

    ``stages`` = [stem, stage1, stage2, stage3] (post-ReLU block outputs); ``pooled`` = GAP(stage3); pre-activations:
    the stem's BN output and each stage's last residual sum.
    """

    def __init__(self, depth: int, channels: tuple[int, int, int, int], num_classes: int, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CifarResNet: depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}")
        n = (depth - 2) // 6
        self.in_channels = check_positive_int(in_channels, "in_channels", "CifarResNet")
        self.conv1, self.bn1 = conv_bn(in_channels, channels[0], 3)
        layers = []
        width = channels[0]
        for i, planes in enumerate(channels[1:]):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(width, planes, stride)] + [BasicBlock(planes, planes) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            width = planes
        self.layer1, self.layer2, self.layer3 = layers
        self.feature_dim = width
        self.classifier = nn.Linear(width, num_classes)
        init_weights(self, linear="default")

    def _stages(self, x: Tensor) -> list[Tensor]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f0, f1, f2, f3]

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return preact_stages(self.bn1(self.conv1(x)), (self.layer1, self.layer2, self.layer3))

    def stage_norms(self) -> list[nn.Module]:
        return [self.bn1] + [layer[-1].out_norm for layer in (self.layer1, self.layer2, self.layer3)]


_BASE = (16, 16, 32, 64)
_X4 = (32, 64, 128, 256)


def _make(depth: int, channels: tuple[int, int, int, int], doc: str):
    def build(num_classes: int, in_channels: int = 3) -> CifarResNet:
        return CifarResNet(depth, channels, num_classes, in_channels)

    build.__doc__ = doc
    return build


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _name = f"resnet{_depth}"
    register(_name)(_make(_depth, _BASE, f"{_name}: CIFAR ResNet-{_depth}, widths 16/16/32/64."))
for _depth in (8, 32):
    _name = f"resnet{_depth}x4"
    register(_name)(_make(_depth, _X4, f"{_name}: CIFAR ResNet-{_depth} at 4x width, widths 32/64/128/256."))
