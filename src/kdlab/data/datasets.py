"""The built-in data sets by name: :func:`load_dataset` (name and options) and :func:`load_configured` (a run
config's ``data`` section). Each data set names the options of the section it takes (:data:`OPTIONS`), so the
builder loads any of them the same way without knowing which it is."""

from __future__ import annotations

import os
from typing import Any, Callable

from kdlab.data.cifar import DataNotFound, load_cifar10, load_cifar100
from kdlab.data.image_index import STREAMED
from kdlab.data.image_stream import ImageSplits, load_image_folder, load_imagenet
from kdlab.data.mnist1d import load_mnist1d
from kdlab.data.splits import DataSplits
from kdlab.data.tiny_imagenet import load_tiny_imagenet

__all__ = ["DATASETS", "OPTIONS", "load_configured", "load_dataset"]

#: Names accepted by :func:`load_dataset`.
DATASETS = ("mnist1d", "cifar10", "cifar100", "tiny_imagenet", "imagenet", "imagefolder")


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False,
                 **kwargs: Any) -> DataSplits | ImageSplits:
    """Load a built-in dataset by name.

    ``"mnist1d"``: generated offline (``download`` is ignored); ``kwargs`` go to :func:`load_mnist1d`
    (``num_samples``, ``seed``, ``train_split``). ``"cifar10"``, ``"cifar100"``: ``kwargs`` go to :func:`load_cifar10`,
    :func:`load_cifar100`
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
    if key in ("cifar10", "cifar100"):
        return (load_cifar10 if key == "cifar10" else load_cifar100)(root, download=download, **kwargs)
    disk = {"tinyimagenet": load_tiny_imagenet, "imagenet": load_imagenet, "imagefolder": load_image_folder}
    if key in disk:
        if download:
            raise ValueError(f"{name} cannot be downloaded by kdlab (its licence requires registration); put it in "
                             "data.root and set data.download=false")
        return disk[key](root, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS} (or pass your own tensors to kdlab.fit)")


def _mnist1d(d: Any, progress: bool) -> dict[str, Any]:
    return {"num_samples": d.num_samples} if d.num_samples else {}


def _cifar(d: Any, progress: bool) -> dict[str, Any]:
    return {"progress": progress, **{k: v for k, v in (("url", d.url), ("md5", d.md5)) if v is not None}}


def _on_disk(d: Any, progress: bool) -> dict[str, Any]:
    return {"workers": d.workers, "skip_bad": d.skip_bad, "progress": progress}


def _streamed(d: Any, progress: bool) -> dict[str, Any]:
    # the subsets are taken before the files are checked, so a quick run on a part of ImageNet stays quick
    return {**_on_disk(d, progress), "image_size": d.image_size, "train_subset": d.train_subset,
            "test_subset": d.test_subset}


#: ``data.name`` → the keyword arguments of its loader taken from a ``DataConfig`` section (and ``progress``)
OPTIONS: dict[str, Callable[[Any, bool], dict[str, Any]]] = {
    "mnist1d": _mnist1d, "cifar10": _cifar, "cifar100": _cifar, "tiny_imagenet": _on_disk, "imagenet": _streamed,
    "imagefolder": _streamed,
}


def load_configured(d: Any, progress: bool = True) -> DataSplits | ImageSplits:
    """The data set a ``DataConfig`` section ``d`` names, its subsets (``train_subset``/``test_subset``) applied;
    ``progress``: progress bars while files are read or checked."""
    try:
        splits = load_dataset(d.name, root=d.root, download=d.download, **OPTIONS[d.name](d, progress))
    except DataNotFound as exc:  # worded in the config's keys
        raise DataNotFound(exc.what, "set data.download=true to fetch it (md5-checked), or data.root=DIR where it "
                                     "lies") from None
    if (d.train_subset or d.test_subset) and d.name not in STREAMED:
        splits = splits.subset(d.train_subset, d.test_subset)
    return splits
