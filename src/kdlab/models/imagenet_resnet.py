"""ImageNet ResNet-18/34/50/101/152 (He et al., CVPR 2016) with torchvision's parameter and buffer names and shapes,
so that a torchvision state dict (``resnet34-b627a593.pth``, or a safetensors conversion of it) loads as it is
(docs/reference/imagenet.md §3).

Stem conv7x7/2 → BN → ReLU → max-pool 3x3/2 → four stages of 64/128/256/512 planes (BasicBlock ×[2,2,2,2] or
×[3,4,6,3]; Bottleneck ×[3,4,6,3], ×[3,4,23,3] or ×[3,8,36,3] with expansion 4 and the stride on its 3x3 conv,
torchvision's "v1.5") → global average pool → ``fc``. Initialisation as torchvision's: conv He fan-out, BN γ=1 β=0,
``fc`` PyTorch's default.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models._base import ZooModel, check_positive_int, conv_bn, init_weights, preact_stages
from kdlab.models.registry import register
from kdlab.models.resnet import BasicBlock  # conv1/bn1/conv2/bn2/downsample: torchvision's BasicBlock names


class Bottleneck(nn.Module):
    """out = ReLU(BN(conv1x1(ReLU(BN(conv3x3_s(ReLU(BN(conv1x1(x)))))))) + downsample(x)); torchvision's names."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1, self.bn1 = conv_bn(in_planes, planes, 1)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = conv_bn(planes, out_planes, 1)
        self.downsample = (
            nn.Sequential(*conv_bn(in_planes, out_planes, 1, stride))
            if stride != 1 or in_planes != out_planes
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.preact(x))

    def preact(self, x: Tensor) -> Tensor:
        """The block's output before its final ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + (x if self.downsample is None else self.downsample(x))

    @property
    def out_norm(self) -> nn.BatchNorm2d:
        """The BatchNorm before the final ReLU (the residual is added to its output)."""
        return self.bn3


class ImageNetResNet(ZooModel):
    """``stages`` = [stem (ReLU output, before the max-pool), layer1, layer2, layer3, layer4] (strides 2, 4, 8, 16,
    32); ``pooled`` = GAP(layer4), dimension 512 (BasicBlock) or 2048 (Bottleneck)."""

    def __init__(self, block: type[nn.Module], num_blocks: tuple[int, int, int, int], num_classes: int,
                 in_channels: int = 3):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels", "ResNet")
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        width = 64
        expansion = getattr(block, "expansion", 1)
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            blocks = [block(width, planes, 1 if i == 0 else 2)]
            width = planes * expansion
            blocks += [block(width, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.feature_dim = width
        self.fc = nn.Linear(width, num_classes)  # torchvision's name for the head
        init_weights(self, linear="default")

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    def _stages(self, x: Tensor) -> list[Tensor]:
        stem = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(F.max_pool2d(stem, 3, stride=2, padding=1))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [stem, f1, f2, f3, f4]

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return preact_stages(self.bn1(self.conv1(x)), (self.layer1, self.layer2, self.layer3, self.layer4),
                             entry=lambda stem: F.max_pool2d(stem, 3, stride=2, padding=1))

    def stage_norms(self) -> list[nn.Module]:
        return [self.bn1] + [layer[-1].out_norm for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]


@register("resnet18")
def resnet18(num_classes: int, in_channels: int = 3) -> ImageNetResNet:
    """resnet18: torchvision's ResNet-18 (BasicBlock ×[2, 2, 2, 2]); 11.69M parameters at 1000 classes."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


@register("resnet34")
def resnet34(num_classes: int, in_channels: int = 3) -> ImageNetResNet:
    """resnet34: torchvision's ResNet-34 (BasicBlock ×[3, 4, 6, 3]); 21.80M parameters at 1000 classes."""
    return ImageNetResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels)


@register("resnet50")
def resnet50(num_classes: int, in_channels: int = 3) -> ImageNetResNet:
    """resnet50: torchvision's ResNet-50 (Bottleneck ×[3, 4, 6, 3]); 25.56M parameters at 1000 classes."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels)


@register("resnet101")
def resnet101(num_classes: int, in_channels: int = 3) -> ImageNetResNet:
    """resnet101: torchvision's ResNet-101 (Bottleneck ×[3, 4, 23, 3]); 44.55M parameters at 1000 classes."""
    return ImageNetResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_channels)


@register("resnet152")
def resnet152(num_classes: int, in_channels: int = 3) -> ImageNetResNet:
    """resnet152: torchvision's ResNet-152 (Bottleneck ×[3, 8, 36, 3]); 60.19M parameters at 1000 classes."""
    return ImageNetResNet(Bottleneck, (3, 8, 36, 3), num_classes, in_channels)
