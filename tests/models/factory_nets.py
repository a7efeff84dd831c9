"""A model library of the test tree, standing in for timm, torchvision and Hugging Face (none of which this CPU
build of torch can import): factories that kdlab reaches only by an import string in a config
(``student.arch: {factory: tests/models/factory_nets.py:create_model, args: {...}}``). Its networks are not kdlab
zoo models: no ``ZooModel``, a timm-like ``forward_features`` that returns only a feature map, so feature methods
must read them through forward hooks at module paths."""

from dataclasses import dataclass

import torch
from torch import nn


class TinyNet(nn.Module):
    """timm's shape for MNIST-1D ([N, 1, 40]): ``stem`` → ``blocks.0``, ``blocks.1`` (Conv1d-BN-ReLU) → mean over
    length → ``head`` (Linear). ``forward_features`` returns the last map only, as timm's models do."""

    def __init__(self, num_classes: int, width: int = 8, in_chans: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(in_chans, width, 5, padding=2, bias=False), nn.BatchNorm1d(width),
                                  nn.ReLU())
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.Conv1d(width * 2**i, width * 2 ** (i + 1), 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm1d(width * 2 ** (i + 1)), nn.ReLU())
            for i in range(2)])
        self.head = nn.Linear(width * 4, num_classes)

    def forward_features(self, x):
        return self.blocks(self.stem(x))

    def forward(self, x):
        return self.head(self.forward_features(x).mean(-1))


@dataclass
class ClassifierOutput:
    """What a Hugging Face image classifier returns: an object holding ``logits`` (and, in HF, loss, states)."""

    logits: torch.Tensor
    hidden_states: tuple = ()


class HFLikeNet(TinyNet):
    """A :class:`TinyNet` whose forward returns :class:`ClassifierOutput`, as ``AutoModelForImageClassification``'s
    models do."""

    def forward(self, x):
        return ClassifierOutput(logits=super().forward(x))


_MODELS = {"tiny_net": TinyNet, "hf_like_net": HFLikeNet}


def create_model(model_name: str, pretrained: bool = False, num_classes: int = 1000, **kwargs) -> nn.Module:
    """timm's entry point, in miniature: a model by name; ``pretrained`` weights do not exist here."""
    if pretrained:
        raise RuntimeError(f"no pretrained weights for {model_name} in the test tree")
    if model_name not in _MODELS:
        raise RuntimeError(f"Unknown model ({model_name})")
    return _MODELS[model_name](num_classes, **kwargs)


def not_a_module(num_classes: int = 10):
    return {"num_classes": num_classes}


def tuple_net(num_classes: int = 10) -> nn.Module:
    """A network whose forward returns a tuple, neither logits nor an object with ``.logits``."""

    class TupleNet(TinyNet):
        def forward(self, x):
            return super().forward(x), x

    return TupleNet(num_classes)
