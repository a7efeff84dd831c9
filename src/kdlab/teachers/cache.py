"""Exact teacher-logit cache keyed on (sample index, augmentation view) — docs/performance.md, "Exact teacher-logit
cache".

With a discrete view augmentation the student's input is fully named by ``(dataset index, view id)`` (CIFAR
crop(pad 4)+flip: 9·9·2 = 162 views per image; MNIST-1D shifts: 2·max_shift+1). The teacher's logits for such a pair
are therefore a fixed table ``T[i, v] = f_teacher(normalize(augment(x_i, v)))`` which we fill once (lazily, only the
rows a batch misses, or all up front) and then read back for every later step, seed and logit-only method. Nothing is
approximated: a batch whose inputs are not a known view (``batch.view is None``: mixup, data policies, R2KD's second
view through ``teacher.logits``) goes to the live teacher.

Storage ``[num_samples, num_views, C]`` in float32 (default: exact) or float16/bfloat16 (half the memory; each stored
logit rounded to 11/8 significant bits, and a logit beyond their range is a :class:`CacheOverflowError`, never an
inf) plus a filled mask ``[num_samples, num_views]``, in memory or in a ``numpy.memmap`` file with a JSON sidecar
holding the key (teacher weights hash, training-data hash, ``augment.describe()``, normalisation, dtype, shape).
Opening a file whose key differs is a :class:`StaleCacheError` naming the field, so a cache can never silently
serve another teacher's logits. A new file's blocks are allocated up front (``posix_fallocate``), so a full disk is
an error naming the file when it is created, not a SIGBUS when a page of the mapping is first written.

A complete file carries the SHA-256 of its table in a third sidecar, ``<path>.sha256``, written when the fill
completes; every later open checks it (one sequential read of the file, measured in docs/performance.md), and a
table that no longer matches is a :class:`StaleCacheError` naming the file. A file that is only partly filled (an
interrupted lazy fill) has no checksum to check: its entries are computed again (exact, and what the lazy fill costs
anyway), with a warning.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab._bar import tqdm
from kdlab._io import StaleCacheError, atomic_write_text, digest, preallocate, write_error
from kdlab.teachers.frozen import FrozenTeacher

__all__ = ["CacheOverflowError", "CachedTeacher", "StaleCacheError", "tensor_digest", "module_digest"]

_FORMAT = 2  # 2: the <path>.sha256 sidecar of a complete table
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# numpy has no bfloat16: its bits are stored as uint16 and reinterpreted by torch
_NP_DTYPES = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}


class CacheOverflowError(ValueError):
    """A finite teacher logit is beyond the range of the cache's float16/bfloat16 storage."""


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and raw bytes (CPU, contiguous): :func:`kdlab._io.digest`."""
    return digest(t)


def module_digest(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes, bytes): the teacher's identity."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor_digest(t).encode())
    return h.hexdigest()


def _allocate(file: Path, size: int, created: bool, others: tuple[Path, ...]) -> None:
    """Give ``file`` ``size`` bytes with their disk blocks reserved (``kdlab._io.preallocate``): a mapping written
    later cannot hit a full disk (SIGBUS). The files of a cache this call created are removed again on failure, so a
    rerun does not meet a half-made cache."""
    try:
        preallocate(file, size, truncate=False, note=" for the teacher-logit cache; free space, set teacher.cache.path "
                    "on another disk, or teacher.cache.storage=memory")
    except OSError:
        if created:
            for f in others:
                f.unlink(missing_ok=True)
        raise


class CachedTeacher:
    """A :class:`FrozenTeacher` whose :meth:`logits_for_batch` reads ``T[batch.index, batch.view]``.

    Args:
        teacher: the frozen teacher to cache.
        loader: the training :class:`~kdlab.data.BatchLoader` (its data, augmentation, normalisation and
            ``index_offset`` define the table). It must have a :class:`~kdlab.data.ViewAugmentation`.
        dtype: storage precision, ``"float32"`` (default, exact), ``"float16"`` or ``"bfloat16"`` (half the
            memory, rounded; an out-of-range logit raises :class:`CacheOverflowError`).
        path: ``None`` for an in-memory table, else a file (``numpy.memmap``) with sidecars ``<path>.json`` (key)
            and ``<path>.mask`` (filled flags); an existing file with the same key is reused (across seeds and
            methods), one with another key raises :class:`StaleCacheError`.
        precompute: fill every (sample, view) pair now, with a progress bar.
        tag: extra key entries (e.g. the autocast precision the teacher runs under).
    """

    def __init__(self, teacher: FrozenTeacher, loader, *, dtype: str = "float32", path: str | Path | None = None,
                 precompute: bool = False, tag: dict[str, Any] | None = None, progress: bool = True,
                 chunk_size: int = 1024):
        if not isinstance(teacher, FrozenTeacher):
            raise ValueError(f"teacher must be a kdlab FrozenTeacher; got {type(teacher).__name__}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
        augment = getattr(loader, "augment", None)
        if augment is None:
            raise ValueError("the teacher cache needs a loader with a discrete view augmentation (loader.augment); "
                             "without one there is no view to key on: set teacher.cache.enabled=false")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
        self.teacher = teacher
        self.loader = loader
        self.augment = augment
        self.dtype_name = dtype
        self.dtype = _DTYPES[dtype]
        self.chunk_size = chunk_size
        self.progress = progress
        self.index_offset = int(loader.index_offset)
        self.num_samples = int(loader.x.shape[0])
        self.num_views = int(augment.num_views)
        self.device = loader.device
        probe = self._compute(torch.zeros(1, dtype=torch.long, device=self.device),
                              torch.zeros(1, dtype=torch.long, device=self.device))
        self.num_classes = int(probe.shape[1])
        self.key = {
            "format": _FORMAT,
            "teacher": module_digest(teacher.module),
            "data": tensor_digest(loader.x),
            "data_shape": list(loader.x.shape),
            "augment": augment.describe(),
            "num_views": self.num_views,
            "num_classes": self.num_classes,
            "normalization": {"mean": loader.mean and list(loader.mean), "std": loader.std and list(loader.std)},
            "dtype": dtype,
            **({"tag": tag} if tag else {}),
        }
        self.path = None if path is None else Path(path)
        shape = (self.num_samples, self.num_views, self.num_classes)
        if self.path is None:
            self.values = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self.filled = torch.zeros(shape[:2], dtype=torch.bool, device=self.device)
        else:
            self.values, self.filled = self._open_file(shape)
        self._complete = bool(self.filled.all())
        if precompute and not self._complete:
            self.precompute()
        self._serve_if_complete()

    def _serve_if_complete(self) -> None:
        if self._complete and self.values.device != self.device:
            # a complete file is only read from now on: serve it from the data's device (one copy, no host
            # round trip per step on a GPU)
            self.values, self.filled = self.values.to(self.device), self.filled.to(self.device)

    @property
    def complete(self) -> bool:
        """Every (sample, view) pair is filled."""
        return self._complete

    @property
    def size_bytes(self) -> int:
        """Bytes of the logit table (samples × views × classes × dtype size)."""
        return self.num_samples * self.num_views * self.num_classes * self.values.element_size()

    def seconds_per_view(self, probe: int = 256) -> float:
        """Measured teacher time per (sample, view), from one timed chunk of ``probe`` inputs (after a warm-up)."""
        n = min(probe, self.num_samples)
        rows = torch.arange(n, device=self.device)
        views = torch.zeros(n, dtype=torch.long, device=self.device)
        self._compute(rows[:1], views[:1])  # warm-up: first-call allocations and kernel selection
        start = time.perf_counter()
        self._compute(rows, views)
        return (time.perf_counter() - start) / n

    # --------------------------------------------------------------------------------------------------- storage
    def _open_file(self, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        path, meta, mask = self.path, Path(f"{self.path}.json"), Path(f"{self.path}.mask")
        self._sum_path = Path(f"{self.path}.sha256")
        exists = path.exists()
        if exists:
            if not meta.is_file() or not mask.is_file():
                raise StaleCacheError(f"teacher cache {path} has no {meta.name}/{mask.name} sidecar (an interrupted "
                                      "or foreign file): delete it or set teacher.cache.path to a new file")
            try:
                stored = json.loads(meta.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise StaleCacheError(f"teacher cache key {meta} is unreadable ({e}); delete {path} and its "
                                      "sidecars to rebuild") from e
            diff = sorted(k for k in set(stored) | set(self.key) if stored.get(k) != self.key.get(k))
            if diff:
                raise StaleCacheError(
                    f"teacher cache {path} is stale: it was built for a different {', '.join(diff)} "
                    f"(stored {({k: stored.get(k) for k in diff})}). Delete {path} (and {meta.name}, {mask.name}) "
                    "or point teacher.cache.path at a new file")
            expected = math.prod(shape) * np.dtype(_NP_DTYPES[self.dtype_name]).itemsize
            if path.stat().st_size != expected or mask.stat().st_size != shape[0] * shape[1]:
                raise StaleCacheError(f"teacher cache {path} has the wrong size (truncated?); delete it to rebuild")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise write_error(path.parent, exc, "create") from None
        itemsize = np.dtype(_NP_DTYPES[self.dtype_name]).itemsize
        for file, size in ((path, math.prod(shape) * itemsize), (mask, shape[0] * shape[1])):
            _allocate(file, size, created=not exists, others=(path, mask))
        values = np.memmap(path, dtype=_NP_DTYPES[self.dtype_name], mode="r+", shape=shape)
        filled = np.memmap(mask, dtype=np.bool_, mode="r+", shape=shape[:2])
        if not exists:  # the key is written last: a file without it is never trusted
            try:
                atomic_write_text(meta, json.dumps(self.key, indent=1))
            except OSError:
                del values, filled
                path.unlink(missing_ok=True)
                mask.unlink(missing_ok=True)
                raise
        with warnings.catch_warnings():  # memmaps are writable; torch warns about numpy arrays it cannot own
            warnings.simplefilter("ignore")
            v = torch.from_numpy(values)
            f = torch.from_numpy(filled)
        if self.dtype_name == "bfloat16":
            v = v.view(torch.bfloat16)
        self._memmaps = (values, filled)
        if exists:
            self._check_content(values, filled)
        return v, f

    def _check_content(self, values: np.memmap, filled: np.memmap) -> None:
        """A complete table must match its ``.sha256``; a partial one (no checksum yet) is emptied to be refilled."""
        written = self._sum_path.read_text().strip() if self._sum_path.is_file() else None
        if written is not None and bool(np.all(filled)):
            if digest(values) != written:
                raise StaleCacheError(
                    f"teacher cache {self.path} does not match the checksum written with it ({self._sum_path.name}): "
                    f"it was changed or corrupted after it was filled. Delete {self.path} (and its .json, .mask and "
                    ".sha256 sidecars) to rebuild it")
            return
        if np.any(filled):
            warnings.warn(f"teacher cache {self.path} was left partly filled (an interrupted run): its entries have no "
                          "checksum yet, so they are computed again", RuntimeWarning, stacklevel=4)
            filled[:] = False
            filled.flush()
        self._sum_path.unlink(missing_ok=True)

    def _write_checksum(self) -> None:
        """Record the complete table's SHA-256 (``<path>.sha256``) after flushing it."""
        if self.path is not None:
            self.flush()
            atomic_write_text(self._sum_path, digest(self._memmaps[0]) + "\n")

    def flush(self) -> None:
        """Write a memory-mapped table to disk (no-op in memory)."""
        for m in getattr(self, "_memmaps", ()):
            m.flush()

    # --------------------------------------------------------------------------------------------------- compute
    def _inputs(self, rows: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """The exact student inputs for (row, view): the loader's own augmentation and normalisation."""
        return self.loader.inputs_for(rows, views)

    def _compute(self, rows: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return self.teacher.logits(self._inputs(rows, views))

    def _store(self, rows: torch.Tensor, views: torch.Tensor, logits: torch.Tensor) -> None:
        dev = self.values.device
        rows, views = rows.to(dev), views.to(dev)
        stored = logits.detach().to(device=dev, dtype=self.dtype)
        if self.dtype != torch.float32 and bool((torch.isinf(stored) & torch.isfinite(logits.to(dev))).any()):
            top = float(logits.detach().abs().max())
            raise CacheOverflowError(
                f"the teacher gives logits up to {top:.3g}, beyond {self.dtype_name}'s range "
                f"({torch.finfo(self.dtype).max:.3g}): set teacher.cache.dtype=float32 (exact, the default)")
        self.values[rows, views] = stored
        self.filled[rows, views] = True

    def precompute(self) -> None:
        """Fill every missing (sample, view) pair, ``chunk_size`` inputs per teacher call."""
        missing = (~self.filled).nonzero()  # [M, 2] (row, view), row-major
        bar = tqdm(total=missing.shape[0], desc="teacher cache", unit="view", disable=not self.progress,
                   dynamic_ncols=True)
        for start in range(0, missing.shape[0], self.chunk_size):
            part = missing[start:start + self.chunk_size].to(self.device)
            rows, views = part[:, 0], part[:, 1]
            self._store(rows, views, self._compute(rows, views))
            bar.update(part.shape[0])
        bar.close()
        self._write_checksum()
        self._complete = True
        self._serve_if_complete()

    # ------------------------------------------------------------------------------------- FrozenTeacher interface
    @property
    def module(self) -> torch.nn.Module:
        return self.teacher.module

    def to(self, device) -> "CachedTeacher":
        self.teacher.to(device)
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Live teacher logits for arbitrary inputs (no cache: ``x`` carries no view key)."""
        return self.teacher.logits(x)

    def features(self, x: torch.Tensor, stage_paths: list[str] | None = None, preact: bool = False):
        return self.teacher.features(x, stage_paths, preact=preact)

    def logits_for_batch(self, batch) -> torch.Tensor:
        """``T[index, view]`` as float32; missing entries are computed from ``batch.x`` (only those rows) and stored.

        ``batch.view is None`` (inputs that are not a known view) bypasses the cache.
        """
        if batch.view is None:
            return self.teacher.logits(batch.x)
        dev = self.values.device
        rows = batch.index.to(dev) - self.index_offset if self.index_offset else batch.index.to(dev)
        views = batch.view.to(dev)
        if not self._complete:
            # the one host sync of the lazy path (a precomputed cache skips it)
            miss = (~self.filled[rows, views]).nonzero().squeeze(1)
            if miss.numel():
                # rows of batch.x are exactly normalize(augment(x_i, v)): no need to rebuild them
                m = miss.to(batch.x.device)
                self._store(rows[miss], views[miss], self.teacher.logits(batch.x[m]))
        return self.values[rows, views].to(device=batch.x.device, dtype=torch.float32)

    def describe(self) -> dict:
        out = dict(self.teacher.describe())
        out["cache"] = {"dtype": self.dtype_name, "path": None if self.path is None else str(self.path),
                        "num_views": self.num_views, "filled": float(self.filled.float().mean())}
        return out
