"""Tiny-ImageNet (``tiny-imagenet-200``) decoded once into a uint8 array cache, then served from memory.

Layout (docs/reference/imagenet.md §1): ``wnids.txt``; ``train/<wnid>/images/*.JPEG``; ``val/images/*.JPEG`` labelled
by ``val/val_annotations.txt`` (tab-separated: file name, wnid, bounding box). ``data.root`` is that directory or
one holding ``tiny-imagenet-200/``. Classes are the sorted wnids (torchvision ``ImageFolder``'s order, which
mdistiller's and R2KD's loaders use). The 110k 64×64 images (≈1.3 GB as uint8) are decoded once, in ``workers``
processes, into ``<tiny-imagenet-200>.npz`` beside the folder, validated like the CIFAR-100 cache (a version and a
fingerprint of the listing: a changed file rebuilds it). The training augmentation is ``CropFlip(64, padding=8)``:
17·17·2 = 578 discrete views, so the exact teacher-logit cache applies (§2).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from kdlab._bar import tqdm
from kdlab.data._paths import cached_arrays, read_npz, resolve_root
from kdlab.data.decode import BadImageError, decode_full
from kdlab.data.folders import ImageList, LayoutError, _is_image, check_same_classes, from_files
from kdlab.data.image_index import fingerprint, rank0_first
from kdlab.data.image_stream import IMAGENET_MEAN, IMAGENET_STD
from kdlab.data.splits import DataSplits
from kdlab.data.stream import default_workers
from kdlab.data.views import CropFlip

__all__ = ["load_tiny_imagenet", "tiny_imagenet_lists"]

_VERSION = 1
_SIDE = 64
_DIR = "tiny-imagenet-200"
_LAYOUT = (f"the Tiny-ImageNet layout ({_DIR}/): wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
           "val/val_annotations.txt")


def _find(root: Path) -> Path:
    for d in (root, root / _DIR):
        if (d / "wnids.txt").is_file():
            return d
    raise LayoutError(f"{root} holds no wnids.txt (nor {_DIR}/wnids.txt); expected {_LAYOUT}")


def tiny_imagenet_lists(root: Path) -> tuple[ImageList, ImageList]:
    """``(train, val)`` image lists of a Tiny-ImageNet tree."""
    base = _find(root)
    wnids = sorted(set((base / "wnids.txt").read_text().split()))
    train_dir = base / "train"
    if not train_dir.is_dir():
        raise LayoutError(f"{train_dir} is missing; expected {_LAYOUT}")
    folders = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    check_same_classes(wnids, folders, f"{base / 'wnids.txt'} vs {train_dir}")
    paths, labels = [], []
    for c, wnid in enumerate(wnids):
        images = train_dir / wnid / "images"
        files = sorted(f for f in os.listdir(images) if _is_image(f)) if images.is_dir() else []
        if not files:
            raise LayoutError(f"{images} holds no image; expected {_LAYOUT}")
        paths += [f"{wnid}/images/{f}" for f in files]
        labels += [c] * len(files)
    train = from_files(train_dir, paths, labels, wnids)

    val_dir, notes = base / "val" / "images", base / "val" / "val_annotations.txt"
    if not val_dir.is_dir() or not notes.is_file():
        raise LayoutError(f"{base / 'val'} lacks images/ or val_annotations.txt; expected {_LAYOUT}")
    label_of = {}
    for n, line in enumerate(notes.read_text().splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(f"{notes}, line {n}: expected 'file<TAB>wnid<TAB>box'; got {line!r}")
        label_of[fields[0]] = fields[1]
    files = sorted(f for f in os.listdir(val_dir) if _is_image(f))
    unlabelled = [f for f in files if f not in label_of]
    if unlabelled:
        raise ValueError(f"{val_dir / unlabelled[0]} has no line in {notes} ({len(unlabelled)} such files)")
    unknown = sorted({label_of[f] for f in files} - set(wnids))
    if unknown:
        raise ValueError(f"{notes} labels images with {unknown[:3]}, which are not in wnids.txt: the validation "
                         "classes differ from the training classes")
    index = {w: i for i, w in enumerate(wnids)}
    val = from_files(val_dir, files, [index[label_of[f]] for f in files], wnids)
    return train, val


def _decode(path: str) -> tuple[np.ndarray | None, str]:
    try:
        x = decode_full(path)
    except BadImageError as err:
        return None, err.reason
    if x.shape[:2] != (_SIDE, _SIDE):
        return None, f"a {x.shape[1]}×{x.shape[0]} image; Tiny-ImageNet's are {_SIDE}×{_SIDE}"
    return x, ""


def _decode_all(images: ImageList, workers: int, progress: bool, what: str) -> tuple[np.ndarray, list[str]]:
    paths = [images.path(i) for i in range(len(images))]
    x = np.zeros((len(paths), 3, _SIDE, _SIDE), dtype=np.uint8)
    bar = dict(total=len(paths), desc=f"decoding {what}", unit="img", disable=not progress or len(paths) < 2000,
               dynamic_ncols=True)
    if workers > 0 and len(paths) > 256:
        with ProcessPoolExecutor(workers) as pool:
            rows = tqdm(pool.map(_decode, paths, chunksize=256), **bar)
            reasons = [_put(x, i, row) for i, row in enumerate(rows)]
    else:
        reasons = [_put(x, i, _decode(p)) for i, p in enumerate(tqdm(paths, **bar))]
    return x, reasons


def _put(x: np.ndarray, i: int, row: tuple[np.ndarray | None, str]) -> str:
    if row[0] is not None:
        x[i] = row[0].transpose(2, 0, 1)
    return row[1]


def _build(train: ImageList, val: ImageList, workers: int, progress: bool) -> dict[str, np.ndarray]:
    out = {}
    for split, images in (("train", train), ("test", val)):
        x, reasons = _decode_all(images, workers, progress, f"Tiny-ImageNet {split}")
        out[f"x_{split}"], out[f"y_{split}"] = x, images.labels
        out[f"reason_{split}"] = np.asarray(reasons, dtype=np.str_)
        out[f"path_{split}"] = images.paths
    return out


_KEYS = ("x_train", "y_train", "x_test", "y_test", "reason_train", "reason_test", "path_train", "path_test")


def _read(path: Path, key: dict) -> dict[str, np.ndarray]:
    arrays, meta = read_npz(path, _KEYS)
    if meta != key:
        raise ValueError("the files changed since it was written")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.shape[1:] != (3, _SIDE, _SIDE) or y.shape != (x.shape[0],):
            raise ValueError(f"x_{split}/y_{split} are malformed")
    return arrays


def load_tiny_imagenet(root: str | os.PathLike | None = None, *, workers: int | None = None, skip_bad: bool = False,
                       progress: bool = True) -> DataSplits:
    """Tiny-ImageNet as in-memory :class:`DataSplits` (uint8 ``[N, 3, 64, 64]``, 200 classes, ImageNet
    normalisation, ``CropFlip(64, padding=8)``); ``skipped`` lists the unreadable files left out under
    ``skip_bad`` (otherwise the first is a :class:`BadImageError`)."""
    base = _find(resolve_root(root))
    train, val = tiny_imagenet_lists(base)
    workers = default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))) if workers is None else workers
    key = {"version": _VERSION, "train": fingerprint(train), "test": fingerprint(val)}
    arrays = rank0_first(lambda: cached_arrays(
        base.with_name(base.name + ".npz"), key, read=lambda p: _read(p, key),
        build=lambda: _build(train, val, workers, progress), what="Tiny-ImageNet",
        rebuild=f"decoding {base} again", stacklevel=4))
    skipped, keep = [], {}
    for split, images in (("train", train), ("test", val)):
        reasons = arrays[f"reason_{split}"]
        bad = np.flatnonzero(reasons != "")
        skipped += [(images.path(i), str(reasons[i])) for i in bad]
        keep[split] = np.flatnonzero(reasons == "")
    if skipped and not skip_bad:
        more = f"; {len(skipped)} unreadable files in {base}" if len(skipped) > 1 else ""
        raise BadImageError(skipped[0][0], skipped[0][1] + more)
    sel = {f"{k}_{s}": arrays[f"{k}_{s}"] if len(keep[s]) == len(arrays[f"y_{s}"]) else arrays[f"{k}_{s}"][keep[s]]
           for s in ("train", "test") for k in ("x", "y")}
    return DataSplits.from_numpy("tiny_imagenet", sel, len(train.classes), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                 train_augment=CropFlip(_SIDE, padding=8), class_names=train.classes,
                                 skipped=tuple(skipped))
