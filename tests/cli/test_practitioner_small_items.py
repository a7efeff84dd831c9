"""The smaller faults a new practitioner met (issue 25, item 6), each fixed: tab completion of the package face, a conv
student given flat vectors, one-hot labels, CIFAR-100 missing (and its teacher too), a table of an interrupted sweep."""

import json
import shutil

import pytest
import torch
from torch import nn

import kdlab
from kdlab.cli import main
from kdlab.data.user import as_tensors


def test_dir_lists_the_lazy_entry_points():
    names = dir(kdlab)
    assert {"fit", "fidelity_report", "load_model", "TrainingDiverged", "__version__"} <= set(names)


def test_fit_on_flat_inputs_for_a_conv_student_says_how_to_shape_them():
    """Before: PyTorch's raw conv2d error from inside the user's network."""
    x, y = torch.rand(16, 28 * 28), torch.arange(16) % 10
    student = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(ValueError, match=r"the student is a convolutional network but the inputs are flat vectors "
                                         r"\(2, 784\).*x.reshape\(-1, 1, 28, 28\)"):
        kdlab.fit(student, None, train=(x, y), method="ce", epochs=1)


def test_one_hot_integer_labels_get_the_argmax_hint():
    with pytest.raises(ValueError, match=r"one-hot labels\? take y.argmax\(dim=1\)"):
        as_tensors((torch.rand(4, 1, 8), torch.eye(4, dtype=torch.int64)))
    with pytest.raises(ValueError, match=r"y.reshape\(-1\) if it is \[N, 1\]"):  # [N, 1] keeps its own hint
        as_tensors((torch.rand(4, 1, 8), torch.zeros(4, 1, dtype=torch.int64)))


def test_missing_cifar100_names_data_download_and_the_missing_teacher(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDLAB_DATA", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    local = "teacher.checkpoint=runs/cifar100/teachers/resnet32x4/model.safetensors"  # your own teacher, not trained yet
    assert main(["train", "cifar100/resnet32x4-resnet8x4/kd", "run.progress=false", local]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "CIFAR-100 not found" in err and "set data.download=true" in err
    assert "load_cifar100(" not in err
    assert "teacher.checkpoint=runs/cifar100/teachers/resnet32x4/model.safetensors does not exist either" in err
    # the recipe's own teacher is a published name, fetched when needed: not reported missing
    assert main(["train", "cifar100/resnet32x4-resnet8x4/kd", "run.progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert "CIFAR-100 not found" in err and "does not exist either" not in err


def test_table_of_an_interrupted_sweep_says_cells_are_missing(random_teacher, tmp_path, capsys):
    out = tmp_path / "sweep"
    cells = []
    for seed in (0, 1):
        d = out / "mnist1d" / "kd" / f"seed{seed}"
        cells.append({"name": "mnist1d/kd", "out_dir": str(d), "kind": "student"})
    assert main(["train", "mnist1d/kd", "data.train_subset=64", "data.test_subset=32", "optim.epochs=1",
                 "run.progress=false", "run.tensorboard=false", "student.arch=mnist1d_mlp",
                 f"teacher.checkpoint={random_teacher}", "teacher.arch=mnist1d_cnn_small",
                 f"out_dir={cells[0]['out_dir']}"]) == 0
    shutil.copytree(cells[0]["out_dir"], cells[1]["out_dir"])
    (out / "mnist1d" / "kd" / "seed1" / "final.json").unlink()  # killed before it finished
    (out / "sweep.json").write_text(json.dumps({"cells": cells}))
    capsys.readouterr()
    assert main(["table", str(out)]) == 0
    captured = capsys.readouterr()
    assert "| kd |" in captured.out or "kd" in captured.out
    assert "the table is partial: 1 cell(s) of the sweep have no final.json" in captured.err
    assert "mnist1d/kd (seed1)" in captured.err
