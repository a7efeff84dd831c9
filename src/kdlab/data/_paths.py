"""Where datasets and their caches live, and small file helpers shared by the loaders."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from kdlab._io import atomic_write

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
