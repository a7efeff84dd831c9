"""User data conversion (as_tensors), the DataSplits container and split control (select_split)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from kdlab.config.schema import DistillDataConfig
from kdlab.data import CropFlip, DataSplits, as_tensors, load_dataset
from kdlab.data.splits import holdout_slices, select_split


# ------------------------------------------------------------------------------------------------------- as_tensors
def test_pair_of_arrays_and_tensors():
    x = np.random.default_rng(0).normal(size=(6, 2, 5))
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
    tx, ty = as_tensors((x, y))
    assert tx.dtype == torch.float32 and ty.dtype == torch.int64 and tx.shape == (6, 2, 5)
    np.testing.assert_allclose(tx.numpy(), x.astype(np.float32))
    assert ty.tolist() == y.tolist()
    img = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    tx, ty = as_tensors([img, torch.tensor([1, 0, 1])])
    assert tx.dtype == torch.uint8 and torch.equal(tx, img)  # pixels are kept as pixels


def test_dataset_is_stacked_in_order():
    x = torch.randn(7, 1, 9)
    y = torch.tensor([3, 1, 4, 1, 5, 9, 2])
    tx, ty = as_tensors(TensorDataset(x, y), num_classes=10)
    assert torch.equal(tx, x) and torch.equal(ty, y)


def test_dataset_of_pil_images():
    from PIL import Image

    arrays = [np.random.default_rng(i).integers(0, 256, (5, 4, 3), dtype=np.uint8) for i in range(3)]

    class Pics(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return Image.fromarray(arrays[i]), np.int64(i)

    tx, ty = as_tensors(Pics())
    assert tx.shape == (3, 3, 5, 4) and tx.dtype == torch.uint8  # HWC → CHW, as ToTensor
    assert torch.equal(tx[2], torch.from_numpy(arrays[2]).permute(2, 0, 1)) and ty.tolist() == [0, 1, 2]


class Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ((torch.zeros(4, 3), torch.zeros(3, dtype=torch.long)), "4 samples but labels have 3"),
        ((torch.zeros(4, 3), torch.zeros(4)), "labels must be integer class ids; got torch.float32"),
        ((torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long)), "labels must be 1-D"),
        ((torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)), "empty"),
        ((torch.zeros(4), torch.zeros(4, dtype=torch.long)), r"\[N, C, \.\.\.\]"),
        ((torch.zeros(2, 3, dtype=torch.int32), torch.zeros(2, dtype=torch.long)), "uint8 pixels or floating"),
        ((torch.tensor([[0.0], [float("nan")]]), torch.zeros(2, dtype=torch.long)), "NaN or inf"),
        ((torch.zeros(2, 3), torch.tensor([0, -1])), "labels must be >= 0"),
        (Items([]), "empty"),
        (Items([(torch.zeros(3), 0), (torch.zeros(4), 1)]), r"item 1 has shape \(4,\) but item 0 has \(3,\)"),
        (Items([(torch.zeros(1, 3), 0), torch.zeros(3)]), r"item 1 must be an \(input, label\) pair"),
        (Items([(torch.zeros(1, 3), 0.5)]), "label of item 0 must be an integer class id"),
        (Items([(torch.zeros(1, 3), torch.tensor([1, 2]))]), "label of item 0 must be one integer class id"),
        (Items([("text", 0)]), "input of item 0 must be a torch.Tensor"),
        (iter([(torch.zeros(3), 0)]), "map-style Dataset"),
    ],
)
def test_as_tensors_validation(data, message):
    with pytest.raises(ValueError, match=message):
        as_tensors(data)


def test_num_classes_bound():
    with pytest.raises(ValueError, match="labels must be < num_classes=3; found 3"):
        as_tensors((torch.zeros(2, 1), torch.tensor([0, 3])), num_classes=3)


# ------------------------------------------------------------------------------------------------------ DataSplits
def splits(**overrides):
    kw = dict(
        name="toy",
        x_train=torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8),
        y_train=torch.arange(8) % 4,
        x_test=torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8),
        y_test=torch.arange(4),
        num_classes=4,
        mean=[0.5, 0.5, 0.5],
        std=(0.25, 0.25, 0.25),
        train_augment=CropFlip(),
    )
    kw.update(overrides)
    return DataSplits(**kw)


def test_datasplits_basics_and_subset():
    s = splits()
    assert s.mean == (0.5, 0.5, 0.5) and s.input_shape == (3, 32, 32) and s.num_train == 8 and s.num_test == 4
    sub = s.subset(n_train=3)
    assert torch.equal(sub.x_train, s.x_train[:3]) and torch.equal(sub.y_train, s.y_train[:3])
    assert sub.num_test == 4 and sub.train_augment == s.train_augment and sub.mean == s.mean
    both = s.subset(2, 1)
    assert (both.num_train, both.num_test) == (2, 1) and torch.equal(both.y_test, s.y_test[:1])
    with pytest.raises(ValueError, match=r"n_train must be an int in \[1, 8\]"):
        s.subset(n_train=9)
    with pytest.raises(ValueError, match=r"n_test must be an int in \[1, 4\]"):
        s.subset(n_test=0)


def test_datasplits_loaders():
    s = splits()
    train = s.train_loader(4, seed=1)
    batch = next(iter(train))
    assert train.augment == CropFlip() and batch.view is not None and len(train) == 2
    assert next(iter(s.train_loader(4, augment=False))).view is None
    test = s.test_loader(3)
    batches = list(test)
    assert torch.cat([b.index for b in batches]).tolist() == [0, 1, 2, 3]
    assert torch.equal(batches[0].x, (s.x_test[:3].float() / 255 - 0.5) / 0.25)
    # both are the one builder, DataSplits.loader, with their settings
    same = s.loader("test", 3)
    assert all(torch.equal(a.x, b.x) and torch.equal(a.index, b.index) for a, b in zip(batches, same, strict=True))
    with pytest.raises(ValueError, match="part must be 'train' or 'test'"):
        s.loader("holdout", 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(y_train=torch.arange(8)), r"y_train must lie in \[0, num_classes=4\); found labels 0..7"),
        (dict(y_test=torch.arange(3)), "x_test has 4 samples but y_test has 3"),
        (dict(y_test=torch.arange(4).int()), "y_test must be a 1-D int64 tensor"),
        (dict(x_train=torch.zeros(8, 3, 32, 32, dtype=torch.float64)), "x_train must be uint8 .* or float32"),
        (dict(x_test=torch.zeros(4, 3, 16, 16, dtype=torch.uint8)), "train and test samples differ in shape"),
        (dict(num_classes=0), "num_classes must be an int >= 1"),
        (dict(mean=(0.5, 0.5)), "mean has 2 entries but the inputs have 3 channels"),
        (dict(std=None), "both mean and std"),
        (dict(std=(1.0, 0.0, 1.0)), "std must be > 0"),
        (dict(train_augment="flip"), "train_augment must be a ViewAugmentation"),
        (dict(class_names=["a", "b"]), "class_names has 2 names for num_classes=4"),
    ],
)
def test_datasplits_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        splits(**overrides)


def test_load_dataset_rejects_non_strings():
    with pytest.raises(ValueError, match="dataset name must be a string"):
        load_dataset(None)


# ---------------------------------------------------------------------------------------------------- split control
def test_holdout_split_control():
    s = splits()
    t, h = holdout_slices(8, 0.25)
    assert (t, h) == (slice(0, 6), slice(6, 8))
    cfg = DistillDataConfig(holdout_fraction=0.25, split="holdout")
    teacher = select_split(cfg, s, "teacher")
    assert torch.equal(teacher.x_train, s.x_train[:6]) and torch.equal(teacher.y_train, s.y_train[:6])
    assert torch.equal(select_split(cfg, s, cfg.split).x_train, s.x_train[6:])
    assert select_split(cfg, s, "both").num_train == 8
    assert torch.equal(teacher.holdout_x, s.x_train[6:])  # the held-out inputs stay reachable
    assert select_split(DistillDataConfig(), s, "teacher") is s  # no split control: no-op
    with pytest.raises(ValueError, match="part must be one of"):
        select_split(cfg, s, "student")
    with pytest.raises(ValueError, match="holdout_fraction"):
        holdout_slices(3, 0.9)


def test_holdout_x_is_a_declared_optional_field():
    assert "holdout_x" in {f.name for f in dataclasses.fields(DataSplits)}
    s = splits()
    assert s.holdout_x is None
    held = splits(holdout_x=s.x_train[:2])
    assert torch.equal(held.subset(n_train=3).holdout_x, s.x_train[:2])
    with pytest.raises(ValueError, match="holdout_x must be a tensor of train samples"):
        splits(holdout_x=torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
