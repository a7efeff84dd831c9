"""The exact teacher-logit cache: same losses as the live teacher, lazy fills only misses, stale files refused."""

import json

import pytest
import torch

from kdlab import methods, models
from kdlab.config.schema import TeacherCacheConfig
from kdlab.data import BatchLoader
from kdlab.builder import cached_teacher
from kdlab.data.views import CropFlip, Shift1D
from kdlab.teachers.cache import CachedTeacher, StaleCacheError
from kdlab.teachers.frozen import FrozenTeacher


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 40, generator=g), torch.randint(0, 10, (n,), generator=g)


def _teacher(seed=1):
    torch.manual_seed(seed)
    return FrozenTeacher(models.create("mnist1d_cnn_small", 10))


def _loader(x, y, batch_size=32, seed=0):
    return BatchLoader(x, y, batch_size, augment=Shift1D(4), mean=[0.1], std=[2.0], seed=seed)


def _kd_losses(teacher, loader, epochs=3):
    """KD loss terms per step for a fixed student (no updates), over several epochs (new views each epoch)."""
    torch.manual_seed(0)
    method = methods.create("kd", models.create("mnist1d_mlp", 10), teacher, 10, {"temperature": 4.0})
    out = []
    for epoch in range(1, epochs + 1):
        loader.set_epoch(epoch)
        for batch in loader:
            o = method(batch, epoch)
            out.append(torch.stack([o.losses["ce"], o.losses["kd"]]).detach())
    return torch.stack(out)


def test_float32_cache_gives_the_live_teachers_losses():
    x, y = _data()
    teacher = _teacher()
    live = _kd_losses(teacher, _loader(x, y))
    cached_teacher = CachedTeacher(teacher, _loader(x, y), dtype="float32")
    cached = _kd_losses(cached_teacher, _loader(x, y))
    # the table was filled from other batch compositions in later epochs: equal up to the kernel's rounding
    torch.testing.assert_close(cached, live, rtol=1e-6, atol=1e-7)
    assert cached_teacher.filled.any() and not cached_teacher.filled.all()  # lazy: only the drawn views


def test_first_epoch_of_a_float32_cache_is_bit_identical():
    x, y = _data()
    teacher = _teacher()
    live = _kd_losses(teacher, _loader(x, y), epochs=1)
    cached = _kd_losses(CachedTeacher(teacher, _loader(x, y), dtype="float32"), _loader(x, y), epochs=1)
    assert torch.equal(cached, live)


@pytest.mark.parametrize("dtype,tol", [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_half_precision_cache_is_within_rounding(dtype, tol):
    x, y = _data()
    teacher = _teacher()
    live = _kd_losses(teacher, _loader(x, y), epochs=2)
    cached = _kd_losses(CachedTeacher(teacher, _loader(x, y), dtype=dtype), _loader(x, y), epochs=2)
    torch.testing.assert_close(cached, live, rtol=tol, atol=tol)
    assert not torch.equal(cached, live)  # the storage really is reduced precision


def test_table_entries_are_the_teacher_on_the_exact_view():
    x, y = _data(n=40)
    teacher = _teacher()
    loader = _loader(x, y)
    cache = CachedTeacher(teacher, loader, dtype="float32", precompute=True, progress=False)
    assert bool(cache.filled.all())
    rows = torch.tensor([0, 7, 39, 39])
    views = torch.tensor([0, 8, 4, 3])
    expected = teacher.logits((Shift1D(4).apply(x[rows], views) - 0.1) / 2.0)
    torch.testing.assert_close(cache.values[rows, views], expected, rtol=1e-6, atol=1e-6)


def test_lazy_fill_computes_only_missing_rows(monkeypatch):
    x, y = _data(n=64)
    teacher = _teacher()
    loader = _loader(x, y, batch_size=64)
    cache = CachedTeacher(teacher, loader, dtype="float32")
    seen = []
    real = teacher.logits
    monkeypatch.setattr(teacher, "logits", lambda inp: seen.append(inp.shape[0]) or real(inp))
    loader.set_epoch(1)
    batch = next(iter(loader))
    first = cache.logits_for_batch(batch)
    again = cache.logits_for_batch(batch)
    assert seen == [64] and torch.equal(first, again)  # second call: no teacher pass
    half = type(batch)(x=batch.x, y=batch.y, index=batch.index, view=batch.view.clone())
    half.view[:16] = (half.view[:16] + 1) % 9  # 16 new (sample, view) pairs ...
    half.x = loader.augment.apply(x[batch.index], half.view)
    half.x = (half.x - 0.1) / 2.0
    cache.logits_for_batch(half)
    assert seen == [64, 16]  # ... and only those are computed


def test_view_none_bypasses_the_cache():
    x, y = _data(n=32)
    teacher = _teacher()
    cache = CachedTeacher(teacher, _loader(x, y), dtype="float32")
    batch = next(iter(_loader(x, y)))
    mixed = type(batch)(x=batch.x.flip(0), y=batch.y, index=batch.index, view=None)
    torch.testing.assert_close(cache.logits_for_batch(mixed), teacher.logits(mixed.x))
    assert not cache.filled.any()


def test_mmap_file_is_reused_and_a_stale_one_is_refused(tmp_path):
    x, y = _data(n=48)
    teacher = _teacher()
    path = tmp_path / "cache.bin"
    first = CachedTeacher(teacher, _loader(x, y), path=path, precompute=True, progress=False)
    first.flush()
    key = json.loads((tmp_path / "cache.bin.json").read_text())
    assert key["augment"] == Shift1D(4).describe() and key["dtype"] == "float32"  # the exact default
    again = CachedTeacher(teacher, _loader(x, y), path=path)
    assert again._complete and torch.equal(again.values, first.values)
    with pytest.raises(StaleCacheError, match="teacher"):
        CachedTeacher(_teacher(seed=2), _loader(x, y), path=path)
    with pytest.raises(StaleCacheError, match="data"):
        CachedTeacher(teacher, _loader(x + 1, y), path=path)
    other_aug = BatchLoader(x, y, 32, augment=Shift1D(2), mean=[0.1], std=[2.0])
    with pytest.raises(StaleCacheError, match="augment"):
        CachedTeacher(teacher, other_aug, path=path)
    with pytest.raises(StaleCacheError, match="normalization"):
        CachedTeacher(teacher, BatchLoader(x, y, 32, augment=Shift1D(4)), path=path)


def test_bfloat16_mmap_round_trips(tmp_path):
    x, y = _data(n=16)
    teacher = _teacher()
    a = CachedTeacher(teacher, _loader(x, y), path=tmp_path / "c.bin", dtype="bfloat16", precompute=True,
                      progress=False)
    a.flush()
    b = CachedTeacher(teacher, _loader(x, y), path=tmp_path / "c.bin", dtype="bfloat16")
    assert b.values.dtype == torch.bfloat16 and torch.equal(a.values, b.values)


def test_image_views_are_keyed_by_cropflip():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (6,), generator=g)
    torch.manual_seed(0)
    teacher = FrozenTeacher(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 4)))
    loader = BatchLoader(x, y, 3, augment=CropFlip(8, padding=2), mean=[0.5] * 3, std=[0.25] * 3)
    cache = CachedTeacher(teacher, loader, dtype="float32")
    assert cache.values.shape == (6, 5 * 5 * 2, 4)
    loader.set_epoch(3)
    for batch in loader:
        torch.testing.assert_close(cache.logits_for_batch(batch), teacher.logits(batch.x))


def test_cached_teacher_auto_and_explicit_rules(tmp_path):
    x, y = _data(n=32)
    teacher = _teacher()
    loader = _loader(x, y)
    kd, cakd, r2kd = methods.get("kd"), methods.get("cakd"), methods.get("r2kd")
    kd_hp = kd.Params()
    assert isinstance(cached_teacher(teacher, TeacherCacheConfig(), kd.cacheable(kd_hp), kd.name, loader, tmp_path), CachedTeacher)
    assert cached_teacher(teacher, TeacherCacheConfig(enabled=False), kd.cacheable(kd_hp), kd.name, loader, tmp_path) is teacher
    # a data policy rewrites batches: auto keeps the live teacher, enabled=true is an error
    assert cached_teacher(teacher, TeacherCacheConfig(), kd.cacheable(kd_hp), kd.name, loader, tmp_path, policy=True) is teacher
    with pytest.raises(ValueError, match="policy"):
        cached_teacher(teacher, TeacherCacheConfig(enabled=True), kd.cacheable(kd_hp), kd.name, loader, tmp_path, policy=True)
    # asked of the class and its hyperparameters, before any method exists
    feat = cakd.Params(feature=True)
    assert not cakd.cacheable(feat) and cakd.cacheable(cakd.Params())
    assert cached_teacher(teacher, TeacherCacheConfig(), cakd.cacheable(feat), cakd.name, loader, tmp_path) is teacher
    with pytest.raises(ValueError, match="r2kd"):
        cached_teacher(teacher, TeacherCacheConfig(enabled=True), r2kd.cacheable(r2kd.Params()), r2kd.name, loader, tmp_path)
    no_aug = BatchLoader(x, y, 32)
    assert cached_teacher(teacher, TeacherCacheConfig(), kd.cacheable(kd_hp), kd.name, no_aug, tmp_path) is teacher
    mm = cached_teacher(teacher, TeacherCacheConfig(storage="mmap"), kd.cacheable(kd_hp), kd.name, loader, tmp_path)
    assert mm.path == tmp_path / "teacher_cache.bin" and mm.path.exists()
    with pytest.raises(ValueError, match="storage"):
        cached_teacher(teacher, TeacherCacheConfig(path=str(tmp_path / "x.bin")), kd, kd_hp, loader, tmp_path)


def test_bad_arguments_name_the_fix():
    x, y = _data(n=8)
    with pytest.raises(ValueError, match="dtype"):
        CachedTeacher(_teacher(), _loader(x, y), dtype="int8")
    with pytest.raises(ValueError, match="enabled=false"):
        CachedTeacher(_teacher(), BatchLoader(x, y, 4))
    with pytest.raises(ValueError, match="FrozenTeacher"):
        CachedTeacher(torch.nn.Linear(2, 2), _loader(x, y))
