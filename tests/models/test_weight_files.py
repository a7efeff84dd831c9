"""Weight files: kdlab's safetensors, PyTorch files through torch.load(weights_only=True) only (bare, under 'model' or
'state_dict', DataParallel prefixes), RepDistiller's names, and a one-line error naming the file for anything else."""

from __future__ import annotations

import argparse
import io
import tarfile

import numpy as np
import pytest
import torch

from kdlab._io import CheckpointError, read_metadata, save_tensors
from kdlab.builder import load_teacher_module
from kdlab.cli import main
from kdlab.config import TeacherConfig
from kdlab.models import create, load_model, load_weights, save_model
from kdlab.models.weights import INERT_GLOBALS, read_state_dict, state_from_bytes


def _resnet8(classes: int = 10):
    torch.manual_seed(0)
    return create("resnet8", classes).eval()


def _repdistiller_names(state: dict) -> dict:
    """kdlab's resnet8 state dict under RepDistiller's names (the head is ``fc`` there)."""
    return {k.replace("classifier.", "fc.", 1) if k.startswith("classifier.") else k: v for k, v in state.items()}


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("wrap", ["bare", "model", "state_dict", "module_prefix"])
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".pth.tar"])
def test_pytorch_files_load(tmp_path, wrap, suffix):
    net = _resnet8()
    state = net.state_dict()
    if wrap == "module_prefix":  # saved from DataParallel
        obj = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    else:
        obj = state if wrap == "bare" else {wrap: state, "epoch": 240, "best_acc": torch.tensor(72.5)}
    path = tmp_path / f"w{suffix}"
    torch.save(obj, path)
    loaded = load_model(path, arch="resnet8", num_classes=10)
    assert _same(loaded, net)
    assert _same(load_weights(create("resnet8", 10), path), net)


def test_repdistiller_checkpoint_with_their_names_and_format(tmp_path):
    """The released teachers' layout: {'epoch', 'model', 'accuracy', 'optimizer'}; class count from the file."""
    net = _resnet8(100)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    path = tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir()
    torch.save({"epoch": 240, "model": _repdistiller_names(net.state_dict()), "accuracy": torch.tensor(72.3),
                "optimizer": opt.state_dict()}, path)
    loaded = load_model(path, arch="resnet8")
    assert loaded.classifier.out_features == 100 and _same(loaded, net)
    with pytest.raises(CheckpointError, match="do not fit"):  # without the arch's mapping the names differ
        load_weights(create("resnet8", 100), path)
    assert _same(load_weights(create("resnet8", 100), path, arch="resnet8"), net)


def test_legacy_pytorch_format_loads(tmp_path):
    """Files saved by old PyTorch versions (before the zip format; the 2019 teachers) read the same way."""
    net = _resnet8()
    path = tmp_path / "old.pth"
    torch.save({"model": net.state_dict()}, path, _use_new_zipfile_serialization=False)
    assert _same(load_model(path, arch="resnet8"), net)


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # what an untrusted pickle does: run code on load
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": _resnet8().state_dict(), "payload": _Exploit(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as err:
        load_model(path, arch="resnet8")
    msg = str(err.value)
    assert str(path) in msg and "refused" in msg and "weights_only=True" in msg and "\n" not in msg
    assert not marker.exists()


def test_python_objects_beside_the_weights_are_refused_by_name(tmp_path):
    """RepDistiller's *_last.pth also stores the argparse options: refused, naming the class."""
    path = tmp_path / "resnet8_last.pth"
    torch.save({"opt": argparse.Namespace(model="resnet8"), "model": _resnet8().state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"refused.*argparse\.Namespace"):
        read_state_dict(path)


def test_the_teachers_archive_itself_says_extract_it(tmp_path):
    inner = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": _resnet8().state_dict()}, inner)
    archive = tmp_path / "cifar_teachers.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(inner, arcname="resnet8_vanilla/ckpt_epoch_240.pth")
    with pytest.raises(CheckpointError, match="tar archive.*extract it"):
        load_model(archive, arch="resnet8")


@pytest.mark.parametrize("content,match", [
    (b"not a checkpoint at all", "not a readable PyTorch file"),
    (None, "not a readable PyTorch file"),  # a truncated real file
    (b"", "not a readable PyTorch file"),
])
def test_unreadable_pytorch_files(tmp_path, content, match):
    path = tmp_path / "w.pth"
    if content is None:
        torch.save(_resnet8().state_dict(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as err:
        load_model(path, arch="resnet8")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("obj,match", [
    ({"epoch": 3, "acc": 1.0}, r"holds a dict with keys \['acc', 'epoch'\]"),
    ([torch.ones(2)], "holds list"),
    ({"model": {"w": torch.ones(1)}, "state_dict": {"w": torch.ones(1)}}, "two state dicts"),
])
def test_files_without_one_state_dict_are_refused(tmp_path, obj, match):
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(path)


def test_unknown_file_types_and_missing_files(tmp_path):
    path = tmp_path / "w.ckpt"
    torch.save(_resnet8().state_dict(), path)
    with pytest.raises(CheckpointError, match=r"unknown weights file type.*\.pth, \.pt, \.tar"):
        load_model(path, arch="resnet8")
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_model(tmp_path / "absent.pth", arch="resnet8")


def test_a_pytorch_file_needs_the_arch(tmp_path):
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": _resnet8().state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"records no architecture.*teacher\.arch=NAME.*kdlab teacher import"):
        load_model(path)
    with pytest.raises(ValueError, match="teacher.arch"):  # the same through the config path of `kdlab train`
        load_teacher_module(TeacherConfig(checkpoint=str(path)), 10)
    assert _same(load_teacher_module(TeacherConfig(checkpoint=str(path), arch="resnet8"), 10), _resnet8())


def test_wrong_arch_or_class_count_is_one_clear_line(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(_resnet8(100).state_dict(), path)
    with pytest.raises(CheckpointError, match="model has 100 classes but the data has 10"):
        load_model(path, arch="resnet8", num_classes=10)
    with pytest.raises(CheckpointError, match=r"do not fit resnet20 \(another architecture\?\): \d+ tensors missing, "
                                              r"e\.g\. layer1\.1\.") as err:
        load_model(path, arch="resnet20")
    assert "\n" not in str(err.value)
    state = _resnet8(100).state_dict()
    state["conv1.weight"] = state["conv1.weight"][:, :1]  # a one-channel stem
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 tensors of another shape, e.g. conv1.weight is \(16, 1, 3, 3\) in "
                                              r"the file and \(16, 3, 3, 3\) in the model"):
        load_model(path, arch="resnet8")


def test_safetensors_without_kdlab_metadata_needs_the_arch(tmp_path):
    """e.g. a safetensors conversion of torchvision's weights: no arch recorded, class count from the head."""
    net = _resnet8(100)
    path = tmp_path / "converted.safetensors"
    save_tensors(path, net.state_dict())
    with pytest.raises(CheckpointError, match="records no architecture"):
        load_model(path)
    assert _same(load_model(path, arch="resnet8"), net)


def test_kdlab_files_need_nothing_and_check_the_arch(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, _resnet8(), arch="resnet8", num_classes=10)
    assert _same(load_model(path), _resnet8())
    with pytest.raises(CheckpointError, match="holds a 'resnet8' model but arch 'resnet20' was asked for.*set the arch to resnet8"):
        load_model(path, arch="resnet20")


def test_files_written_under_the_old_cifar_resnet50_name_still_load(tmp_path):
    """Before the rename kdlab wrote arch 'ResNet50' and RepDistiller's block name 'shortcut'."""
    path = tmp_path / "teacher.safetensors"
    torch.manual_seed(0)
    net = create("cifar_resnet50", 10)
    old = {k.replace(".downsample.", ".shortcut."): v for k, v in net.state_dict().items()}
    assert old.keys() != net.state_dict().keys()
    save_tensors(path, old, {"format": "kdlab-model-1", "arch": "ResNet50", "num_classes": "10"})
    assert _same(load_model(path), net)
    assert _same(load_model(path, arch="cifar_resnet50"), net)


# ---------------------------------------------------------------------------------------------------------------
# kdlab teacher import
# ---------------------------------------------------------------------------------------------------------------
def test_cli_teacher_import_converts_a_repdistiller_checkpoint(tmp_path, capsys):
    net = _resnet8(100)
    src = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": _repdistiller_names(net.state_dict())}, src)
    out = tmp_path / "model.safetensors"
    assert main(["teacher", "import", str(src), "--arch", "resnet8", "--out", str(out)]) == 0
    assert f"{src} -> {out}: resnet8, 100 classes, 83,892 parameters" in capsys.readouterr().out
    assert _same(load_model(out), net)  # no arch needed any more: it is in the file
    meta = read_metadata(out)
    assert (meta["arch"], meta["num_classes"]) == ("resnet8", "100")
    # never overwrites; the class count can be checked; bad input is one line and exit code 2
    for argv, msg in [([str(src), "--arch", "resnet8", "--out", str(out)], "exists"),
                      ([str(src), "--arch", "resnet8", "--out", str(tmp_path / "b.safetensors"), "--num-classes",
                        "10"], "100 classes but the data has 10"),
                      ([str(src), "--arch", "resnet8", "--out", str(tmp_path / "c.pth")], "ending in it"),
                      ([str(src), "--arch", "ResNet50", "--out", str(tmp_path / "d.safetensors")], "cifar_resnet50")]:
        assert main(["teacher", "import", *argv]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1
    assert not (tmp_path / "b.safetensors").exists()


def test_teacher_config_command_still_trains_a_teacher(tmp_path, capsys):
    """`kdlab teacher CONFIG` is untouched by the import subcommand."""
    code = main(["teacher", "mnist1d/teacher", f"out_dir={tmp_path / 't'}", "optim.epochs=1", "run.progress=false",
                 "data.num_samples=200"])
    assert code == 0 and (tmp_path / "t" / "model.safetensors").is_file()
    assert "teacher mnist1d_cnn" in capsys.readouterr().out


@pytest.mark.parametrize("numpy_module", ["numpy._core.multiarray", "numpy.core.multiarray"])
def test_inert_training_records_are_read_only_when_allowed(numpy_module):
    """RepDistiller-style checkpoints hold their options (argparse.Namespace) and numpy accuracies beside the
    weights: refused by default, read with INERT_GLOBALS (numpy 2's and numpy 1's module names for scalars)."""
    state = _resnet8().state_dict()
    buf = io.BytesIO()
    torch.save({"model": state, "opt": argparse.Namespace(model="resnet8"), "accuracy": np.float64(71.2),
                "best": np.float32(71.5)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue().replace(b"numpy._core.multiarray", numpy_module.encode())  # as numpy 1.x pickled them
    assert numpy_module.encode() in data
    with pytest.raises(CheckpointError, match=r"member.pth: refused: it holds Python objects besides tensors"):
        state_from_bytes(data, "member.pth")
    got = state_from_bytes(data, "member.pth", INERT_GLOBALS)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
