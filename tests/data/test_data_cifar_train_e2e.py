"""The whole CIFAR-100 path of `kdlab train`: download from a (loopback) mirror with md5 check, parse, augment,
train a zoo student by KD from a zoo teacher, evaluate, write final.json."""

import hashlib
import json

import pytest
import torch

from kdlab import models
from kdlab.builder import make_loaders
from kdlab.cli import main
from kdlab.data import load_dataset
from kdlab.models import save_model


def test_cli_train_on_a_downloaded_cifar100_archive(tmp_path, cifar_tools, http_server):
    www, base = http_server
    fake = cifar_tools.make_fake(n_train=24, n_test=12, seed=5)
    served = cifar_tools.write_tar(www / "cifar-100-python.tar.gz", cifar_tools.python_members(fake))
    md5 = hashlib.md5(served.read_bytes()).hexdigest()

    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_model(teacher, models.create("resnet8", 100), arch="resnet8", num_classes=100)
    data_root = tmp_path / "data"
    out = tmp_path / "run"
    code = main(["train", "cifar100/resnet56-resnet20/kd", f"out_dir={out}", f"data.root={data_root}",
                 "data.download=true", f"data.url={base}/cifar-100-python.tar.gz", f"data.md5={md5}",
                 f"teacher.checkpoint={teacher}", "teacher.arch=resnet8", "student.arch=resnet8",
                 "optim.epochs=1", "optim.batch_size=8", "run.progress=false"])
    assert code == 0
    assert (data_root / "cifar-100-python.tar.gz").read_bytes() == served.read_bytes()
    final = json.loads((out / "final.json").read_text())
    assert final["fidelity"]["n"] == 12
    assert final["config"]["data"]["name"] == "cifar100"
    assert 0.0 <= final["student"]["last_acc"] <= 100.0


def test_cli_train_with_a_wrong_md5_is_an_error_and_keeps_nothing(tmp_path, cifar_tools, http_server, capsys):
    www, base = http_server
    cifar_tools.write_tar(www / "cifar-100-python.tar.gz",
                          cifar_tools.python_members(cifar_tools.make_fake(seed=6)))
    data_root = tmp_path / "data"
    code = main(["train", "cifar100/resnet56-resnet20/kd", f"out_dir={tmp_path / 'run'}", f"data.root={data_root}",
                 "data.download=true", f"data.url={base}/cifar-100-python.tar.gz", "data.md5=" + "0" * 32,
                 "run.progress=false"])
    assert code == 2
    assert "md5" in capsys.readouterr().err
    assert not any(data_root.glob("*.tar.gz"))


def test_cli_train_from_a_published_repdistiller_teacher(tmp_path, cifar_tools):
    """The released teachers' format (cifar_teachers.tar: resnet32x4_vanilla/ckpt_epoch_240.pth, a dict whose 'model'
    entry is the state dict under RepDistiller's names) works as teacher.checkpoint with the recipe's teacher.arch."""
    data_root = tmp_path / "data"
    data_root.mkdir()
    cifar_tools.write_tar(data_root / "cifar-100-python.tar.gz",
                          cifar_tools.python_members(cifar_tools.make_fake(n_train=16, n_test=8, seed=7)))
    torch.manual_seed(0)
    teacher = models.create("resnet32x4", 100)
    state = {("fc." + k[len("classifier."):] if k.startswith("classifier.") else k): v
             for k, v in teacher.state_dict().items()}  # RepDistiller calls the head `fc`
    ckpt = tmp_path / "resnet32x4_vanilla" / "ckpt_epoch_240.pth"
    ckpt.parent.mkdir()
    torch.save({"epoch": 240, "model": state, "accuracy": torch.tensor(79.42)}, ckpt)
    out = tmp_path / "run"
    code = main(["train", "cifar100/resnet32x4-resnet8x4/kd", f"out_dir={out}", f"data.root={data_root}",
                 f"teacher.checkpoint={ckpt}", "optim.epochs=1", "optim.batch_size=8", "run.progress=false"])
    assert code == 0
    final = json.loads((out / "final.json").read_text())
    assert final["teacher"]["arch"] == "resnet32x4" and final["fidelity"]["n"] == 8
    # the teacher that ran is the checkpoint's network: its test NLL is the one recomputed here
    _, test = make_loaders(load_dataset("cifar100", root=data_root), 8, 8, 0, "cpu", augment=False)
    batch = next(iter(test))
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(teacher.eval()(batch.x), batch.y).item()
    assert final["teacher"]["nll"] == pytest.approx(nll, rel=1e-4)


def test_the_shipped_recipe_fetches_its_published_teacher(tmp_path, cifar_tools, file_server, teacher_archives,
                                                          monkeypatch):
    """`kdlab train cifar100/resnet32x4-resnet8x4/dkd` with CIFAR-100 and a network and nothing else: the recipe's
    teacher.checkpoint (repdistiller:resnet32x4) is downloaded (here from a loopback mirror of the release),
    converted once, and is the network that runs."""
    data_root = tmp_path / "data"
    data_root.mkdir()
    cifar_tools.write_tar(data_root / "cifar-100-python.tar.gz",
                          cifar_tools.python_members(cifar_tools.make_fake(n_train=16, n_test=8, seed=8)))
    torch.manual_seed(0)
    teacher = models.create("resnet32x4", 100).eval()
    teacher_archives.write_tar(file_server.root / "cifar_teachers.tar", {"resnet32x4": teacher})
    monkeypatch.setenv("KDLAB_DATA", str(tmp_path / "kdlab_data"))
    monkeypatch.setenv("KDLAB_TEACHER_MIRROR", file_server.base)
    out = tmp_path / "run"
    code = main(["train", "cifar100/resnet32x4-resnet8x4/dkd", f"out_dir={out}", f"data.root={data_root}",
                 "optim.epochs=1", "optim.batch_size=8", "run.progress=false"])
    assert code == 0
    assert file_server.requests == [("cifar_teachers.tar", None)]
    assert (tmp_path / "kdlab_data" / "teachers" / "repdistiller" / "resnet32x4.safetensors").is_file()
    final = json.loads((out / "final.json").read_text())
    assert final["config"]["teacher"]["checkpoint"] == "repdistiller:resnet32x4"
    assert final["teacher"]["arch"] == "resnet32x4" and final["fidelity"]["n"] == 8
    _, test = make_loaders(load_dataset("cifar100", root=data_root), 8, 8, 0, "cpu", augment=False)
    batch = next(iter(test))
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(teacher(batch.x), batch.y).item()
    assert final["teacher"]["nll"] == pytest.approx(nll, rel=1e-4)  # the archive's network is the one that ran
