"""The whole CIFAR-100 path of `kdlab train`: download from a (loopback) mirror with md5 check, parse, augment,
train a zoo student by KD from a zoo teacher, evaluate, write final.json."""

import hashlib
import json

import torch

from kdlab import models
from kdlab.cli import main
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
