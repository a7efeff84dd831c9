"""Wide residual networks WRN-d-k (Zagoruyko & Komodakis, BMVC 2016), pre-activation blocks, as in the KD benchmark.

conv3x3(16) → three groups of n = (d − 4) / 6 blocks at widths 16k, 32k, 64k → BN → ReLU → global pool → Linear.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models._base import ZooModel, check_positive_int, init_weights
from kdlab.models.registry import register


class PreActBlock(nn.Module):
    """a = ReLU(BN(x)); out = conv3x3(dropout(ReLU(BN(conv3x3_s(a))))) + (x if shapes agree else conv1x1_s(a))."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = (
            nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
            if in_planes != out_planes or stride != 1
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.from_preact(x, self.bn1(x))

    def from_preact(self, x: Tensor, pre: Tensor) -> Tensor:
        """The block's output given ``pre = bn1(x)``, the pre-activation of the previous stage's output that this
        block's first ReLU reads (so a caller that keeps ``pre`` runs bn1 once)."""
        a = F.relu(pre)
        out = F.relu(self.bn2(self.conv1(a)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # The projection shortcut takes the pre-activated input (WRN reference code); identity takes the raw x.
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(ZooModel):
    """``stages`` = [stem conv, group1, group2, ReLU(BN(group3))]; ``pooled`` = GAP of the last, dim 64k; a stage's
    pre-activation is the BN output that the next ReLU reads (the next group's first ``bn1``, the final ``bn``)."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int, drop_rate: float = 0.0, in_channels: int = 3):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet: depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ValueError(f"WideResNet: drop_rate must be in [0, 1), got {drop_rate!r}")
        n = (depth - 4) // 6
        self.in_channels = check_positive_int(in_channels, "in_channels", "WideResNet")
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        groups = []
        for i in range(3):
            stride = 1 if i == 0 else 2
            blocks = [PreActBlock(widths[i], widths[i + 1], stride, float(drop_rate))]
            blocks += [PreActBlock(widths[i + 1], widths[i + 1], 1, float(drop_rate)) for _ in range(n - 1)]
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(widths[3])
        self.feature_dim = widths[3]
        self.classifier = nn.Linear(widths[3], num_classes)
        init_weights(self, linear="zero_bias")

    def _stages(self, x: Tensor) -> list[Tensor]:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        # Blocks are pre-activation, so the last group's output still needs the final BN-ReLU before pooling.
        f3 = F.relu(self.bn(self.block3(f2)))
        return [f0, f1, f2, f3]

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        # A stage's pre-activation is what the next ReLU reads: the next group's first BN of it (the last group's:
        # the final BN), as the OFD reference does; each BN runs once.
        stages, preacts = [self.conv1(x)], []
        for group in (self.block1, self.block2, self.block3):
            pre = group[0].bn1(stages[-1])
            preacts.append(pre)
            out = group[0].from_preact(stages[-1], pre)
            for block in group[1:]:
                out = block(out)
            stages.append(out)
        pre = self.bn(stages[-1])
        preacts.append(pre)
        stages[-1] = F.relu(pre)
        return stages, preacts

    def stage_norms(self) -> list[nn.Module]:
        return [self.block1[0].bn1, self.block2[0].bn1, self.block3[0].bn1, self.bn]


def _make(depth: int, k: int):
    def build(num_classes: int, drop_rate: float = 0.0, in_channels: int = 3) -> WideResNet:
        return WideResNet(depth, k, num_classes, drop_rate, in_channels)

    build.__doc__ = f"wrn_{depth}_{k}: WRN-{depth}-{k}, pre-activation, dropout ``drop_rate`` (default 0)."
    return build


for _depth, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    register(f"wrn_{_depth}_{_k}")(_make(_depth, _k))
