"""MNIST-1D (Greydanus, 2020): ten 1-D digit templates, randomly padded, scaled, sheared, translated and noised.

Generated offline with the ``mnist1d`` package and cached as ``.npz``. The package's defaults give the standard
4000/1000 split of 40-step signals, already standardised over the whole set (so no ``mean``/``std`` here).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

from kdlab._checks import check_int, is_int, is_real
from kdlab.data._paths import cached_arrays, read_npz, resolve_root
from kdlab.data.splits import DataSplits
from kdlab.data.views import Shift1D

__all__ = ["load_mnist1d"]

# Bump when the cached content or its layout changes, so old caches are regenerated rather than misread.
_CACHE_VERSION = 1
_NUM_CLASSES = 10


def _cache_name(num_samples: int, seed: int, train_split: float) -> str:
    return f"mnist1d-v{_CACHE_VERSION}-n{num_samples}-seed{seed}-split{train_split!r}.npz"


def _generate(num_samples: int, seed: int, train_split: float) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` with our args, leaving numpy's and Python's global RNGs as they were."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, train_split
    # make_dataset calls np.random.seed and random.seed: restore both so loading data never perturbs user code.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x_train": np.asarray(data["x"], dtype=np.float32)[:, None, :],
        "y_train": np.asarray(data["y"], dtype=np.int64),
        "x_test": np.asarray(data["x_test"], dtype=np.float32)[:, None, :],
        "y_test": np.asarray(data["y_test"], dtype=np.int64),
    }


def _read_cache(path: Path, meta: dict) -> dict[str, np.ndarray]:
    """The arrays of a cache file; ``ValueError`` if it is unreadable, from other args, or malformed."""
    arrays, stored = read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    if stored != meta:
        raise ValueError("it was made with different arguments")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.float32 or x.ndim != 3 or x.shape[1] != 1 or y.dtype != np.int64 or y.shape != x.shape[:1]:
            raise ValueError(f"malformed {split} arrays (x {x.dtype} {x.shape}, y {y.dtype} {y.shape})")
        if y.size and (y.min() < 0 or y.max() >= _NUM_CLASSES):
            raise ValueError(f"{split} labels outside [0, {_NUM_CLASSES})")
        if not np.isfinite(x).all():
            raise ValueError(f"non-finite {split} inputs")
    n_train = int(meta["num_samples"] * meta["train_split"])
    if arrays["x_train"].shape[0] != n_train or arrays["x_test"].shape[0] != meta["num_samples"] - n_train:
        raise ValueError("wrong number of samples")
    return arrays


def load_mnist1d(
    root: str | os.PathLike | None = None,
    num_samples: int = 5000,
    seed: int = 42,
    train_split: float = 0.8,
) -> DataSplits:
    """MNIST-1D as :class:`DataSplits`: x float32 ``[N, 1, 40]``, y int64, 10 classes, ``Shift1D(4)`` train views.

    Args:
        root: cache directory (default ``$KDLAB_DATA`` or ``~/.cache/kdlab``). The set is generated on first use
            (about 2 s) and stored as ``mnist1d-v1-n{num_samples}-seed{seed}-split{train_split}.npz``; a corrupt or
            mismatching cache file is regenerated with a warning.
        num_samples: total samples, a multiple of 10 (the generator makes ``num_samples // 10`` per class).
        seed: the generator's seed (42 is the published dataset).
        train_split: fraction of samples in the train split; the first ``int(num_samples·train_split)`` of the
            shuffled set are train.
    """
    if not is_int(num_samples) or num_samples < 20 or num_samples % 10:
        raise ValueError(
            f"num_samples must be an int multiple of 10 and >= 20 (the generator makes num_samples // 10 per "
            f"class); got {num_samples!r}"
        )
    num_samples = int(num_samples)
    seed = check_int(seed, "seed", 0, 2**32 - 1, note=" (numpy's legacy seeding range)")
    if not is_real(train_split):
        raise ValueError(f"train_split must be a float in (0, 1); got {train_split!r}")
    train_split = float(train_split)
    n_train = int(num_samples * train_split)
    if not 0.0 < train_split < 1.0 or n_train < 1 or n_train >= num_samples:
        raise ValueError(
            f"train_split must be in (0, 1) and leave both splits non-empty (num_samples={num_samples}); "
            f"got {train_split!r}"
        )

    directory = resolve_root(root)
    path = directory / _cache_name(num_samples, seed, train_split)
    meta = {"version": _CACHE_VERSION, "num_samples": num_samples, "seed": seed, "train_split": train_split}
    arrays = cached_arrays(
        path,
        meta,
        read=lambda p: _read_cache(p, meta),
        build=lambda: _generate(num_samples, seed, train_split),
        what="MNIST-1D",
        rebuild="regenerating it",
    )

    return DataSplits.from_numpy(
        "mnist1d",
        arrays,
        _NUM_CLASSES,
        train_augment=Shift1D(max_shift=4),
        class_names=tuple(str(d) for d in range(_NUM_CLASSES)),
    )
