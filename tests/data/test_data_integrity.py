"""Integrity of what the data layer and the teacher-output store read back from disk: a cache or store whose content
changed after it was written is rebuilt with a warning (data caches: cheap and safe) or refused with one line naming
it (stores), never used silently; and the content, not only the metadata, is the store's identity in a run."""

import json

import numpy as np
import pytest
import torch

from kdlab.cli import main
from kdlab.data import load_cifar100
from kdlab.data.mnist1d import load_mnist1d
from kdlab.teachers import StaleCacheError
from kdlab.teachers.store import TeacherStore

from .test_data_replay_e2e import _setup


def _rewrite_npz(path, change):
    """Rewrite the .npz cache at ``path`` with ``change(arrays)`` applied and its ``meta`` entry kept as it was: what
    a hand edit, another tool or a bad copy leaves behind (the file is a valid cache in every other respect)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# --------------------------------------------------------------------------------------------------- data caches
def test_an_mnist1d_cache_with_rotated_labels_is_regenerated_with_a_warning(tmp_path):
    clean = load_mnist1d(tmp_path, num_samples=200)
    (cache,) = tmp_path.glob("mnist1d-*.npz")
    _rewrite_npz(cache, lambda a: a.update(y_train=(a["y_train"] + 1) % 10))
    with pytest.warns(RuntimeWarning, match=r"MNIST-1D cache .*mnist1d-v1-n200.* is invalid \(its arrays do not match "
                                            r"the checksum .*\); regenerating it"):
        again = load_mnist1d(tmp_path, num_samples=200)
    assert torch.equal(again.y_train, clean.y_train) and torch.equal(again.x_train, clean.x_train)
    assert torch.equal(load_mnist1d(tmp_path, num_samples=200).y_train, clean.y_train)  # the cache was rewritten


def test_a_data_cache_without_a_checksum_is_not_trusted(tmp_path):
    load_mnist1d(tmp_path, num_samples=200)
    (cache,) = tmp_path.glob("mnist1d-*.npz")

    def drop_checksum(a):
        meta = json.loads(str(a["meta"]))
        meta.pop("content_sha256")
        a["meta"] = np.array(json.dumps(meta))

    _rewrite_npz(cache, drop_checksum)
    with pytest.warns(RuntimeWarning, match="no content checksum"):
        load_mnist1d(tmp_path, num_samples=200)


def test_a_cifar_cache_with_changed_pixels_is_read_again_from_its_archive(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake(seed=3)
    cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", cifar_tools.python_members(fake))
    clean = load_cifar100(tmp_path)
    cache = tmp_path / "cifar-100-python.npz"
    _rewrite_npz(cache, lambda a: a.update(x_test=255 - a["x_test"]))
    with pytest.warns(RuntimeWarning, match=r"cifar-100-python\.npz is invalid \(its arrays do not match"):
        again = load_cifar100(tmp_path)
    assert torch.equal(again.x_test, clean.x_test)
    # without the archive there is nothing to rebuild it from: an error naming the file
    (tmp_path / "cifar-100-python.tar.gz").unlink()
    _rewrite_npz(cache, lambda a: a.update(y_test=(a["y_test"] + 1) % 100))
    with pytest.raises(ValueError, match=r"cifar-100-python\.npz is invalid \(its arrays do not match the checksum"):
        load_cifar100(tmp_path)


# -------------------------------------------------------------------------------------------- teacher-output stores
def _store_run(tmp_path, image_tools):
    """The replay tests' streamed image folder (12 training images, 3 classes) and teacher, with a float32 store."""
    cfg = _setup(tmp_path, image_tools, n_train=4)
    store = tmp_path / "store"
    assert main(["teacher", "cache", str(cfg), "--precision", "float32", "--out", str(store)]) == 0
    return cfg, store


def _flip_bit(path, offset, bit=3):
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("kdlab: error:") and "Traceback" not in err, err
    return err


def test_a_flipped_bit_in_a_stores_logits_stops_the_run_naming_the_store(tmp_path, image_tools, capsys):
    cfg, store = _store_run(tmp_path, image_tools)
    run = ["train", str(cfg), f"teacher.cache.store={store}"]
    _flip_bit(store / "logits.bin", 4 * 3 * 5 + 2)  # epoch 1, image 5, class 0: one bit of its float32
    capsys.readouterr()
    assert main([*run, f"out_dir={tmp_path / 'flipped'}"]) == 2
    err = _one_line_error(capsys)
    assert f"teacher store {store} is corrupt: the stored outputs of image 5 in epoch 1 do not match" in err
    assert "rebuild it with `kdlab teacher cache`" in err
    assert not (tmp_path / "flipped" / "final.json").exists()


def test_a_store_with_rotated_classes_is_refused(tmp_path, image_tools, capsys):
    cfg, store = _store_run(tmp_path, image_tools)
    logits = np.memmap(store / "logits.bin", dtype=np.float32, mode="r+", shape=(2, 12, 3))
    logits[:] = np.roll(np.array(logits), 1, axis=2)  # every row's classes rotated: same size, same metadata
    logits.flush()
    del logits
    capsys.readouterr()
    assert main(["train", str(cfg), f"teacher.cache.store={store}", f"out_dir={tmp_path / 'rotated'}"]) == 2
    assert f"teacher store {store} is corrupt" in _one_line_error(capsys)
    with pytest.raises(StaleCacheError, match="do not match their checksum"):
        TeacherStore.open(store).read(2, np.arange(12))


def test_rows_moved_to_another_image_do_not_match(tmp_path, image_tools):
    _, store = _store_run(tmp_path, image_tools)
    opened = TeacherStore.open(store)
    logits = np.memmap(store / "logits.bin", dtype=np.float32, mode="r+", shape=(2, 12, 3))
    sums = np.memmap(store / "rows.crc32", dtype=np.uint32, mode="r+", shape=(2, 12))
    logits[0, [0, 1]] = logits[0, [1, 0]]  # two rows swapped together with their checksums
    sums[0, [0, 1]] = sums[0, [1, 0]]
    logits.flush()
    sums.flush()
    with pytest.raises(StaleCacheError, match="image 0 in epoch 1 .and 1 more"):
        opened.read(1, np.array([0, 1, 2]))
    opened.read(2, np.array([0, 1, 2]))  # epoch 2 was left alone


def test_a_stores_identity_is_its_content_so_a_changed_store_changes_the_run(tmp_path, image_tools, capsys):
    cfg, store = _store_run(tmp_path, image_tools)
    run = ["train", str(cfg), f"teacher.cache.store={store}", f"out_dir={tmp_path / 'run'}", "optim.epochs=1"]
    assert main(run) == 0
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    before = TeacherStore.open(store).identity
    assert final["teacher_outputs"]["sha256"] == before
    # the outputs rewritten *with* matching checksums (a store rebuilt for another teacher under the same
    # store.json): every read passes, and the identity the run records is another one
    opened = TeacherStore.open(store, writable=True)
    for epoch in (1, 2):
        opened.write(epoch, 0, torch.randn(12, 3))
    after = TeacherStore.open(store).identity
    assert after != before and json.loads((store / "store.json").read_text()) == TeacherStore.open(store).meta
    capsys.readouterr()
    assert main([*run[:-1], "optim.epochs=2"]) == 2  # a longer run resumes only on the same store contents
    assert "teacher.store_sha256" in _one_line_error(capsys)
