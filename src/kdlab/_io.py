"""Files kdlab writes: the one atomic writer, safetensors files (tensors + string metadata, no pickles), and the
content checksums written with stored data.

Atomic: temp file beside the target, fsync, rename. A reader (or a process killed mid-write) sees either the old
file or the new one, never half of one. The new file gets the permissions an ordinary ``open(path, "w")`` would give
(0666 minus the umask), not ``mkstemp``'s 0600, so colleagues on a shared cluster can read results.

Checksums: everything kdlab reads back from disk to compute a number (stored teacher logits, teacher-output stores,
the exact logit cache's file, the data caches) carries a checksum of its *content* written with it, and a read that
does not match it is a :class:`StaleCacheError` naming the file (or, where recomputing is cheap, a recompute with a
warning): never a silent use. :func:`digest` is SHA-256 over arrays (their dtype, shape and bytes).
"""

from __future__ import annotations

import hashlib
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

__all__ = ["CheckpointError", "StaleCacheError", "WriteError", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "digest", "load_tensors", "map_file", "preallocate", "read_metadata", "save_tensors",
           "write_error"]


class CheckpointError(ValueError):
    """A checkpoint or weights file is missing, corrupt, or does not fit the model/run."""


class StaleCacheError(ValueError):
    """A stored file (a cache, a teacher-output store, stored logits) was made for another teacher, data set,
    augmentation or layout, or its content no longer matches the checksum written with it."""


class WriteError(OSError):
    """A file could not be written (disk full, file too large, read-only, no permission). ``errno`` is the cause's;
    the message names the path, and an atomic write leaves the previous version of the file in place."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_error(path: str | Path, exc: OSError, what: str = "write", note: str = "") -> WriteError:
    """``exc`` (raised while writing ``path``) as a one-line :class:`WriteError` naming the path and the cause."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    return WriteError(exc.errno, f"cannot {what} {path}: {cause}{note}")


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set and restore
    os.umask(mask)
    return mask


def _file_error(exc: BaseException) -> bool:
    """An OSError of the file system (ENOSPC, EFBIG, EACCES, ...), not a network error raised by a ``write``
    callback (ConnectionError, URLError) nor one already described."""
    return (isinstance(exc, OSError) and exc.errno is not None
            and not isinstance(exc, (WriteError, ConnectionError, TimeoutError)))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], *, partial: str | Path | None = None) -> None:
    """Create ``path`` atomically: ``write(f)`` fills a temp file in the same directory, which then replaces it.

    With ``partial`` (a path in the same directory) the temp file is that fixed file, opened for appending, and it is
    kept when ``write`` raises: an interrupted download continues where it stopped on the next call instead of
    starting over. ``write`` may truncate it (``f.seek(0); f.truncate()``) to start over; the caller removes it when
    its content is wrong. It never has ``path``'s name until ``write`` has returned.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if partial is None:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        else:
            tmp = str(partial)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666 & ~_umask())
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "ab" if partial is not None else "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if partial is None and os.path.exists(tmp):
            os.unlink(tmp)
        if _file_error(exc):
            kept = " (its previous version is kept)" if path.exists() else ""
            raise write_error(path, exc, note=kept) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def preallocate(path: str | Path, nbytes: int, *, truncate: bool = True, note: str = "") -> None:
    """Give ``path`` ``nbytes`` bytes with their disk blocks reserved, so that writing it later through a memory map
    cannot fail: a sparse file would SIGBUS the writer when the disk fills up, ``posix_fallocate`` makes a full disk a
    :class:`WriteError` now, naming the file, the size and ``note``. ``truncate``: start from an empty file (else
    an existing file keeps its content and only gets its blocks). A file this call made is removed on failure."""
    path = Path(path)
    existed = path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0), 0o666 & ~_umask())
    try:
        if nbytes and hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, nbytes)
        elif os.fstat(fd).st_size < nbytes:  # no fallocate (macOS): at least the length
            os.ftruncate(fd, nbytes)
    except OSError as exc:
        os.close(fd)
        if truncate or not existed:
            path.unlink(missing_ok=True)
        raise write_error(path, exc, f"reserve {nbytes / 2**20:.1f} MiB for", note) from None
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


def _bytes(a: np.ndarray | torch.Tensor) -> tuple[str, memoryview]:
    if isinstance(a, torch.Tensor):  # (bfloat16 has no numpy dtype: its bits are hashed as bytes)
        flat = a.detach().cpu().contiguous().view(-1)
        return f"{a.dtype}|{tuple(a.shape)}|", memoryview(flat.view(torch.uint8).numpy())
    a = np.ascontiguousarray(a)
    return f"{a.dtype.str}|{a.shape}|", memoryview(a.reshape(-1).view(np.uint8))


def digest(*arrays: np.ndarray | torch.Tensor) -> str:
    """SHA-256 over each array's dtype, shape and raw bytes, in order (a tensor's: ``kdlab.teachers.tensor_digest``)."""
    h = hashlib.sha256()
    for a in arrays:
        head, data = _bytes(a)
        h.update(head.encode())
        h.update(data)
    return h.hexdigest()


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
