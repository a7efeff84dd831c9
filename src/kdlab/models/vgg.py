"""VGG with BatchNorm (Simonyan & Zisserman, ICLR 2015) in the CIFAR form of the KD benchmark.

Five conv blocks (3x3 conv with bias → BN → ReLU) separated by 2x2 max-pools, then global average pooling and a
single Linear(512, C): the benchmark drops VGG's three fully connected layers. On 32x32 inputs the 4th max-pool is
skipped (the benchmark only applies it to 64-pixel inputs), so block 4 runs at 4x4.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models._base import ZooModel, check_positive_int, init_weights
from kdlab.models.registry import register

# Output widths of the convs in each of the five blocks.
_CFGS: dict[int, list[list[int]]] = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _block(c_in: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        c_in = w
    # The block ends at its last BN; the ReLU is applied in _stages so a hook on the block sees the pre-activation.
    return nn.Sequential(*layers[:-1])


class VGG(ZooModel):
    """``stages`` = ReLU outputs of blocks 0–4 (before each pool); ``pooled`` = GAP(block 4), dim 512."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if depth not in _CFGS:
            raise ValueError(f"VGG: depth must be one of {sorted(_CFGS)}, got {depth!r}")
        cfg = _CFGS[depth]
        self.in_channels = check_positive_int(in_channels, "in_channels", "VGG")
        c_in = in_channels
        for i, widths in enumerate(cfg):
            setattr(self, f"block{i}", _block(c_in, widths))
            c_in = widths[-1]
        self.pool = nn.MaxPool2d(2, 2)
        self.feature_dim = c_in
        self.classifier = nn.Linear(c_in, num_classes)
        init_weights(self, linear="normal")

    def _stages(self, x: Tensor) -> list[Tensor]:
        return self._preact_stages(x)[0]

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        # every block ends at its BN, so its output is the stage's pre-activation (the ReLU is applied here)
        big = x.shape[-2] >= 64
        stages, preacts = [], []
        for i in range(5):
            if i:
                x = self.pool(x) if i != 4 or big else x
            pre = getattr(self, f"block{i}")(x)
            x = F.relu(pre)
            stages.append(x)
            preacts.append(pre)
        return stages, preacts

    def stage_norms(self) -> list[nn.Module]:
        return [getattr(self, f"block{i}")[-1] for i in range(5)]


def _make(depth: int):
    def build(num_classes: int, in_channels: int = 3) -> VGG:
        return VGG(depth, num_classes, in_channels)

    build.__doc__ = f"vgg{depth}: VGG-{depth} with BN, single Linear(512, C) classifier."
    return build


for _depth in _CFGS:
    register(f"vgg{_depth}")(_make(_depth))
