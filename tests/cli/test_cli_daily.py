"""The command line as a new user meets it: listings, help, `kdlab eval` options, device errors, extending a run,
the run directory's curves.png (drawn on request), and `kdlab export`."""

import argparse
import json
import re

import pytest
import torch

from kdlab import models
from kdlab.cli import build_parser, main
from kdlab.models import save_model
from kdlab.models.export import max_logit_difference

COMMON = ["data.train_subset=128", "data.test_subset=64", "optim.milestones=[]", "run.progress=false",
          "run.tensorboard=false", "student.arch=mnist1d_mlp", "teacher.arch=mnist1d_cnn_small"]


@pytest.fixture(scope="module")
def teacher(random_teacher):
    return random_teacher


@pytest.fixture(scope="module")
def run(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "kd"
    assert main(["train", "mnist1d/kd", *COMMON, "optim.epochs=2", f"teacher.checkpoint={teacher}",
                 f"out_dir={out}"]) == 0
    return out


def _options(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {o}", h) for o, h in _options(sub))
        elif not isinstance(action, argparse._HelpAction):
            yield "/".join(action.option_strings) or action.dest, action.help


def test_every_option_has_a_help_text():
    missing = [name for name, text in _options(build_parser()) if not text]
    assert missing == []


def test_recipes_long_shows_each_recipes_opening_comment(capsys):
    assert main(["recipes", "--long"]) == 0
    lines = capsys.readouterr().out.splitlines()
    kd = next(line for line in lines if line.startswith("mnist1d/kd "))
    assert "MNIST-1D student recipe for `kd`" in kd and "the paper's CIFAR-100 defaults" in kd and "#" not in kd
    dkd = next(line for line in lines if line.startswith("cifar100/resnet32x4-resnet8x4/dkd "))
    assert "Published (docs/reference/methods.md §3)" in dkd


def test_methods_lists_one_plain_line_per_method(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and "L = " not in out
    assert any(line.startswith("kd_ls ") and "logit standardisation" in line for line in out.splitlines())


def test_cuda_on_a_cpu_only_build_is_one_line(run, teacher, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    assert main(["train", "mnist1d/kd", *COMMON, "optim.epochs=1", f"teacher.checkpoint={teacher}",
                 f"out_dir={tmp_path / 'o'}", "run.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdlab: error: run.device='cuda' but this PyTorch") and err.count("\n") == 1
    assert main(["eval", "--student", str(run / "model.safetensors"), "--device", "cuda"]) == 2
    assert capsys.readouterr().err.startswith("kdlab: error: --device='cuda' but this PyTorch")


def test_eval_prints_a_summary_and_writes_json_with_arch_and_device(run, teacher, tmp_path, capsys):
    anon = tmp_path / "anon.safetensors"  # weights without an architecture (as kdlab.fit writes them)
    save_model(anon, models.load_model(run / "model.safetensors"), num_classes=10)
    assert main(["eval", "--student", str(anon), "--arch", "mnist1d_mlp", "--teacher", str(teacher),
                 "--device", "cpu", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert f"student  accuracy {report['student_acc']:6.2f}%" in out and "agreement" in out
    assert main(["eval", "--student", str(anon)]) == 2
    assert "--arch" in capsys.readouterr().err


def test_a_finished_run_says_how_to_extend_it_and_more_epochs_extend_it(run, teacher, capsys):
    args = ["train", "mnist1d/kd", *COMMON, f"teacher.checkpoint={teacher}", f"out_dir={run}"]
    assert main(args + ["optim.epochs=2"]) == 0
    assert "rerun with a larger optim.epochs alone to extend it" in capsys.readouterr().out
    assert main(args + ["optim.epochs=3"]) == 0
    assert "resumed from epoch 3" in capsys.readouterr().out
    final = json.loads((run / "final.json").read_text())
    assert final["epochs"] == 3 and [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").open()] == [1, 2, 3]


def test_curves_png_is_drawn_on_request_by_kdlab_plot_or_run_curves(run, teacher, tmp_path, capsys):
    assert not (run / "curves.png").exists()  # the matplotlib import and the drawing are not paid by every run
    assert main(["plot", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run / 'curves.png'}"
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    (run / "curves.png").unlink()
    out = tmp_path / "curves_run"
    assert main(["train", "mnist1d/kd", *COMMON, "optim.epochs=1", f"teacher.checkpoint={teacher}", "run.curves=true",
                 f"out_dir={out}"]) == 0
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # not part of the run's identity: the same run without it is the finished run, not another one
    assert main(["train", "mnist1d/kd", *COMMON, "optim.epochs=1", f"teacher.checkpoint={teacher}",
                 f"out_dir={out}"]) == 0
    assert "holds a finished run" in capsys.readouterr().out


def test_kdlab_plot_of_a_directory_without_a_run_says_so_in_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'metrics.jsonl'} does not exist" in err and "Traceback" not in err


def test_one_plotting_module_draws_every_figure():
    import kdlab.demo
    import kdlab.fidelity.experiments
    import kdlab.sweep.table
    from kdlab import plots
    from kdlab.builder import run

    assert kdlab.demo.accuracy_vs_agreement is plots.accuracy_vs_agreement
    assert kdlab.sweep.table.accuracy_vs_agreement is plots.accuracy_vs_agreement
    assert kdlab.fidelity.experiments.experiment_figures is plots.experiment_figures
    assert run.run_curves is plots.run_curves


def test_export_torchscript_gives_the_same_logits(run, capsys):
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert "max |logit difference| from PyTorch" in capsys.readouterr().out
    net = models.load_model(run / "model.safetensors")
    x = torch.randn(5, 1, 40)
    assert max_logit_difference(run / "model.pt", "torchscript", net, x) < 1e-5
    loaded = torch.jit.load(str(run / "model.pt"))
    torch.testing.assert_close(loaded(x), net.eval()(x))


def test_export_onnx_gives_the_same_logits(run, tmp_path, capsys):
    pytest.importorskip("onnxscript", reason="ONNX export needs the onnx extra (pip install -e '.[test]' has it)")
    pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime (pip install -e '.[test]' has it)")
    out = tmp_path / "net.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    assert f"wrote {out} (onnx" in capsys.readouterr().out
    net = models.load_model(run / "model.safetensors")
    assert max_logit_difference(out, "onnx", net, torch.randn(7, 1, 40)) < 1e-4  # any batch size


def test_export_needs_a_shape_for_a_weights_file_without_a_card(run, tmp_path, capsys):
    lone = tmp_path / "lone.safetensors"
    save_model(lone, models.load_model(run / "model.safetensors"), arch="mnist1d_mlp", num_classes=10)  # no card
    assert main(["export", str(lone)]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["export", str(lone), "--input-shape", "1,40"]) == 0


def test_a_runs_weights_file_alone_exports_from_its_own_card(run, tmp_path, capsys):
    """The card travels in the weights' metadata: a model.safetensors copied out of its run still exports."""
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((run / "model.safetensors").read_bytes())
    assert main(["export", str(lone)]) == 0
    assert "input float32 [N, 1, 40]" in capsys.readouterr().out


def test_the_cli_adapts_the_same_defaults_and_records_them(teacher, tmp_path, caplog):
    """A user's config that leaves TTM's β at its CIFAR-100 default: on MNIST-1D's 10 classes it is 10, logged (on
    stderr outside pytest), and recorded in config.yaml (the value used) and final.json (what changed and why)."""
    cfg = tmp_path / "ttm.yaml"
    cfg.write_text("data: {name: mnist1d}\nmethod: {name: ttm}\n", encoding="utf-8")
    out = tmp_path / "run"
    with caplog.at_level("WARNING", logger="kdlab"):
        assert main(["train", str(cfg), *COMMON, "optim.epochs=1", f"teacher.checkpoint={teacher}",
                     f"out_dir={out}"]) == 0
    assert "kdlab: method.args.beta = 10.0 instead of the default 100.0" in caplog.text
    final = json.loads((out / "final.json").read_text())
    assert [(a["key"], a["value"]) for a in final["adapted_defaults"]] == [("beta", 10.0)]
    assert final["config"]["method"]["args"]["beta"] == 10.0


def test_help_and_readme_give_the_same_demo_time():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    demo = next(a for a in build_parser()._subparsers._group_actions[0].choices["demo"]._actions
                if "--quick" in a.option_strings)
    # one measured figure, quoted by the README (twice) and by `kdlab demo --help`
    quoted = set(re.findall(r"`kdlab demo --quick`: (\d+) s", readme))
    assert len(quoted) == 1, quoted
    assert re.search(r"about (\d+) s", demo.help).group(1) == quoted.pop(), demo.help
