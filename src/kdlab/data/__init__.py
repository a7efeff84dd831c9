"""Datasets, the in-memory batch loader, batch-tensor augmentations and the distillation-data policies.

``load_dataset("mnist1d" | "cifar100" | "tiny_imagenet")`` returns :class:`DataSplits` (raw train/test tensors +
normalisation + the train augmentation); :class:`BatchLoader` turns a split into augmented, normalised :class:`Batch` es
whose order and views are a pure function of ``(seed, epoch)``. ``load_dataset("imagefolder" | "imagenet")`` returns
:class:`ImageSplits`, files streamed by :class:`StreamLoader` (decoding in worker processes; order and crops a pure
function of ``(seed, epoch, index)``). Modules: ``views`` (discrete, cacheable augmentations), ``mix``,
``autoaugment`` and ``randaugment`` (batch mixers and strong views), ``presets`` and ``policies`` (what a student is
distilled on), ``splits`` (split control), ``archive``/``cifar``/``mnist1d``/``user`` (sources); on disk: ``folders``/``imagenet``/``tiny_imagenet``
(layouts), ``decode`` (one file), ``image_index`` (files checked once), ``crops`` (crop geometry), ``stream`` and
``image_stream`` (the streamed loader), ``crop_schedule`` and ``replay`` (stored crops, replayed), ``dataset_stream`` (a
user's Dataset read every epoch). See docs/data.md.
"""

from __future__ import annotations

import os
from typing import Any

from kdlab.data._paths import default_root
from kdlab.data.archive import download_url, extract_archive
from kdlab.data.autoaugment import autoaugment_like
from kdlab.data.batch import Batch
from kdlab.data.cifar import load_cifar100
from kdlab.data.crops import CropBoxes, center_crop_box, random_resized_crops
from kdlab.data.decode import BadImageError
from kdlab.data.folders import ImageList, LayoutError
from kdlab.data.image_stream import ImageSplits, load_image_folder, load_imagenet
from kdlab.data.loader import BatchLoader, derive_seed
from kdlab.data.mix import cutmix, cutout, gaussian_noise_like, mixup
from kdlab.data.mnist1d import load_mnist1d
from kdlab.data.normalization import Normalization, normalize
from kdlab.data.policies import DistillPolicy, build_policy
from kdlab.data.presets import PRESETS, augment_preset
from kdlab.data.randaugment import randaugment_like, random_cutout
from kdlab.data.splits import DataSplits, select_split
from kdlab.data.stream import StreamLoader
from kdlab.data.tiny_imagenet import load_tiny_imagenet
from kdlab.data.user import as_tensors
from kdlab.data.views import CropFlip, Identity, Shift1D, ViewAugmentation

__all__ = [
    "DataSplits",
    "ImageSplits",
    "ImageList",
    "StreamLoader",
    "BadImageError",
    "LayoutError",
    "CropBoxes",
    "random_resized_crops",
    "center_crop_box",
    "load_image_folder",
    "load_imagenet",
    "load_tiny_imagenet",
    "Batch",
    "BatchLoader",
    "load_dataset",
    "load_mnist1d",
    "load_cifar100",
    "as_tensors",
    "ViewAugmentation",
    "CropFlip",
    "Shift1D",
    "Identity",
    "mixup",
    "cutmix",
    "cutout",
    "autoaugment_like",
    "randaugment_like",
    "random_cutout",
    "gaussian_noise_like",
    "Normalization",
    "normalize",
    "derive_seed",
    "download_url",
    "extract_archive",
    "default_root",
    "select_split",
    "DistillPolicy",
    "build_policy",
    "PRESETS",
    "augment_preset",
    "DATASETS",
]

#: Names accepted by :func:`load_dataset`.
DATASETS = ("mnist1d", "cifar100", "tiny_imagenet", "imagenet", "imagefolder")


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False,
                 **kwargs: Any) -> DataSplits | ImageSplits:
    """Load a built-in dataset by name.

    ``"mnist1d"``: generated offline (``download`` is ignored); ``kwargs`` go to :func:`load_mnist1d`
    (``num_samples``, ``seed``, ``train_split``). ``"cifar100"``: ``kwargs`` go to :func:`load_cifar100`
    (``url``, ``fmt``, ``md5``, ``progress``). ``"tiny_imagenet"`` (in memory), ``"imagenet"`` and ``"imagefolder"``
    (streamed): ``kwargs`` go to :func:`load_tiny_imagenet` (``workers``, ``skip_bad``, ``progress``) or
    :func:`load_imagenet` / :func:`load_image_folder` (also ``image_size``); ``download`` must be false.
    ``root`` defaults to ``$KDLAB_DATA`` or ``~/.cache/kdlab``.
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, one of {DATASETS}; got {name!r}")
    key = name.lower().replace("-", "").replace("_", "")
    if key == "mnist1d":
        return load_mnist1d(root, **kwargs)
    if key == "cifar100":
        return load_cifar100(root, download=download, **kwargs)
    disk = {"tinyimagenet": load_tiny_imagenet, "imagenet": load_imagenet, "imagefolder": load_image_folder}
    if key in disk:
        if download:
            raise ValueError(f"{name} cannot be downloaded by kdlab (its licence requires registration); put it in "
                             "data.root and set data.download=false")
        return disk[key](root, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS} (or pass your own tensors to kdlab.fit)")
