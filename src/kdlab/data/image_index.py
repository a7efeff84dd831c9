"""Every file of an image list checked once: its size, or why it cannot be decoded; cached per file listing.

Before a streamed run trains, each file is decoded once at reduced scale (:func:`kdlab.data.decode.probe`, in
``workers`` processes), so a bad file is found up front, not hours into an epoch, and it is found the same way on
every rank and world size. The result — ``(width, height)`` per file, or the reason it is unreadable — is cached in
``$KDLAB_DATA/image-index/`` (the data root may be read-only), keyed by a fingerprint of the listing (relative
paths, byte sizes, modification times): a changed file is checked again. The sizes are what a crop schedule
(:func:`kdlab.data.crops.random_resized_crops`) needs to draw every box of an epoch without opening a file.

Bad files: by default the first one is a :class:`~kdlab.data.decode.BadImageError` naming it (and how many there
are); with ``skip_bad`` they are removed from the list and returned, so the caller counts and lists them.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kdlab import distributed as dist
from kdlab._io import atomic_write_text
from kdlab.data._paths import cached_arrays, default_root, read_npz
from kdlab.data.decode import BadImageError, probe
from kdlab.data.folders import ImageList

__all__ = ["STREAMED", "check_images", "fingerprint", "rank0_first", "report_skipped"]

#: ``data.name`` s that are streamed from disk (the rest is held in memory).
STREAMED = ("imagenet", "imagefolder")

_VERSION = 1
_CHUNK = 256  # files per task in the process pool


def fingerprint(images: ImageList) -> str:
    """SHA-256 of the listing: every relative path with its byte size and modification time, and the labels."""
    h = hashlib.sha256(f"{len(images)}|{'|'.join(images.classes)}\n".encode())
    for rel, label in zip(images.paths.tolist(), images.labels.tolist()):
        st = os.stat(os.path.join(images.root, rel))
        h.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
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


def _probe_all(paths: list[str], workers: int, progress: bool, what: str) -> dict[str, np.ndarray]:
    bar = dict(total=len(paths), desc=f"checking {what}", unit="img", disable=not progress or len(paths) < 2000,
               dynamic_ncols=True)
    if workers > 0 and len(paths) > _CHUNK:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(tqdm(pool.map(_probe, paths, chunksize=_CHUNK), **bar))
    else:
        rows = [_probe(p) for p in tqdm(paths, **bar)]
    w, h, reason = zip(*rows) if rows else ((), (), ())
    return {"width": np.asarray(w, dtype=np.int64), "height": np.asarray(h, dtype=np.int64),
            "reason": np.asarray(reason, dtype=np.str_)}


def _read(path: Path, n: int, key: str) -> dict[str, np.ndarray]:
    arrays, meta = read_npz(path, ("width", "height", "reason"))
    if not isinstance(meta, dict) or meta.get("version") != _VERSION or meta.get("fingerprint") != key:
        raise ValueError("the files changed since it was written")
    if any(a.shape != (n,) for a in arrays.values()):
        raise ValueError("its arrays do not match the listing")
    return arrays


def check_images(images: ImageList, *, what: str, workers: int = 0, skip_bad: bool = False,
                 progress: bool = True) -> tuple[ImageList, list[tuple[str, str]]]:
    """``images`` with ``sizes`` set and the unreadable files removed, and the removed ``(path, reason)`` pairs.

    Without ``skip_bad`` an unreadable file is a :class:`BadImageError` (naming the first, counting all).
    """
    key = fingerprint(images)
    name = hashlib.sha256(str(Path(images.root).resolve()).encode()).hexdigest()[:20]
    cache = default_root() / "image-index" / f"{name}.npz"
    arrays = rank0_first(lambda: cached_arrays(
        cache, {"version": _VERSION, "fingerprint": key, "root": str(images.root)},
        read=lambda p: _read(p, len(images), key),
        build=lambda: _probe_all([images.path(i) for i in range(len(images))], workers, progress, what),
        what=f"image index of {images.root}", rebuild="checking the files again", stacklevel=4))
    bad = np.flatnonzero(arrays["reason"] != "")
    skipped = [(images.path(i), str(arrays["reason"][i])) for i in bad]
    if skipped and not skip_bad:
        path, reason = skipped[0]
        more = f"; {len(skipped)} of the {len(images)} files of {what} are unreadable" if len(skipped) > 1 else ""
        raise BadImageError(path, reason + more)
    sizes = np.stack([arrays["width"], arrays["height"]], axis=1)
    keep = np.flatnonzero(arrays["reason"] == "")
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

