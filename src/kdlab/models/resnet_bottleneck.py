"""ResNet-50 (He et al., CVPR 2016) with the CIFAR stem of the KD benchmark (its "ResNet50"): a 3x3 stride-1 conv and
no max-pool. Registered as ``cifar_resnet50``; ``resnet50`` is torchvision's ImageNet network (``imagenet_resnet.py``).

Stages of [3, 4, 6, 3] Bottleneck blocks (expansion 4; torchvision's block, so its projection shortcut is called
``downsample`` where RepDistiller says ``shortcut``: ``kdlab.models.foreign`` maps the name) at 32², 16², 8², 4² →
global average pool → Linear(2048, C).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models._base import ZooModel, check_positive_int, conv_bn, init_weights, preact_stages
from kdlab.models.imagenet_resnet import Bottleneck
from kdlab.models.registry import register


class ResNetBottleneck(ZooModel):
    """``stages`` = [stem, layer1, layer2, layer3, layer4]; ``pooled`` = GAP(layer4), dimension 2048."""

    def __init__(self, num_blocks: tuple[int, ...], num_classes: int, in_channels: int = 3):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels", "cifar_resnet50")
        self.conv1, self.bn1 = conv_bn(in_channels, 64, 3)
        width = 64
        layers = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            stride = 1 if i == 0 else 2
            blocks = [Bottleneck(width, planes, stride)]
            width = planes * Bottleneck.expansion
            blocks += [Bottleneck(width, planes) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.feature_dim = width
        self.classifier = nn.Linear(width, num_classes)
        init_weights(self, linear="default")

    def _stages(self, x: Tensor) -> list[Tensor]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return preact_stages(self.bn1(self.conv1(x)), (self.layer1, self.layer2, self.layer3, self.layer4))

    def stage_norms(self) -> list[nn.Module]:
        return [self.bn1] + [layer[-1].out_norm for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]


@register("cifar_resnet50")
def cifar_resnet50(num_classes: int, in_channels: int = 3) -> ResNetBottleneck:
    """cifar_resnet50: the KD benchmark's "ResNet50": Bottleneck [3, 4, 6, 3], CIFAR stem (3x3 stride-1 conv, no
    max-pool)."""
    return ResNetBottleneck((3, 4, 6, 3), num_classes, in_channels)
