"""The CLI end to end on image files: `kdlab teacher` + `kdlab train` on each layout, resume after SIGKILL on streamed
data, and 2 gloo processes = 1 process on streamed data (global batch fixed, the last batch wrapped the same way)."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from kdlab import models
from kdlab.cli import main
from kdlab.models import save_model


def _config(path, data, extra=""):
    path.write_text(f"""
data: {data}
teacher: {{arch: resnet8}}
student: {{arch: resnet8}}
method: {{name: ce}}
optim: {{epochs: 2, batch_size: 8, lr: 0.05, milestones: [1]}}
eval: {{batch_size: 16}}
run: {{progress: false, threads: 1, tensorboard: false}}
{extra}""")
    return path


def _teacher_then_student(tmp_path, data):
    cfg = _config(tmp_path / "run.yaml", data)
    assert main(["teacher", str(cfg), f"out_dir={tmp_path / 't'}"]) == 0
    teacher = json.loads((tmp_path / "t" / "final.json").read_text())
    assert teacher["role"] == "teacher" and 0 <= teacher["test"]["student_acc"] <= 100
    assert main(["train", str(cfg), f"out_dir={tmp_path / 's'}", "method.name=kd",
                 f"teacher.checkpoint={tmp_path / 't' / 'model.safetensors'}"]) == 0
    final = json.loads((tmp_path / "s" / "final.json").read_text())
    for key in ("student_acc", "teacher_acc", "agreement", "kl"):  # the fidelity report
        assert key in final["fidelity"]
    assert final["teacher"]["acc"] == pytest.approx(teacher["teacher"]["last_acc"])
    return final


def test_cli_on_an_image_folder(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=6, n_val=3,
                                        kinds={("train", "cat", 1): "grey", ("train", "dog", 2): "cmyk",
                                               ("val", "eel", 0): "png_as_jpeg"})
    final = _teacher_then_student(tmp_path, f"{{name: imagefolder, root: {root}, image_size: 32, workers: 1}}")
    assert final["fidelity"]["n"] == 9


@pytest.mark.parametrize("layout", ["tiny_imagenet", "folders", "csv", "devkit"])
def test_cli_on_tiny_imagenet_and_imagenet_layouts(tmp_path, image_tools, layout):
    if layout == "tiny_imagenet":
        image_tools.make_tiny(tmp_path / "d")
        data = f"{{name: tiny_imagenet, root: {tmp_path / 'd'}, workers: 0}}"
        n_test = 9
    else:
        image_tools.make_imagenet(tmp_path / "d", val=layout)
        data = f"{{name: imagenet, root: {tmp_path / 'd'}, image_size: 32, workers: 0}}"
        n_test = 12
    final = _teacher_then_student(tmp_path, data)
    assert final["fidelity"]["n"] == n_test


def test_cli_skip_bad_lists_the_files_in_the_run(tmp_path, image_tools, capsys):
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=3, n_val=2, kinds={("train", "dog", 1): "truncated"})
    cfg = _config(tmp_path / "run.yaml", f"{{name: imagefolder, root: {root}, image_size: 16, workers: 0}}")
    assert main(["teacher", str(cfg), f"out_dir={tmp_path / 't'}", "optim.epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dog/img_1.jpg: not a readable image" in err and "data.skip_bad=true" in err
    with pytest.warns(UserWarning, match="skipped 1 unreadable file"):
        assert main(["teacher", str(cfg), f"out_dir={tmp_path / 't'}", "optim.epochs=1", "data.skip_bad=true"]) == 0
    listed = (tmp_path / "t" / "skipped_files.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].split("\t")[0].endswith("dog/img_1.jpg")


@pytest.mark.slow
def test_sigkill_then_resume_on_streamed_data_matches_the_uninterrupted_run(tmp_path, image_tools, run_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=7, n_val=3)
    epochs = 6
    cfg = _config(tmp_path / "run.yaml", f"{{name: imagefolder, root: {root}, image_size: 24, workers: 1}}")
    cmd = lambda out: [sys.executable, "-m", "kdlab", "teacher", str(cfg), f"out_dir={out}",  # noqa: E731
                       f"optim.epochs={epochs}", "optim.milestones=[4]"]
    full, part = tmp_path / "full", tmp_path / "part"
    subprocess.run(cmd(full), check=True, env=run_tools.env(), capture_output=True, timeout=600)
    run_tools.killed_after(cmd(part), part)
    resumed = subprocess.run(cmd(part), check=True, env=run_tools.env(), capture_output=True, text=True, timeout=600)
    assert "resumed from epoch" in resumed.stdout
    a, b = (json.loads((d / "final.json").read_text()) for d in (full, part))
    assert a["teacher"] == b["teacher"] and a["test"] == b["test"]
    assert run_tools.history(full) == run_tools.history(part)
    wa, wb = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_two_gloo_processes_equal_one_on_streamed_data(tmp_path, image_tools, run_tools, conv_no_bn_cli):
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=7, n_val=3)  # 21 samples: the last batch wraps
    torch.manual_seed(3)
    teacher = tmp_path / "teacher.safetensors"
    save_model(teacher, models.create("resnet8", 3), arch="resnet8", num_classes=3)
    cfg = _config(tmp_path / "run.yaml", f"{{name: imagefolder, root: {root}, image_size: 24, workers: 1}}")
    script = conv_no_bn_cli
    args = ["train", str(cfg), "student.arch=conv_no_bn", "method.name=kd", "method.args={temperature: 4.0}",
            f"teacher.checkpoint={teacher}", "optim.epochs=3", "optim.lr=0.2"]
    one = subprocess.run([sys.executable, str(script), *args, f"out_dir={tmp_path / 'one'}"], env=run_tools.env(),
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run([*launcher, str(script), *args, f"out_dir={tmp_path / 'two'}"], env=run_tools.env(),
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
    for r1, r2 in zip(run_tools.history(tmp_path / "one"), run_tools.history(tmp_path / "two"), strict=True):
        for k, v in r1["train"].items():
            assert r2["train"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    f1, f2 = (json.loads((tmp_path / d / "final.json").read_text())["fidelity"] for d in ("one", "two"))
    for k in ("student_acc", "teacher_acc", "agreement", "kl", "n"):
        assert f2[k] == pytest.approx(f1[k], rel=1e-4, abs=1e-6), k


def test_data_workers_do_not_change_the_run_but_image_size_does(tmp_path, image_tools, capsys):
    root = image_tools.make_imagefolder(tmp_path / "f", n_train=2, n_val=1)
    cfg = _config(tmp_path / "run.yaml", f"{{name: imagefolder, root: {root}, image_size: 16, workers: 0}}")
    out = f"out_dir={tmp_path / 't'}"
    assert main(["teacher", str(cfg), out, "optim.epochs=1"]) == 0
    assert main(["teacher", str(cfg), out, "optim.epochs=1", "data.workers=1"]) == 0  # the same run: left as it is
    assert "holds a finished run" in capsys.readouterr().out
    assert main(["teacher", str(cfg), out, "optim.epochs=1", "data.image_size=24"]) == 2  # another run: refused
    assert "data.image_size" in capsys.readouterr().err
