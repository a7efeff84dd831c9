"""A user's map-style ``Dataset`` read every epoch (``kdlab.fit(train=dataset)``), through the streamed loader.

Item ``i`` of epoch ``e`` is read with Python's ``random``, numpy's global generator and torch's CPU generator
seeded from ``derive_seed(seed, e, 3, i)`` (and the caller's generator states restored afterwards), so a random
transform inside the user's ``__getitem__`` draws anew every epoch, and what it draws is a pure function of
(seed, epoch, index): the same with any number of workers, and again after a resume.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch

from kdlab.data.loader import derive_seed
from kdlab.data.normalization import Normalization
from kdlab.data.stream import BatchSource, StreamLoader
from kdlab.data.user import _finalise, dataset_item

__all__ = ["DatasetSource", "dataset_loader", "read_seeded", "summarise"]

_STREAM_ITEMS = 3  # (seed, epoch, stream, index) key of the item reads; 0–2 are the loader's and the crops'
_SUMMARY_EPOCH = 0  # the identity pass reads items as epoch 0 would (not a training epoch: those start at 1)


def read_seeded(dataset: Any, seed: int, epoch: int, i: int) -> tuple[torch.Tensor, int]:
    """Item ``i`` read under generators seeded by ``(seed, epoch, i)``; the caller's generator states are kept."""
    s = derive_seed(seed, epoch, _STREAM_ITEMS, i)
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s % 2**32)
        try:
            return dataset_item(dataset, i)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class DatasetSource(BatchSource):
    """Batches of a map-style dataset of ``(input, label)`` items (tensors, arrays or PIL images), read per epoch."""

    def __init__(self, dataset: Any, seed: int):
        self.dataset, self.seed = dataset, seed
        self.num_samples = len(dataset)

    def tasks(self, epoch: int, index: np.ndarray) -> list[tuple[int, int]]:
        return [(epoch, int(i)) for i in index]

    def load(self, tasks):
        xs, ys = zip(*(read_seeded(self.dataset, self.seed, e, i) for e, i in tasks))
        for (_, i), x in zip(tasks, xs):
            if x.shape != xs[0].shape or x.dtype != xs[0].dtype:
                raise ValueError(f"input of item {i} is {x.dtype} {tuple(x.shape)} but item {tasks[0][1]} is "
                                 f"{xs[0].dtype} {tuple(xs[0].shape)}; every item needs one shape and dtype")
        x, y = _finalise(torch.stack(xs), torch.tensor(ys, dtype=torch.int64), None)
        return x, y, torch.tensor([i for _, i in tasks], dtype=torch.int64), []


def summarise(dataset: Any, seed: int) -> tuple[torch.Tensor, np.ndarray, str]:
    """One pass over the dataset: two inputs to probe the models with, all labels, and the SHA-256 of every item
    (read as epoch 0) — the data's part of a run's identity."""
    n = len(dataset)
    if n == 0:
        raise ValueError(f"the dataset {type(dataset).__name__} is empty; give at least one sample")
    h = hashlib.sha256()
    labels = np.empty(n, dtype=np.int64)
    probe = []
    for i in range(n):
        x, labels[i] = read_seeded(dataset, seed, _SUMMARY_EPOCH, i)
        if i < 2:
            probe.append(x)
        h.update(f"{x.dtype}|{tuple(x.shape)}|{labels[i]}|".encode())
        h.update(x.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    x, _ = _finalise(torch.stack(probe), torch.as_tensor(labels[:len(probe)]), None)
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0; found {int(labels.min())}")
    return x, labels, h.hexdigest()


def dataset_loader(dataset: Any, batch_size: int, *, seed: int, device, workers: int = 0, augment=None
                   ) -> tuple[StreamLoader, torch.Tensor, np.ndarray, str]:
    """A shuffled training :class:`StreamLoader` over ``dataset`` (inputs used as given: uint8 is scaled by 1/255,
    floats are not touched), with :func:`summarise` 's probe inputs, labels and digest."""
    if augment is not None:
        raise ValueError("augment= applies to (inputs, labels) tensors; a Dataset is read every epoch, so put the "
                         "augmentation in its __getitem__ (it runs anew each epoch)")
    probe, labels, digest = summarise(dataset, seed)
    norm = Normalization(None, None, int(probe.shape[1]), probe.ndim, device)
    loader = StreamLoader(DatasetSource(dataset, seed), batch_size, shuffle=True, pad=True, seed=seed, device=device,
                          workers=workers, normalization=norm, labels=labels)
    return loader, probe, labels, digest
