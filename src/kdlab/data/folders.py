"""Image files on disk as labelled lists: the class-folder scan every on-disk layout shares, and the ``imagefolder``
layout itself (torchvision's ``ImageFolder`` convention, docs/reference/imagenet.md §1).

An :class:`ImageList` holds relative paths (one numpy string array, not a Python list: worker processes forked
from the loader then share it without copying it page by page through reference counts), int64 labels and the
class names. Classes are the sorted folder names. The order of the samples is round-robin over the classes
(the first file of every class, then the second of every class, ...), so the first ``n`` samples — a
``data.train_subset`` — cover the classes evenly, and it is the same on every machine.

Symbolic links are followed (a class folder, or an image, that links elsewhere is read as ImageFolder reads it), but
a directory is listed once: a link back to a folder above it (a loop, which ``os.walk(followlinks=True)`` follows
until the path is too long) or a second link to one folder is a :class:`LayoutError` naming both paths, since its
images would otherwise count several times, under whichever label each path gives them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "ImageList", "LayoutError", "class_folder_list", "check_same_classes",
           "imagefolder_splits", "interleave"]

#: File name endings (case-insensitive) read as images; other files in the class folders are ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class LayoutError(FileNotFoundError):
    """A data root that does not hold the expected layout (the message says which layout was expected)."""


@dataclass(frozen=True, eq=False)
class ImageList:
    """Labelled image files: ``root / paths[i]`` has class ``labels[i]`` (an index into ``classes``).

    ``sizes``: ``[N, 2]`` int64 ``(width, height)`` once the files were checked (:mod:`kdlab.data.image_index`),
    else ``None``.
    """

    root: Path
    paths: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    sizes: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        if self.paths.shape != self.labels.shape or self.paths.ndim != 1:
            raise ValueError(f"paths {self.paths.shape} and labels {self.labels.shape} must be 1-D of equal length")
        if self.sizes is not None and self.sizes.shape != (len(self.paths), 2):
            raise ValueError(f"sizes must be [N, 2]; got {self.sizes.shape}")

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    def path(self, i: int) -> str:
        return os.path.join(self.root, str(self.paths[i]))

    def take(self, keep: np.ndarray | slice) -> ImageList:
        """The samples ``keep`` (an index array, a boolean mask or a slice), in that order."""
        return ImageList(self.root, self.paths[keep], self.labels[keep], self.classes,
                         None if self.sizes is None else self.sizes[keep])


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _listed_once(path: Path, seen: dict[tuple[int, int], Path]) -> None:
    """Record the directory ``path`` (after links) in ``seen``; a :class:`LayoutError` if it is listed already."""
    st = os.stat(path)
    first = seen.setdefault((st.st_dev, st.st_ino), path)
    if first != path:
        what = "a link to a folder above it (a loop)" if str(path).startswith(str(first) + os.sep) else "a second path"
        raise LayoutError(f"{path} is {what} to the folder {first}, which is listed already: its images would count "
                          "twice; remove the link (each image folder must be reachable once)")


def _images_below(folder: Path, seen: dict[tuple[int, int], Path]) -> list[str]:
    """Image files anywhere below ``folder``, sorted relative paths (each folder's files, then its sub-folders in
    name order, as ``os.walk`` lists them); links are followed, every directory is listed once (``seen``)."""
    out, stack = [], [(".", folder)]
    while stack:
        rel, path = stack.pop()
        _listed_once(path, seen)
        files, dirs = [], []
        try:
            with os.scandir(path) as entries:
                for e in entries:
                    if e.is_dir():  # (follows links)
                        dirs.append(e.name)
                    elif _is_image(e.name):  # a file, a link to one, or anything else probe() then reports
                        files.append(e.name)
        except OSError as err:  # os.walk skipped such a folder silently, and its images with it
            raise LayoutError(f"{path} cannot be listed ({type(err).__name__}: {err.strerror or err}); make it "
                              "readable or move it out of the image folder") from None
        out.extend(os.path.normpath(os.path.join(rel, f)) for f in sorted(files))
        stack.extend((os.path.join(rel, d), path / d) for d in sorted(dirs, reverse=True))
    return out


def interleave(labels: np.ndarray) -> np.ndarray:
    """The order that visits the classes round-robin: sort by (position within its class, class), stable."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    rank = np.empty(len(labels), dtype=np.int64)
    starts = np.searchsorted(labels[order], labels[order], side="left")
    rank[order] = np.arange(len(labels)) - starts
    return np.lexsort((labels, rank))


def from_files(root: Path, rel_paths: Sequence[str], labels: Sequence[int], classes: Sequence[str]) -> ImageList:
    """An :class:`ImageList` in the round-robin order (see the module docstring)."""
    labels = np.asarray(labels, dtype=np.int64)
    order = interleave(labels)
    return ImageList(Path(root), np.asarray(list(rel_paths), dtype=np.str_)[order] if len(rel_paths) else
                     np.zeros(0, dtype=np.str_), labels[order], tuple(classes))


def class_folder_list(split_dir: Path, expected: str) -> ImageList:
    """``split_dir/<class>/**/<image>``: classes are the sorted sub-folder names, each must hold an image.
    ``expected`` describes the layout for the :class:`LayoutError` when there is none."""
    if not split_dir.is_dir():
        raise LayoutError(f"{split_dir} is missing; expected {expected}")
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise LayoutError(f"{split_dir} has no class folders; expected {expected}")
    paths, labels, empty = [], [], []
    seen: dict[tuple[int, int], Path] = {}
    _listed_once(split_dir, seen)
    for c, name in enumerate(classes):
        files = _images_below(split_dir / name, seen)
        if not files:
            empty.append(name)
        paths.extend(f"{name}/{f}" for f in files)
        labels.extend([c] * len(files))
    if empty:
        raise LayoutError(f"{split_dir}: class folder(s) {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''} "
                          f"hold no image ({'/'.join(IMAGE_EXTENSIONS)}); expected {expected}")
    return from_files(split_dir, paths, labels, classes)


def check_same_classes(train: Sequence[str], val: Sequence[str], where: str) -> None:
    """A ValueError naming the classes that only one of the two splits has."""
    if tuple(train) != tuple(val):
        only_t, only_v = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise ValueError(f"{where}: the validation classes differ from the training classes (only in train: "
                         f"{only_t[:5]}{' ...' if len(only_t) > 5 else ''}; only in val: {only_v[:5]}"
                         f"{' ...' if len(only_v) > 5 else ''}); both splits need the same class folders")


_FOLDER_LAYOUT = ("the image-folder layout ROOT/train/<class>/<image> and ROOT/val/<class>/<image> (or "
                  "ROOT/test/<class>/<image>), images ending in " + "/".join(IMAGE_EXTENSIONS))


def imagefolder_splits(root: Path) -> tuple[ImageList, ImageList]:
    """``(train, val)`` of an image folder: ``root/train`` and ``root/val`` (else ``root/test``)."""
    if not root.is_dir():
        raise LayoutError(f"data.root {root} is not a directory; expected {_FOLDER_LAYOUT}")
    held = [d for d in ("val", "test") if (root / d).is_dir()]
    if not (root / "train").is_dir() or not held:
        found = sorted(e.name for e in os.scandir(root))[:8]
        raise LayoutError(f"{root} is not an image folder (found {found}); expected {_FOLDER_LAYOUT}")
    train = class_folder_list(root / "train", _FOLDER_LAYOUT)
    val = class_folder_list(root / held[0], _FOLDER_LAYOUT)
    check_same_classes(train.classes, val.classes, str(root))
    return train, val
