"""Files kdlab writes: the one atomic writer, and safetensors files (tensors + string metadata, no pickles).

Atomic: temp file beside the target, fsync, rename. A reader (or a process killed mid-write) sees either the old
file or the new one, never half of one. The new file gets the permissions an ordinary ``open(path, "w")`` would give
(0666 minus the umask), not ``mkstemp``'s 0600, so colleagues on a shared cluster can read results.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

__all__ = ["CheckpointError", "DiskFullError", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "load_tensors", "map_file", "preallocate", "read_metadata", "save_tensors"]


class CheckpointError(ValueError):
    """A checkpoint or weights file is missing, corrupt, or does not fit the model/run."""


class DiskFullError(ValueError):
    """The disk cannot hold a file kdlab is about to fill (a ValueError: bad input the user fixes, one line)."""


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set and restore
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Create ``path`` atomically: ``write(f)`` fills a temp file in the same directory, which then replaces it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def preallocate(path: str | Path, nbytes: int) -> None:
    """Create ``path`` (replacing it) with ``nbytes`` reserved on disk, so that writing it later through a memory
    map cannot fail. A sparse file would SIGBUS the writer when the disk fills up; ``posix_fallocate`` makes a full
    disk a :class:`DiskFullError` now, naming the file and the size."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666 & ~_umask())
    try:
        if nbytes and hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, nbytes)
        else:  # no fallocate (macOS): a sparse file, checked against the free space by the caller
            os.ftruncate(fd, nbytes)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise DiskFullError(f"cannot reserve {nbytes / 2**30:.2f} GiB for {path}: {exc.strerror}; free space or "
                            "choose another location") from None
    os.close(fd)


def map_file(path: str | Path, dtype, shape: tuple[int, ...], mode: str = "r") -> np.memmap:
    """A ``numpy.memmap`` of an existing file that must hold exactly ``shape`` of ``dtype``; a missing or
    wrong-sized file (truncated, or written for another layout) is a ``ValueError`` naming it."""
    path = Path(path)
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = path.stat().st_size if path.is_file() else None
    if size != expected:
        raise ValueError(f"{path} is {'missing' if size is None else f'{size} bytes'}, expected {expected} bytes "
                         "(truncated, or written for another layout)")
    return np.memmap(path, dtype=dtype, mode=mode, shape=shape)


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; copies are cheap next to a training epoch
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically."""
    atomic_write_bytes(path, st_save(_plain(tensors), metadata=metadata))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (its header only; the tensors are not read)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; a missing, truncated or corrupt file is a CheckpointError naming it."""
    path = Path(path)
    metadata = read_metadata(path)
    try:
        tensors = st_load(path.read_bytes())
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None
    return tensors, metadata
