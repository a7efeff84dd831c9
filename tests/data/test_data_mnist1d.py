"""MNIST-1D: the standard split, the .npz cache, determinism and untouched global RNGs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import kdlab.data.mnist1d as m1d
from kdlab.data import Shift1D, load_dataset, load_mnist1d


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist1d")
    return root, load_mnist1d(root)


def test_standard_split(standard):
    root, data = standard
    assert data.name == "mnist1d" and data.num_classes == 10
    assert data.x_train.shape == (4000, 1, 40) and data.x_test.shape == (1000, 1, 40)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert sorted(data.y_train.unique().tolist()) == list(range(10))
    assert data.mean is None and data.std is None and data.train_augment == Shift1D(max_shift=4)
    both = torch.cat([data.x_train, data.x_test])
    assert abs(both.mean().item()) < 1e-3 and abs(both.std().item() - 1.0) < 1e-3  # standardised by the package
    assert [p.name for p in root.iterdir()] == ["mnist1d-v1-n5000-seed42-split0.8.npz"]


def test_matches_the_package_generator(standard):
    from mnist1d.data import get_dataset_args, make_dataset

    _, data = standard
    state = np.random.get_state()
    try:
        ref = make_dataset(get_dataset_args())  # the published defaults: 5000 samples, seed 42, split 0.8
    finally:
        np.random.set_state(state)
    np.testing.assert_array_equal(data.x_train[:, 0].numpy(), ref["x"].astype(np.float32))
    np.testing.assert_array_equal(data.x_test[:, 0].numpy(), ref["x_test"].astype(np.float32))
    np.testing.assert_array_equal(data.y_train.numpy(), ref["y"])
    np.testing.assert_array_equal(data.y_test.numpy(), ref["y_test"])


def test_second_load_uses_the_cache(standard, monkeypatch):
    root, data = standard

    def fail(*args):
        raise AssertionError("the generator ran although a cache exists")

    monkeypatch.setattr(m1d, "_generate", fail)
    again = load_mnist1d(root)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)
    monkeypatch.setenv("KDLAB_DATA", str(root))  # the default root, via load_dataset
    assert torch.equal(load_dataset("mnist1d").x_test, data.x_test)


def test_global_rngs_untouched_and_deterministic(tmp_path):
    np.random.seed(1234)
    random.seed(99)
    np_state, py_state = np.random.get_state(), random.getstate()
    a = load_mnist1d(tmp_path / "a", num_samples=200, seed=7)
    after = np.random.get_state()
    assert all(np.array_equal(u, v) for u, v in zip(np_state, after, strict=True)) and random.getstate() == py_state
    b = load_mnist1d(tmp_path / "b", num_samples=200, seed=7)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert a.x_train.shape == (160, 1, 40) and a.x_test.shape == (40, 1, 40)
    c = load_mnist1d(tmp_path / "a", num_samples=200, seed=8)  # a different key, a different file
    assert not torch.equal(a.x_train, c.x_train) and len(list((tmp_path / "a").iterdir())) == 2


def test_corrupt_cache_is_regenerated(tmp_path):
    good = load_mnist1d(tmp_path, num_samples=100, seed=3, train_split=0.5)
    (cache,) = tmp_path.iterdir()
    cache.write_bytes(cache.read_bytes()[:100])  # truncated zip
    with pytest.warns(RuntimeWarning, match="cache .* is invalid.*regenerating"):
        again = load_mnist1d(tmp_path, num_samples=100, seed=3, train_split=0.5)
    assert torch.equal(again.x_test, good.x_test) and again.x_train.shape == (50, 1, 40)
    assert torch.equal(load_mnist1d(tmp_path, num_samples=100, seed=3, train_split=0.5).x_train, good.x_train)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_samples=105), "multiple of 10"),
        (dict(num_samples=0), "multiple of 10"),
        (dict(seed=-1), "seed must be an int"),
        (dict(train_split=1.0), r"train_split must be in \(0, 1\)"),
        (dict(num_samples=20, train_split=0.01), "leave both splits non-empty"),
    ],
)
def test_argument_validation(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_mnist1d(tmp_path, **kwargs)
