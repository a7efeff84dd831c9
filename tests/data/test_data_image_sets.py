"""On-disk layouts (image folder, ImageNet with each validation layout, Tiny-ImageNet), the file check and its
cache, skip_bad, and the streamed loader's order and sharding rules."""

import numpy as np
import pytest
import torch

from kdlab.data import BadImageError, LayoutError, load_dataset
from kdlab.data.folders import interleave
from kdlab.data.image_index import check_images


def _names(images):
    return [p.rsplit("/", 1)[-1] for p in images.paths.tolist()]


def test_image_folder_classes_order_and_val_or_test(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("zebra", "ant", "moth"), n_train=3, n_val=2)
    s = load_dataset("imagefolder", root=root, image_size=16, workers=0)
    assert s.class_names == ("ant", "moth", "zebra") and s.num_classes == 3
    assert s.train.labels.tolist() == [0, 1, 2] * 3  # round-robin over the classes: a prefix is stratified
    assert (s.num_train, s.num_test, s.input_shape) == (9, 6, (3, 16, 16))
    assert s.subset(4, 3).train.labels.tolist() == [0, 1, 2, 0]
    (root / "val").rename(root / "test")
    assert load_dataset("imagefolder", root=root, image_size=16, workers=0).num_test == 6


def test_interleave_is_round_robin():
    assert np.asarray([0, 0, 0, 1, 2, 2])[interleave(np.asarray([0, 0, 0, 1, 2, 2]))].tolist() == [0, 1, 2, 0, 2, 0]


def test_layout_errors_say_what_was_expected(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=2, n_val=1)
    with pytest.raises(LayoutError, match="expected the image-folder layout ROOT/train/<class>"):
        load_dataset("imagefolder", root=root / "train")
    (root / "val" / "eel").rename(root / "val" / "emu")
    with pytest.raises(ValueError, match=r"validation classes differ .*only in train: \['eel'\].*only in val: \['emu'\]"):
        load_dataset("imagefolder", root=root)
    (root / "val" / "emu").rename(root / "val" / "eel")
    (root / "train" / "owl").mkdir()
    (root / "train" / "owl" / "notes.txt").write_text("no image here")
    with pytest.raises(LayoutError, match="owl hold no image"):
        load_dataset("imagefolder", root=root)
    with pytest.raises(LayoutError, match="class folders .* are not wnids; expected the ILSVRC-2012 layout"):
        load_dataset("imagenet", root=root)
    with pytest.raises(LayoutError, match="expected the Tiny-ImageNet layout"):
        load_dataset("tiny_imagenet", root=root)


@pytest.mark.parametrize("val", ["folders", "csv", "devkit", "devkit_tar"])
def test_imagenet_validation_layouts_give_the_true_labels(tmp_path, image_tools, val):
    root, labels = image_tools.make_imagenet(tmp_path / "in", val=val)
    s = load_dataset("imagenet", root=root, image_size=16, workers=0)
    assert s.class_names == image_tools.WNIDS
    got = dict(zip(_names(s.test), s.test.labels.tolist()))
    assert got == {f"ILSVRC2012_val_{k + 1:08d}.JPEG": c for k, c in enumerate(labels)}
    assert s.num_train == 6 * 4


def test_imagenet_label_sources_must_agree_and_cover_every_image(tmp_path, image_tools):
    root, labels = image_tools.make_imagenet(tmp_path / "in", val="devkit")
    csv = ["ImageId,PredictionString"] + [f"ILSVRC2012_val_{k + 1:08d},{image_tools.WNIDS[(c + 1) % 4]} 1 2 3 4"
                                          for k, c in enumerate(labels)]
    (root / "LOC_val_solution.csv").write_text("\n".join(csv) + "\n")
    with pytest.raises(ValueError, match="LOC_val_solution.csv and the devkit disagree"):
        load_dataset("imagenet", root=root)
    (root / "LOC_val_solution.csv").write_text("\n".join(csv[:-1]) + "\n")  # the last image unlabelled
    import shutil

    shutil.rmtree(root / "ILSVRC2012_devkit_t12")
    with pytest.raises(ValueError, match="ILSVRC2012_val_00000012.JPEG has no label in LOC_val_solution.csv"):
        load_dataset("imagenet", root=root)
    (root / "LOC_val_solution.csv").unlink()
    with pytest.raises(LayoutError, match="no labels were found"):
        load_dataset("imagenet", root=root)


def test_tiny_imagenet_cache_labels_and_views(tmp_path, image_tools, monkeypatch):
    base = image_tools.make_tiny(tmp_path, kinds={("train", 1, 0): "grey"})
    s = load_dataset("tiny_imagenet", root=tmp_path, workers=0)
    assert s.x_train.shape == (18, 3, 64, 64) and s.x_train.dtype == torch.uint8
    assert s.class_names == tuple(sorted(image_tools.WNIDS[:3]))
    assert s.train_augment.num_views == 17 * 17 * 2
    assert s.y_test.tolist() == [0, 1, 2] * 3
    cache = tmp_path / "tiny-imagenet-200.npz"
    assert cache.is_file()
    from kdlab.data import tiny_imagenet

    with monkeypatch.context() as m:
        m.setattr(tiny_imagenet, "_build", lambda *a: pytest.fail("the valid cache was not used"))
        again = load_dataset("tiny_imagenet", root=base, workers=0)
    assert torch.equal(again.x_train, s.x_train)
    image_tools.write_image(base / "val" / "images" / "val_0.JPEG", 2, seed=1, size=(64, 64))  # a changed file
    with pytest.warns(RuntimeWarning, match="files changed"):
        changed = load_dataset("tiny_imagenet", root=tmp_path, workers=0)
    assert not torch.equal(changed.x_test[0], s.x_test[0])


def test_bad_files_stop_the_run_or_are_skipped_counted_and_listed(tmp_path, image_tools):
    kinds = {("train", "dog", 1): "truncated", ("train", "eel", 0): "text"}
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=4, n_val=2, kinds=kinds)
    with pytest.raises(BadImageError, match=r"f/train/eel/img_0.jpg: not a readable image .*2 of the 12 files"):
        load_dataset("imagefolder", root=root, image_size=16, workers=0)
    s = load_dataset("imagefolder", root=root, image_size=16, workers=0, skip_bad=True)
    assert s.num_train == 10 and sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p, _ in s.skipped) == [
        "dog/img_1.jpg", "eel/img_0.jpg"]
    tiny = image_tools.make_tiny(tmp_path / "t", kinds={("val", 0, 3): "text"})
    with pytest.raises(BadImageError, match="val_3.JPEG"):
        load_dataset("tiny_imagenet", root=tiny, workers=0)
    t = load_dataset("tiny_imagenet", root=tiny, workers=0, skip_bad=True)
    assert t.num_test == 8 and len(t.skipped) == 1


def test_the_file_check_is_cached_and_redone_for_changed_files(tmp_path, image_tools, monkeypatch):
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=2, n_val=1)
    s = load_dataset("imagefolder", root=root, image_size=16, workers=0)
    from kdlab.data import image_index

    with monkeypatch.context() as m:
        m.setattr(image_index, "_probe", lambda *a: pytest.fail("the cached check was not used"))
        load_dataset("imagefolder", root=root, image_size=16, workers=0)
    image_tools.write_image(root / "train" / "cat" / "img_0.jpg", 0, seed=0, kind="text")
    probed = []
    with monkeypatch.context() as m:
        m.setattr(image_index, "_probe", lambda p, f=image_index._probe: probed.append(p) or f(p))
        with pytest.raises(BadImageError, match="cat/img_0.jpg"):
            check_images(s.train.take(slice(None)), what="x")  # (a fresh list of the same files)
    assert [p.rsplit("/", 2)[-2:] for p in probed] == [["cat", "img_0.jpg"]]  # only the changed file


# ----------------------------------------------------------------------------------------------- the streamed loader
@pytest.fixture
def folder(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b", "c"), n_train=7, n_val=3)
    return load_dataset("imagefolder", root=root, image_size=16, workers=0)


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return [(b.x.clone(), b.y.clone(), b.index.clone()) for b in loader]


def test_batches_do_not_depend_on_workers_and_replay_per_epoch(folder):
    one = folder.loader("train", 8, augment=True, shuffle=True, seed=5)
    three = folder.loader("train", 8, augment=True, shuffle=True, seed=5)
    three.workers = 2
    a, b = _epoch(one, 2), _epoch(three, 2)
    assert len(a) == len(b) == 3  # ceil(21 / 8)
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    assert not torch.equal(_epoch(one, 3)[0][0], a[0][0])  # another epoch: another order and other crops
    assert all(torch.equal(x, y[0]) for x, y in zip([t[0] for t in a], _epoch(three, 2)))  # epoch 2 again
    assert a[0][0].dtype == torch.float32 and a[0][0].shape == (8, 3, 16, 16)


def test_training_batches_wrap_around_and_shard_identically_for_every_world_size(folder):
    base = folder.loader("train", 8, augment=True, shuffle=True, seed=1)
    ref = _epoch(base, 1)
    idx = torch.cat([i for _, _, i in ref])
    assert idx.shape[0] == 24 and set(idx.tolist()) == set(range(21))  # every sample, 3 of them twice
    assert idx[21:].tolist() == idx[:3].tolist()  # the last batch completed with the epoch's first samples
    for world in (2, 4):
        shards = [_epoch(folder.loader("train", 8 // world, augment=True, shuffle=True, seed=1).sharded(r, world), 1)
                  for r in range(world)]
        for k, (x, y, i) in enumerate(ref):
            assert torch.equal(torch.cat([s[k][2] for s in shards]), i)
            assert torch.equal(torch.cat([s[k][0] for s in shards]), x)  # the same crops on every rank split


def test_evaluation_blocks_count_every_sample_once(folder):
    full = torch.cat([i for _, _, i in _epoch(folder.loader("test", 4), 0)])
    assert full.tolist() == list(range(9))
    parts = [torch.cat([i for _, _, i in _epoch(folder.loader("test", 2).sharded(r, 2), 0)]) for r in range(2)]
    assert torch.cat(parts).tolist() == list(range(9))


def test_a_file_that_breaks_after_the_check_is_one_clear_error(folder, image_tools):
    loader = folder.loader("test", 4)
    image_tools.write_image(folder.test.root / "b" / "img_0.jpg", 0, seed=0, kind="truncated")
    with pytest.raises(BadImageError, match=r"b/img_0.jpg: not a readable image"):
        _epoch(loader, 0)
    loader.workers = 2
    loader._loader = None
    with pytest.raises(BadImageError, match=r"b/img_0.jpg: not a readable image"):  # also from a worker process
        _epoch(loader, 0)


def test_streamed_sets_refuse_what_needs_memory(folder):
    with pytest.raises(ValueError, match="streamed from disk"):
        folder.x_train
    with pytest.raises(ValueError, match="never drop"):
        folder.loader("train", 4, drop_last=True)


def test_the_exact_teacher_cache_applies_to_tiny_imagenet_not_to_streamed_crops(tmp_path, image_tools, folder):
    from kdlab import builder, methods, models
    from kdlab.config.schema import TeacherCacheConfig
    from kdlab.teachers import CachedTeacher, FrozenTeacher

    image_tools.make_tiny(tmp_path / "t")
    tiny = load_dataset("tiny_imagenet", root=tmp_path / "t", workers=0)
    kd = methods.get("kd")
    hp = kd.Params()
    teacher = FrozenTeacher(models.create("resnet8", 3))
    cached = builder.cached_teacher(teacher, TeacherCacheConfig(), kd.cacheable(hp), kd.name, tiny.train_loader(4), None)
    assert isinstance(cached, CachedTeacher) and cached.num_views == 578
    streamed = folder.loader("train", 4, augment=True, shuffle=True)
    assert builder.cached_teacher(teacher, TeacherCacheConfig(), kd.cacheable(hp), kd.name, streamed, None) is teacher
    with pytest.raises(ValueError, match="streamed with continuous crops"):
        builder.cached_teacher(teacher, TeacherCacheConfig(enabled=True), kd.cacheable(hp), kd.name, streamed, None)
