"""The ILSVRC-2012 (ImageNet-1k) layouts on disk (docs/reference/imagenet.md §1).

``ROOT/train/<wnid>/*.JPEG`` (or Kaggle's ``ROOT/ILSVRC/Data/CLS-LOC/train/...``); the classes are the sorted wnids,
which is torchvision's class order. The validation images are either in class folders, ``val/<wnid>/*.JPEG``, or
flat, ``val/ILSVRC2012_val_00000001.JPEG ...``, labelled by

* Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first token of ``PredictionString`` is the
  wnid), or
* the devkit, ``ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt`` (line i: the 1-based ILSVRC-2012
  id of ``ILSVRC2012_val_{i:08d}``) with ``meta.mat`` (its ``synsets`` table maps ``ILSVRC2012_ID`` to ``WNID``; the
  1000 classes are the leaves, ``num_children == 0``), extracted or as ``ILSVRC2012_devkit_t12.tar.gz``. The
  ILSVRC ids are *not* in sorted-wnid order (id 490 is ``n01751748``, sorted index 65), so the mapping has to come
  from ``meta.mat``; it is read with ``scipy.io.loadmat``, as torchvision's ``ImageNet`` reads it.

When both label sources are present they must agree.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

from kdlab.data.archive import read_members
from kdlab.data.folders import (IMAGE_EXTENSIONS, ImageList, LayoutError, _is_image, check_same_classes,
                                class_folder_list, from_files)

__all__ = ["imagenet_splits", "devkit_labels", "solution_labels"]

_WNID = re.compile(r"^n\d{8}$")
_LAYOUT = ("the ILSVRC-2012 layout ROOT/train/<wnid>/*.JPEG (wnids like n01440764) with ROOT/val/<wnid>/*.JPEG, or "
           "a flat ROOT/val/ILSVRC2012_val_*.JPEG labelled by ROOT/LOC_val_solution.csv or the devkit "
           "(ROOT/ILSVRC2012_devkit_t12/ or ROOT/ILSVRC2012_devkit_t12.tar.gz)")
_DEVKIT = "ILSVRC2012_devkit_t12"
_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
_META = "data/meta.mat"


def _image_root(root: Path) -> Path:
    kaggle = root / "ILSVRC" / "Data" / "CLS-LOC"
    return kaggle if (kaggle / "train").is_dir() else root


def solution_labels(path: Path) -> dict[str, str]:
    """``LOC_val_solution.csv`` → ``{image id (file stem): wnid}``."""
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise ValueError(f"{path}: expected the header ImageId,PredictionString (Kaggle's LOC_val_solution.csv)"
                             f"; got {header}")
        for line, row in enumerate(reader, start=2):
            tokens = row[1].split() if len(row) >= 2 else []
            if not tokens or not _WNID.match(tokens[0]):
                raise ValueError(f"{path}, line {line}: PredictionString must start with a wnid; got {row}")
            out[row[0].strip()] = tokens[0]
    return out


def _devkit_files(root: Path) -> tuple[bytes, bytes] | None:
    """(ground truth text, meta.mat bytes) from the extracted devkit or its archive, or None if neither is there."""
    folder = root / _DEVKIT
    if (folder / _GROUND_TRUTH).is_file() and (folder / _META).is_file():
        return (folder / _GROUND_TRUTH).read_bytes(), (folder / _META).read_bytes()
    archive = root / f"{_DEVKIT}.tar.gz"
    if archive.is_file():
        members = read_members(archive, remedy="get a fresh copy of the ILSVRC-2012 devkit")
        try:
            return bytes(members[f"{_DEVKIT}/{_GROUND_TRUTH}"]), bytes(members[f"{_DEVKIT}/{_META}"])
        except KeyError as err:
            raise ValueError(f"{archive} lacks {err.args[0]}; get a fresh copy of the ILSVRC-2012 devkit") from None
    return None


def devkit_labels(ground_truth: bytes, meta_mat: bytes, where: str) -> dict[str, str]:
    """The devkit's labels: ``{"ILSVRC2012_val_%08d": wnid}`` from the ground-truth ids through ``meta.mat``."""
    import scipy.io  # only for a devkit (scipy comes with the core deps; its import costs ~0.3 s)

    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta_mat), squeeze_me=True)["synsets"]
        ids = [int(s["ILSVRC2012_ID"]) for s in synsets if int(s["num_children"]) == 0]
        wnids = [str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0]
    except (ValueError, KeyError, TypeError, IndexError, NotImplementedError) as err:
        raise ValueError(f"{where}: meta.mat is not the ILSVRC-2012 devkit's synset table ({err})") from None
    id_to_wnid = dict(zip(ids, wnids))
    out = {}
    for i, line in enumerate(ground_truth.decode("ascii", errors="replace").split(), start=1):
        if not line.isdigit() or int(line) not in id_to_wnid:
            raise ValueError(f"{where}: ground truth line {i} is {line!r}, not an ILSVRC-2012 id of meta.mat's leaves")
        out[f"ILSVRC2012_val_{i:08d}"] = id_to_wnid[int(line)]
    return out


def _flat_val(val_dir: Path, root: Path, classes: tuple[str, ...]) -> ImageList:
    files = sorted(f for f in os.listdir(val_dir) if _is_image(f) and (val_dir / f).is_file())
    sources = {}
    for csv_dir in dict.fromkeys((root, val_dir.parent)):
        if (csv_dir / "LOC_val_solution.csv").is_file():
            sources["LOC_val_solution.csv"] = solution_labels(csv_dir / "LOC_val_solution.csv")
            break
    devkit = _devkit_files(root)
    if devkit is not None:
        sources["the devkit"] = devkit_labels(*devkit, where=str(root / _DEVKIT))
    if not sources:
        raise LayoutError(f"{val_dir} holds images but no class folders, and no labels were found for them "
                          f"(LOC_val_solution.csv or {_DEVKIT}); expected {_LAYOUT}")
    (name, labels), *others = sources.items()
    for other_name, other in others:
        differ = [k for k in labels.keys() & other.keys() if labels[k] != other[k]]
        if differ:
            raise ValueError(f"{name} and {other_name} disagree on {len(differ)} validation images (e.g. "
                             f"{differ[0]}: {labels[differ[0]]} vs {other[differ[0]]}); remove the wrong one")
    index = {c: i for i, c in enumerate(classes)}
    out_labels = []
    for f in files:
        wnid = labels.get(Path(f).stem)
        if wnid is None:
            raise ValueError(f"{val_dir / f} has no label in {name}; the label file belongs to another data set")
        if wnid not in index:
            raise ValueError(f"{val_dir / f} is labelled {wnid} by {name}, which is not a class folder of train/: "
                             "the validation classes differ from the training classes")
        out_labels.append(index[wnid])
    return from_files(val_dir, files, out_labels, classes)


def imagenet_splits(root: Path) -> tuple[ImageList, ImageList]:
    """``(train, val)`` of an ILSVRC-2012 tree (either validation layout)."""
    if not root.is_dir():
        raise LayoutError(f"data.root {root} is not a directory; expected {_LAYOUT}")
    images = _image_root(root)
    folders = [e.name for e in os.scandir(images / "train") if e.is_dir()] if (images / "train").is_dir() else []
    bad = sorted(c for c in folders if not _WNID.match(c) and not c.startswith("."))
    if bad:
        raise LayoutError(f"{images / 'train'}: class folders {bad[:3]} are not wnids; expected {_LAYOUT} (for any "
                          "other image folder use data.name=imagefolder)")
    train = class_folder_list(images / "train", _LAYOUT)
    val_dir = images / "val"
    if not val_dir.is_dir():
        raise LayoutError(f"{val_dir} is missing; expected {_LAYOUT}")
    has_folders = any(e.is_dir() and _WNID.match(e.name) for e in os.scandir(val_dir))
    if has_folders:
        val = class_folder_list(val_dir, _LAYOUT)
        check_same_classes(train.classes, val.classes, str(val_dir))
    else:
        if not any(_is_image(f) for f in os.listdir(val_dir)):
            raise LayoutError(f"{val_dir} holds neither class folders nor images ({'/'.join(IMAGE_EXTENSIONS)}); "
                              f"expected {_LAYOUT}")
        val = _flat_val(val_dir, root, train.classes)
    return train, val
