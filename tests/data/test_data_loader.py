"""BatchLoader: batch content, determinism per (seed, epoch), sharding, normalisation."""

from __future__ import annotations

import pytest
import torch

from kdlab.data import Batch, BatchLoader, CropFlip, Shift1D, derive_seed, normalize

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def images(n: int = 30, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 100, (n,), generator=g)
    return x, y


def collect(loader):
    return list(loader)


def same_batches(a: list[Batch], b: list[Batch]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(p.x, q.x)
        and torch.equal(p.y, q.y)
        and torch.equal(p.index, q.index)
        and ((p.view is None and q.view is None) or torch.equal(p.view, q.view))
        for p, q in zip(a, b, strict=True)
    )


def test_batches_are_augmented_then_normalised():
    x, y = images()
    aug = CropFlip()
    loader = BatchLoader(x, y, 8, augment=aug, mean=MEAN, std=STD, seed=3)
    batches = collect(loader)
    assert len(loader) == len(batches) == 4 and [len(b) for b in batches] == [8, 8, 8, 6]
    index = torch.cat([b.index for b in batches])
    assert sorted(index.tolist()) == list(range(30))  # each sample exactly once
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    for b in batches:
        assert b.x.dtype == torch.float32 and b.y.dtype == b.index.dtype == b.view.dtype == torch.int64
        assert torch.equal(b.y, y[b.index])
        # Pad/crop/flip the raw uint8 pixels first, then ToTensor (/255) + Normalize, in float32.
        expected = (aug.apply(x[b.index], b.view).float() / 255.0 - m) / s
        assert torch.equal(b.x, expected)


def test_drop_last_and_len():
    x, y = images(30)
    assert len(BatchLoader(x, y, 8, drop_last=True)) == 3
    assert len(BatchLoader(x, y, 8)) == 4
    assert len(BatchLoader(x, y, 10, drop_last=True)) == 3
    assert sum(len(b) for b in BatchLoader(x, y, 8, drop_last=True)) == 24


def test_same_seed_same_batches_and_epochs_differ():
    x, y = images()
    a = BatchLoader(x, y, 8, augment=CropFlip(), mean=MEAN, std=STD, seed=5)
    b = BatchLoader(x, y, 8, augment=CropFlip(), mean=MEAN, std=STD, seed=5)
    assert same_batches(collect(a), collect(b))
    assert same_batches(collect(a), collect(a))  # iterating again without set_epoch replays the epoch
    epoch0 = collect(a)
    a.set_epoch(1)
    assert not same_batches(epoch0, collect(a))
    c = BatchLoader(x, y, 8, augment=CropFlip(), mean=MEAN, std=STD, seed=6)
    assert not same_batches(epoch0, collect(c))


def test_set_epoch_resumes_bit_exactly():
    x, y = images(40)
    kw = dict(augment=CropFlip(), mean=MEAN, std=STD, seed=11)
    run = BatchLoader(x, y, 16, **kw)
    history = []
    for epoch in range(3):
        run.set_epoch(epoch)
        history.append(collect(run))
    resumed = BatchLoader(x, y, 16, **kw)  # a fresh process restarted at epoch 2
    resumed.set_epoch(2)
    assert same_batches(history[2], collect(resumed))
    assert not same_batches(history[1], history[2])


def test_views_do_not_depend_on_batch_size():
    x, y = images(30)
    views = {}
    for bs in (7, 13, 30):
        loader = BatchLoader(x, y, bs, augment=CropFlip(), seed=2)
        loader.set_epoch(4)
        mapping = {}
        for b in loader:
            mapping.update(zip(b.index.tolist(), b.view.tolist(), strict=True))
        views[bs] = mapping
    assert views[7] == views[13] == views[30] and len(views[7]) == 30
    assert len(set(views[7].values())) > 10  # really random views


def test_no_shuffle_keeps_order_and_offset():
    x = torch.randn(10, 1, 40)
    y = torch.arange(10) % 3
    loader = BatchLoader(x, y, 4, shuffle=False, index_offset=100)
    batches = collect(loader)
    assert torch.cat([b.index for b in batches]).tolist() == list(range(100, 110))
    assert batches[0].view is None and torch.equal(batches[0].x, x[:4])  # float, no stats: unchanged
    shifted = collect(BatchLoader(x, y, 10, shuffle=False, augment=Shift1D(4), seed=1))[0]
    assert torch.equal(shifted.x, Shift1D(4).apply(x, shifted.view))


@pytest.mark.parametrize(("n", "drop_last"), [(48, False), (50, False), (50, True), (37, False)])
def test_sharded_ranks_partition_the_global_batch(n, drop_last):
    x, y = images(n, seed=4)
    kw = dict(augment=CropFlip(), mean=MEAN, std=STD, seed=9, drop_last=drop_last)
    world, per_rank = 3, 4
    full = BatchLoader(x, y, per_rank * world, **kw)
    base = BatchLoader(x, y, per_rank, **kw)
    for loader in (full, base):
        loader.set_epoch(2)
    shards = [base.sharded(r, world) for r in range(world)]
    assert base.world_size == 1 and shards[1].rank == 1 and shards[1].x is base.x  # shared, not copied
    per_shard = [collect(s) for s in shards]
    global_batches = collect(full)
    assert all(len(s) == len(full) == len(p) for s, p in zip(shards, per_shard, strict=True))
    seen = []
    for k, g in enumerate(global_batches):
        parts = [per_shard[r][k] for r in range(world)]
        assert torch.equal(torch.cat([p.index for p in parts]), g.index)
        assert torch.equal(torch.cat([p.view for p in parts]), g.view)
        assert torch.equal(torch.cat([p.x for p in parts]), g.x)
        if len(g) == per_rank * world:
            assert all(len(p) == per_rank for p in parts)
        seen += g.index.tolist()
    assert len(seen) == len(set(seen))  # disjoint
    assert len(seen) == (n // 12 * 12 if drop_last else n)


def test_derive_seed_hashes_its_keys():
    assert derive_seed(0, 1) != derive_seed(1, 0) and derive_seed(2, 3) == derive_seed(2, 3)
    with pytest.raises(ValueError, match="non-negative ints"):
        derive_seed(1, -1)


@pytest.mark.parametrize("augment", [CropFlip(), None])
def test_inputs_for_gives_exactly_the_batch_inputs(augment):
    x, y = images(30)
    loader = BatchLoader(x, y, 8, augment=augment, mean=MEAN, std=STD, seed=5, index_offset=100)
    loader.set_epoch(2)
    for b in loader:
        assert torch.equal(loader.inputs_for(b.index - 100, b.view), b.x)
    if augment is not None:
        views = torch.tensor([augment.identity_view, 0])
        m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        expected = (augment.apply(x[[3, 4]], views).float() / 255.0 - m) / s
        assert torch.equal(loader.inputs_for(torch.tensor([3, 4]), views), expected)
        with pytest.raises(ValueError, match="views must be given exactly when"):
            loader.inputs_for(torch.tensor([3]))
    else:
        with pytest.raises(ValueError, match="views must be given exactly when"):
            loader.inputs_for(torch.tensor([3]), torch.tensor([0]))


def test_normalize():
    x = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)  # [1, 2, 1, 2]
    out = normalize(x, (0.5, 0.2), (0.5, 0.1))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[[[-1.0, 1.0]], [[0.0, 2.0]]]]))
    assert torch.equal(normalize(x), x.float() / 255)
    f = torch.randn(2, 1, 5)
    assert torch.equal(normalize(f, (1.0,), (2.0,)), (f - 1.0) / 2.0)
    with pytest.raises(ValueError, match="mean must have 1 or 2 entries"):
        normalize(x, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="std must be > 0"):
        normalize(x, (0.5, 0.5), (1.0, 0.0))
    with pytest.raises(ValueError, match="both mean and std"):
        normalize(x, (0.5, 0.5))


def test_batch_to():
    x, y = images(4)
    b = next(iter(BatchLoader(x, y, 4, augment=CropFlip())))
    moved = b.to("cpu")
    assert torch.equal(moved.x, b.x) and torch.equal(moved.view, b.view) and len(moved) == 4


def test_batch_to_moves_new_fields():
    b = Batch(x=torch.zeros(2, 1, 4), y=torch.zeros(2, dtype=torch.long), index=torch.arange(2),
              label_mask=torch.ones(2, dtype=bool), temperature=torch.ones(2))
    c = b.to("cpu")
    assert torch.equal(c.label_mask, b.label_mask) and torch.equal(c.temperature, b.temperature)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(x=torch.zeros(5, 3, 2, 2), y=torch.zeros(4, dtype=torch.long), batch_size=2), "5 samples but y has 4"),
        (dict(x=torch.zeros(5, 3), y=torch.zeros(5), batch_size=2), "1-D int64"),
        (dict(x=torch.zeros(5, 3), y=torch.zeros(5, dtype=torch.long), batch_size=0), "batch_size must be an int >= 1"),
        (dict(x=torch.zeros(5, 3), y=torch.zeros(5, dtype=torch.long), batch_size=2, seed=-1), "seed must be"),
        (dict(x=torch.zeros(5, 3), y=torch.zeros(5, dtype=torch.long), batch_size=2, augment="crop"), "ViewAugm"),
        (dict(x=torch.zeros(5, 3, dtype=torch.int32), y=torch.zeros(5, dtype=torch.long), batch_size=2), "uint8 pix"),
        (dict(x=torch.zeros(0, 3), y=torch.zeros(0, dtype=torch.long), batch_size=2), "at least one sample"),
        (
            dict(
                x=torch.zeros(5, 3, 2, 2), y=torch.zeros(5, dtype=torch.long), batch_size=2, mean=(0.5, 0.5), std=(1,)
            ),
            "mean must have 1 or 3 entries",
        ),
    ],
)
def test_loader_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchLoader(**kwargs)


def test_shard_and_epoch_validation():
    x, y = images(4)
    loader = BatchLoader(x, y, 2)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\)"):
        loader.sharded(2, 2)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        loader.set_epoch(-1)


def test_both_loader_kinds_implement_the_loader_protocol(tmp_path):
    """The engine reads loaders only through kdlab.data.Loader: both kinds (and their shards) implement it, with the
    labels known up front or None."""
    from kdlab.data import Loader
    from kdlab.data.dataset_stream import dataset_loader

    x, y = torch.randn(10, 1, 8), torch.arange(10) % 3
    memory = BatchLoader(x, y, 4)
    streamed = dataset_loader(torch.utils.data.TensorDataset(x, y), 4, seed=0, device="cpu")[0]
    for loader in (memory, memory.sharded(1, 2), streamed, streamed.sharded(0, 2)):
        assert isinstance(loader, Loader), type(loader).__name__
        assert torch.equal(loader.labels, y)
        assert loader.global_batch_len(0) == loader.global_batch_size
