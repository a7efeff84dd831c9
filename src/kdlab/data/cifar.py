"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) from the official archives, read without unrestricted unpickling.

Accepted sources (``root`` may be any of them, or a directory holding them under their official names):

* CIFAR-100: ``cifar-100-python.tar.gz`` — pickles ``cifar-100-python/{train,test,meta}``;
  ``cifar-100-binary.tar.gz`` — ``cifar-100-binary/{train.bin,test.bin,fine_label_names.txt}``, records of
  1 coarse-label byte + 1 fine-label byte + 3072 pixel bytes;
* CIFAR-10: ``cifar-10-python.tar.gz`` — pickles ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``;
  ``cifar-10-binary.tar.gz`` — ``cifar-10-batches-bin/{data_batch_1..5.bin,test_batch.bin,batches.meta.txt}``,
  records of 1 label byte + 3072 pixel bytes;
* the same trees already extracted, or the ``.npz`` cache this module writes.

Pixels are stored as 3×1024 planes (R, G, B), each row-major 32×32, in every format. The first parse writes
``<archive>.npz`` beside the source; later loads read that (≈0.2 s) after validating it. Archives are read and
downloaded by :mod:`kdlab.data.archive`; the cache logic is the one MNIST-1D uses (:mod:`kdlab.data._paths`). The two
data sets differ only in the facts of :class:`_Variant` (member names, label bytes and keys, checksums, statistics).

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
from dataclasses import dataclass
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
    "CIFAR10_URL",
    "CIFAR10_BINARY_URL",
    "ARCHIVE_MD5",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "load_cifar100",
    "load_cifar10",
]

_SITE = "https://www.cs.toronto.edu/~kriz/"
DEFAULT_URL = _SITE + "cifar-100-python.tar.gz"
BINARY_URL = _SITE + "cifar-100-binary.tar.gz"
CIFAR10_URL = _SITE + "cifar-10-python.tar.gz"
CIFAR10_BINARY_URL = _SITE + "cifar-10-binary.tar.gz"
#: Official archive name → md5 (the md5sum column of https://www.cs.toronto.edu/~kriz/cifar.html).
ARCHIVE_MD5 = {
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8",
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
}
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
# CIFAR-10: the per-channel mean and standard deviation of the 50,000 training images' pixels, the same statistic as
# CIFAR-100's above (fastai's ``cifar_stats`` rounds them to (0.491, 0.482, 0.447), (0.247, 0.243, 0.261)). The
# std (0.2023, 0.1994, 0.2010) seen in many CIFAR-10 scripts (kuangliu/pytorch-cifar) is the mean of per-image stds,
# a different statistic.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_FORMATS = ("python", "binary")
_IMAGE_BYTES = 3 * 32 * 32
_CACHE_VERSION = 1


@dataclass(frozen=True)
class _Variant:
    """What tells CIFAR-10 and CIFAR-100 apart, per format (``python``, ``binary``)."""

    name: str  # the data set's name in kdlab ("cifar100")
    title: str  # "CIFAR-100"
    num_classes: int
    num_coarse: int | None  # CIFAR-100's 20 superclasses (validated, not used)
    tops: dict[str, str]  # format → the folder inside the archive
    archives: dict[str, str]  # format → the official archive name
    train: dict[str, tuple[str, ...]]  # format → training members, concatenated in order
    test: dict[str, str]
    meta: dict[str, str]
    label_key: bytes  # the python pickles' label list
    names_key: bytes  # the python meta's class names
    label_word: str  # "fine label" / "label", as messages name them
    record_layout: str  # the binary record, as messages describe it
    urls: dict[str, str]  # format → the official download
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: str  # of the python archive, for the how-to-get line
    other: str  # the other variant's title
    other_label_key: bytes  # the other variant's python label key
    loader: str  # the Python function that loads it

    @property
    def label_bytes(self) -> int:
        return 1 if self.num_coarse is None else 2

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + _IMAGE_BYTES

    @property
    def how_to_get(self) -> str:
        return (f"download it with {self.loader}(root, download=True) or from https://www.cs.toronto.edu/~kriz/"
                f"cifar.html ({self.archives['python']}, {self.size})")


_C100 = _Variant(
    name="cifar100", title="CIFAR-100", num_classes=100, num_coarse=20,
    tops={"python": "cifar-100-python", "binary": "cifar-100-binary"},
    archives={"python": "cifar-100-python.tar.gz", "binary": "cifar-100-binary.tar.gz"},
    train={"python": ("train",), "binary": ("train.bin",)}, test={"python": "test", "binary": "test.bin"},
    meta={"python": "meta", "binary": "fine_label_names.txt"},
    label_key=b"fine_labels", names_key=b"fine_label_names", label_word="fine label",
    record_layout="1 coarse + 1 fine label byte + 3072 pixels", urls={"python": DEFAULT_URL, "binary": BINARY_URL},
    mean=CIFAR100_MEAN, std=CIFAR100_STD, size="161 MB", other="CIFAR-10", other_label_key=b"labels",
    loader="load_cifar100",
)
_C10 = _Variant(
    name="cifar10", title="CIFAR-10", num_classes=10, num_coarse=None,
    tops={"python": "cifar-10-batches-py", "binary": "cifar-10-batches-bin"},
    archives={"python": "cifar-10-python.tar.gz", "binary": "cifar-10-binary.tar.gz"},
    train={"python": tuple(f"data_batch_{i}" for i in range(1, 6)),
           "binary": tuple(f"data_batch_{i}.bin" for i in range(1, 6))},
    test={"python": "test_batch", "binary": "test_batch.bin"},
    meta={"python": "batches.meta", "binary": "batches.meta.txt"},
    label_key=b"labels", names_key=b"label_names", label_word="label",
    record_layout="1 label byte + 3072 pixels", urls={"python": CIFAR10_URL, "binary": CIFAR10_BINARY_URL},
    mean=CIFAR10_MEAN, std=CIFAR10_STD, size="163 MB", other="CIFAR-100", other_label_key=b"fine_labels",
    loader="load_cifar10",
)
_OTHER = {_C100.name: _C10, _C10.name: _C100}


class DataNotFound(FileNotFoundError):
    """A data set that is not on disk: ``what`` (where it was looked for) and ``how`` (to get it, in Python terms;
    a config front end words it in its keys)."""

    def __init__(self, what: str, how: str):
        self.what, self.how = what, how
        super().__init__(f"{what}; {how}")


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


def _unpickle(data: bytes | memoryview, source: str, v: _Variant = _C100) -> Any:
    try:
        # encoding="bytes": the official files were written by Python 2, whose str must stay bytes (b"data").
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        if "refused" in str(err):
            raise ValueError(
                f"{source}: {err}. Official {v.title} pickles contain only dicts, lists, bytes, ints and numpy "
                f"uint8 arrays, so this file is not one and was not loaded; delete it and {v.how_to_get}"
            ) from None
        raise ValueError(f"{source} is not a valid pickle ({err}); delete it and {v.how_to_get}") from None
    except Exception as err:  # malformed streams raise assorted errors (EOFError, TypeError, ...)
        raise ValueError(
            f"{source} is not a valid pickle ({type(err).__name__}: {err}); delete it and {v.how_to_get}"
        ) from None


# --------------------------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------------------------
def _labels(values: Any, n: int, high: int, source: str, key: str, v: _Variant) -> np.ndarray:
    try:
        labels = np.asarray(values)
    except Exception:  # anything unconvertible is a format error
        labels = np.asarray([])
    if labels.ndim != 1 or labels.shape[0] != n or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{source}: {key} must be a list of {n} integer labels (one per image); got "
            f"{labels.dtype} of shape {labels.shape}. The file is damaged or not {v.title}; {v.how_to_get}"
        )
    labels = labels.astype(np.int64)
    if n and (labels.min() < 0 or labels.max() >= high):
        raise ValueError(
            f"{source}: {key} must lie in [0, {high}); found {labels.min()}..{labels.max()}. "
            f"The file is damaged or not {v.title}; {v.how_to_get}"
        )
    return labels


def _python_split(blob: bytes | memoryview, source: str, v: _Variant) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(blob, source, v)
    if not isinstance(d, dict):
        raise ValueError(f"{source}: expected a pickled dict, got {type(d).__name__}; {v.how_to_get}")
    if v.other_label_key in d and v.label_key not in d:
        raise ValueError(
            f"{source} is a {v.other} batch (key {v.other_label_key!r}, no {v.label_key!r}); kdlab's {v.name} needs "
            f"{v.title}: {v.how_to_get}"
        )
    for key in (b"data", v.label_key):
        if key not in d:
            raise ValueError(
                f"{source}: missing key {key!r} (found {sorted(d)[:8]}); the file is damaged or not a {v.title} "
                f"split; {v.how_to_get}"
            )
    data = d[b"data"]
    if isinstance(data, (bytes, bytearray)):
        if len(data) % _IMAGE_BYTES:
            raise ValueError(
                f"{source}: b'data' has {len(data)} bytes, not a multiple of {_IMAGE_BYTES} (3×32×32); {v.how_to_get}"
            )
        data = np.frombuffer(data, dtype=np.uint8).reshape(-1, _IMAGE_BYTES)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _IMAGE_BYTES:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(
            f"{source}: b'data' must be a uint8 array of shape (N, {_IMAGE_BYTES}); got {desc}. The file is "
            f"damaged or not {v.title}; {v.how_to_get}"
        )
    n = data.shape[0]
    labels = _labels(d[v.label_key], n, v.num_classes, source, repr(v.label_key), v)
    if v.num_coarse is not None and b"coarse_labels" in d:
        _labels(d[b"coarse_labels"], n, v.num_coarse, source, "b'coarse_labels'", v)
    return _owned(data.reshape(n, 3, 32, 32)), labels


def _owned(x: np.ndarray) -> np.ndarray:
    # Arrays viewing pickle/archive buffers are read-only; torch tensors must own writable memory.
    return np.require(x, requirements=["C_CONTIGUOUS", "WRITEABLE"])


def _class_names(names: Any, source: str, v: _Variant) -> list[str]:
    if (
        not isinstance(names, (list, tuple))
        or len(names) != v.num_classes
        or not all(isinstance(s, (bytes, str)) and s for s in names)
    ):
        raise ValueError(
            f"{source}: expected {v.num_classes} non-empty {v.label_word} names; got "
            f"{len(names) if isinstance(names, (list, tuple)) else type(names).__name__}. {v.how_to_get}"
        )
    return [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in names]


def _python_meta(blob: bytes | memoryview, source: str, v: _Variant) -> list[str]:
    d = _unpickle(blob, source, v)
    if not isinstance(d, dict) or v.names_key not in d:
        raise ValueError(f"{source}: missing key {v.names_key!r}; the file is damaged or not {v.title} meta")
    return _class_names(d[v.names_key], source, v)


def _binary_split(blob: bytes | memoryview, source: str, v: _Variant) -> tuple[np.ndarray, np.ndarray]:
    size, other = len(blob), _OTHER[v.name]
    if size == 0 or size % v.record_bytes:
        hint = (
            f" (a multiple of {other.record_bytes}: {other.title} binary records with {other.label_bytes} label "
            f"byte{'s' if other.label_bytes > 1 else ''})"
            if size and size % other.record_bytes == 0
            else ""
        )
        raise ValueError(
            f"{source}: {size} bytes is not a whole number of {v.record_bytes}-byte {v.title} records "
            f"({v.record_layout}){hint}; the file is truncated or not {v.title}. {v.how_to_get}"
        )
    records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, v.record_bytes)
    n = records.shape[0]
    if v.num_coarse is not None:
        _labels(records[:, 0], n, v.num_coarse, source, "coarse label byte", v)
    labels = _labels(records[:, v.label_bytes - 1], n, v.num_classes, source, f"{v.label_word} byte", v)
    return _owned(records[:, v.label_bytes:].reshape(n, 3, 32, 32)), labels


def _binary_names(blob: bytes | memoryview, source: str, v: _Variant) -> list[str]:
    names = [line.strip() for line in bytes(blob).decode("utf-8", "replace").splitlines() if line.strip()]
    return _class_names(names, source, v)


def _members(v: _Variant, fmt: str) -> tuple[str, ...]:
    """Every member a format's tree must hold: training parts, test split, class names."""
    return (*v.train[fmt], v.test[fmt], v.meta[fmt])


def _parse(v: _Variant, fmt: str, read: Callable[[str], bytes | memoryview], where: str) -> dict[str, np.ndarray]:
    """Parse one format given ``read(member) -> bytes``; ``where`` prefixes the member names in messages."""
    split = _python_split if fmt == "python" else _binary_split
    parts = [split(read(m), f"{where}/{m}", v) for m in v.train[fmt]]  # CIFAR-10: five training batches, in order
    x_train = parts[0][0] if len(parts) == 1 else np.concatenate([x for x, _ in parts])
    y_train = parts[0][1] if len(parts) == 1 else np.concatenate([y for _, y in parts])
    x_test, y_test = split(read(v.test[fmt]), f"{where}/{v.test[fmt]}", v)
    meta = v.meta[fmt]
    names = (_python_meta if fmt == "python" else _binary_names)(read(meta), f"{where}/{meta}", v)
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
def _archive_format(members: dict[str, Any], archive: Path, fmt: str, v: _Variant) -> str:
    tops = {name.split("/", 1)[0] for name in members}
    other = _OTHER[v.name]
    for top in other.tops.values():
        if top in tops:
            raise ValueError(
                f"{archive} is a {other.title} archive ({top}/); kdlab's {v.name} needs the {v.title} archive "
                f"(data.name={other.name} reads this one): {v.how_to_get}"
            )
    found = [f for f in _FORMATS if v.tops[f] in tops]
    if fmt != "auto":
        if fmt not in found:
            raise ValueError(
                f"{archive} has no {v.tops[fmt]}/ directory (fmt={fmt!r}); found {sorted(tops)[:5]}. "
                f"Pass fmt='auto' or the matching archive"
            )
        return fmt
    if not found:
        raise ValueError(
            f"{archive} is not a {v.title} archive: expected {v.tops['python']}/ or {v.tops['binary']}/ inside, "
            f"found {sorted(tops)[:5]}. {v.how_to_get}"
        )
    return found[0]


def _archive_reader(members: dict[str, memoryview], archive: Path, fmt: str,
                    v: _Variant) -> Callable[[str], memoryview]:
    def read(name: str) -> memoryview:
        key = f"{v.tops[fmt]}/{name}"
        if key not in members:
            raise ValueError(f"{archive}: missing member {key}; the archive is incomplete. Delete it and "
                             f"{v.how_to_get}")
        return members[key]

    return read


def _dir_format(directory: Path, v: _Variant) -> str | None:
    for fmt in _FORMATS:
        if all((directory / m).is_file() for m in (*v.train[fmt], v.test[fmt])):
            return fmt
    return None


def _dir_reader(directory: Path, v: _Variant) -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing; the extracted {v.title} directory is incomplete. {v.how_to_get}"
            )
        return path.read_bytes()

    return read


# --------------------------------------------------------------------------------------------------------------------
# cache + public loaders
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


def _read_cache(path: Path, sources: list[Path], v: _Variant) -> dict[str, np.ndarray]:
    """The arrays of a cache; ``ValueError`` saying why if it is unreadable, malformed or older than all ``sources``."""
    arrays, meta = read_npz(path, ("x_train", "y_train", "x_test", "y_test", "class_names"))
    if not isinstance(meta, dict) or meta.get("version") != _CACHE_VERSION:
        raise ValueError("written by another kdlab version")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (3, 32, 32) or x.shape[0] == 0:
            raise ValueError(f"x_{split} is {x.dtype} {x.shape}, expected uint8 (N, 3, 32, 32)")
        if y.dtype != np.int64 or y.shape != (x.shape[0],) or y.min() < 0 or y.max() >= v.num_classes:
            raise ValueError(f"y_{split} is malformed or out of range")
    if arrays["class_names"].shape != (v.num_classes,):
        raise ValueError("class_names has the wrong length")
    fingerprint = {k: meta.get(k) for k in ("source", "size", "mtime_ns")}
    if sources and all(_fingerprint(s) != fingerprint for s in sources):
        raise ValueError("it is older than its source")
    return arrays


def _to_splits(arrays: dict[str, np.ndarray], v: _Variant) -> DataSplits:
    return DataSplits.from_numpy(
        v.name,
        arrays,
        v.num_classes,
        mean=v.mean,
        std=v.std,
        train_augment=CropFlip(32, padding=4),
        class_names=tuple(str(s) for s in arrays["class_names"]),
    )


def _parse_source(source: Path, fmt: str, v: _Variant) -> dict[str, np.ndarray]:
    if source.is_dir():
        found = _dir_format(source, v)
        if found is None or (fmt != "auto" and found != fmt):
            formats = _FORMATS if fmt == "auto" else (fmt,)
            want = " or ".join(f"{v.tops[f]}/{{{','.join(_members(v, f))}}}" for f in formats)
            raise FileNotFoundError(f"{source} does not hold an extracted {v.title} ({want}); {v.how_to_get}")
        return _parse(v, found, _dir_reader(source, v), str(source))
    members = read_members(source, remedy=v.how_to_get)
    found = _archive_format(members, source, fmt, v)
    return _parse(v, found, _archive_reader(members, source, found, v), f"{source}:{v.tops[found]}")


def _cached_or_parsed(cache: Path, sources: list[Path], fmt: str, v: _Variant) -> DataSplits | None:
    """The splits cached at ``cache`` if it is valid and matches a source (or none is left), else parsed from
    ``sources[0]`` and cached there; ``None`` when there is neither a cache nor a source."""
    if not sources:
        if not cache.is_file():
            return None
        try:
            return _to_splits(_read_cache(cache, sources, v), v)
        except ValueError as err:
            raise ValueError(
                f"the {v.title} cache {cache} is invalid ({err}) and no archive is there to rebuild it; delete it "
                f"and {v.how_to_get}"
            ) from None
    source = sources[0]
    arrays = cached_arrays(
        cache,
        {"version": _CACHE_VERSION, **_fingerprint(source)},
        read=lambda path: _read_cache(path, sources, v),
        build=lambda: _parse_source(source, fmt, v),
        what=v.title,
        rebuild=f"re-reading {source}",
        stacklevel=4,
    )
    return _to_splits(arrays, v)


def _load(v: _Variant, root, download: bool, url: str | None, fmt: str, md5: str | None,
          progress: bool) -> DataSplits:
    if fmt not in ("auto", *_FORMATS):
        raise ValueError(f"fmt must be 'auto', 'python' or 'binary'; got {fmt!r}")
    if not isinstance(download, bool):
        raise ValueError(f"download must be a bool; got {download!r}")
    path = resolve_root(root)

    if path.is_file() and path.suffix == ".npz":
        try:
            return _to_splits(_read_cache(path, [], v), v)
        except ValueError as err:
            raise ValueError(f"{path} is not a valid kdlab {v.title} cache ({err}); delete it and reload") from None
    if path.is_file() or (path.is_dir() and _dir_format(path, v) is not None):  # one archive, or an extracted tree
        return _cached_or_parsed(_cache_path(path), [path], fmt, v)

    formats = _FORMATS if fmt == "auto" else (fmt,)
    for f in formats:
        tree, archive = path / v.tops[f], path / v.archives[f]
        sources = [s for s in (tree, archive) if (s.is_dir() and _dir_format(s, v) == f) or s.is_file()]
        if (splits := _cached_or_parsed(_cache_path(archive), sources, f, v)) is not None:
            return splits

    looked = ", ".join(f"{v.archives[f]}, {v.tops[f]}/" for f in formats)
    if not download:
        raise DataNotFound(f"{v.title} not found in {path} (looked for {looked})", v.how_to_get)
    if url is None:
        url = v.urls["binary" if fmt == "binary" else "python"]
    if not isinstance(url, str) or not url:
        raise ValueError(f"url must be a non-empty string; got {url!r}")
    name = PurePosixPath(urllib.parse.urlparse(url).path).name
    if md5 is None:
        if name not in v.archives.values():
            raise ValueError(
                f"cannot verify the download of {url}: its file name {name!r} is not an official {v.title} archive "
                f"name ({', '.join(v.archives.values())}); pass md5= for it"
            )
        md5 = ARCHIVE_MD5[name]
    archive = download_url(url, path, md5, progress=progress)
    return _cached_or_parsed(_cache_path(archive), [archive], fmt, v)


_LOAD_DOC = """{title} as :class:`DataSplits`: uint8 ``[N, 3, 32, 32]``, {labels} ({n} classes), 50000/10000.

    ``mean``/``std`` are the standard {title} statistics and ``train_augment`` is ``CropFlip(32, padding=4)``, the
    standard CIFAR recipe (He et al., CVPR 2016, §4.2).

    Args:
        root: a directory holding ``{py}`` / ``{bin}`` (or their extracted ``{tpy}/`` / ``{tbin}/`` trees, or their
            ``.npz`` caches); or the path of one archive, extracted tree or cache. Default: ``$KDLAB_DATA`` or
            ``~/.cache/kdlab``.
        download: fetch the archive into ``root`` if nothing is found there.
        url: where to download from; the default is the official python archive (the official binary one when
            ``fmt="binary"``).
        fmt: ``"auto"`` (python, then binary), ``"python"`` or ``"binary"``.
        md5: expected md5 of the download; default: the official checksum for the archive's file name.
        progress: show a download progress bar.

    A present archive's md5 is not re-checked (its structure and labels are); downloads always are.
    """


def load_cifar100(
    root: str | os.PathLike | None = None,
    download: bool = False,
    url: str = DEFAULT_URL,
    fmt: str = "auto",
    *,
    md5: str | None = None,
    progress: bool = True,
) -> DataSplits:
    return _load(_C100, root, download, None if url == DEFAULT_URL else url, fmt, md5, progress)


def load_cifar10(
    root: str | os.PathLike | None = None,
    download: bool = False,
    url: str = CIFAR10_URL,
    fmt: str = "auto",
    *,
    md5: str | None = None,
    progress: bool = True,
) -> DataSplits:
    return _load(_C10, root, download, None if url == CIFAR10_URL else url, fmt, md5, progress)


for _fn, _v, _labels_doc in ((load_cifar100, _C100, "fine labels"), (load_cifar10, _C10, "labels")):
    _fn.__doc__ = _LOAD_DOC.format(title=_v.title, labels=_labels_doc, n=_v.num_classes, py=_v.archives["python"],
                                   bin=_v.archives["binary"], tpy=_v.tops["python"], tbin=_v.tops["binary"])
del _fn, _v, _labels_doc
