"""Shared fixtures of the method tests: tiny MNIST-1D networks as student/teacher on seeded random batches."""

import pytest
import torch

from kdlab.data import BatchLoader
from kdlab.data.batch import Batch
from kdlab.methods import create as build
from kdlab.models import create
from kdlab.teachers.frozen import FrozenTeacher

NUM_CLASSES = 10


def _batch(n=8, shape=(1, 40), num_classes=NUM_CLASSES, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return Batch(x=x, y=y, index=torch.arange(n))


def _method(name, args=None, student="mnist1d_mlp", teacher="mnist1d_cnn", seed=0, num_classes=NUM_CLASSES,
            shape=(1, 40)):
    torch.manual_seed(seed)
    s = create(student, num_classes)
    t = create(teacher, num_classes)
    # scale the teacher's head so that its softmax is far from uniform (random heads are nearly flat)
    with torch.no_grad():
        t.classifier.weight.mul_(8.0)
    # a probe of two samples of `shape` sets up feature methods (Method.setup), as the builder does with real data;
    # the training data is make_batch's default batch (CRD sizes its memory bank and draws negatives from it)
    data = _batch(shape=shape, num_classes=num_classes)
    return build(name, s, FrozenTeacher(t), num_classes, args,
                 probe=torch.randn(2, *shape, generator=torch.Generator().manual_seed(1)),
                 data=BatchLoader(data.x, data.y, batch_size=len(data.y)))


@pytest.fixture
def make_batch():
    """make_batch(n=8, shape=(1, 40), num_classes=10, seed=0) -> Batch with x ~ N(0, 1) and random labels."""
    return _batch


@pytest.fixture
def make_method():
    """make_method(name, args=None, student="mnist1d_mlp", teacher="mnist1d_cnn", seed=0, shape=(1, 40)) -> a built
    Method, set up on a probe batch of that sample shape."""
    return _method
