"""State dicts of other code bases under kdlab's parameter names.

The CIFAR-100 teachers every CIFAR KD paper starts from are RepDistiller's (github HobbitLong/RepDistiller,
``models/*.py``; mdistiller's ``mdistiller/models/cifar/*.py`` use the same names), released as
``cifar_teachers.tar``: ``<arch>_vanilla/ckpt_epoch_240.pth``, a dict whose ``model`` entry is the state dict. kdlab's
CIFAR zoo holds the same tensors with the same shapes and computes the same function on 32x32 inputs; only these
names differ (``tests/models/test_foreign_weights.py`` checks every architecture against their key lists and
forward passes):

============================  ==============================================  =====================================
kdlab name                    RepDistiller's keys                             kdlab's keys
============================  ==============================================  =====================================
resnet8 … resnet110, x4       ``fc.*``                                        ``classifier.*``
cifar_resnet50 ("ResNet50")   ``….shortcut.*``, ``linear.*``                  ``….downsample.*``, ``classifier.*``
wrn_16_1 … wrn_40_2           ``blockK.layer.i.*``, ``….convShortcut.*``,     ``blockK.i.*``, ``….shortcut.*``,
                              ``bn1.*`` (the final BN), ``fc.*``              ``bn.*``, ``classifier.*``
MobileNetV2 ("mobile_half")   ``classifier.0.*``                              ``classifier.*``
ShuffleV1, ShuffleV2          ``linear.*``                                    ``classifier.*``
vgg8 … vgg19                  (the same)
============================  ==============================================  =====================================

torchvision's ResNets and MobileNetV2 and mdistiller's MobileNetV1 need no renaming: kdlab's ``resnet18``,
``resnet34``, ``resnet50``, ``mobilenet_v2`` and ``mobilenet_v1`` use their names.
"""

from __future__ import annotations

import re

from torch import Tensor

__all__ = ["REPDISTILLER_RENAMES", "to_kdlab_names"]

_FC = [(r"^fc\.", "classifier.")]
_LINEAR = [(r"^linear\.", "classifier.")]
_WRN = [(r"^(block\d+)\.layer\.", r"\1."), (r"\.convShortcut\.", ".shortcut."), (r"^bn1\.", "bn."),
        (r"^fc\.", "classifier.")]

#: kdlab architecture name -> [(pattern, replacement)] turning RepDistiller's keys into kdlab's. Anchored so that a
#: state dict already in kdlab's names passes unchanged.
REPDISTILLER_RENAMES: dict[str, list[tuple[str, str]]] = {
    **{f"resnet{d}": _FC for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": _FC,
    "resnet32x4": _FC,
    # (weights that earlier kdlab versions wrote for "ResNet50" use RepDistiller's "shortcut" too: read the same way)
    "cifar_resnet50": [(r"\.shortcut\.", ".downsample."), *_LINEAR],
    **{f"wrn_{d}_{k}": _WRN for d, k in ((16, 1), (16, 2), (40, 1), (40, 2))},
    "MobileNetV2": [(r"^classifier\.0\.", "classifier.")],
    "ShuffleV1": _LINEAR,
    "ShuffleV2": _LINEAR,
}


def to_kdlab_names(arch: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with RepDistiller's key names for ``arch`` replaced by kdlab's (keys already kdlab's stay)."""
    rules = [(re.compile(p), r) for p, r in REPDISTILLER_RENAMES.get(arch, [])]
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = pattern.sub(repl, key)
        out[key] = value
    return out
