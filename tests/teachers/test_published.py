"""Published teachers by name (kdlab.teachers.published): fetched from a loopback server, verified, converted once.

The real URLs cannot be reached from the machines kdlab is built on, so every download here comes from a local HTTP
server on 127.0.0.1 (``KDLAB_TEACHER_MIRROR`` or ``--url`` pointing at it), serving archives and weight files these
tests generate in the published formats."""

from __future__ import annotations

import hashlib
import io
import json
import socket

import pytest
import torch

from kdlab import models
from kdlab._io import CheckpointError, read_metadata
from kdlab.builder import load_teacher_module
from kdlab.cli import main
from kdlab.config.schema import TeacherConfig
from kdlab.models import load_model
from kdlab.models.foreign import to_kdlab_names
from kdlab.teachers import published


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty $KDLAB_DATA of the test's own, and no mirror."""
    root = tmp_path / "kdlab_data"
    monkeypatch.setenv("KDLAB_DATA", str(root))
    monkeypatch.delenv(published.MIRROR_ENV, raising=False)
    return root


def _model(arch, num_classes, seed=0):
    torch.manual_seed(seed)
    return models.create(arch, num_classes).eval()


def _same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _closed_port_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/{name}"


def test_names_and_paths():
    assert published.lookup("runs/cifar100/teachers/resnet32x4/model.safetensors") is None  # a path
    assert published.resolve("runs/x/model.safetensors") == published.Path("runs/x/model.safetensors")
    t = published.lookup("torchvision:resnet34")
    assert (t.spec, t.arch, t.num_classes, t.sha256) == ("torchvision:resnet34.IMAGENET1K_V1", "resnet34", 1000,
                                                          "b627a593")
    assert t.url == "https://download.pytorch.org/models/resnet34-b627a593.pth"
    assert published.lookup("torchvision:resnet50.IMAGENET1K_V2").filename == "resnet50-11ad3fa6.pth"
    r = published.lookup("repdistiller:cifar_resnet50")
    assert (r.arch, r.num_classes, r.member, r.sha256) == ("cifar_resnet50", 100, "ResNet50_vanilla/ckpt_epoch_240.pth",
                                                           None)  # none is published
    with pytest.raises(ValueError, match="no such published teacher; repdistiller publishes resnet56, resnet110"):
        published.lookup("repdistiller:resnet8")
    with pytest.raises(ValueError, match=r"unknown teacher source 'timm'"):
        published.lookup("timm:resnet50")
    # every published teacher is a zoo model of the right class count
    for t in published.catalogue():
        assert t.arch in models.names() and t.num_classes in (100, 1000)


def test_kdlab_teacher_fetch_repdistiller_resnet32x4(tmp_path, data_dir, file_server, teacher_archives, monkeypatch,
                                                     capsys):
    teacher = _model("resnet32x4", 100)
    served = teacher_archives.write_tar(file_server.root / "cifar_teachers.tar", {"resnet32x4": teacher})
    monkeypatch.setenv(published.MIRROR_ENV, file_server.base)
    assert main(["teacher", "fetch", "repdistiller:resnet32x4"]) == 0
    out = data_dir / "teachers" / "repdistiller" / "resnet32x4.safetensors"
    captured = capsys.readouterr()
    assert captured.out == f"repdistiller:resnet32x4 -> {out}: resnet32x4, 100 classes, 7,433,860 parameters\n"
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    assert f"cifar_teachers.tar has no published checksum; its members were checked and its sha256 {digest}" \
           in captured.err
    downloads = data_dir / "teachers" / "downloads"
    assert (downloads / "cifar_teachers.tar.sha256").read_text() == f"{digest}  cifar_teachers.tar\n"
    assert (downloads / "cifar_teachers.tar").read_bytes() == served.read_bytes()  # kept for the other teachers
    assert _same_tensors(load_model(out), teacher)  # RepDistiller's names mapped back, every tensor as trained
    extra = json.loads(read_metadata(out)["extra"])
    assert extra["published"] == "repdistiller:resnet32x4" and extra["archive_sha256"] == digest
    assert extra["member"] == "cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth"
    # fetched once: a second fetch and the builder use the file without asking the server
    n = len(file_server.requests)
    assert main(["teacher", "fetch", "repdistiller:resnet32x4"]) == 0
    module = load_teacher_module(TeacherConfig(arch="resnet32x4", checkpoint="repdistiller:resnet32x4"), 100)
    assert _same_tensors(module, teacher) and len(file_server.requests) == n == 1


def test_kdlab_teacher_fetch_torchvision_resnet34(tmp_path, data_dir, file_server, monkeypatch, capsys):
    """torchvision's file format (a bare state dict); the catalogue's name is swapped for one whose SHA-256 prefix
    is this generated file's, as the real one's is the real file's."""
    weights = _model("resnet34", 1000)
    src = tmp_path / "resnet34.pth"
    torch.save(weights.state_dict(), src)
    name = f"resnet34-{hashlib.sha256(src.read_bytes()).hexdigest()[:8]}.pth"
    src.rename(file_server.root / name)
    monkeypatch.setitem(published._TORCHVISION, ("resnet34", "IMAGENET1K_V1"), (name, 73.314))
    assert main(["teacher", "fetch", "torchvision:resnet34", "--url", f"{file_server.base}/{name}"]) == 0
    out = data_dir / "teachers" / "torchvision" / "resnet34.IMAGENET1K_V1.safetensors"
    assert capsys.readouterr().out == (f"torchvision:resnet34.IMAGENET1K_V1 -> {out}: resnet34, 1000 classes, "
                                       "21,797,672 parameters\n")
    assert _same_tensors(load_model(out), weights)
    assert list((data_dir / "teachers" / "downloads").iterdir()) == []  # the .pth is removed once converted
    extra = json.loads(read_metadata(out)["extra"])
    assert extra["sha256"].startswith(name[9:17]) and extra["url"] == f"{file_server.base}/{name}"


def test_a_torchvision_file_with_another_sha256_than_its_name_says_is_refused(data_dir, file_server, monkeypatch):
    """The real catalogue entry: whatever is served as resnet18-f37072fd.pth must start its SHA-256 with f37072fd."""
    (file_server.root / "resnet18-f37072fd.pth").write_bytes(b"not torchvision's weights" * 1000)
    monkeypatch.setenv(published.MIRROR_ENV, file_server.base)
    with pytest.raises(ValueError, match=r"resnet18-f37072fd.pth from .* has sha256 [0-9a-f]{64}, expected f37072fd"):
        published.resolve("torchvision:resnet18")
    assert list((data_dir / "teachers" / "downloads").iterdir()) == []
    assert not (data_dir / "teachers" / "torchvision" / "resnet18.IMAGENET1K_V1.safetensors").exists()


def test_an_old_torchvision_file_without_batchnorm_counters_loads(tmp_path, data_dir, file_server, monkeypatch):
    """Files saved before PyTorch 0.4.1 have no num_batches_tracked; BatchNorm's own loader sets it to 0, so does
    kdlab."""
    weights = _model("resnet18", 1000)
    src = tmp_path / "r18.pth"
    torch.save({k: v for k, v in weights.state_dict().items() if not k.endswith("num_batches_tracked")}, src)
    name = f"resnet18-{hashlib.sha256(src.read_bytes()).hexdigest()[:8]}.pth"
    src.rename(file_server.root / name)
    monkeypatch.setitem(published._TORCHVISION, ("resnet18", "IMAGENET1K_V1"), (name, 69.758))
    monkeypatch.setenv(published.MIRROR_ENV, file_server.base)
    assert _same_tensors(load_model(published.resolve("torchvision:resnet18")), weights)


def test_a_truncated_archive_transfer_resumes(data_dir, file_server, teacher_archives, monkeypatch):
    teacher = _model("resnet56", 100)
    served = teacher_archives.write_tar(file_server.root / "cifar_teachers.tar", {"resnet56": teacher})
    size = served.stat().st_size
    monkeypatch.setenv(published.MIRROR_ENV, file_server.base)
    file_server.cut["cifar_teachers.tar"] = size // 3
    downloads = data_dir / "teachers" / "downloads"
    with pytest.raises(ConnectionError, match=rf"stopped after {size // 3} of {size} bytes"):
        published.resolve("repdistiller:resnet56")
    assert sorted(p.name for p in downloads.iterdir()) == [".cifar_teachers.tar.part"]  # nothing under a final name
    assert not (data_dir / "teachers" / "repdistiller" / "resnet56.safetensors").exists()
    out = published.resolve("repdistiller:resnet56")
    assert file_server.requests[-1] == ("cifar_teachers.tar", f"bytes={size // 3}-")
    assert file_server.sent["cifar_teachers.tar"] == size
    assert _same_tensors(load_model(out), teacher)
    assert sorted(p.name for p in downloads.iterdir()) == ["cifar_teachers.tar", "cifar_teachers.tar.sha256"]


def test_a_hostile_archive_member_is_refused_and_nothing_is_kept(tmp_path, data_dir, file_server, teacher_archives,
                                                                 monkeypatch):
    teacher_archives.write_tar(file_server.root / "cifar_teachers.tar", {"resnet56": _model("resnet56", 100)},
                               extra={"../../escape.txt": b"x"})
    monkeypatch.setenv(published.MIRROR_ENV, file_server.base)
    with pytest.raises(ValueError, match=r"unsafe member '../../escape.txt'"):
        published.resolve("repdistiller:resnet56")
    assert list((data_dir / "teachers" / "downloads").iterdir()) == []
    assert not list((data_dir / "teachers").rglob("*.safetensors"))
    assert not list(tmp_path.rglob("escape.txt"))


def test_an_archive_without_the_teachers_is_refused(data_dir, file_server, teacher_archives, monkeypatch):
    teacher_archives.write_tar(file_server.root / "cifar_teachers.tar", {"resnet56": _model("resnet56", 100)},
                               drop=("vgg13",))
    monkeypatch.setenv(published.MIRROR_ENV, file_server.base)
    with pytest.raises(ValueError, match=r"not mdistiller's cifar_teachers.tar: no member vgg13_vanilla/"
                                         r"ckpt_epoch_240.pth"):
        published.resolve("repdistiller:resnet56")
    assert list((data_dir / "teachers" / "downloads").iterdir()) == []


def test_a_member_that_would_run_code_is_refused(data_dir, file_server, teacher_archives, monkeypatch):
    """weights_only stays on: only tensors and inert data types are built, never a call (here: print)."""
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.ones(1)}, "hook": _Evil()}, buf)
    teacher_archives.write_tar(file_server.root / "cifar_teachers.tar", {}, drop=("resnet56",),
                               extra={"cifar_teachers/resnet56_vanilla/ckpt_epoch_240.pth": buf.getvalue()})
    monkeypatch.setenv(published.MIRROR_ENV, file_server.base)
    with pytest.raises(CheckpointError, match=r"resnet56_vanilla/ckpt_epoch_240.pth: refused: it holds Python objects "
                                              r"besides tensors \(it would import \S*print\)"):
        published.resolve("repdistiller:resnet56")
    assert not list((data_dir / "teachers").rglob("*.safetensors"))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_an_archive_put_there_by_hand_is_used_without_a_network(data_dir, teacher_archives, monkeypatch):
    teacher = _model("wrn_40_2", 100)
    teacher_archives.write_tar(data_dir / "teachers" / "downloads" / "cifar_teachers.tar", {"wrn_40_2": teacher})
    monkeypatch.setattr(published, "REPDISTILLER_URL", _closed_port_url("cifar_teachers.tar"))
    assert _same_tensors(load_model(published.resolve("repdistiller:wrn_40_2")), teacher)


def test_an_archive_changed_after_its_first_use_is_refused(data_dir, file_server, teacher_archives, monkeypatch):
    teacher_archives.write_tar(file_server.root / "cifar_teachers.tar", {"resnet56": _model("resnet56", 100)})
    monkeypatch.setenv(published.MIRROR_ENV, file_server.base)
    published.resolve("repdistiller:resnet56")
    # another archive under the same name (a different teacher inside) where the recorded one was
    teacher_archives.write_tar(data_dir / "teachers" / "downloads" / "cifar_teachers.tar",
                               {"resnet110": _model("resnet110", 100)})
    with pytest.raises(CheckpointError, match=r"cifar_teachers.tar changed since it was first used: sha256 .*, "
                                              r"recorded .*; delete both and fetch again"):
        published.resolve("repdistiller:resnet110")


def test_offline_the_error_is_one_line_with_the_url_and_where_to_put_the_file(data_dir, monkeypatch, capsys):
    url = _closed_port_url("cifar_teachers.tar")
    monkeypatch.setattr(published, "REPDISTILLER_URL", url)
    assert main(["teacher", "fetch", "repdistiller:resnet32x4"]) == 2
    err = capsys.readouterr().err
    target = data_dir / "teachers" / "downloads" / "cifar_teachers.tar"
    assert err.count("\n") == 1 and err.startswith(f"kdlab: error: could not download {url} (")
    assert err.endswith(f"or put the file at {target} yourself, or set ${published.MIRROR_ENV} to a base URL or "
                        "folder that has cifar_teachers.tar\n")
    assert list(target.parent.iterdir()) == []


def test_ranks_fetching_one_teacher_take_turns(data_dir, file_server, teacher_archives, monkeypatch, at_once):
    """Every rank of a torchrun job resolves teacher.checkpoint: one downloads and converts, the others wait and
    find the file."""
    teacher_archives.write_tar(file_server.root / "cifar_teachers.tar", {"resnet56": _model("resnet56", 100)})
    monkeypatch.setenv(published.MIRROR_ENV, file_server.base)
    paths, errors = at_once(lambda: published.resolve("repdistiller:resnet56", progress=False), 3)
    assert not errors and len(set(paths)) == 1 and len(file_server.requests) == 1


def test_the_inverse_renaming_of_the_test_archives_is_right(teacher_archives):
    """The archives above hold RepDistiller's names only if this inverse of foreign.py is one: map back and compare."""
    for arch in teacher_archives.folders:
        model = _model(arch, 100)
        state = teacher_archives.state(arch, model)
        if arch != "vgg13":
            assert state.keys() != model.state_dict().keys()
        assert list(to_kdlab_names(arch, state)) == list(model.state_dict())


def test_a_copy_on_shared_storage_by_path_or_mirror_folder(tmp_path, data_dir, teacher_archives, monkeypatch, capsys):
    """Clusters without internet: --url takes a copy's path, $KDLAB_TEACHER_MIRROR a folder of copies."""
    teacher = _model("vgg13", 100)
    copy = teacher_archives.write_tar(tmp_path / "shared" / "cifar_teachers.tar", {"vgg13": teacher})
    monkeypatch.setattr(published, "REPDISTILLER_URL", _closed_port_url("cifar_teachers.tar"))
    assert main(["teacher", "fetch", "repdistiller:vgg13", "--url", str(copy)]) == 0
    assert _same_tensors(load_model(data_dir / "teachers" / "repdistiller" / "vgg13.safetensors"), teacher)
    other = tmp_path / "other_data"
    monkeypatch.setenv(published.MIRROR_ENV, str(copy.parent))
    assert _same_tensors(load_model(published.resolve("repdistiller:vgg13", root=other)), teacher)
    assert main(["teacher", "fetch", "repdistiller:vgg13", "torchvision:resnet18", "--url", str(copy)]) == 2
    assert "one name at a time" in capsys.readouterr().err
