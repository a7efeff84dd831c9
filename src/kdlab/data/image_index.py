"""Every file of an image list checked once: its size, or why it cannot be decoded; cached by content.

Before a streamed run trains, each file is decoded once at reduced scale (:func:`kdlab.data.decode.probe`, in
``workers`` processes), so a bad file is found up front, not hours into an epoch, and it is found the same way on
every rank and world size. The result — ``(width, height)`` per file, or the reason it is unreadable — is what a crop
schedule (:func:`kdlab.data.crops.random_resized_crops`) needs to draw every box of an epoch without opening a file.

**Keyed by content.** Each file's key is a 16-byte BLAKE2b digest of its byte size, its first KiB and its last KiB
(:func:`file_key`; the whole file when it is smaller): a JPEG's or PNG's header — its width and height — is in the
first KiB, the end of its compressed data in the last, so a replaced image changes the key even when its byte size
and modification time are kept. (Reading the whole file instead costs several times as much on every run:
docs/performance.md, "Checking image files".) The cache ``$KDLAB_DATA/image-index/<digest>.npz`` (the data root may
be read-only) is named by the digest of all keys in list order — by content, not by folder — so a
``data.train_subset`` run gets a file of its own beside the full list's and never overwrites it, and a list whose
cache is missing takes the entries of files it shares with any other index there before it decodes the rest. Each
index holds its keys and a SHA-256 of its arrays, both checked on read (a mismatch rebuilds it with a warning).
The decoders check the recorded size again when they open a file (``expect=``), so a file replaced after the check
is an error, not a crop drawn for another image.

Bad files: by default the first one is a :class:`~kdlab.data.decode.BadImageError` naming it (and how many there
are); with ``skip_bad`` they are removed from the list and returned, so the caller counts and lists them.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from kdlab import distributed as dist
from kdlab._bar import tqdm
from kdlab._io import atomic_write_text
from kdlab.data._paths import cached_arrays, default_root, read_npz
from kdlab.data.decode import BadImageError, probe
from kdlab.data.folders import ImageList

__all__ = ["STREAMED", "check_images", "file_key", "file_keys", "fingerprint", "rank0_first", "report_skipped"]

#: ``data.name`` s that are streamed from disk (the rest is held in memory).
STREAMED = ("imagenet", "imagefolder")

_VERSION = 2
_CHUNK = 256  # files per task in the process pool
_EDGE = 1024  # bytes read at each end of a file for its key
_KEY = 16  # bytes per key
_ARRAYS = ("key", "width", "height", "bad_index", "bad_reason")


def file_key(path: str | os.PathLike) -> bytes:
    """16-byte BLAKE2b of ``path``'s byte size, first KiB and last KiB (the whole file when it is at most 2 KiB).

    A file that cannot be read now (missing, a dangling link, not a regular file) gets a key of its path and the
    error, so the check reports it, and checks it again once that changes.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # never open a FIFO or a device: it could block
            raise OSError("not a regular file")
        with open(path, "rb") as f:
            head = f.read(_EDGE)
            tail = b""
            if st.st_size > _EDGE:
                f.seek(max(_EDGE, st.st_size - _EDGE))
                tail = f.read(_EDGE)
        return hashlib.blake2b(b"%d\0%b\0%b" % (st.st_size, head, tail), digest_size=_KEY).digest()
    except OSError as err:
        return hashlib.blake2b(f"unreadable\0{path}\0{type(err).__name__}".encode(), digest_size=_KEY).digest()


def _map(fn, items: list, workers: int, progress: bool, desc: str) -> list:
    """``[fn(x) for x in items]``, in ``workers`` processes for long lists, with a bar for very long ones."""
    bar = dict(total=len(items), desc=desc, unit="img", disable=not progress or len(items) < 2000, dynamic_ncols=True)
    if workers > 0 and len(items) > _CHUNK:
        with ProcessPoolExecutor(workers) as pool:
            return list(tqdm(pool.map(fn, items, chunksize=_CHUNK), **bar))
    return [fn(x) for x in tqdm(items, **bar)]


def file_keys(images: ImageList, workers: int = 0, progress: bool = False) -> np.ndarray:
    """:func:`file_key` of every file, uint8 ``[N, 16]``."""
    keys = _map(file_key, [images.path(i) for i in range(len(images))], workers, progress, "reading file keys")
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(images), _KEY).copy()


def fingerprint(images: ImageList, workers: int = 0) -> str:
    """SHA-256 of the listing: the classes, and every relative path with its label and :func:`file_key`."""
    h = hashlib.sha256(f"{len(images)}|{'|'.join(images.classes)}\n".encode())
    keys = file_keys(images, workers)
    for rel, label, key in zip(images.paths.tolist(), images.labels.tolist(), keys):
        h.update(f"{rel}\0{label}\0{key.tobytes().hex()}\n".encode())
    return h.hexdigest()


def rank0_first(build):
    """``build()`` on rank 0 first, then on the other ranks (which then find its cache): under torchrun a data set is
    checked or decoded once, not once per process. One barrier per rank; no-op in a single process."""
    shared = dist.world_size() > 1
    if shared and not dist.is_main():
        dist.barrier()
    try:
        return build()
    finally:
        if shared and dist.is_main():
            dist.barrier()


def _probe(path: str) -> tuple[int, int, str]:
    try:
        return (*probe(path), "")
    except BadImageError as err:
        return 0, 0, err.reason


def _read_index(path: Path) -> dict[str, np.ndarray]:
    """An index file's arrays, their checksum verified by :func:`read_npz` (``ValueError`` saying why not)."""
    arrays, meta = read_npz(path, _ARRAYS)
    if not isinstance(meta, dict) or meta.get("version") != _VERSION:
        raise ValueError("it was written by another kdlab version")
    n = arrays["key"].shape[0]
    if (arrays["key"].shape != (n, _KEY) or arrays["width"].shape != (n,) or arrays["height"].shape != (n,)
            or arrays["bad_index"].shape != arrays["bad_reason"].shape):
        raise ValueError("its arrays are malformed")
    return arrays


def _read(path: Path, keys: np.ndarray) -> dict[str, np.ndarray]:
    arrays = _read_index(path)
    if not np.array_equal(arrays["key"], keys):
        raise ValueError("it holds other files than its name says")
    return arrays


def _known(folder: Path, skip: Path, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, str], np.ndarray]:
    """What the other indexes in ``folder`` (newest first) know of ``keys``: width, height, reasons by row, and the
    mask of the rows found."""
    n = len(keys)
    want = {k.tobytes(): i for i, k in enumerate(keys)}
    width, height = np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.int32)
    reasons: dict[int, str] = {}
    found = np.zeros(n, dtype=bool)
    others = sorted((p for p in folder.glob("*.npz") if p != skip), key=lambda p: p.stat().st_mtime, reverse=True)
    for other in others:
        try:
            arrays = _read_index(other)
        except (ValueError, OSError):
            continue  # a damaged or foreign file is not a source; it is rebuilt when its own list is checked
        bad = dict(zip(arrays["bad_index"].tolist(), arrays["bad_reason"].tolist()))
        for j, k in enumerate(arrays["key"]):
            i = want.pop(k.tobytes(), None)
            if i is not None:
                width[i], height[i], found[i] = arrays["width"][j], arrays["height"][j], True
                if j in bad:
                    reasons[i] = bad[j]
        if not want:
            break
    return width, height, reasons, found


def _build(images: ImageList, keys: np.ndarray, cache: Path, workers: int, progress: bool,
           what: str) -> dict[str, np.ndarray]:
    width, height, reasons, found = _known(cache.parent, cache, keys) if cache.parent.is_dir() else (
        np.zeros(len(keys), np.int32), np.zeros(len(keys), np.int32), {}, np.zeros(len(keys), bool))
    todo = np.flatnonzero(~found)
    rows = _map(_probe, [images.path(i) for i in todo], workers, progress, f"checking {what}")
    for i, (w, h, reason) in zip(todo.tolist(), rows):
        width[i], height[i] = w, h
        if reason:
            reasons[i] = reason
    bad = sorted(reasons)
    arrays = {"key": keys, "width": width, "height": height, "bad_index": np.asarray(bad, dtype=np.int64),
              "bad_reason": np.asarray([reasons[i] for i in bad], dtype=np.str_)}
    return arrays


def check_images(images: ImageList, *, what: str, workers: int = 0, skip_bad: bool = False,
                 progress: bool = True) -> tuple[ImageList, list[tuple[str, str]]]:
    """``images`` with ``sizes`` set and the unreadable files removed, and the removed ``(path, reason)`` pairs.

    Without ``skip_bad`` an unreadable file is a :class:`BadImageError` (naming the first, counting all).
    """
    def build() -> dict[str, np.ndarray]:
        keys = file_keys(images, workers, progress)
        name = hashlib.sha256(b"kdlab image index %d\n%b" % (_VERSION, keys.tobytes())).hexdigest()[:32]
        cache = default_root() / "image-index" / f"{name}.npz"

        meta = {"version": _VERSION, "files": len(images), "root": str(images.root)}
        return cached_arrays(cache, meta, read=lambda p: _read(p, keys),
                             build=lambda: _build(images, keys, cache, workers, progress, what),
                             what=f"image index of {images.root}", rebuild="checking the files again", stacklevel=4)

    arrays = rank0_first(build)
    reason = dict(zip(arrays["bad_index"].tolist(), arrays["bad_reason"].tolist()))
    skipped = [(images.path(i), str(r)) for i, r in sorted(reason.items())]
    if skipped and not skip_bad:
        path, first = skipped[0]
        more = f"; {len(skipped)} of the {len(images)} files of {what} are unreadable" if len(skipped) > 1 else ""
        raise BadImageError(path, first + more)
    keep = np.ones(len(images), dtype=bool)
    keep[list(reason)] = False
    sizes = np.stack([arrays["width"], arrays["height"]], axis=1).astype(np.int64)
    keep = np.flatnonzero(keep)
    checked = ImageList(images.root, images.paths[keep], images.labels[keep], images.classes, sizes[keep])
    return checked, skipped


def report_skipped(skipped, out_dir: Path, write: bool = True) -> Path:
    """The run log of ``data.skip_bad``: ``out_dir/skipped_files.txt`` (one ``path<TAB>reason`` line per file) and
    a warning with the count and that path, both when ``write`` (rank 0)."""
    path = out_dir / "skipped_files.txt"
    if not write:
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(f"{p}\t{r}\n" for p, r in skipped))
    warnings.warn(f"data.skip_bad: skipped {len(skipped)} unreadable file(s), listed in {path} (first: "
                  f"{skipped[0][0]}: {skipped[0][1]})", UserWarning, stacklevel=2)
    return path
