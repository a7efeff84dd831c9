"""Model zoo: the CIFAR-100 KD benchmark architectures and small MNIST-1D networks, plus feature extraction.

``create(name, num_classes)`` builds a registered network; ``forward_features(model, x)`` returns
``(logits, {"stages": [...], "pooled": [N, D]})`` for zoo models and, through forward hooks, for any ``nn.Module``.
"""

from kdlab.models.features import classifier_of, count_parameters, forward_features
from kdlab.models.registry import create, names, register

__all__ = ["create", "names", "register", "forward_features", "classifier_of", "count_parameters"]
