"""The teacher-output store: a teacher's outputs on every crop of a stored crop schedule (FKD, Shen & Xing, ECCV 2022).

Built once by ``kdlab teacher cache`` (:mod:`kdlab.teachers.store_build`); read by every later student that replays
the schedule (:class:`kdlab.teachers.stored.StoredTeacher`). A directory:

* ``store.json`` — what the outputs are valid for, written last at creation (a directory without it holds nothing):
  ``teacher`` (weights SHA-256, the precision it ran under), ``data`` (fingerprint of the training listing, class
  count, crop side, decoding, normalisation), ``schedule`` (seed, epochs, distribution, SHA-256 of the boxes),
  ``outputs`` (precision, k, chunk size);
* the crop schedule (:mod:`kdlab.data.crop_schedule`): 8.125 bytes per view;
* the outputs, one row per (epoch, image), in one of three precisions the builder chooses:

  ===========  ======================================================  ========================  ============
  precision    files                                                   bytes per view            exact?
  ===========  ======================================================  ========================  ============
  ``float32``  ``logits.bin`` [E, N, C] float32                        4·C (4000 for ImageNet)   yes
  ``float16``  ``logits.bin`` [E, N, C] float16                        2·C (2000)                rounding
  ``topk``     ``topk_logp.bin`` [E, N, k] float16, ``topk_index.bin``  4·k + 4 (44 at k = 10)   top-k only
               [E, N, k] int16, ``topk_rest.bin`` [E, N] float32
  ===========  ======================================================  ========================  ============

* ``rows.crc32`` [E, N] uint32: a checksum of every stored row — CRC-32 of the row's bytes in every output file,
  started from the row's position (epoch, image) — written with the row and checked on every read, so a row that was
  changed, corrupted or moved on disk is a :class:`~kdlab._io.StaleCacheError` naming the store, never a silent
  teacher (4 bytes per view; reading a batch checks only its rows: measured in docs/performance.md);
* ``done.mask`` [E, ⌈N/chunk⌉] uint8: which chunks are written (a build resumes from it).

Every file is reserved on disk at creation (``kdlab._io.preallocate``: a full disk is an error then, not a SIGBUS
while filling) and memory-mapped: reading a batch touches only its rows, so an ImageNet store (up to 512 GB at
float32) is never loaded into RAM. A store is validated as the CIFAR view cache is (:mod:`kdlab.teachers.cache`):
a differing field is a :class:`~kdlab.teachers.cache.StaleCacheError` naming it, a file of the wrong size is one too.
What a run records as the store's identity (:attr:`TeacherStore.identity`) hashes ``store.json`` *and* the row
checksums, so a store whose contents changed changes the run's identity even where its metadata did not.

The data fingerprint hashes each training file's relative path, label, byte size and decoded width × height, not its
modification time, so a store stays valid for a copy of the data set on another machine; hashing 140 GB of JPEG
content per run is not affordable.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab._io import StaleCacheError, WriteError, atomic_write_text, digest, map_file, preallocate
from kdlab.data.crop_schedule import SCHEDULE_FILES, CropSchedule, schedule_bytes
from kdlab.data.folders import ImageList
from kdlab.teachers.topk import topk_compress, topk_expand

__all__ = ["PRECISIONS", "TeacherStore", "bytes_per_view", "listing_fingerprint", "store_expectation"]

_FORMAT = 2  # 2: rows.crc32
PRECISIONS = ("float32", "float16", "topk")
_META, _MASK, _SUMS = "store.json", "done.mask", "rows.crc32"
_OUTPUT_FILES = ("logits.bin", "topk_logp.bin", "topk_index.bin", "topk_rest.bin")
_KNOWN = {_META, _MASK, _SUMS, *SCHEDULE_FILES, *_OUTPUT_FILES}


def listing_fingerprint(images: ImageList) -> str:
    """SHA-256 over the class names and, per file, its relative path, label, byte size and decoded (width, height)
    (``images`` checked: :func:`kdlab.data.image_index.check_images`)."""
    if images.sizes is None:
        raise ValueError("the image list must be checked (sizes known) to fingerprint it")
    h = hashlib.sha256(f"{len(images)}|{'|'.join(images.classes)}\n".encode())
    for rel, label, (w, hh) in zip(images.paths.tolist(), images.labels.tolist(), images.sizes.tolist()):
        size = os.stat(os.path.join(images.root, rel)).st_size
        h.update(f"{rel}\0{label}\0{size}\0{w}x{hh}\n".encode())
    return h.hexdigest()


def store_expectation(teacher_sha256: str, teacher_precision: str, images: ImageList, num_classes: int,
                      image_size: int, mean: Sequence[float], std: Sequence[float], reduce: bool = True) -> dict:
    """The ``teacher`` and ``data`` sections a store must hold to serve a run on ``images`` with this teacher."""
    return {"teacher": {"sha256": teacher_sha256, "precision": teacher_precision},
            "data": {"fingerprint": listing_fingerprint(images), "num_samples": len(images),
                     "num_classes": int(num_classes), "image_size": int(image_size), "reduce": bool(reduce),
                     "mean": [float(v) for v in mean], "std": [float(v) for v in std]}}


def _layout(precision: str, k: int | None, num_classes: int, epochs: int, n: int) -> dict[str, tuple[Any, tuple]]:
    if precision == "topk":
        index = np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32
        return {"topk_logp.bin": (np.float16, (epochs, n, k)), "topk_index.bin": (index, (epochs, n, k)),
                "topk_rest.bin": (np.float32, (epochs, n))}
    return {"logits.bin": (np.float32 if precision == "float32" else np.float16, (epochs, n, num_classes))}


def bytes_per_view(precision: str, num_classes: int, k: int | None = None) -> int:
    """Output bytes per (image, epoch): 4·C (float32), 2·C (float16), 4·k + 4 (topk, C ≤ 32767)."""
    return sum(np.dtype(d).itemsize * math.prod(s[2:]) for d, s in _layout(precision, k, num_classes, 1, 1).values())


def row_checksums(epoch: int, index: np.ndarray, num_samples: int, parts: Sequence[np.ndarray]) -> np.ndarray:
    """uint32 CRC-32 of each row ``index`` of ``epoch``: the row's bytes in ``parts`` (``[b, ...]`` arrays, the output
    files' rows in layout order), started from the row's position ``(epoch - 1)·N + i`` so that a row moved to another
    position does not match either."""
    index = np.asarray(index, dtype=np.int64)
    b = len(index)
    data = np.concatenate([np.ascontiguousarray(p).reshape(b, -1).view(np.uint8) for p in parts], axis=1)
    start = ((epoch - 1) * num_samples + index) & 0xFFFFFFFF
    return np.fromiter((zlib.crc32(row, int(s)) for row, s in zip(data, start)), dtype=np.uint32, count=b)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v: Any) -> Any:
    return v[:12] + "…" if isinstance(v, str) and len(v) == 64 else v


class TeacherStore:
    """An opened store directory (module docstring): metadata, lazily memory-mapped files, one schedule."""

    def __init__(self, path: Path, meta: dict, writable: bool = False):
        self.path, self.meta, self.writable = path, meta, writable
        out = meta["outputs"]
        self.precision, self.k, self.chunk_size = out["precision"], out["k"], int(out["chunk_size"])
        self.num_classes = int(meta["data"]["num_classes"])
        self.num_samples = int(meta["data"]["num_samples"])
        self.epochs = int(meta["schedule"]["epochs"])
        self.num_chunks = math.ceil(self.num_samples / self.chunk_size)
        self._layout = _layout(self.precision, self.k, self.num_classes, self.epochs, self.num_samples)
        self._maps: dict[str, np.memmap] | None = None
        self._pid = -1
        self._schedule: CropSchedule | None = None
        self._identity: str | None = None

    # ------------------------------------------------------------------------------------------- create / open
    @classmethod
    def create(cls, path: str | Path, expected: dict, sizes: np.ndarray, *, seed: int, epochs: int, precision: str,
               k: int | None, chunk_size: int, progress: bool = False) -> TeacherStore:
        """Reserve and lay out a new store at ``path`` (a directory that does not exist, or one an interrupted
        creation left without ``store.json``): the crop schedule is drawn, the output files reserved, and
        ``store.json`` written last."""
        path = Path(path)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
        num_classes, n = expected["data"]["num_classes"], expected["data"]["num_samples"]
        if precision == "topk" and not (k and 1 <= k < num_classes):
            raise ValueError(f"--k must be in [1, {num_classes - 1}] for a top-k store of {num_classes} classes; "
                             f"got {k}")
        k = k if precision == "topk" else None
        if path.exists():
            foreign = [p.name for p in path.iterdir() if p.name not in _KNOWN and not p.name.startswith(".")]
            if not path.is_dir() or foreign:
                raise ValueError(f"{path} exists and is not a teacher store (it holds {foreign[:3]}); choose a new "
                                 "path for the store")
            for p in path.iterdir():  # what an interrupted creation left: nothing was computed into it yet
                p.unlink()
        layout = _layout(precision, k, num_classes, epochs, n)
        total = sum(np.dtype(d).itemsize * math.prod(s) for d, s in layout.values())
        total += schedule_bytes(n, epochs) + 4 * epochs * n + epochs * math.ceil(n / chunk_size)
        path.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path).free
        if free < total:
            raise WriteError(errno.ENOSPC, f"the teacher store needs {total / 2**30:.2f} GiB but {path} has "
                                           f"{free / 2**30:.2f} GiB free; free space, choose another location or a "
                                           "smaller precision (--precision topk)")
        schedule = CropSchedule.draw(sizes, seed, epochs, path, progress=progress)
        for name, (dtype, shape) in layout.items():
            preallocate(path / name, np.dtype(dtype).itemsize * math.prod(shape))
        preallocate(path / _SUMS, 4 * epochs * n)
        preallocate(path / _MASK, epochs * math.ceil(n / chunk_size))
        meta = {"format": _FORMAT, **expected, "schedule": schedule.describe(),
                "outputs": {"precision": precision, "k": k, "chunk_size": int(chunk_size)}}
        atomic_write_text(path / _META, json.dumps(meta, indent=1))
        return cls.open(path, writable=True)

    @classmethod
    def open(cls, path: str | Path, writable: bool = False) -> TeacherStore:
        """The store at ``path``; its files must all be there with their sizes (else :class:`StaleCacheError`)."""
        path = Path(path)
        meta_path = path / _META
        if not meta_path.is_file():
            raise FileNotFoundError(f"no teacher store at {path} (no {_META}); build one with `kdlab teacher cache "
                                    "CONFIG --precision ...`")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise StaleCacheError(f"teacher store key {meta_path} is unreadable ({e}); delete {path} to rebuild") from e
        if meta.get("format") != _FORMAT:
            raise StaleCacheError(f"teacher store {path} has format {meta.get('format')}, this kdlab reads {_FORMAT}; "
                                  "delete it and rebuild it")
        store = cls(path, meta, writable)
        try:
            store._files()  # every file there, with its size
            store._schedule = CropSchedule.open(path)
        except ValueError as e:
            raise StaleCacheError(f"teacher store file {e}; delete {path} and rebuild it") from None
        if store._schedule.describe() != meta["schedule"]:
            raise StaleCacheError(f"the crop schedule in {path} is not the one its outputs were computed on; delete "
                                  "the store and rebuild it")
        return store

    def check(self, expected: dict, what: str = "this run") -> None:
        """:class:`StaleCacheError` naming every field of ``expected`` (nested sections) the store differs in."""
        stored, want = _flat(self.meta), _flat(expected)
        diff = sorted(k for k in want if stored.get(k) != want[k])
        if diff:
            detail = "; ".join(f"{k}: stored {_short(stored.get(k))!r}, {what} {_short(want[k])!r}" for k in diff)
            raise StaleCacheError(f"teacher store {self.path} is stale: it was built for a different {', '.join(diff)} "
                                  f"({detail}). Rebuild it with `kdlab teacher cache` or point teacher.cache.store "
                                  "at a store built for this teacher and data")

    # ------------------------------------------------------------------------------------------------- files
    def _files(self) -> dict[str, np.memmap]:
        # opened per process: a forked loader worker maps the files itself instead of inheriting a parent's map
        if self._maps is None or self._pid != os.getpid():
            mode = "r+" if self.writable else "r"
            layout = {**self._layout, _SUMS: (np.uint32, (self.epochs, self.num_samples)),
                      _MASK: (np.uint8, (self.epochs, self.num_chunks))}
            self._maps = {name: map_file(self.path / name, d, s, mode) for name, (d, s) in layout.items()}
            self._pid = os.getpid()
        return self._maps

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = None  # a spawned worker maps the files itself
        return state

    @property
    def schedule(self) -> CropSchedule:
        return self._schedule

    # ------------------------------------------------------------------------------------------------- reading
    def read(self, epoch: int, index: np.ndarray) -> dict[str, torch.Tensor]:
        """The stored rows of images ``index`` in ``epoch`` (1-based), as CPU tensors (only those rows are read),
        each checked against its checksum: a row that does not match is a :class:`StaleCacheError` naming the
        store, the image and the epoch."""
        maps = self._files()
        index = np.asarray(index, dtype=np.int64)
        rows = {name: np.ascontiguousarray(maps[name][epoch - 1, index]) for name in self._layout}
        bad = np.flatnonzero(row_checksums(epoch, index, self.num_samples, list(rows.values()))
                             != maps[_SUMS][epoch - 1, index])
        if bad.size:
            files = ", ".join(self._layout)
            raise StaleCacheError(
                f"teacher store {self.path} is corrupt: the stored outputs of image {int(index[bad[0]])} in epoch "
                f"{epoch}{f' (and {bad.size - 1} more in this batch)' if bad.size > 1 else ''} do not match their "
                f"checksum ({files} or {_SUMS} changed after the build); delete the store and rebuild it with "
                "`kdlab teacher cache`")
        return {name.removesuffix(".bin"): torch.from_numpy(v) for name, v in rows.items()}

    def expand(self, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        """Teacher logits ``[b, C]`` float32 from rows :meth:`read` returned: the stored logits, or the top-k
        reconstruction (:func:`kdlab.teachers.topk.topk_expand`)."""
        if self.precision == "topk":
            return topk_expand(rows["topk_logp"], rows["topk_index"], rows["topk_rest"], self.num_classes)
        return rows["logits"].float()

    # ------------------------------------------------------------------------------------------------- writing
    def write(self, epoch: int, start: int, logits: torch.Tensor) -> None:
        """Store the teacher's logits of images ``start .. start+b`` in ``epoch`` and flush them to disk."""
        maps = self._files()
        rows = slice(start, start + logits.shape[0])
        if self.precision == "topk":
            log_p, index, rest = topk_compress(logits, self.k)
            parts = {"topk_logp.bin": log_p, "topk_index.bin": index, "topk_rest.bin": rest}
        else:
            parts = {"logits.bin": logits.float() if self.precision == "float32" else logits.half()}
        stored = {name: t.detach().cpu().numpy().astype(maps[name].dtype, copy=False) for name, t in parts.items()}
        for name, v in stored.items():
            maps[name][epoch - 1, rows] = v
            maps[name].flush()
        index = np.arange(rows.start, rows.stop)
        maps[_SUMS][epoch - 1, rows] = row_checksums(epoch, index, self.num_samples, [stored[n] for n in self._layout])
        maps[_SUMS].flush()  # before mark_done: a chunk marked done has its checksums on disk

    def mark_done(self, epoch: int, chunk: int) -> None:
        """Record chunk ``chunk`` of ``epoch`` as written (after :meth:`write` flushed its rows)."""
        mask = self._files()[_MASK]
        mask[epoch - 1, chunk] = 1
        mask.flush()

    def pending(self) -> list[tuple[int, int]]:
        """``(epoch, chunk)`` pairs not yet written, in order."""
        todo = np.argwhere(np.asarray(self._files()[_MASK]) == 0)
        return [(int(e) + 1, int(c)) for e, c in todo]

    def chunk_rows(self, chunk: int) -> np.ndarray:
        return np.arange(chunk * self.chunk_size, min(self.num_samples, (chunk + 1) * self.chunk_size))

    def written_views(self) -> int:
        """(image, epoch) rows written so far, by every process (the mask is shared)."""
        rows = np.diff(np.minimum(np.arange(self.num_chunks + 1) * self.chunk_size, self.num_samples))
        return int((np.asarray(self._files()[_MASK]) * rows).sum())

    @property
    def done_fraction(self) -> float:
        return self.written_views() / (self.epochs * self.num_samples)

    @property
    def complete(self) -> bool:
        return bool(np.asarray(self._files()[_MASK]).all())

    # ------------------------------------------------------------------------------------------------- reports
    @property
    def bytes_per_view(self) -> int:
        return bytes_per_view(self.precision, self.num_classes, self.k)

    @property
    def size_bytes(self) -> int:
        """Outputs, their row checksums and the schedule on disk."""
        return (self.bytes_per_view + 4) * self.epochs * self.num_samples + self.schedule.size_bytes

    @property
    def identity(self) -> str:
        """SHA-256 of ``store.json`` and of every row's checksum (``rows.crc32``): what a run that replays this store
        records in its identity. Computed once per process (reading ``rows.crc32``: 4 bytes per view, 0.5 GB for
        ImageNet × 100 epochs; its cost is in docs/performance.md)."""
        if self._identity is None:
            meta = hashlib.sha256(json.dumps(self.meta, sort_keys=True).encode()).hexdigest()
            self._identity = hashlib.sha256(f"{meta}|{digest(self._files()[_SUMS])}".encode()).hexdigest()
        return self._identity

    def describe(self) -> dict:
        return {"path": str(self.path), "precision": self.precision, "k": self.k, "epochs": self.epochs,
                "schedule_seed": self.schedule.seed, "bytes_per_view": self.bytes_per_view,
                "size_bytes": self.size_bytes, "sha256": self.identity}
