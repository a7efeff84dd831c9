"""Shared base of the zoo networks: input checks, global pooling, the ``forward_features`` contract, init."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab._checks import check_int


class ZooModel(nn.Module):
    """A classifier whose ``forward`` returns logits and whose ``forward_features`` also returns its features.

    Subclasses build their layers, set ``classifier`` (an ``nn.Linear`` registered *last* so that it is also the
    last ``nn.Linear`` in ``modules()`` order, which the generic hook path relies on; torchvision-compatible models
    keep torchvision's names: ``fc`` exposed as a ``classifier`` property, or MobileNetV2's Sequential(Dropout,
    Linear)) and implement ``_stages(x) -> list[Tensor]``, the stage outputs whose last entry is the map that is
    globally average-pooled into ``pooled``.

    Pre-activation features (OFD and ReviewKD read them, as mdistiller's ``preact_feats``): a subclass implements
    ``_preact_stages(x) -> (stages, preacts)`` — the same stages, computed once, and for each the tensor its last ReLU
    reads (the residual sum before the block's final ReLU; a stage without a ReLU is its own pre-activation) — and
    ``stage_norms()``, the BatchNorm that produces each pre-activation (its affine γ, β give the distribution OFD's
    margin is computed from). Neither adds a parameter or changes ``forward``, so state dicts and forward hooks are
    those of the plain network.
    """

    #: trailing entries of ``stages`` that are a 1x1 head conv (MobileNetV2's and ShuffleNetV2's ``conv2``, whose
    #: pooled map is ``pooled``) rather than a backbone stage; multi-stage feature methods pair backbone stages only,
    #: as mdistiller's ``feats`` do
    head_stages: int = 0

    #: 4 for image networks ([N, C, H, W]), 3 for 1-D networks ([N, C, L]).
    input_ndim: int = 4
    in_channels: int
    feature_dim: int
    classifier: nn.Module  # an nn.Linear, or a Sequential ending in one

    def _stages(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise ValueError(f"{type(self).__name__}: input x must be a torch.Tensor, got {type(x).__name__}")
        if self.input_ndim == 3 and x.dim() == 2 and self.in_channels == 1:
            x = x.unsqueeze(1)  # [N, L] -> [N, 1, L]
        if x.dim() != self.input_ndim or x.shape[1] != self.in_channels:
            want = "[N, C, H, W]" if self.input_ndim == 4 else "[N, C, L] (or [N, L] when C = 1)"
            raise ValueError(
                f"{type(self).__name__}: input x must have shape {want} with C = {self.in_channels}, "
                f"got {tuple(x.shape)}"
            )
        return x

    def forward_features(self, x: Tensor, preact: bool = False) -> tuple[Tensor, dict]:
        """``(logits, {"stages": [stage outputs], "pooled": [N, feature_dim]})``; logits = ``classifier(pooled)``.
        ``preact``: also ``"preact"``, each stage's pre-activation (class docstring), from the same pass."""
        x = self._check_input(x)
        if preact:
            stages, preacts = self._preact_stages(x)
        else:
            stages = self._stages(x)
        last = stages[-1]
        # Global average pooling. On 32x32 CIFAR inputs this is exactly the fixed-size pooling of the benchmark
        # code (AvgPool2d(8) / avg_pool2d(4) / AvgPool2d(2)), which all cover the whole final map; unlike those it
        # also works for other input sizes.
        pooled = last.mean(dim=tuple(range(2, last.dim())))
        feats = {"stages": stages, "pooled": pooled}
        if preact:
            feats["preact"] = preacts
        return self.classifier(pooled), feats

    def _preact_stages(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        raise ValueError(f"{type(self).__name__} gives no pre-activation features (forward_features(x, preact=True)); "
                         "use a zoo architecture that does (every CIFAR and ImageNet network of the zoo)")

    def stage_norms(self) -> list[nn.Module | None]:
        """The BatchNorm whose output each stage's pre-activation is (plus a residual where the block has one), or
        None where no BatchNorm precedes the stage's ReLU."""
        raise ValueError(f"{type(self).__name__} does not name the BatchNorm before each stage's ReLU")

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]``."""
        return self.forward_features(x)[0]


def init_weights(model: nn.Module, linear: str = "default") -> None:
    """Benchmark initialisation: conv ~ N(0, 2 / (k·k·C_out)) (He et al. 2015, fan-out), conv bias 0, BN γ=1 β=0.

    ``linear``: "default" keeps PyTorch's Linear init; "zero_bias" also zeroes the bias (WRN code);
    "normal" draws W ~ N(0, 0.01²) with bias 0 (VGG / MobileNetV2 code).
    """
    if linear not in ("default", "zero_bias", "normal"):
        raise ValueError(f"init_weights: linear must be 'default', 'zero_bias' or 'normal', got {linear!r}")
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            # fan_out of a (grouped) conv weight [C_out, C_in/g, k, k] is C_out·k·k, matching the reference codes.
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear != "default":
            if linear == "normal":
                nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def sequential_stages(layers: nn.Sequential, x: Tensor, ends: tuple[int, ...]) -> list[Tensor]:
    """Run ``layers`` on ``x``; the outputs of the layers at indices ``ends`` (the ends of the stages)."""
    stages = []
    for i, layer in enumerate(layers):
        x = layer(x)
        if i in ends:
            stages.append(x)
    return stages


def preact_layer(layer: nn.Sequential, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(ReLU(p), p)`` of a stage of blocks whose last block has ``preact(x) -> p`` (its output before the final
    ReLU): the earlier blocks run as usual, the last one once."""
    for block in layer[:-1]:
        x = block(x)
    p = layer[-1].preact(x)
    return F.relu(p), p


def preact_stages(stem: Tensor, layers, entry=None) -> tuple[list[Tensor], list[Tensor]]:
    """Stages and pre-activations of a network whose stem's pre-activation is ``stem`` and whose next stages are
    ``layers`` (each ending in a block with ``preact``, :func:`preact_layer`), each fed the previous stage; the first
    is fed ``entry(ReLU(stem))`` (e.g. a max-pool), default ``ReLU(stem)``."""
    stages, preacts = [F.relu(stem)], [stem]
    x = stages[0] if entry is None else entry(stages[0])
    for layer in layers:
        x, p = preact_layer(layer, x)
        stages.append(x)
        preacts.append(p)
    return stages, preacts


def preact_sequential(layers: nn.Sequential, x: Tensor, ends: tuple[int, ...]) -> tuple[list[Tensor], list[Tensor]]:
    """:func:`sequential_stages` with pre-activations: a stage that ends in a ReLU (or ReLU6) module keeps that
    module's input and applies the activation out of place; any other stage (e.g. an inverted residual block, whose
    output is linear) is its own pre-activation."""
    stages, preacts = [], []
    for i, layer in enumerate(layers):
        if i in ends and isinstance(layer, nn.Sequential) and isinstance(layer[-1], (nn.ReLU, nn.ReLU6)):
            *body, act = layer
            for module in body:
                x = module(x)
            preacts.append(x)
            x = F.relu6(x) if isinstance(act, nn.ReLU6) else F.relu(x)
            stages.append(x)
        else:
            x = layer(x)
            if i in ends:
                preacts.append(x)
                stages.append(x)
    return stages, preacts


def check_positive_int(value, name: str, model: str) -> int:
    return check_int(value, f"{model}: {name}", 1)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet channel shuffle (Zhang et al. 2018): [N, g·c, H, W] -> view [N, g, c] -> transpose -> [N, c·g]."""
    # reshape (not view) so that channels_last inputs work too.
    return x.unflatten(1, (groups, x.shape[1] // groups)).transpose(1, 2).flatten(1, 2)


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """[Conv2d (no bias, 'same' padding for odd kernels), BatchNorm2d]."""
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]


__all__ = ["ZooModel", "init_weights", "channel_shuffle", "conv_bn", "check_positive_int", "preact_layer",
           "preact_sequential", "preact_stages", "sequential_stages"]
