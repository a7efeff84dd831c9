"""Model zoo: the CIFAR-100 KD benchmark architectures, torchvision-compatible ImageNet networks, small MNIST-1D
networks, plus feature extraction and weight files (kdlab's safetensors, PyTorch files, RepDistiller's key names).

``create(name, num_classes)`` builds a registered network, ``from_factory("timm.create_model", {...})`` any other
library's (``kdlab.models.factory``); ``forward_features(model, x)`` returns
``(logits, {"stages": [...], "pooled": [N, D]})`` for zoo models and, through forward hooks, for any ``nn.Module``.
"""

from kdlab.models.features import classifier_of, count_parameters, forward_features, stage_shapes, stage_shapes_of
from kdlab.models.registry import create, names, register

# importing a family registers its architectures (the same pattern as kdlab.methods)
from kdlab.models import (  # noqa: E402,F401  isort: skip
    imagenet_mobilenetv1, imagenet_mobilenetv2, imagenet_resnet, mnist1d, mobilenetv2, resnet, resnet_bottleneck,
    shufflenetv1, shufflenetv2, vgg, wrn,
)
from kdlab.models.factory import create_arch, from_factory  # noqa: E402
from kdlab.models.init_from_teacher import init_from_teacher, recompute_bn_stats  # noqa: E402
from kdlab.models.weights import load_model, load_weights, save_model  # noqa: E402

__all__ = ["create", "names", "register", "forward_features", "classifier_of", "count_parameters",
           "create_arch", "from_factory", "init_from_teacher", "recompute_bn_stats", "load_model", "load_weights",
           "save_model", "stage_shapes", "stage_shapes_of"]
