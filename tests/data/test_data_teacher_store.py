"""The teacher-output store: exact contents, resume after an interruption, validation, the run-side choice."""

import errno
import json

import numpy as np
import pytest
import torch

from kdlab import models
from kdlab._io import WriteError, preallocate
from kdlab.data import load_image_folder
from kdlab.data.image_stream import ImageSource
from kdlab.data.normalization import Normalization
from kdlab.teachers import FrozenTeacher, StaleCacheError, module_digest
from kdlab.teachers.store import TeacherStore, store_expectation
from kdlab.teachers.store_build import build_store
from kdlab.teachers.stored import StoredTeacher, choose_store
from kdlab.teachers.topk import topk_compress


@pytest.fixture
def data(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=4, n_val=1, size=(50, 40))  # 12 training images
    return load_image_folder(root, image_size=16, workers=0, progress=False)


def _teacher(seed=0):
    torch.manual_seed(seed)
    return FrozenTeacher(models.create("resnet8", 3))


def _build(teacher, data, path, precision="float32", **kw):
    kw = {"seed": 4, "epochs": 2, "chunk_size": 5, "progress": False, **kw}
    return build_store(teacher, data, path, precision=precision, **kw)


def _expected(teacher, data):
    return store_expectation(module_digest(teacher.module), "fp32", data.train, 3, 16, data.mean, data.std)


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_float32_rows_are_the_teachers_outputs_on_the_scheduled_crops(tmp_path, data):
    teacher = _teacher()
    store = _build(teacher, data, tmp_path / "s")
    assert store.complete and store.epochs == 2 and store.schedule.seed == 4
    norm = Normalization(data.mean, data.std, 3, 4)
    source = ImageSource(data.train, 16, train=True, seed=4)  # the schedule's seed: its boxes, drawn live
    for epoch in (1, 2):
        for chunk in range(3):  # chunks of 5, 5, 2 images
            rows = store.chunk_rows(chunk)
            x, _, _, _ = source.load(source.tasks(epoch, rows))
            assert torch.equal(store.read(epoch, rows)["logits"], teacher.logits(norm(x)))  # bit for bit
    # reading any rows in any order, reopened read-only
    again = TeacherStore.open(tmp_path / "s")
    index = np.array([11, 0, 7])
    assert torch.equal(again.read(2, index)["logits"], torch.cat([store.read(2, [i])["logits"] for i in index]))


def test_float16_and_topk_rows(tmp_path, data):
    teacher = _teacher()
    full = _build(teacher, data, tmp_path / "f32")
    half = _build(teacher, data, tmp_path / "f16", "float16")
    top = _build(teacher, data, tmp_path / "top", "topk", k=2)
    rows = np.arange(12)
    v = full.read(1, rows)["logits"]
    assert torch.equal(half.read(1, rows)["logits"], v.half())
    assert torch.equal(half.expand(half.read(1, rows)), v.half().float())
    log_p, index, rest = topk_compress(v, 2)
    got = top.read(1, rows)
    assert torch.equal(got["topk_logp"], log_p) and torch.equal(got["topk_index"], index)
    assert torch.equal(got["topk_rest"], rest)
    assert top.bytes_per_view == 4 * 2 + 4 and half.bytes_per_view == 2 * 3 and full.bytes_per_view == 4 * 3
    assert torch.equal(top.expand(got).argmax(1), v.argmax(1))


def test_an_interrupted_build_resumes_and_equals_an_uninterrupted_one(tmp_path, data, capsys):
    teacher = _teacher()
    calls = {"n": 0}

    def interrupt(module, args):
        calls["n"] += 1
        if calls["n"] > 3:  # the probe's two forwards, then one chunk
            raise KeyboardInterrupt

    hook = teacher.module.register_forward_pre_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        _build(teacher, data, tmp_path / "part")
    hook.remove()
    part = TeacherStore.open(tmp_path / "part")
    assert 0 < part.done_fraction < 1 and len(part.pending()) == 5  # 6 chunks, 1 written
    capsys.readouterr()
    _build(teacher, data, tmp_path / "part")
    assert "resuming: 21% written; 19 views to compute on 1 process" in capsys.readouterr().out
    _build(teacher, data, tmp_path / "whole")
    assert _files(tmp_path / "part") == _files(tmp_path / "whole")


def test_a_stale_store_is_refused_naming_the_field(tmp_path, data, image_tools):
    teacher = _teacher()
    _build(teacher, data, tmp_path / "s")
    store = TeacherStore.open(tmp_path / "s")
    store.check(_expected(teacher, data))  # the matching run: no error
    with pytest.raises(StaleCacheError, match=r"different teacher\.sha256 \(teacher\.sha256: stored '"):
        store.check(_expected(_teacher(seed=1), data))
    other = load_image_folder(image_tools.make_imagefolder(tmp_path / "g", n_train=4, n_val=1, size=(52, 40)),
                              image_size=16, workers=0, progress=False)
    with pytest.raises(StaleCacheError, match=r"different data\.fingerprint"):
        store.check(_expected(teacher, other))
    with pytest.raises(StaleCacheError, match=r"outputs\.precision"):  # the builder refuses to mix precisions
        _build(teacher, data, tmp_path / "s", "float16")
    with open(tmp_path / "s" / "logits.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(StaleCacheError, match="logits.bin is 10 bytes, expected 288"):
        TeacherStore.open(tmp_path / "s")


def _choose(path, enabled="auto", method="kd", needs_full=False, epochs=2, expected=None):
    return choose_store(str(path), enabled, streamed=True, expected=expected, epochs=epochs, method=method,
                        cacheable=True, needs_full=needs_full)


def test_the_run_side_choice(tmp_path, data):
    teacher = _teacher()
    top = _build(teacher, data, tmp_path / "top", "topk", k=2)
    exp = _expected(teacher, data)
    use = _choose(tmp_path / "top", expected=exp)
    assert use.store is not None and use.record["source"] == "store" and use.identity == {
        "teacher.store_sha256": top.identity}
    no = _choose(tmp_path / "top", method="dkd", needs_full=True, expected=exp)
    assert no.store is None and "method 'dkd' needs the teacher's full distribution" in no.record["reason"]
    with pytest.raises(ValueError, match="enabled=true but the teacher store cannot be used: method 'dkd' needs"):
        _choose(tmp_path / "top", enabled=True, method="dkd", needs_full=True, expected=exp)
    assert "holds 2 epochs of crops but the run trains 3" in _choose(tmp_path / "top", epochs=3,
                                                                     expected=exp).record["reason"]
    assert "no store at" in _choose(tmp_path / "nothing", expected=exp).record["reason"]
    stale = _choose(tmp_path / "top", expected=_expected(_teacher(seed=1), data))
    assert stale.store is None and "teacher.sha256" in stale.record["reason"]
    with pytest.raises(StaleCacheError, match="teacher.sha256"):
        _choose(tmp_path / "top", enabled=True, expected=_expected(_teacher(seed=1), data))
    assert _choose(tmp_path / "top", enabled=False, expected=exp).store is None


def test_an_incomplete_store_is_not_used(tmp_path, data):
    teacher = _teacher()
    _build(teacher, data, tmp_path / "s")
    mask = tmp_path / "s" / "done.mask"
    mask.write_bytes(b"\x01" * 5 + b"\x00")
    assert "is 92% built" in _choose(tmp_path / "s", expected=_expected(teacher, data)).record["reason"]


def test_the_stored_teacher_serves_replayed_batches_and_the_live_teacher_otherwise(tmp_path, data):
    teacher = _teacher()
    store = _build(teacher, data, tmp_path / "s", "float16")
    stored = StoredTeacher(teacher, store)
    x = torch.randn(3, 3, 16, 16)
    plain = type("B", (), {"x": x, "stored": None})()
    assert torch.equal(stored.logits_for_batch(plain), teacher.logits(x))
    replayed = type("B", (), {"x": x, "stored": store.read(2, np.array([3, 4, 5]))})()
    assert torch.equal(stored.logits_for_batch(replayed), store.read(2, np.array([3, 4, 5]))["logits"].float())
    assert stored.describe()["store"]["precision"] == "float16"


def test_a_full_disk_is_an_error_before_anything_is_written(tmp_path):
    import shutil

    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(WriteError, match="cannot reserve") as err:
        preallocate(tmp_path / "big", free + 2**40)
    assert err.value.errno in (errno.ENOSPC, errno.EFBIG)  # exit code 5 in the CLI (kdlab.failures)
    assert not (tmp_path / "big").exists()


def test_store_json_records_what_the_outputs_are_valid_for(tmp_path, data):
    teacher = _teacher()
    _build(teacher, data, tmp_path / "s", "topk", k=2)
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    assert meta["teacher"]["sha256"] == module_digest(teacher.module)
    assert meta["data"]["image_size"] == 16 and meta["data"]["num_samples"] == 12
    assert meta["schedule"]["seed"] == 4 and meta["schedule"]["epochs"] == 2 and len(meta["schedule"]["sha256"]) == 64
    assert meta["outputs"] == {"precision": "topk", "k": 2, "chunk_size": 5}
