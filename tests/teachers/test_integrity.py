"""Integrity of the teacher's numbers read back from disk: the stored test-set logits and the exact logit cache's
file. A file whose content changed after it was written is recomputed with a warning (stored logits: cheap and
exact) or refused naming the file (a complete cache file), never used silently."""

import warnings

import numpy as np
import pytest
import torch

from kdlab import builder, models
from kdlab._io import load_tensors, save_tensors
from kdlab.data import BatchLoader
from kdlab.data._paths import default_root
from kdlab.data.views import Shift1D
from kdlab.teachers import FrozenTeacher, StaleCacheError
from kdlab.teachers.cache import CachedTeacher
from kdlab.teachers.eval_logits import stored_logits

RUN = ["data.train_subset=256", "data.test_subset=64", "optim.epochs=1", "run.progress=false",
       "run.tensorboard=false", "student.arch=mnist1d_mlp", "teacher.arch=mnist1d_cnn_small"]


# ------------------------------------------------------------------------------------------- stored test logits
def _rotate_classes(path):
    """Rotate the classes of the stored logits in place, metadata kept: same file size, same key."""
    tensors, meta = load_tensors(path)
    save_tensors(path, {"logits": tensors["logits"].roll(1, dims=1)}, meta)


def test_rotated_stored_test_logits_are_computed_again_with_a_warning(tmp_path, random_teacher, monkeypatch):
    monkeypatch.setenv("KDLAB_DATA", str(tmp_path / "data"))

    def run(seed):
        cfg = builder.load_config("mnist1d/kd", [*RUN, f"teacher.checkpoint={random_teacher}", f"seed={seed}",
                                               f"out_dir={tmp_path / str(seed)}"])
        return builder.distil(cfg)

    clean = run(0)
    assert clean["teacher"]["eval_logits"] == "computed"
    (stored,) = (default_root() / "teacher_logits").glob("*.safetensors")
    _rotate_classes(stored)
    with pytest.warns(RuntimeWarning, match=f"stored teacher logits {stored} do not match the checksum"):
        again = run(1)
    assert again["teacher"]["eval_logits"] == "computed"  # not the rotated file ...
    assert again["teacher"]["acc"] == clean["teacher"]["acc"] and again["teacher"]["nll"] == clean["teacher"]["nll"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = run(2)  # ... which was replaced by the right logits
    assert third["teacher"]["eval_logits"] == "reused" and third["teacher"]["acc"] == clean["teacher"]["acc"]


def test_stored_logits_are_checked_against_their_checksum(tmp_path):
    logits = torch.randn(20, 5)
    key = {"teacher": "t", "data": "d"}
    assert stored_logits(key, lambda: logits, tmp_path)[1] is False
    (path,) = tmp_path.glob("*.safetensors")
    got, reused = stored_logits(key, lambda: pytest.fail("recomputed"), tmp_path)
    assert reused and torch.equal(got, logits)
    tensors, meta = load_tensors(path)
    bad = tensors["logits"].clone()
    bad[3, 2] = bad[3, 2].nextafter(torch.tensor(float("inf")))  # one ulp
    save_tensors(path, {"logits": bad}, meta)
    with pytest.warns(RuntimeWarning, match="do not match the checksum"):
        got, reused = stored_logits(key, lambda: logits, tmp_path)
    assert not reused and torch.equal(got, logits)


def test_stored_logits_in_a_directory_that_cannot_be_written_are_computed_with_one_warning(tmp_path):
    (tmp_path / "file").write_text("a file where the directory should be")  # mkdir fails, also for root
    logits = torch.randn(4, 3)
    with pytest.warns(RuntimeWarning) as caught:
        got, reused = stored_logits({"teacher": "t"}, lambda: logits, tmp_path / "file" / "teacher_logits")
    assert not reused and torch.equal(got, logits)
    assert len(caught) == 1 and "cannot be stored" in str(caught[0].message)


# ------------------------------------------------------------------------------------------ the exact cache file
def _cache_setup(n=48):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 40, generator=g), torch.randint(0, 10, (n,), generator=g)
    torch.manual_seed(1)
    teacher = FrozenTeacher(models.create("mnist1d_cnn_small", 10))
    return teacher, BatchLoader(x, y, 16, augment=Shift1D(4), mean=[0.1], std=[2.0])


def test_a_complete_cache_file_with_a_flipped_bit_is_refused_naming_it(tmp_path):
    teacher, loader = _cache_setup()
    path = tmp_path / "cache.bin"
    first = CachedTeacher(teacher, loader, path=path, precompute=True, progress=False)
    assert (tmp_path / "cache.bin.sha256").is_file()
    table = first.values.clone()
    del first
    assert torch.equal(CachedTeacher(teacher, loader, path=path).values, table)  # reopened: checked, served
    data = bytearray(path.read_bytes())
    data[4 * 10 * 9 * 7 + 13] ^= 0x10  # one bit of sample 7's logits
    path.write_bytes(bytes(data))
    with pytest.raises(StaleCacheError, match=f"teacher cache {path} does not match the checksum written with it"):
        CachedTeacher(teacher, loader, path=path)


def test_a_partly_filled_cache_file_is_filled_again_with_a_warning(tmp_path):
    teacher, loader = _cache_setup()
    path = tmp_path / "cache.bin"
    lazy = CachedTeacher(teacher, loader, path=path)
    loader.set_epoch(1)
    batch = next(iter(loader))
    lazy.logits_for_batch(batch)  # 16 entries filled, the rest not: no checksum yet
    lazy.flush()
    assert int(lazy.filled.sum()) == 16 and not (tmp_path / "cache.bin.sha256").exists()
    del lazy
    mask = np.memmap(f"{path}.mask", dtype=np.bool_, mode="r")
    values = np.memmap(path, dtype=np.float32, mode="r+", shape=(48, 9, 10))
    row, view = map(int, np.argwhere(np.asarray(mask).reshape(48, 9))[0])
    values[row, view] = 1e6  # a tampered entry nothing could catch: it is computed again
    values.flush()
    with pytest.warns(RuntimeWarning, match=f"teacher cache {path} was left partly filled"):
        again = CachedTeacher(teacher, loader, path=path)
    assert not again.filled.any()
    got = again.logits_for_batch(batch)
    torch.testing.assert_close(got, teacher.logits(batch.x), rtol=0, atol=0)
