"""Where datasets and their caches live, and the ``.npz`` cache logic shared by the dataset loaders.

A loader turns its source (an archive, a generator) into numpy arrays once and keeps them in an uncompressed ``.npz``
(no pickles) with a JSON ``meta`` entry; :func:`cached_arrays` serves that cache while it is valid and rebuilds it
otherwise. The ``meta`` entry holds the SHA-256 of the arrays (``content_sha256``, :func:`kdlab._io.digest`), checked
by :func:`read_npz`: a cache whose arrays were changed after it was written (labels rotated, a file rewritten with
the old ``meta``) is invalid, so it is rebuilt with a warning rather than used.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdlab._io import atomic_write, digest

#: Environment variable that overrides the default data directory.
DATA_ENV = "KDLAB_DATA"


def default_root() -> Path:
    """The data directory: ``$KDLAB_DATA`` if set, else ``~/.cache/kdlab``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "kdlab"


def resolve_root(root: str | os.PathLike | None) -> Path:
    """``root`` as a Path, or :func:`default_root` for ``None``."""
    if root is None:
        return default_root()
    if not isinstance(root, (str, os.PathLike)):
        raise ValueError(f"root must be a path (str or os.PathLike) or None; got {type(root).__name__}")
    return Path(root).expanduser()


def save_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed ``.npz`` (no pickles) to a temp file beside ``path``, then rename.

    The rename makes the write atomic, so a reader never sees half a cache, even if two
    processes (e.g. DDP ranks) build it at the same time.
    """
    # a file object (not a name), so numpy does not append a second ".npz"
    atomic_write(path, lambda f: np.savez(f, **arrays))


_CHECKSUM = "content_sha256"


def _content(arrays: Mapping[str, np.ndarray]) -> str:
    return digest(*(arrays[k] for k in sorted(arrays)))


def read_npz(path: Path, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], Any]:
    """The arrays ``keys`` of a cache written by :func:`cached_arrays`, and its decoded ``meta`` (without the
    checksum).

    ``ValueError`` saying why if the file is unreadable, lacks a key, or its arrays do not match their checksum.
    """
    try:
        # Our own handle: np.load leaks its file when the zip is corrupt.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            stored = {k: z[k] for k in z.files}
            arrays = {k: stored[k] for k in keys}
        meta = json.loads(str(stored.pop("meta")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"unreadable ({type(err).__name__}: {err})") from None
    written = meta.pop(_CHECKSUM, None) if isinstance(meta, dict) else None
    if written is None:
        raise ValueError("it has no content checksum (written by an older kdlab)")
    if _content(stored) != written:
        raise ValueError("its arrays do not match the checksum written with them (changed or corrupted on disk)")
    return arrays, meta


def cached_arrays(
    path: Path,
    meta: Mapping[str, Any],
    read: Callable[[Path], dict[str, np.ndarray]],
    build: Callable[[], dict[str, np.ndarray]],
    *,
    what: str,
    rebuild: str,
    stacklevel: int = 2,
) -> dict[str, np.ndarray]:
    """``read(path)`` if ``path`` holds a valid cache, else ``build()``, cached at ``path`` (with ``meta``).

    ``read`` raises ``ValueError`` saying why a cache is invalid: it is then rebuilt with a ``RuntimeWarning``
    ("``{what} cache {path} is invalid (why); {rebuild}``"). A cache that cannot be written (a read-only dataset
    directory) only warns: the data is still usable, only slower next time. ``stacklevel`` is the caller's, as for
    :func:`warnings.warn`.
    """
    if path.is_file():
        try:
            return read(path)
        except ValueError as err:
            warnings.warn(f"{what} cache {path} is invalid ({err}); {rebuild}", RuntimeWarning, stacklevel + 1)
    arrays = build()
    try:
        save_npz_atomic(path, {**arrays, "meta": np.array(json.dumps({**meta, _CHECKSUM: _content(arrays)}))})
    except OSError as err:
        message = f"could not write the {what} cache {path} ({err}); continuing without it"
        warnings.warn(message, stacklevel=stacklevel + 1)  # a read-only directory: usable, only slower next time
    return arrays
