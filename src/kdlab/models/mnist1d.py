"""Small 1-D networks for MNIST-1D (Greydanus 2020): inputs [N, 1, 40] (or [N, 40]), 10 classes by default.

- ``mnist1d_cnn``: teacher CNN, 4 × (Conv1d → BN → ReLU) with 32/64/64/64 channels, global average pool, Linear.
- ``mnist1d_cnn_small``: student CNN, 2 × (Conv1d → BN → ReLU) with 16/16 channels (≈1.1k parameters), small
  enough to leave the teacher a clear margin.
- ``mnist1d_mlp``: student MLP, flatten → Linear(40, 128) → ReLU → Linear(128, 128) → ReLU → Linear(128, C).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models._base import ZooModel, check_positive_int, init_weights, preact_sequential
from kdlab.models.registry import register


class ConvNet1d(ZooModel):
    """Stack of Conv1d(k, stride, 'same' padding, no bias) → BatchNorm1d → ReLU, then global average pool → Linear.

    ``stages`` = the output of every conv layer, [N, C_i, L_i]; ``pooled`` = GAP(last), dim ``channels[-1]``.
    Global pooling makes the features shift-invariant, which suits MNIST-1D's randomly translated digits.
    """

    input_ndim = 3

    def __init__(
        self,
        num_classes: int,
        channels: Sequence[int],
        kernels: Sequence[int],
        strides: Sequence[int],
        in_channels: int = 1,
    ):
        super().__init__()
        if not (len(channels) == len(kernels) == len(strides) >= 1):
            raise ValueError("ConvNet1d: channels, kernels and strides must be non-empty and of equal length")
        self.in_channels = check_positive_int(in_channels, "in_channels", "ConvNet1d")
        layers = []
        c_in = in_channels
        for c, k, s in zip(channels, kernels, strides):
            check_positive_int(c, "channels", "ConvNet1d")
            conv = nn.Conv1d(c_in, c, k, stride=s, padding=k // 2, bias=False)
            layers.append(nn.Sequential(conv, nn.BatchNorm1d(c), nn.ReLU(inplace=True)))
            c_in = c
        self.layers = nn.ModuleList(layers)
        self.feature_dim = c_in
        self.classifier = nn.Linear(c_in, num_classes)
        init_weights(self, linear="default")

    def _stages(self, x: Tensor) -> list[Tensor]:
        stages = []
        for layer in self.layers:
            x = layer(x)
            stages.append(x)
        return stages

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return preact_sequential(self.layers, x, tuple(range(len(self.layers))))

    def stage_norms(self) -> list[nn.Module]:
        return [layer[1] for layer in self.layers]


class MLP1d(ZooModel):
    """Flatten → [Linear → ReLU] × len(hidden) → Linear.

    ``stages`` = the hidden activations as [N, H, 1] (1-D maps of length 1, so every zoo stage is 3-D);
    ``pooled`` = the last hidden activation [N, H].
    """

    input_ndim = 3

    def __init__(self, num_classes: int, hidden: Sequence[int] = (128, 128), length: int = 40, in_channels: int = 1):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels", "mnist1d_mlp")
        self.length = check_positive_int(length, "length", "mnist1d_mlp")
        if len(hidden) < 1:
            raise ValueError("mnist1d_mlp: hidden must list at least one hidden width")
        d = in_channels * length
        layers = []
        for h in hidden:
            layers.append(nn.Linear(d, check_positive_int(h, "hidden", "mnist1d_mlp")))
            d = h
        self.hidden = nn.ModuleList(layers)
        self.feature_dim = d
        self.classifier = nn.Linear(d, num_classes)

    def _stages(self, x: Tensor) -> list[Tensor]:
        return self._preact_stages(x)[0]

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        if x.shape[-1] != self.length:
            raise ValueError(f"mnist1d_mlp: expected inputs of length {self.length}, got {tuple(x.shape)}")
        h = x.flatten(1)
        stages, preacts = [], []
        for layer in self.hidden:
            pre = layer(h)
            h = F.relu(pre)
            stages.append(h.unsqueeze(-1))
            preacts.append(pre.unsqueeze(-1))
        return stages, preacts

    def stage_norms(self) -> list[nn.Module | None]:
        return [None] * len(self.hidden)  # no BatchNorm


@register("mnist1d_cnn")
def mnist1d_cnn(num_classes: int = 10, in_channels: int = 1) -> ConvNet1d:
    """mnist1d_cnn: teacher, convs 32/64/64/64 (kernels 5/3/3/3, strides 1/2/1/2)."""
    return ConvNet1d(num_classes, (32, 64, 64, 64), (5, 3, 3, 3), (1, 2, 1, 2), in_channels)


@register("mnist1d_cnn_small")
def mnist1d_cnn_small(num_classes: int = 10, in_channels: int = 1) -> ConvNet1d:
    """mnist1d_cnn_small: student, convs 16/16 (kernels 5/3, strides 2/2)."""
    return ConvNet1d(num_classes, (16, 16), (5, 3), (2, 2), in_channels)


@register("mnist1d_mlp")
def mnist1d_mlp(num_classes: int = 10, hidden: Sequence[int] = (128, 128), length: int = 40) -> MLP1d:
    """mnist1d_mlp: student MLP, 40 → 128 → 128 → C with ReLU."""
    return MLP1d(num_classes, tuple(hidden), length)
