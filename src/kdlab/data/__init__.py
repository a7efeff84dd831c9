"""Datasets, the in-memory batch loader, batch-tensor augmentations and the distillation-data policies.

``load_dataset("mnist1d" | "cifar10" | "cifar100" | "tiny_imagenet")`` (``load_configured(cfg.data)`` for a run config's section) returns :class:`DataSplits` (raw train/test tensors +
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

from kdlab.data._paths import default_root
from kdlab.data.archive import download_url, extract_archive
from kdlab.data.autoaugment import autoaugment_like
from kdlab.data.batch import Batch
from kdlab.data.cifar import load_cifar10, load_cifar100
from kdlab.data.crops import CropBoxes, center_crop_box, random_resized_crops
from kdlab.data.datasets import DATASETS, load_configured, load_dataset
from kdlab.data.decode import BadImageError
from kdlab.data.folders import ImageList, LayoutError
from kdlab.data.image_stream import ImageSplits, load_image_folder, load_imagenet
from kdlab.data.loader import BatchLoader, derive_seed
from kdlab.data.mix import cutmix, cutout, gaussian_noise_like, mixup
from kdlab.data.mnist1d import load_mnist1d
from kdlab.data.normalization import Normalization, normalize
from kdlab.data.policies import DistillPolicy, build_policy
from kdlab.data.protocol import Loader
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
    "load_configured",
    "Loader",
    "load_mnist1d",
    "load_cifar10",
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
