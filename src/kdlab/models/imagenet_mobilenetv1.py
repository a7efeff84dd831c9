"""MobileNet (V1; Howard et al. 2017) as defined in mdistiller (``mdistiller/models/imagenet/mobilenetv1.py``), the
student of the ResNet-50 → MobileNetV1 ImageNet pair (docs/reference/imagenet.md §3), with mdistiller's parameter
names (``model.<i>.<j>``, ``fc``) so its checkpoints load as they are.

``model`` = conv3x3/2(32)-BN-ReLU, then 13 depthwise-separable blocks [dw3x3_s-BN-ReLU, pw1x1-BN-ReLU] to 64, 128/2,
128, 256/2, 256, 512/2, 512 ×5, 1024/2, 1024 (width 1.0) → global average pool → ``fc``. mdistiller pools with
``AvgPool2d(7)``, which is the global average on the 7x7 map of a 224-pixel input; global pooling also works at other
sizes. mdistiller sets no initialisation, so PyTorch's defaults are kept.
"""

from __future__ import annotations

from torch import Tensor, nn

from kdlab.models._base import ZooModel, check_positive_int, preact_sequential, sequential_stages
from kdlab.models.registry import register

# (output channels, stride) of the 13 depthwise-separable blocks
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
           (512, 1), (1024, 2), (1024, 1)]  # fmt: skip
# indices in `model` returned as stages: the stem and the last block at each resolution (strides 2, 4, 8, 16, 32),
# the four after the stem being mdistiller's feats
_STAGE_ENDS = (0, 3, 5, 11, 13)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class MobileNetV1(ZooModel):
    """``stages`` = outputs of model[0, 3, 5, 11, 13] (32, 128, 256, 512, 1024 channels); ``pooled`` = GAP(model[13]),
    dimension 1024."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels", "mobilenet_v1")
        layers = [nn.Sequential(*_conv_bn_relu(in_channels, 32, 3, 2))]
        width = 32
        for out, stride in _BLOCKS:
            layers.append(nn.Sequential(*_conv_bn_relu(width, width, 3, stride, groups=width),
                                        *_conv_bn_relu(width, out, 1, 1)))
            width = out
        self.model = nn.Sequential(*layers)
        self.feature_dim = width
        self.fc = nn.Linear(width, num_classes)  # mdistiller's name for the head

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    def _stages(self, x: Tensor) -> list[Tensor]:
        return sequential_stages(self.model, x, _STAGE_ENDS)

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return preact_sequential(self.model, x, _STAGE_ENDS)

    def stage_norms(self) -> list[nn.Module]:
        return [self.model[i][-2] for i in _STAGE_ENDS]


@register("mobilenet_v1")
def mobilenet_v1(num_classes: int, in_channels: int = 3) -> MobileNetV1:
    """mobilenet_v1: mdistiller's MobileNetV1 (width 1.0, 13 depthwise blocks); 4.23M parameters at 1000 classes."""
    return MobileNetV1(num_classes, in_channels)
