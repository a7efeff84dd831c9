"""Streamed image data sets (``imagefolder``, ``imagenet``): checked file lists → :class:`StreamLoader` s.

Training samples: RandomResizedCrop(scale 0.08–1, ratio 3/4–4/3, bilinear) + horizontal flip to
``image_size`` (:func:`kdlab.data.crops.random_resized_crops`, a pure function of (seed, epoch, index)).
Evaluation samples (and training with ``data.augment: none``): ``Resize(⌊S·256/224⌋)`` + ``CenterCrop(S)``.
Normalisation: ImageNet's mean and std (docs/reference/imagenet.md §2).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from kdlab._checks import check_int
from kdlab.data._paths import resolve_root
from kdlab.data.crops import center_crop_box, random_resized_crops
from kdlab.data.decode import BadImageError, decode_center, decode_crop
from kdlab.data.folders import ImageList, imagefolder_splits
from kdlab.data.image_index import check_images
from kdlab.data.imagenet import imagenet_splits
from kdlab.data.normalization import Normalization
from kdlab.data.stream import BatchSource, StreamLoader, batch_tensor, default_workers

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageSource", "ImageSplits", "load_image_folder", "load_imagenet"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageSource(BatchSource):
    """Decoded crops of checked image files (``images.sizes`` set): random resized crops + flips (``train``) or
    the evaluation centre crop, ``size × size``: uint8 ``[b, 3, size, size]``, or float32 normalised by
    ``normalization`` (:meth:`normalized`: each crop right after it is decoded, while it is in cache)."""

    def __init__(self, images: ImageList, size: int, *, train: bool, seed: int, reduce: bool = True):
        if images.sizes is None:
            raise ValueError("ImageSource needs checked images (kdlab.data.image_index.check_images)")
        self.images, self.size, self.train, self.seed, self.reduce = images, size, train, seed, reduce
        self.num_samples = len(images)
        self.normalization: Normalization | None = None

    def normalized(self, normalization: Normalization) -> ImageSource:
        out = copy.copy(self)
        out.normalization = normalization
        return out

    def tasks(self, epoch: int, index: np.ndarray) -> list[tuple[int, tuple]]:
        w, h = self.images.sizes[index, 0], self.images.sizes[index, 1]
        if self.train:
            boxes = random_resized_crops(self.seed, epoch, index, w, h)
            return [(int(i), boxes[k]) for k, i in enumerate(index)]
        return [(int(i), center_crop_box(int(w[k]), int(h[k]), self.size)) for k, i in enumerate(index)]

    def load(self, tasks):
        s, norm = self.size, self.normalization
        x = batch_tensor((len(tasks), 3, s, s), torch.uint8 if norm is None else torch.float32)
        pixels = x.numpy()
        errors = []
        decode = decode_crop if self.train else decode_center
        for k, (i, box) in enumerate(tasks):
            try:
                crop = decode(self.images.path(i), box, s, reduce=self.reduce, expect=self.images.sizes[i])
            except BadImageError as err:  # raised by the main process, as one line naming the file
                errors.append((err.path, err.reason))
                pixels[k] = 0
                continue
            np.copyto(pixels[k], crop.transpose(2, 0, 1))  # HWC → CHW (uint8, or exactly into float32)
            if norm is not None:
                norm.pixels_(x[k:k + 1])  # while this crop is in cache
        index = torch.tensor([i for i, _ in tasks], dtype=torch.int64)
        y = torch.from_numpy(self.images.labels[index.numpy()])
        return x, y, index, errors


@dataclass(eq=False)
class ImageSplits:
    """A streamed data set: checked train and test file lists, read at ``image_size``.

    Quacks like :class:`~kdlab.data.DataSplits` where the builder needs it (``loader``, ``subset``, sizes, classes);
    the in-memory tensors (``x_train``...) do not exist, and asking for them says why.
    """

    name: str
    train: ImageList
    test: ImageList
    image_size: int = 224
    workers: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    reduce: bool = True  # DCT-scaled JPEG decoding where the crop allows it (kdlab.data.decode); False: exact
    train_augment = None  # continuous crops, not discrete views

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train.classes

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def num_test(self) -> int:
        return len(self.test)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    def _in_memory_only(self, what: str):
        raise ValueError(f"data.name={self.name} is streamed from disk, so {what} (which needs the whole data set "
                         "in memory) is not available; use an in-memory data set (mnist1d, cifar100, tiny_imagenet)")

    x_train = property(lambda self: self._in_memory_only("a distill_data policy or split control"))
    x_test = property(lambda self: self._in_memory_only("this"))

    def splits(self) -> tuple[ImageList, ImageList]:
        return self.train, self.test

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> ImageSplits:
        """The first ``n_train``/``n_test`` samples (the lists visit the classes round-robin, so it is stratified)."""
        def take(images: ImageList, n: int | None, name: str) -> ImageList:
            if n is None:
                return images
            return images.take(slice(0, check_int(n, name, 1, len(images), note=" (the split's size) or None")))

        return replace(self, train=take(self.train, n_train, "n_train"), test=take(self.test, n_test, "n_test"))

    def loader(self, part: str, batch_size: int, *, augment: bool = False, shuffle: bool = False,
               drop_last: bool = False, seed: int = 0, device: torch.device | str = "cpu") -> StreamLoader:
        """A :class:`StreamLoader` over ``"train"`` or ``"test"``: random crops with ``augment`` (training),
        else the centre crop; training loaders (``shuffle``) complete their last batch by wrapping around."""
        if part not in ("train", "test"):
            raise ValueError(f"part must be 'train' or 'test'; got {part!r}")
        if drop_last:
            raise ValueError("streamed loaders never drop samples: the last training batch wraps around")
        images = self.train if part == "train" else self.test
        source = ImageSource(images, self.image_size, train=augment, seed=seed, reduce=self.reduce)
        norm = Normalization(self.mean, self.std, 3, 4, device)
        return StreamLoader(source, batch_size, shuffle=shuffle, pad=shuffle, seed=seed, device=device,
                            workers=self.workers, normalization=norm, labels=images.labels)


def _streamed(name: str, train: ImageList, test: ImageList, image_size: int, workers: int | None, skip_bad: bool,
              progress: bool, train_subset: int | None, test_subset: int | None, reduce: bool) -> ImageSplits:
    size = check_int(image_size, "data.image_size", 8)
    # subsets before the check: a quick run on a part of ImageNet checks only that part
    train, test = ImageSplits(name, train, test).subset(train_subset, test_subset).splits()
    procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    workers = default_workers(procs) if workers is None else check_int(workers, "data.workers", 0)
    train, bad_train = check_images(train, what=f"{name} train", workers=workers, skip_bad=skip_bad,
                                    progress=progress)
    test, bad_test = check_images(test, what=f"{name} val", workers=workers, skip_bad=skip_bad, progress=progress)
    if not len(train) or not len(test):
        raise BadImageError(train.root if not len(train) else test.root, "no readable image left")
    return ImageSplits(name, train, test, size, workers, bad_train + bad_test, reduce=bool(reduce))


def load_image_folder(root: str | os.PathLike | None = None, *, image_size: int = 224, workers: int | None = None,
                      skip_bad: bool = False, progress: bool = True, train_subset: int | None = None,
                      test_subset: int | None = None, reduce: bool = True) -> ImageSplits:
    """Any ``ROOT/train/<class>/*`` + ``ROOT/val/<class>/*`` (or ``test/``) tree, streamed (module docstring).

    ``workers``: decoding processes (``None``: :func:`~kdlab.data.stream.default_workers`); ``skip_bad``: leave
    unreadable files out (``ImageSplits.skipped``) instead of raising; ``train_subset``/``test_subset``: the first
    n files of each split (round-robin over the classes), taken before the files are checked; ``reduce``: decode a
    JPEG at a DCT-reduced scale where the crop keeps ``image_size`` pixels per side (faster, within a stated
    tolerance of the exact pixels: :mod:`kdlab.data.decode`), ``False`` for torchvision's pixels everywhere."""
    train, test = imagefolder_splits(resolve_root(root))
    return _streamed("imagefolder", train, test, image_size, workers, skip_bad, progress, train_subset, test_subset,
                     reduce)


def load_imagenet(root: str | os.PathLike | None = None, *, image_size: int = 224, workers: int | None = None,
                  skip_bad: bool = False, progress: bool = True, train_subset: int | None = None,
                  test_subset: int | None = None, reduce: bool = True) -> ImageSplits:
    """ILSVRC-2012 in either validation layout (:mod:`kdlab.data.imagenet`), streamed (module docstring)."""
    train, test = imagenet_splits(resolve_root(root))
    return _streamed("imagenet", train, test, image_size, workers, skip_bad, progress, train_subset, test_subset,
                     reduce)
