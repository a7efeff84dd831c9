"""kdlab.builder: the one assembler behind `kdlab teacher`, `kdlab train` and `kdlab.fit`."""

import json

import pytest
import torch
from safetensors.torch import load_file

import kdlab
from kdlab import builder, models
from kdlab.cli import main
from kdlab.config import ConfigError
from kdlab.data import load_dataset
from kdlab.engine.checkpoint import CheckpointError
from kdlab.models import save_model

RUN = ["data.train_subset=256", "data.test_subset=64", "optim.epochs=2", "optim.milestones=[]", "run.progress=false",
       "run.tensorboard=false", "student.arch=mnist1d_mlp", "teacher.arch=mnist1d_cnn_small", "method.args.warmup=1"]


@pytest.fixture(scope="module")
def teacher(random_teacher):
    return random_teacher


def test_cli_and_fit_train_the_same_student(tmp_path, teacher):
    """The CLI and the Python API assemble through the same code: same data, seed, method and hyperparameters give
    bit-identical weights."""
    # the CLI serves the teacher from its exact logit cache (float32 storage), fit runs the live teacher
    assert main(["train", "mnist1d/dkd", *RUN, f"teacher.checkpoint={teacher}", "teacher.cache.dtype=float32",
                 f"out_dir={tmp_path / 'cli'}"]) == 0
    cli = load_file(tmp_path / "cli" / "model.safetensors")
    cfg = builder.load_config("mnist1d/dkd", [*RUN, f"teacher.checkpoint={teacher}"])
    splits = load_dataset("mnist1d").subset(256, 64)
    torch.manual_seed(cfg.seed)  # the CLI initialises the student from the seed alone
    student = models.create("mnist1d_mlp", 10)
    o = cfg.optim
    res = kdlab.fit(student, models.load_model(teacher), (splits.x_train, splits.y_train),
                    eval=(splits.x_test, splits.y_test), method="dkd", method_args=cfg.method.args, epochs=o.epochs,
                    batch_size=o.batch_size, lr=o.lr, seed=cfg.seed, momentum=o.momentum,
                    weight_decay=o.weight_decay, milestones=o.milestones, gamma=o.gamma,
                    augment=splits.train_augment)
    api = res.student.state_dict()
    assert cli.keys() == api.keys()
    for k in cli:
        assert torch.equal(cli[k], api[k]), k


def test_train_refuses_a_changed_config_before_writing_anything(tmp_path, teacher, capsys):
    out = tmp_path / "run"
    args = ["train", "mnist1d/dkd", *RUN, f"teacher.checkpoint={teacher}", f"out_dir={out}"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(args + ["method.args.beta=2.0"]) == 2
    err = capsys.readouterr().err
    assert "method.args.beta (8.0 -> 2.0)" in err and err.count("\n") == 1  # one line, names the key
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # config.yaml kept


def test_a_replaced_teacher_is_refused_on_resume(tmp_path, teacher):
    """Same config, same teacher path, other weights in the file (replaced between a kill and the rerun)."""
    out, path = tmp_path / "run", tmp_path / "teacher.safetensors"
    path.write_bytes(teacher.read_bytes())
    cfg = builder.load_config("mnist1d/dkd", [*RUN, f"teacher.checkpoint={path}", f"out_dir={out}"])
    builder.distil(cfg)
    torch.manual_seed(1)
    save_model(path, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    with pytest.raises(CheckpointError, match="teacher.weights_sha256"):
        builder.distil(cfg)


def test_a_finished_run_is_left_as_it_is(tmp_path, teacher, capsys):
    out = tmp_path / "run"
    args = ["train", "mnist1d/dkd", *RUN, f"teacher.checkpoint={teacher}", f"out_dir={out}"]
    assert main(args) == 0
    final = (out / "final.json").read_bytes()
    assert main(args) == 0
    assert "holds a finished run" in capsys.readouterr().out
    assert (out / "final.json").read_bytes() == final
    assert json.loads(final)["resumed_from_epoch"] is None


def test_method_args_are_validated_by_the_builder_not_the_config_layer():
    with pytest.raises(ConfigError, match=r"method\.args\.temprature"):
        builder.load_config(None, ["method.name=kd", "method.args.temprature=3"])
    cfg = builder.load_config(None, ["method.name=kd"])
    assert cfg.method.args["temperature"] == 4.0  # defaults filled in
    from kdlab.config import load_config

    assert load_config(None, ["method.name=kd"]).method.args == {}  # the config layer knows no methods


def test_teacher_run_final_json_names_the_trained_network_teacher(tmp_path):
    out = tmp_path / "t"
    assert main(["teacher", "mnist1d/teacher", "data.train_subset=128", "data.test_subset=64", "optim.epochs=1",
                 "run.progress=false", "run.tensorboard=false", f"out_dir={out}"]) == 0
    final = json.loads((out / "final.json").read_text())
    assert final["role"] == "teacher" and "student" not in final
    assert final["teacher"]["arch"] == "mnist1d_cnn" and final["test"]["student_acc"] == final["teacher"]["last_acc"]


def _count_test_set_passes(monkeypatch, size):
    """Forward calls of any teacher network on a batch of ``size`` inputs (the test set below is one such batch)."""
    calls = []
    original = torch.nn.Module.__call__

    def spy(module, *args, **kwargs):
        if getattr(module, "_is_test_teacher", False) and args and args[0].shape[0] == size:
            calls.append(1)
        return original(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", spy)
    return calls


def test_the_teacher_runs_over_the_test_set_once_per_run_and_is_reused_across_seeds(tmp_path, teacher, monkeypatch):
    from kdlab import models as kdlab_models

    load = kdlab_models.load_model

    def tagged(*a, **k):
        m = load(*a, **k)
        m._is_test_teacher = True
        return m

    monkeypatch.setattr(kdlab_models, "load_model", tagged)
    calls = _count_test_set_passes(monkeypatch, 50)  # 50 test samples, train batches of 64: only test passes count
    finals = []
    for seed in (0, 1):
        cfg = builder.load_config("mnist1d/dkd", [*RUN, "data.test_subset=50", f"teacher.checkpoint={teacher}",
                                                f"seed={seed}", f"out_dir={tmp_path / str(seed)}"])
        finals.append(builder.distil(cfg))
        assert len(calls) == 1, f"seed {seed}: {len(calls)} passes over the test set"  # seed 1 reuses seed 0's
    assert [f["teacher"]["eval_logits"] for f in finals] == ["computed", "reused"]
    assert finals[0]["teacher"]["acc"] == finals[1]["teacher"]["acc"]
    assert finals[0]["fidelity"]["teacher_acc"] == finals[0]["teacher"]["acc"]


def test_cache_fill_auto_precomputes_when_the_run_draws_most_views(tmp_path, teacher, capsys):
    assert builder.expected_view_fraction(162, 240) == pytest.approx(0.773, abs=1e-3)  # CIFAR's 162 views
    cfg = builder.load_config("mnist1d/dkd", [*RUN, f"teacher.checkpoint={teacher}", f"out_dir={tmp_path / 'a'}"])
    builder.distil(cfg)  # 9 shifts, 2 epochs: 1 − (8/9)² = 21% of the views → on the fly
    out = capsys.readouterr().out
    assert "teacher cache: 256 samples x 9 views x 10 classes" in out and "fill on the fly (this run would draw 21%" in out
    cfg = builder.load_config("mnist1d/dkd", [*RUN, "optim.epochs=20", f"teacher.checkpoint={teacher}",
                                            f"out_dir={tmp_path / 'b'}"])
    builder.distil(cfg)
    assert "precompute (this run would draw 91% of the views)" in capsys.readouterr().out


def test_cache_fill_probe_runs_only_under_auto_and_is_bounded(tmp_path, teacher, capsys, monkeypatch):
    """fill=lazy/precompute decide without timing the teacher; auto times at most 1% of the run's on-the-fly teacher
    forwards (256 samples x 2 epochs: 5 inputs), and the probe changes no result."""
    from kdlab.teachers.cache import CachedTeacher

    probes = []
    timed = CachedTeacher.seconds_per_view
    monkeypatch.setattr(CachedTeacher, "seconds_per_view", lambda self, probe=256: probes.append(probe) or timed(
        self, probe))
    finals = {}
    for fill in ("lazy", "precompute", "auto"):
        cfg = builder.load_config("mnist1d/dkd", [*RUN, f"teacher.checkpoint={teacher}", f"teacher.cache.fill={fill}",
                                                f"out_dir={tmp_path / fill}"])
        finals[fill] = builder.distil(cfg)
        out = capsys.readouterr().out
        assert ("ms each" in out) == (fill == "auto"), out
        if fill != "auto":
            assert f"teacher.cache.fill={fill})" in out
    assert probes == [5]
    assert finals["lazy"]["fidelity"] == finals["auto"]["fidelity"]


def test_final_json_records_the_runs_overhead(tmp_path, teacher):
    assert main(["train", "mnist1d/dkd", *RUN, f"teacher.checkpoint={teacher}", f"out_dir={tmp_path}"]) == 0
    final = json.loads((tmp_path / "final.json").read_text())
    overhead = final["overhead"]
    assert list(overhead) == ["startup_s", "data_s", "teacher_s", "epochs_s", "loop_other_s", "report_s"]
    assert all(v >= 0 for v in overhead.values()), overhead
    epochs = sum(json.loads(line)["epoch_time_s"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines())
    assert overhead["epochs_s"] == pytest.approx(epochs, abs=1e-3)
    assert overhead["epochs_s"] + overhead["loop_other_s"] == pytest.approx(final["wall_time_s"], abs=1e-3)


def test_student_checkpoint_is_a_warm_start(tmp_path, teacher, monkeypatch, capsys):
    """Failed before: student.checkpoint validated and was ignored (a random student). Now the student starts from
    the file's weights exactly, the file is part of the run's identity, and a file of another architecture is a
    one-line error naming the key."""
    from kdlab.builder import run as run_module

    torch.manual_seed(5)
    warm = models.create("mnist1d_mlp", 10)
    path = tmp_path / "warm.safetensors"
    save_model(path, warm, arch="mnist1d_mlp", num_classes=10)
    at_step_0 = {}
    real = run_module.train_loop

    def spy(method, *args, **kwargs):
        at_step_0.update({k: v.clone() for k, v in method.student.state_dict().items()})
        return real(method, *args, **kwargs)

    monkeypatch.setattr(run_module, "train_loop", spy)
    out = tmp_path / "run"
    args = ["train", "mnist1d/dkd", *RUN, f"teacher.checkpoint={teacher}", f"out_dir={out}"]
    assert main([*args, f"student.checkpoint={path}"]) == 0
    assert at_step_0.keys() == warm.state_dict().keys()
    assert all(torch.equal(at_step_0[k], v) for k, v in warm.state_dict().items())
    torch.manual_seed(0)
    assert not all(torch.equal(at_step_0[k], v) for k, v in models.create("mnist1d_mlp", 10).state_dict().items())
    identity = json.loads((out / "plan.json").read_text())["identity"]
    assert identity["student.checkpoint"] == str(path) and len(identity["student.weights_sha256"]) == 64
    capsys.readouterr()
    torch.manual_seed(6)  # other weights under the same name: refused on resume, like a replaced teacher
    save_model(path, models.create("mnist1d_mlp", 10), arch="mnist1d_mlp", num_classes=10)
    assert main([*args, f"student.checkpoint={path}"]) == 2
    assert "student.weights_sha256" in capsys.readouterr().err
    assert main([*args[:-1], f"out_dir={tmp_path / 'other'}", f"student.checkpoint={teacher}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "student.checkpoint" in err and "mnist1d_cnn_small" in err
