"""A data set's evaluation preprocessing as numbers, and one image file turned into a network's input by them.

:func:`eval_preprocessing` is what a run records (``model.json``, ``final.json``, an exported file's metadata), so the
network can be used without kdlab: decode to RGB, ``Resize(resize)`` of the shorter side (bilinear), ``CenterCrop(crop)``,
pixels × ``scale`` (1/255), then ``(x − mean_c) / std_c`` per channel, float32 ``[N, C, crop, crop]``.
:func:`image_input` applies those numbers to a file (``kdlab predict``), decoding with Pillow exactly as the
streamed loader's evaluation path does at full resolution (:func:`kdlab.data.decode.decode_center`, no DCT reduction).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from kdlab.data.crops import center_crop_box, eval_resize_size
from kdlab.data.decode import decode_center, probe
from kdlab.data.image_stream import ImageSplits
from kdlab.data.normalization import Normalization

__all__ = ["eval_preprocessing", "image_input"]


def eval_preprocessing(splits: Any) -> dict[str, Any]:
    """The evaluation preprocessing of ``splits`` (:class:`~kdlab.data.DataSplits` or :class:`ImageSplits`) as a
    JSON-ready dict. ``input``: ``"image"`` (files: the keys above) or ``"tensor"`` (signals or non-square inputs,
    given as float tensors of ``input_shape``; only ``scale``/``mean``/``std`` apply)."""
    mean = None if splits.mean is None else [float(v) for v in splits.mean]
    std = None if splits.std is None else [float(v) for v in splits.std]
    if isinstance(splits, ImageSplits):
        s = splits.image_size
        return {"input": "image", "mode": "RGB", "resize": eval_resize_size(s), "interpolation": "bilinear",
                "crop": s, "scale": 1 / 255, "mean": mean, "std": std}
    x = splits.x_test
    shape = tuple(x.shape[1:])
    scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
    if x.dtype == torch.uint8 and len(shape) == 3 and shape[0] == 3 and shape[1] == shape[2]:
        # pixels held at their final size (CIFAR's 32 px, Tiny-ImageNet's 64 px): a file is resized to that side
        return {"input": "image", "mode": "RGB", "resize": shape[1], "interpolation": "bilinear", "crop": shape[1],
                "scale": scale, "mean": mean, "std": std}
    return {"input": "tensor", "scale": scale, "mean": mean, "std": std}


def image_input(path: str, pre: Mapping[str, Any]) -> torch.Tensor:
    """The image file ``path`` as the network's input ``[3, crop, crop]`` (float32), by the numbers of ``pre`` (a
    dict of :func:`eval_preprocessing`). A ValueError when the network does not take images; an unreadable file is
    a :class:`~kdlab.data.BadImageError` naming it."""
    if pre.get("input") != "image":
        raise ValueError("this network does not take image files (its inputs are tensors, preprocessing "
                         f"{dict(pre)}); call it from Python: kdlab.load_model(...)")
    crop, resize = int(pre["crop"]), int(pre["resize"])
    width, height = probe(path)
    pixels = decode_center(path, center_crop_box(width, height, crop, resize), crop, reduce=False)
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]  # uint8 [1, 3, crop, crop]
    if abs(float(pre["scale"]) - 1 / 255) > 1e-12:
        raise ValueError(f"preprocessing scale {pre['scale']} is not 1/255: not an image network")
    return Normalization(pre["mean"], pre["std"], 3, 4)(x)[0]
