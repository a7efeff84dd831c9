"""A stored crop schedule: every (epoch, image)'s RandomResizedCrop box and flip, drawn once and replayed.

FKD (Shen & Xing, "A Fast Knowledge Distillation Framework for Visual Recognition", ECCV 2022) samples each image's
crops ahead of training so that a teacher can be run once on exactly those crops. Here the boxes of epochs
``1..E`` are :func:`kdlab.data.crops.random_resized_crops` of the schedule's own seed — the standard distribution,
a pure function of ``(seed, epoch, index)`` and the image's size, so a live run with ``seed`` draws the very same
crops — and they are *stored*, so a replay never depends on the code that drew them (a later kdlab replays the
same pixels the teacher saw).

Layout in a directory (8.125 bytes per view):

* ``schedule.boxes``: uint16 ``[E, N, 4]`` = (top, left, height, width) in original-image pixels;
* ``schedule.flips``: uint8 ``[E, ⌈N/8⌉]``, the horizontal flips bit-packed (``numpy.packbits``, big bit order);
* ``schedule.json``: seed, epochs, N, scale, ratio, the algorithm and the SHA-256 of both arrays (the schedule's
  identity), written last: a directory without it holds no schedule.

Both arrays are memory-mapped when read: a schedule for ImageNet-1k × 100 epochs is 1.0 GB and stays on disk.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kdlab._bar import tqdm
from kdlab._checks import check_int
from kdlab._io import atomic_write_text, map_file, preallocate
from kdlab.data.crops import DEFAULT_RATIO, DEFAULT_SCALE, CropBoxes, random_resized_crops

__all__ = ["SCHEDULE_FILES", "CropSchedule", "schedule_bytes"]

_VERSION = 1
_ALGORITHM = "kdlab.data.crops.random_resized_crops/splitmix64"
_BLOCK = 131_072  # images per drawing call (bounds the temporary uniforms to ~25 MB)
_MAX_SIDE = np.iinfo(np.uint16).max
SCHEDULE_FILES = ("schedule.json", "schedule.boxes", "schedule.flips")


def schedule_bytes(num_samples: int, epochs: int) -> int:
    """Bytes of a schedule on disk: ``E·N·8`` (boxes) + ``E·⌈N/8⌉`` (flips)."""
    return epochs * num_samples * 8 + epochs * math.ceil(num_samples / 8)


class CropSchedule:
    """The crops of ``epochs`` epochs of ``num_samples`` images (module docstring). Epochs are 1-based, as the
    training loop's. Make one with :meth:`draw`, reopen it with :meth:`open`."""

    def __init__(self, boxes: np.ndarray, flips: np.ndarray, meta: dict):
        self._boxes, self._flips, self.meta = boxes, flips, meta
        self.seed, self.epochs, self.num_samples = int(meta["seed"]), int(meta["epochs"]), int(meta["num_samples"])

    # ------------------------------------------------------------------------------------------------ making
    @classmethod
    def draw(cls, sizes: np.ndarray, seed: int, epochs: int, directory: str | Path | None = None, *,
             scale: Sequence[float] = DEFAULT_SCALE, ratio: Sequence[float] = DEFAULT_RATIO,
             progress: bool = False) -> CropSchedule:
        """Draw the boxes of epochs ``1..epochs`` for images of ``sizes`` (``[N, 2]`` width, height); in memory, or
        written to ``directory`` (space reserved up front, ``schedule.json`` last) and returned memory-mapped."""
        seed = check_int(seed, "schedule seed", 0)
        epochs = check_int(epochs, "schedule epochs", 1)
        sizes = np.asarray(sizes, dtype=np.int64)
        if sizes.ndim != 2 or sizes.shape[1] != 2 or not len(sizes):
            raise ValueError(f"sizes must be [N, 2] (width, height) with N >= 1; got shape {sizes.shape}")
        if sizes.max() > _MAX_SIDE:
            raise ValueError(f"an image side of {int(sizes.max())} px does not fit the schedule's uint16 boxes "
                             f"(at most {_MAX_SIDE})")
        n = len(sizes)
        shapes = {"boxes": (epochs, n, 4), "flips": (epochs, math.ceil(n / 8))}
        if directory is None:
            boxes, flips = np.zeros(shapes["boxes"], np.uint16), np.zeros(shapes["flips"], np.uint8)
        else:
            directory = Path(directory)
            directory.mkdir(parents=True, exist_ok=True)
            boxes = _new_map(directory / "schedule.boxes", np.uint16, shapes["boxes"])
            flips = _new_map(directory / "schedule.flips", np.uint8, shapes["flips"])
        h = hashlib.sha256()
        for e in tqdm(range(epochs), desc="crop schedule", unit="epoch", disable=not progress, dynamic_ncols=True):
            flip = np.zeros(n, dtype=bool)
            for start in range(0, n, _BLOCK):
                idx = np.arange(start, min(n, start + _BLOCK))
                b = random_resized_crops(seed, e + 1, idx, sizes[idx, 0], sizes[idx, 1], scale=scale, ratio=ratio)
                boxes[e, idx] = np.stack([b.top, b.left, b.height, b.width], axis=1)
                flip[idx] = b.flip
            flips[e] = np.packbits(flip)
            h.update(boxes[e].tobytes())
            h.update(flips[e].tobytes())
        meta = {"version": _VERSION, "algorithm": _ALGORITHM, "seed": seed, "epochs": epochs, "num_samples": n,
                "scale": [float(v) for v in scale], "ratio": [float(v) for v in ratio], "sha256": h.hexdigest()}
        if directory is not None:
            boxes.flush()
            flips.flush()
            atomic_write_text(directory / "schedule.json", json.dumps(meta, indent=1))
            return cls.open(directory)
        return cls(boxes, flips, meta)

    @classmethod
    def open(cls, directory: str | Path) -> CropSchedule:
        """The schedule stored in ``directory``, memory-mapped read-only; a missing or truncated file is a
        ``ValueError`` naming it."""
        directory = Path(directory)
        meta_path = directory / "schedule.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"no readable crop schedule in {directory} ({meta_path.name}: {e})") from e
        if meta.get("version") != _VERSION:
            raise ValueError(f"crop schedule {directory} has version {meta.get('version')}, this kdlab reads "
                             f"{_VERSION}; rebuild it")
        e, n = int(meta["epochs"]), int(meta["num_samples"])
        try:
            boxes = map_file(directory / "schedule.boxes", np.uint16, (e, n, 4))
            flips = map_file(directory / "schedule.flips", np.uint8, (e, math.ceil(n / 8)))
        except ValueError as err:
            raise ValueError(f"crop schedule file {err}; rebuild the store") from None
        return cls(boxes, flips, meta)

    # ------------------------------------------------------------------------------------------------ reading
    def boxes(self, epoch: int, index) -> CropBoxes:
        """The crops of images ``index`` in ``epoch`` (1-based), as :func:`random_resized_crops` returns them."""
        epoch = check_int(epoch, "epoch", 1, self.epochs, note=f" (the crop schedule holds epochs 1..{self.epochs})")
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.num_samples):
            raise ValueError(f"image indices must be in [0, {self.num_samples}) for this crop schedule")
        b = self._boxes[epoch - 1, index].astype(np.int64)
        flip = (self._flips[epoch - 1, index >> 3].astype(np.int64) >> (7 - (index & 7))) & 1
        return CropBoxes(b[:, 0], b[:, 1], b[:, 2], b[:, 3], flip.astype(bool))

    def describe(self) -> dict:
        """What identifies the schedule (stored with everything built on it)."""
        return dict(self.meta)

    @property
    def size_bytes(self) -> int:
        return schedule_bytes(self.num_samples, self.epochs)

    def __repr__(self) -> str:
        return f"CropSchedule(seed={self.seed}, epochs={self.epochs}, num_samples={self.num_samples})"


def _new_map(path: Path, dtype, shape) -> np.memmap:
    preallocate(path, math.prod(shape) * np.dtype(dtype).itemsize)
    return np.memmap(path, dtype=dtype, mode="r+", shape=shape)
