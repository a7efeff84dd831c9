import json

import pytest
import torch
from torch import nn

from kdlab import methods
from kdlab.cli import main
from kdlab.data import BatchLoader
from kdlab._io import load_tensors
from kdlab.engine.loop import LoopSettings, NonFiniteLossError, train_loop


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    student = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    method = methods.create("ce", student, None, 3)
    loader = BatchLoader(x, y, 16, seed=0)

    def poison_epoch_2(batch, epoch):
        if epoch == 2:
            batch.x = batch.x * float("nan")
        return batch

    settings = LoopSettings(epochs=3, lr=0.1, out_dir=tmp_path, progress=False, tensorboard=False)
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 0"):
        train_loop(method, loader, None, 3, settings, batch_transform=poison_epoch_2)
    tensors, meta = load_tensors(tmp_path / "checkpoint.safetensors")
    assert json.loads(meta["info"])["epoch"] == 1
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    common = ["data.train_subset=256", "data.test_subset=128", "optim.epochs=2", "optim.milestones=[1]",
              "run.progress=false"]
    assert main(["teacher", "mnist1d/teacher", f"out_dir={root / 't'}", *common]) == 0
    assert main(["train", "mnist1d/kd", f"out_dir={root / 's'}", f"teacher.checkpoint={root / 't/model.safetensors'}",
                 "student.arch=mnist1d_mlp", *common]) == 0
    return root


def test_cli_teacher_train_and_final_json(tiny_runs):
    final = json.loads((tiny_runs / "s" / "final.json").read_text())
    assert final["method"] == "kd" and final["student"]["arch"] == "mnist1d_mlp"
    for key in ("agreement", "kl", "kl_T4", "student_acc", "student_ece", "teacher_ece"):
        assert key in final["fidelity"]
    env = final["environment"]
    assert env["torch"] == torch.__version__ and env["seed"] == 0 and env["device"] == "cpu"
    lines = (tiny_runs / "s" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert (tiny_runs / "s" / "metrics.csv").read_text().startswith("epoch,lr,")
    for name in ("model", "best", "checkpoint"):
        assert (tiny_runs / "s" / f"{name}.safetensors").is_file()


def test_cli_eval_reports_fidelity(tiny_runs, capsys):
    capsys.readouterr()
    assert main(["eval", "--teacher", str(tiny_runs / "t/model.safetensors"),
                 "--student", str(tiny_runs / "s/model.safetensors"), "--temperature", "4", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    final = json.loads((tiny_runs / "s" / "final.json").read_text())
    # a student file inside a run is evaluated on that run's data (its 128-sample test subset), as training reported
    assert report["n"] == final["fidelity"]["n"] == 128
    assert report["agreement"] == pytest.approx(final["fidelity"]["agreement"])
    assert 0 <= report["agreement"] <= 100 and "kl_T4" in report
    # --data names another test set: the full MNIST-1D test split
    assert main(["eval", "--teacher", str(tiny_runs / "t/model.safetensors"), "--data", "mnist1d",
                 "--student", str(tiny_runs / "s/model.safetensors"), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 1000


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["train", "mnist1d/kd", "optim.lr=-1"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert main(["train", "mnist1d/kd", f"teacher.checkpoint={tmp_path / 'none.safetensors'}",
                 f"out_dir={tmp_path / 'o'}", "data.train_subset=32", "data.test_subset=32"]) == 2
    assert "none.safetensors not found" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    assert main(["train", "mnist1d/kd", f"teacher.checkpoint={bad}", f"out_dir={tmp_path / 'o2'}",
                 "data.train_subset=32", "data.test_subset=32"]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


@pytest.mark.parametrize("override, key, why", [
    ("optim.lr=.inf", "optim.lr", "finite number"),  # was accepted, and written to config.yaml as null
    ("optim.lr=.nan", "optim.lr", "finite number"),
    ("method.args.temperature=.inf", "method.args.temperature", "finite number"),  # was turned into null
    ("run.dist_timeout=.inf", "run.dist_timeout", "finite number"),
    (f"seed={2**70}", "seed", "less than or equal to 9223372036854775807"),  # "Overflow when unpacking long long"
    ("seed=-1", "seed", "greater than or equal to 0"),
    ("out_dir=''", "out_dir", "must name a directory"),  # printed `wrote /final.json` before
])
def test_cli_refuses_non_finite_numbers_an_overflowing_seed_and_an_empty_out_dir(override, key, why, capsys):
    assert main(["train", "mnist1d/kd", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{key}: " in err and why in err, err


def test_cli_mismatched_teacher_classes(tmp_path, capsys):
    from kdlab import models
    from kdlab.models import save_model

    path = tmp_path / "t5.safetensors"
    save_model(path, models.create("mnist1d_cnn", 5), arch="mnist1d_cnn", num_classes=5)
    assert main(["train", "mnist1d/kd", f"teacher.checkpoint={path}", f"out_dir={tmp_path / 'o'}",
                 "data.train_subset=32", "data.test_subset=32"]) == 2
    assert "model has 5 classes but the data has 10" in capsys.readouterr().err


def test_cli_lists(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out.split()
    assert "mnist1d/kd" in out and "cifar100/resnet32x4-resnet8x4/dkd" in out
    assert main(["methods"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"ce", "kd", "dkd", "cakd", "ttm", "wttm", "dist", "r2kd", "cmkd", "dhkd"} <= set(names)
