"""CIFAR-100 (Krizhevsky, 2009) from the official archives, read without unrestricted unpickling.

Accepted sources (``root`` may be any of them, or a directory holding them under their official names):

* ``cifar-100-python.tar.gz`` — pickles ``cifar-100-python/{train,test,meta}``;
* ``cifar-100-binary.tar.gz`` — ``cifar-100-binary/{train.bin,test.bin,fine_label_names.txt}``, records of
  1 coarse-label byte + 1 fine-label byte + 3072 pixel bytes;
* the same two trees already extracted, or the ``.npz`` cache this module writes.

Pixels are stored as 3×1024 planes (R, G, B), each row-major 32×32, in both formats. The first parse writes
``<source>.npz`` beside the source; later loads read that (≈0.2 s) after validating it. Archives are read and
downloaded by :mod:`kdlab.data.archive`; the cache logic is the one MNIST-1D uses (:mod:`kdlab.data._paths`).

Pickles are read by an ``Unpickler`` whose ``find_class`` admits exactly the three globals numpy needs to rebuild an
``ndarray`` (the official files store ``b"data"`` as a uint8 array): ``numpy.core.multiarray._reconstruct``
(``numpy._core.multiarray._reconstruct`` is the same function under NumPy ≥ 2's module name), ``numpy.ndarray`` and
``numpy.dtype``. Any other global — e.g. ``os.system`` — is refused before it is looked up, so a hostile file
cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import urllib.parse
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from kdlab.data._paths import cached_arrays, read_npz, resolve_root
from kdlab.data.archive import download_url, read_members
from kdlab.data.splits import DataSplits
from kdlab.data.views import CropFlip

__all__ = [
    "DEFAULT_URL",
    "BINARY_URL",
    "ARCHIVE_MD5",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "load_cifar100",
]

DEFAULT_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
#: Official archive name → md5.
ARCHIVE_MD5 = {
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8",
}
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

_FORMATS = ("python", "binary")
_TOP = {"python": "cifar-100-python", "binary": "cifar-100-binary"}
_MEMBERS = {"python": ("train", "test", "meta"), "binary": ("train.bin", "test.bin", "fine_label_names.txt")}
_CIFAR10_TOPS = ("cifar-10-batches-py", "cifar-10-batches-bin")
_IMAGE_BYTES = 3 * 32 * 32
_RECORD_BYTES = 2 + _IMAGE_BYTES
_NUM_FINE, _NUM_COARSE = 100, 20
_CACHE_VERSION = 1
class DataNotFound(FileNotFoundError):
    """A data set that is not on disk: ``what`` (where it was looked for) and ``how`` (to get it, in Python terms;
    a config front end words it in its keys)."""

    def __init__(self, what: str, how: str):
        self.what, self.how = what, how
        super().__init__(f"{what}; {how}")


_HOW_TO_GET = (
    "download it with load_cifar100(root, download=True) or from https://www.cs.toronto.edu/~kriz/cifar.html "
    "(cifar-100-python.tar.gz, 161 MB)"
)


# --------------------------------------------------------------------------------------------------------------------
# restricted unpickling
# --------------------------------------------------------------------------------------------------------------------
def _numpy_reconstruct() -> Callable:
    try:
        from numpy._core.multiarray import _reconstruct  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only plain containers/bytes/numbers/strings plus numpy's ndarray reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name}") from None


def _unpickle(data: bytes | memoryview, source: str) -> Any:
    try:
        # encoding="bytes": the official files were written by Python 2, whose str must stay bytes (b"data").
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        if "refused" in str(err):
            raise ValueError(
                f"{source}: {err}. Official CIFAR-100 pickles contain only dicts, lists, bytes, ints and numpy "
                f"uint8 arrays, so this file is not one and was not loaded; delete it and {_HOW_TO_GET}"
            ) from None
        raise ValueError(f"{source} is not a valid pickle ({err}); delete it and {_HOW_TO_GET}") from None
    except Exception as err:  # malformed streams raise assorted errors (EOFError, TypeError, ...)
        raise ValueError(
            f"{source} is not a valid pickle ({type(err).__name__}: {err}); delete it and {_HOW_TO_GET}"
        ) from None


# --------------------------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------------------------
def _labels(values: Any, n: int, high: int, source: str, key: str) -> np.ndarray:
    try:
        labels = np.asarray(values)
    except Exception:  # anything unconvertible is a format error
        labels = np.asarray([])
    if labels.ndim != 1 or labels.shape[0] != n or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{source}: {key} must be a list of {n} integer labels (one per image); got "
            f"{labels.dtype} of shape {labels.shape}. The file is damaged or not CIFAR-100; {_HOW_TO_GET}"
        )
    labels = labels.astype(np.int64)
    if n and (labels.min() < 0 or labels.max() >= high):
        raise ValueError(
            f"{source}: {key} must lie in [0, {high}); found {labels.min()}..{labels.max()}. "
            f"The file is damaged or not CIFAR-100; {_HOW_TO_GET}"
        )
    return labels


def _python_split(blob: bytes | memoryview, source: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(blob, source)
    if not isinstance(d, dict):
        raise ValueError(f"{source}: expected a pickled dict, got {type(d).__name__}; {_HOW_TO_GET}")
    if b"labels" in d and b"fine_labels" not in d:
        raise ValueError(
            f"{source} is a CIFAR-10 batch (key b'labels', no b'fine_labels'); kdlab needs CIFAR-100: {_HOW_TO_GET}"
        )
    for key in (b"data", b"fine_labels"):
        if key not in d:
            raise ValueError(
                f"{source}: missing key {key!r} (found {sorted(d)[:8]}); the file is damaged or not a CIFAR-100 "
                f"split; {_HOW_TO_GET}"
            )
    data = d[b"data"]
    if isinstance(data, (bytes, bytearray)):
        if len(data) % _IMAGE_BYTES:
            raise ValueError(
                f"{source}: b'data' has {len(data)} bytes, not a multiple of {_IMAGE_BYTES} (3×32×32); {_HOW_TO_GET}"
            )
        data = np.frombuffer(data, dtype=np.uint8).reshape(-1, _IMAGE_BYTES)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _IMAGE_BYTES:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(
            f"{source}: b'data' must be a uint8 array of shape (N, {_IMAGE_BYTES}); got {desc}. The file is "
            f"damaged or not CIFAR-100; {_HOW_TO_GET}"
        )
    n = data.shape[0]
    fine = _labels(d[b"fine_labels"], n, _NUM_FINE, source, "b'fine_labels'")
    if b"coarse_labels" in d:
        _labels(d[b"coarse_labels"], n, _NUM_COARSE, source, "b'coarse_labels'")
    return _owned(data.reshape(n, 3, 32, 32)), fine


def _owned(x: np.ndarray) -> np.ndarray:
    # Arrays viewing pickle/archive buffers are read-only; torch tensors must own writable memory.
    return np.require(x, requirements=["C_CONTIGUOUS", "WRITEABLE"])


def _class_names(names: Any, source: str) -> list[str]:
    if (
        not isinstance(names, (list, tuple))
        or len(names) != _NUM_FINE
        or not all(isinstance(s, (bytes, str)) and s for s in names)
    ):
        raise ValueError(
            f"{source}: expected {_NUM_FINE} non-empty fine label names; got "
            f"{len(names) if isinstance(names, (list, tuple)) else type(names).__name__}. {_HOW_TO_GET}"
        )
    return [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in names]


def _python_meta(blob: bytes | memoryview, source: str) -> list[str]:
    d = _unpickle(blob, source)
    if not isinstance(d, dict) or b"fine_label_names" not in d:
        raise ValueError(f"{source}: missing key b'fine_label_names'; the file is damaged or not CIFAR-100 meta")
    return _class_names(d[b"fine_label_names"], source)


def _binary_split(blob: bytes | memoryview, source: str) -> tuple[np.ndarray, np.ndarray]:
    size = len(blob)
    if size == 0 or size % _RECORD_BYTES:
        hint = (
            " (a multiple of 3073: CIFAR-10 binary records with one label byte)"
            if size and size % (_IMAGE_BYTES + 1) == 0
            else ""
        )
        raise ValueError(
            f"{source}: {size} bytes is not a whole number of {_RECORD_BYTES}-byte CIFAR-100 records "
            f"(1 coarse + 1 fine label byte + 3072 pixels){hint}; the file is truncated or not CIFAR-100. {_HOW_TO_GET}"
        )
    records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, _RECORD_BYTES)
    n = records.shape[0]
    _labels(records[:, 0], n, _NUM_COARSE, source, "coarse label byte")
    fine = _labels(records[:, 1], n, _NUM_FINE, source, "fine label byte")
    return _owned(records[:, 2:].reshape(n, 3, 32, 32)), fine


def _binary_names(blob: bytes | memoryview, source: str) -> list[str]:
    names = [line.strip() for line in bytes(blob).decode("utf-8", "replace").splitlines() if line.strip()]
    return _class_names(names, source)


def _parse(fmt: str, read: Callable[[str], bytes | memoryview], where: str) -> dict[str, np.ndarray]:
    """Parse one format given ``read(member) -> bytes``; ``where`` prefixes the member names in messages."""
    train, test, meta = _MEMBERS[fmt]
    split = _python_split if fmt == "python" else _binary_split
    x_train, y_train = split(read(train), f"{where}/{train}")
    x_test, y_test = split(read(test), f"{where}/{test}")
    names = (_python_meta if fmt == "python" else _binary_names)(read(meta), f"{where}/{meta}")
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "class_names": np.array(names, dtype=np.str_),
    }


# --------------------------------------------------------------------------------------------------------------------
# sources: an archive or an extracted tree
# --------------------------------------------------------------------------------------------------------------------
def _archive_format(members: dict[str, Any], archive: Path, fmt: str) -> str:
    tops = {name.split("/", 1)[0] for name in members}
    for top in _CIFAR10_TOPS:
        if top in tops:
            raise ValueError(
                f"{archive} is a CIFAR-10 archive ({top}/); kdlab's cifar100 needs the CIFAR-100 archive: {_HOW_TO_GET}"
            )
    found = [f for f in _FORMATS if _TOP[f] in tops]
    if fmt != "auto":
        if fmt not in found:
            raise ValueError(
                f"{archive} has no {_TOP[fmt]}/ directory (fmt={fmt!r}); found {sorted(tops)[:5]}. "
                f"Pass fmt='auto' or the matching archive"
            )
        return fmt
    if not found:
        raise ValueError(
            f"{archive} is not a CIFAR-100 archive: expected cifar-100-python/ or cifar-100-binary/ inside, found "
            f"{sorted(tops)[:5]}. {_HOW_TO_GET}"
        )
    return found[0]


def _archive_reader(members: dict[str, memoryview], archive: Path, fmt: str) -> Callable[[str], memoryview]:
    def read(name: str) -> memoryview:
        key = f"{_TOP[fmt]}/{name}"
        if key not in members:
            raise ValueError(f"{archive}: missing member {key}; the archive is incomplete. Delete it and {_HOW_TO_GET}")
        return members[key]

    return read


def _dir_format(directory: Path) -> str | None:
    for fmt in _FORMATS:
        if all((directory / m).is_file() for m in _MEMBERS[fmt][:2]):
            return fmt
    return None


def _dir_reader(directory: Path) -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing; the extracted CIFAR-100 directory is incomplete. {_HOW_TO_GET}"
            )
        return path.read_bytes()

    return read


# --------------------------------------------------------------------------------------------------------------------
# cache + public loader
# --------------------------------------------------------------------------------------------------------------------
def _fingerprint(source: Path) -> dict[str, Any]:
    """Cheap identity of a source (name, sizes, mtimes) so a replaced archive invalidates its cache."""
    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file())
    stats = [p.stat() for p in files]
    return {
        "source": source.name,
        "size": sum(s.st_size for s in stats),
        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
    }


def _cache_path(source: Path) -> Path:
    name = source.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return source.with_name(name + ".npz")


def _read_cache(path: Path, sources: list[Path]) -> dict[str, np.ndarray]:
    """The arrays of a cache; ``ValueError`` saying why if it is unreadable, malformed or older than all ``sources``."""
    arrays, meta = read_npz(path, ("x_train", "y_train", "x_test", "y_test", "class_names"))
    if not isinstance(meta, dict) or meta.get("version") != _CACHE_VERSION:
        raise ValueError("written by another kdlab version")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (3, 32, 32) or x.shape[0] == 0:
            raise ValueError(f"x_{split} is {x.dtype} {x.shape}, expected uint8 (N, 3, 32, 32)")
        if y.dtype != np.int64 or y.shape != (x.shape[0],) or y.min() < 0 or y.max() >= _NUM_FINE:
            raise ValueError(f"y_{split} is malformed or out of range")
    if arrays["class_names"].shape != (_NUM_FINE,):
        raise ValueError("class_names has the wrong length")
    fingerprint = {k: meta.get(k) for k in ("source", "size", "mtime_ns")}
    if sources and all(_fingerprint(s) != fingerprint for s in sources):
        raise ValueError("it is older than its source")
    return arrays


def _to_splits(arrays: dict[str, np.ndarray]) -> DataSplits:
    return DataSplits.from_numpy(
        "cifar100",
        arrays,
        _NUM_FINE,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        train_augment=CropFlip(32, padding=4),
        class_names=tuple(str(s) for s in arrays["class_names"]),
    )


def _parse_source(source: Path, fmt: str) -> dict[str, np.ndarray]:
    if source.is_dir():
        found = _dir_format(source)
        if found is None or (fmt != "auto" and found != fmt):
            formats = _FORMATS if fmt == "auto" else (fmt,)
            want = " or ".join(f"{_TOP[f]}/{{{','.join(_MEMBERS[f])}}}" for f in formats)
            raise FileNotFoundError(f"{source} does not hold an extracted CIFAR-100 ({want}); {_HOW_TO_GET}")
        return _parse(found, _dir_reader(source), str(source))
    members = read_members(source, remedy=_HOW_TO_GET)
    found = _archive_format(members, source, fmt)
    return _parse(found, _archive_reader(members, source, found), f"{source}:{_TOP[found]}")


def _cached_or_parsed(cache: Path, sources: list[Path], fmt: str) -> DataSplits | None:
    """The splits cached at ``cache`` if it is valid and matches a source (or none is left), else parsed from
    ``sources[0]`` and cached there; ``None`` when there is neither a cache nor a source."""
    if not sources:
        if not cache.is_file():
            return None
        try:
            return _to_splits(_read_cache(cache, sources))
        except ValueError as err:
            raise ValueError(
                f"the CIFAR-100 cache {cache} is invalid ({err}) and no archive is there to rebuild it; delete it and "
                f"{_HOW_TO_GET}"
            ) from None
    source = sources[0]
    arrays = cached_arrays(
        cache,
        {"version": _CACHE_VERSION, **_fingerprint(source)},
        read=lambda path: _read_cache(path, sources),
        build=lambda: _parse_source(source, fmt),
        what="CIFAR-100",
        rebuild=f"re-reading {source}",
        stacklevel=3,
    )
    return _to_splits(arrays)


def load_cifar100(
    root: str | os.PathLike | None = None,
    download: bool = False,
    url: str = DEFAULT_URL,
    fmt: str = "auto",
    *,
    md5: str | None = None,
    progress: bool = True,
) -> DataSplits:
    """CIFAR-100 as :class:`DataSplits`: uint8 ``[N, 3, 32, 32]``, fine labels (100 classes), 50000/10000.

    ``mean``/``std`` are the standard CIFAR-100 statistics and ``train_augment`` is ``CropFlip(32, padding=4)``, the
    standard CIFAR recipe (He et al., CVPR 2016, §4.2).

    Args:
        root: a directory holding ``cifar-100-python.tar.gz`` / ``cifar-100-binary.tar.gz`` (or their extracted
            ``cifar-100-python/`` / ``cifar-100-binary/`` trees, or their ``.npz`` caches); or the path of one archive,
            extracted tree or cache. Default: ``$KDLAB_DATA`` or ``~/.cache/kdlab``.
        download: fetch the archive into ``root`` if nothing is found there.
        url: where to download from; the default is the official python archive (the official binary one when
            ``fmt="binary"``).
        fmt: ``"auto"`` (python, then binary), ``"python"`` or ``"binary"``.
        md5: expected md5 of the download; default: the official checksum for the archive's file name.
        progress: show a download progress bar.

    A present archive's md5 is not re-checked (its structure and labels are); downloads always are.
    """
    if fmt not in ("auto", *_FORMATS):
        raise ValueError(f"fmt must be 'auto', 'python' or 'binary'; got {fmt!r}")
    if not isinstance(download, bool):
        raise ValueError(f"download must be a bool; got {download!r}")
    path = resolve_root(root)

    if path.is_file() and path.suffix == ".npz":
        try:
            return _to_splits(_read_cache(path, []))
        except ValueError as err:
            raise ValueError(f"{path} is not a valid kdlab CIFAR-100 cache ({err}); delete it and reload") from None
    if path.is_file() or (path.is_dir() and _dir_format(path) is not None):  # one archive, or an extracted tree
        return _cached_or_parsed(_cache_path(path), [path], fmt)

    formats = _FORMATS if fmt == "auto" else (fmt,)
    for f in formats:
        tree, archive = path / _TOP[f], path / f"{_TOP[f]}.tar.gz"
        sources = [s for s in (tree, archive) if (s.is_dir() and _dir_format(s) == f) or s.is_file()]
        if (splits := _cached_or_parsed(path / f"{_TOP[f]}.npz", sources, f)) is not None:
            return splits

    looked = ", ".join(f"{_TOP[f]}.tar.gz, {_TOP[f]}/" for f in formats)
    if not download:
        raise DataNotFound(f"CIFAR-100 not found in {path} (looked for {looked})", _HOW_TO_GET)
    if not isinstance(url, str) or not url:
        raise ValueError(f"url must be a non-empty string; got {url!r}")
    if fmt == "binary" and url == DEFAULT_URL:
        url = BINARY_URL
    name = PurePosixPath(urllib.parse.urlparse(url).path).name
    if md5 is None:
        if name not in ARCHIVE_MD5:
            raise ValueError(
                f"cannot verify the download of {url}: its file name {name!r} is not an official CIFAR-100 archive "
                f"name ({', '.join(ARCHIVE_MD5)}); pass md5= for it"
            )
        md5 = ARCHIVE_MD5[name]
    archive = download_url(url, path, md5, progress=progress)
    return _cached_or_parsed(_cache_path(archive), [archive], fmt)
