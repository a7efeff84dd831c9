"""The stored crop schedule and its replay by the streamed loader: boxes are the live draw's, order is the run's."""

import numpy as np
import pytest
import torch

from kdlab.data import load_image_folder, random_resized_crops
from kdlab.data.crop_schedule import CropSchedule, schedule_bytes
from kdlab.data.image_stream import ImageSource
from kdlab.data.replay import ReplayBatch, replay_loader


def _sizes(n=37, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(20, 900, n), rng.integers(20, 700, n)], axis=1)


@pytest.mark.parametrize("on_disk", [False, True])
def test_the_schedule_holds_the_live_draw_of_every_epoch(tmp_path, on_disk):
    sizes = _sizes()
    s = CropSchedule.draw(sizes, seed=7, epochs=3, directory=tmp_path / "s" if on_disk else None)
    if on_disk:
        s = CropSchedule.open(tmp_path / "s")
        assert sum(f.stat().st_size for f in (tmp_path / "s").glob("schedule.[bf]*")) == schedule_bytes(37, 3)
    index = np.array([36, 0, 5, 5, 17, 8, 9])  # any order, repeats, across flip bytes
    for epoch in (1, 2, 3):
        want = random_resized_crops(7, epoch, index, sizes[index, 0], sizes[index, 1])
        got = s.boxes(epoch, index)
        for field in ("top", "left", "height", "width", "flip"):
            assert np.array_equal(getattr(got, field), getattr(want, field)), (epoch, field)
    assert s.boxes(1, np.arange(37)).flip.any() and not s.boxes(1, np.arange(37)).flip.all()
    with pytest.raises(ValueError, match="epochs 1..3"):
        s.boxes(4, index)


def test_a_truncated_schedule_is_refused(tmp_path):
    CropSchedule.draw(_sizes(), seed=0, epochs=2, directory=tmp_path)
    with open(tmp_path / "schedule.boxes", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="schedule.boxes is 100 bytes"):
        CropSchedule.open(tmp_path)


def _first_epoch(loader, epoch=1):
    loader.set_epoch(epoch)
    return list(loader)


def test_replay_takes_crops_from_the_schedule_and_order_from_the_run_seed(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=4, n_val=1, size=(60, 44))
    splits = load_image_folder(root, image_size=16, workers=0, progress=False)
    schedule = CropSchedule.draw(splits.train.sizes, seed=5, epochs=2)
    live_other_seed = splits.loader("train", 4, augment=True, shuffle=True, seed=9)
    replay = replay_loader(live_other_seed, schedule)
    for epoch in (1, 2):
        batches = _first_epoch(replay, epoch)
        live_other_seed.set_epoch(epoch)
        assert [b.index.tolist() for b in batches] == [i.tolist() for i in live_other_seed.batches()]  # seed 9's order
        source = ImageSource(splits.train, 16, train=True, seed=5)  # the schedule's seed draws the same boxes live
        for b in batches:
            assert isinstance(b, ReplayBatch) and b.view.tolist() == [epoch] * len(b)
            x, _, _, _ = source.load(source.tasks(epoch, b.index.numpy()))
            torch.testing.assert_close(b.x, live_other_seed.normalization(x), rtol=0, atol=0)
    # with the schedule's own seed, replaying is the live run: the same batches, bit for bit
    live = splits.loader("train", 4, augment=True, shuffle=True, seed=5)
    for a, b in zip(_first_epoch(live, 2), _first_epoch(replay_loader(live, schedule), 2), strict=True):
        assert torch.equal(a.index, b.index) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_replay_on_two_ranks_is_the_one_rank_batch_split(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=3, n_val=1)
    splits = load_image_folder(root, image_size=16, workers=0, progress=False)
    schedule = CropSchedule.draw(splits.train.sizes, seed=1, epochs=1)
    one = _first_epoch(replay_loader(splits.loader("train", 4, augment=True, shuffle=True, seed=3), schedule))
    ranks = [_first_epoch(replay_loader(splits.loader("train", 2, augment=True, shuffle=True, seed=3)
                                        .sharded(r, 2), schedule)) for r in (0, 1)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 3  # 9 images, global batch 4: the last one wraps
    for b, r0, r1 in zip(one, *ranks):
        assert torch.equal(b.x, torch.cat([r0.x, r1.x])) and torch.equal(b.index, torch.cat([r0.index, r1.index]))


def test_a_schedule_for_other_images_is_refused(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=2, n_val=1)
    splits = load_image_folder(root, image_size=16, workers=0, progress=False)
    schedule = CropSchedule.draw(_sizes(5), seed=1, epochs=1)
    with pytest.raises(ValueError, match="covers 5 images but the training set has 6"):
        replay_loader(splits.loader("train", 2, augment=True, shuffle=True), schedule)
