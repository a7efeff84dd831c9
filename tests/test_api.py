import json

import pytest
import torch
import yaml
from torch import nn

import kdlab
from kdlab.config import ConfigError
from kdlab.data import Shift1D
from kdlab.engine.checkpoint import CheckpointError


def _data(n=256, seed=0):
    w = torch.randn(8, 4, generator=torch.Generator().manual_seed(99))  # one labelling rule for every split
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    return x, (x @ w).argmax(1)


def _mlp(seed, hidden=32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4))


def test_fit_on_tensors_distils_and_reports(tmp_path):
    train, test = _data(512, 0), _data(256, 1)
    teacher = kdlab.fit(_mlp(0, 64), None, train, eval=test, method="ce", epochs=15, batch_size=32, lr=0.1).student
    res = kdlab.fit(_mlp(1), teacher, train, eval=test, method="kd", epochs=3, batch_size=32, lr=0.05,
                    out_dir=tmp_path / "run")
    assert len(res.history) == 3 and [h["epoch"] for h in res.history] == [1, 2, 3]
    for key in ("agreement", "kl", "student_acc", "teacher_acc", "student_nll", "student_ece", "teacher_ece"):
        assert key in res.report
    assert res.report["teacher_acc"] > 80
    assert res.report["agreement"] > 50
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_fit_with_an_ensemble_teacher_and_dataset():
    train = torch.utils.data.TensorDataset(*_data(128, 0))
    res = kdlab.fit(_mlp(1), [_mlp(2), _mlp(3)], train, method="dkd", method_args={"warmup": 1}, epochs=1,
                    batch_size=32)
    assert 0 <= res.report["agreement"] <= 100


def test_fit_rejects_class_mismatch():
    with pytest.raises(ValueError, match="teacher has 5 classes but the student has 4"):
        kdlab.fit(_mlp(1), nn.Linear(8, 5), _data(64), method="kd", epochs=1)


def test_fit_rejects_labels_beyond_the_student_outputs():
    x, y = _data(64)
    y[0] = 7
    with pytest.raises(ValueError, match="labels go up to 7"):
        kdlab.fit(_mlp(1), _mlp(2), (x, y), method="kd", epochs=1)


# ------------------------------------------------------------------------------------------------------------------
# the resume guard: a rerun on the same out_dir resumes only when every argument that changes training is the same
# ------------------------------------------------------------------------------------------------------------------
def _fit_args(**change):
    args = dict(student=_mlp(1), teacher=_mlp(2, 64), train=_data(96, 0), eval=_data(32, 1), method="dkd",
                method_args={"beta": 8.0, "warmup": 1}, epochs=2, batch_size=32, lr=0.05, seed=0)
    args.update(change)
    return args


def _first_run(tmp_path):
    out = tmp_path / "run"
    first = kdlab.fit(**_fit_args(), out_dir=out)
    return out, first


CHANGES = {  # one per argument family
    "method_args": dict(method_args={"beta": 0.5, "warmup": 1}),
    "method": dict(method="kd", method_args={}),
    "momentum": dict(momentum=0.5),
    "weight_decay": dict(weight_decay=0.0),
    "lr": dict(lr=0.01),
    "schedule": dict(milestones=(1,), gamma=0.5),
    "schedule_kind": dict(schedule="cosine"),
    "lr_warmup": dict(warmup_epochs=1),
    "optimizer": dict(optimizer="adamw"),
    "batch_size": dict(batch_size=16),
    "seed": dict(seed=1),
    "train_data": dict(train=_data(96, 5)),
    "eval_data": dict(eval=_data(32, 6)),
    "student_architecture": dict(student=_mlp(1, hidden=16)),
    "teacher_weights": dict(teacher=_mlp(3, 64)),
}


@pytest.mark.parametrize("family", sorted(CHANGES))
def test_fit_rerun_with_a_changed_argument_is_refused(tmp_path, family):
    out, first = _first_run(tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match="other settings"):
        kdlab.fit(**_fit_args(**CHANGES[family]), out_dir=out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing on disk changed


def test_fit_refusal_names_what_differs(tmp_path):
    out, _ = _first_run(tmp_path)
    with pytest.raises(CheckpointError, match=r"method\.args\.beta \(8\.0 -> 0\.5\)"):
        kdlab.fit(**_fit_args(method_args={"beta": 0.5, "warmup": 1}), out_dir=out)


def test_fit_rerun_of_the_same_run_trains_nothing_and_returns_the_same_student(tmp_path):
    out, first = _first_run(tmp_path)
    again = kdlab.fit(**_fit_args(), out_dir=out)  # a fresh, differently initialised student object is fine
    assert again.history == first.history
    for a, b in zip(first.student.state_dict().values(), again.student.state_dict().values()):
        assert torch.equal(a, b)
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "final.json", "metrics.jsonl", "model.safetensors"}


def test_fit_rerun_with_another_augmentation_is_refused(tmp_path):
    x, y = _data(96, 0)
    train = (x.unsqueeze(1), y)  # [N, 1, 8] signals, so a 1-D shift applies
    net = lambda s: nn.Sequential(nn.Flatten(), _mlp(s))  # noqa: E731
    args = dict(train=train, eval=None, method="kd", epochs=1, batch_size=32)
    kdlab.fit(net(1), net(2), **args, augment=Shift1D(max_shift=1), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="data.augment"):
        kdlab.fit(net(1), net(2), **args, augment=Shift1D(max_shift=2), out_dir=tmp_path)


class _Jittered(torch.utils.data.Dataset):
    """Items with a random transform in __getitem__ (noise from torch's global generator); counts its reads."""

    def __init__(self, x, y):
        self.x, self.y, self.calls = x, y, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.calls += 1
        return self.x[i] + 0.1 * torch.randn(self.x.shape[1:]), int(self.y[i])


def test_fit_reads_a_dataset_every_epoch_with_fresh_random_transforms(monkeypatch):
    """Issue 14: a Dataset's __getitem__ runs every epoch (not once), its random draws differ between epochs, and
    they are a pure function of (seed, epoch, index): the same run with worker processes gives the same student."""
    from kdlab.data import stream

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 12, generator=g), torch.arange(40) % 2
    seen = []
    real = stream.StreamLoader.__iter__

    def spy(self):
        for b in real(self):
            seen.append((self.epoch, b.index.clone(), b.x.clone()))
            yield b

    monkeypatch.setattr(stream.StreamLoader, "__iter__", spy)
    data = _Jittered(x, y)
    student = lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 2))  # noqa: E731
    torch.manual_seed(0)
    a = kdlab.fit(student(), None, data, method="ce", epochs=3, batch_size=8, lr=0.1)
    # one identity pass, every epoch (not one read frozen for all epochs), and the final report (no eval set given)
    assert data.calls == 40 + 3 * 40 + 40
    first = {int(i): x for e, idx, xb in seen if e == 1 for i, x in zip(idx, xb)}
    second = {int(i): x for e, idx, xb in seen if e == 2 for i, x in zip(idx, xb)}
    assert not torch.allclose(first[0], second[0])  # a fresh draw per epoch
    assert torch.allclose(first[0], x[0], atol=0.5)  # of the same item
    torch.manual_seed(0)
    b = kdlab.fit(student(), None, _Jittered(x, y), method="ce", epochs=3, batch_size=8, lr=0.1, workers=2)
    for k, v in a.student.state_dict().items():
        assert torch.equal(v, b.student.state_dict()[k])  # workers do not change what is read
    with pytest.raises(ValueError, match="put the augmentation in its __getitem__"):
        kdlab.fit(student(), None, _Jittered(x, y), method="ce", epochs=1, augment=Shift1D(2))


# ------------------------------------------------------------------------------------------------------------------
# a new user's defaults and errors (issue 14)
# ------------------------------------------------------------------------------------------------------------------
def test_fit_defaults_to_kd():
    import inspect

    assert inspect.signature(kdlab.fit).parameters["method"].default == "kd"
    res = kdlab.fit(_mlp(1), _mlp(2), _data(64), epochs=1)
    assert set(res.history[0]["train"]) >= {"loss_ce", "loss_kd"} and res.adapted == []


def test_fit_adapts_cifar_defaults_to_the_data_and_says_so(tmp_path, caplog):
    """TTM's β = 100 is CIFAR-100's (100 classes): on 4 classes it is scaled to 4, logged, and in final.json;
    a β the user gives is kept."""
    with caplog.at_level("WARNING", logger="kdlab"):
        res = kdlab.fit(_mlp(1), _mlp(2), _data(64), method="ttm", epochs=1, out_dir=tmp_path / "a")
    assert res.adapted == [{"key": "beta", "default": 100.0, "value": 4.0, "why": res.adapted[0]["why"]}]
    assert "method_args['beta'] = 4.0 instead of the default 100.0" in caplog.text
    final = json.loads((tmp_path / "a" / "final.json").read_text())
    assert final["adapted_defaults"] == res.adapted
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["kdlab.fit"]["method.args.beta"] == 4.0
    kept = kdlab.fit(_mlp(1), _mlp(2), _data(64), method="ttm", method_args={"beta": 100.0}, epochs=1)
    assert kept.adapted == []


def test_fit_dkd_default_warmup_is_scaled_to_the_run():
    res = kdlab.fit(_mlp(1), _mlp(2), _data(64), method="dkd", epochs=24, batch_size=64)
    assert res.adapted[0]["key"] == "warmup" and res.adapted[0]["value"] == 2  # 20 of 240 epochs → 2 of 24
    assert [h["train"]["warmup"] for h in res.history[:3]] == [0.5, 1.0, 1.0]  # the warm-up finishes


def test_fit_errors_speak_the_api():
    with pytest.raises(ConfigError, match=r"method_args\['temprature'\]: not an argument of method 'kd' \(did you "
                                          r"mean temperature\?\); valid: temperature, ce_weight, kd_weight"):
        kdlab.fit(_mlp(1), _mlp(2), _data(64), method_args={"temprature": 2.0}, epochs=1)
    with pytest.raises(ConfigError, match=r"kdlab\.fit: epochs: Input should be greater than or equal to 1"):
        kdlab.fit(_mlp(1), _mlp(2), _data(64), epochs=0)
    with pytest.raises(ValueError, match=r"method 'kd' needs a teacher; set teacher \(a module"):
        kdlab.fit(_mlp(1), None, _data(64), epochs=1)
    with pytest.raises(ValueError, match=r"cakd: method_args\['k'\]=9 exceeds the number of classes \(4\)"):
        kdlab.fit(_mlp(1), _mlp(2), _data(64), method="cakd", method_args={"k": 9}, epochs=1)
    with pytest.raises(ValueError, match=r"set method_args\['augment'\] to none for other inputs") as info:
        kdlab.fit(_mlp(1), _mlp(2), _data(64), method="r2kd", method_args={"augment": "cutmix"}, epochs=1)
    assert "method.args" not in str(info.value)  # given: refused; left at the default it is fitted (none)
    adapted = kdlab.fit(_mlp(1), _mlp(2), _data(64), method="r2kd", epochs=1).adapted
    assert {a["key"]: a["value"] for a in adapted}["augment"] == "none"
    with pytest.raises(ValueError, match=r"the student \(Sequential\) has no forward_features, so name the module "
                                         r"whose output is its feature map in method_args\['student_stage'\]"):
        kdlab.fit(_mlp(1), _mlp(2), _data(64), method="cakd", method_args={"feature": True}, epochs=1)


def test_fit_on_a_cpu_only_build_says_cuda_is_missing_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    with pytest.raises(ValueError, match=r"^device='cuda' but this PyTorch .* is a CPU-only build; use cpu") as info:
        kdlab.fit(_mlp(1), _mlp(2), _data(64), epochs=1, device="cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"device='gpu' is not a device"):
        kdlab.fit(_mlp(1), _mlp(2), _data(64), epochs=1, device="gpu")


def test_kd_ls_is_kd_with_logit_standardisation_and_its_published_defaults():
    from kdlab import methods

    hp = methods.get("kd_ls").Params()
    assert (hp.temperature, hp.kd_weight, hp.ce_weight, hp.logit_standardization) == (2.0, 9.0, 0.1, True)
    a = kdlab.fit(_mlp(1), _mlp(2), _data(64), method="kd_ls", epochs=1)
    b = kdlab.fit(_mlp(1), _mlp(2), _data(64), method="kd", epochs=1, method_args=hp.model_dump())
    assert a.history[0]["train"] == b.history[0]["train"]


def test_fit_leaves_the_teacher_as_found_and_returns_the_student_in_eval_mode():
    teacher = _mlp(2)
    teacher.train()
    teacher[0].requires_grad_(False)  # a partly frozen teacher: each flag comes back as it was
    before = [p.requires_grad for p in teacher.parameters()]
    res = kdlab.fit(_mlp(1), teacher, _data(64), epochs=1)
    assert teacher.training and all(m.training for m in teacher.modules())
    assert [p.requires_grad for p in teacher.parameters()] == before == [False, False, True, True]
    assert not res.student.training and not any(m.training for m in res.student.modules())


def test_fit_takes_numpy_pairs_and_fidelity_report_takes_the_same():
    x, y = _data(64)
    xn, yn = x.double().numpy(), y.numpy()  # float64, as scikit-learn gives them
    res = kdlab.fit(_mlp(1), _mlp(2), (xn, yn), eval=(xn, yn), epochs=1)
    report = kdlab.fidelity_report(_mlp(2), res.student, (xn, yn))
    assert report["n"] == 64 and report["student_acc"] == pytest.approx(res.report["student_acc"])


def test_fit_optimisers_and_schedules():
    args = dict(student=_mlp(1), teacher=_mlp(2), train=_data(64), epochs=4, lr=0.1)
    warm = kdlab.fit(**args, schedule="cosine", warmup_epochs=2)
    assert [h["lr"] for h in warm.history] == pytest.approx([0.05, 0.1, 0.1, 0.05])  # warm-up, then cosine
    adamw = kdlab.fit(**{**args, "student": _mlp(1), "lr": 1e-3}, optimizer="adamw")
    sgd = kdlab.fit(**{**args, "student": _mlp(1), "lr": 1e-3})
    assert adamw.history[-1]["train"]["loss"] != sgd.history[-1]["train"]["loss"]
    with pytest.raises(ConfigError, match="nesterov applies to SGD only"):
        kdlab.fit(**args, optimizer="adamw", nesterov=True)


def test_a_finished_run_is_extended_by_more_epochs_exactly(tmp_path):
    """Step schedule: the first epochs' lr does not depend on the length, so 2 epochs then 4 on the same out_dir
    equal 4 epochs at once, bit for bit."""
    common = dict(teacher=_mlp(2, 64), train=_data(96, 0), eval=_data(32, 1), method="kd", milestones=(3,))
    kdlab.fit(_mlp(1), **common, epochs=2, out_dir=tmp_path / "ext")
    extended = kdlab.fit(_mlp(1), **common, epochs=4, out_dir=tmp_path / "ext")
    whole = kdlab.fit(_mlp(1), **common, epochs=4)
    assert [h["epoch"] for h in extended.history] == [1, 2, 3, 4]
    for a, b in zip(extended.student.state_dict().values(), whole.student.state_dict().values()):
        assert torch.equal(a, b)
    assert json.loads((tmp_path / "ext" / "final.json").read_text())["resumed_from_epoch"] == 3


def test_a_cosine_run_cannot_be_extended_and_the_refusal_says_why(tmp_path):
    common = dict(teacher=_mlp(2, 64), train=_data(96, 0), method="kd", schedule="cosine")
    kdlab.fit(_mlp(1), **common, epochs=2, out_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"optim\.epochs \(2 -> 3\) differ \(the cosine schedule's learning "
                                              r"rate depends on the number of epochs"):
        kdlab.fit(_mlp(1), **common, epochs=3, out_dir=tmp_path)


def test_load_model_is_public(tmp_path):
    from kdlab import models

    net = models.create("mnist1d_mlp", 10)
    models.save_model(tmp_path / "m.safetensors", net, arch="mnist1d_mlp", num_classes=10)
    loaded = kdlab.load_model(tmp_path / "m.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    models.save_model(tmp_path / "anon.safetensors", net, num_classes=10)
    with pytest.raises(CheckpointError, match=r"records no architecture.*kdlab\.load_model\(path, arch=\.\.\.\)"):
        kdlab.load_model(tmp_path / "anon.safetensors")
    assert kdlab.load_model(tmp_path / "anon.safetensors", arch="mnist1d_mlp") is not None


def test_fit_without_a_teacher_reports_the_student_keys():
    res = kdlab.fit(_mlp(1), None, _data(64), method="ce", epochs=1)
    assert {"student_acc", "student_nll", "student_ece", "n"} == set(res.report)


class _Counting(nn.Module):
    """A teacher that records the first feature of every input row it sees."""

    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, []

    def forward(self, x):
        self.rows.append(x[:, 0].detach().clone())
        return self.net(x)


def test_fit_runs_the_teacher_over_the_test_set_once():
    """Failed before: the final report ran the teacher over `eval` a second time (the loop had already stored its
    test logits). The report is now the loop's last evaluation, and equals a fresh fidelity_report."""
    train, (xe, ye) = _data(256, 0), _data(64, 1)
    xe = xe.clone()
    xe[:, 0] = 1000.0 + torch.arange(64)  # eval rows carry a mark no training row has
    teacher = _Counting(_mlp(0))
    res = kdlab.fit(_mlp(1), teacher, train, eval=(xe, ye), method="kd", epochs=4, batch_size=32)
    seen = torch.cat(teacher.rows)
    assert int((seen >= 1000).sum()) == 64, "each test sample exactly once per fit"
    assert int((seen < 1000).sum()) >= 4 * 256  # training batches (and the class probe) are not counted
    fresh = kdlab.fidelity_report(_mlp(0), res.student, (xe, ye), temperature=4.0)
    for key, value in fresh.items():
        assert res.report[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


FEATURE_ARGS = {"fitnet": {"student_stage": 0, "teacher_stage": 2}, "pkt": {}, "rkd": {}, "sp": {},
                **{m: {"student_stages": [0, 1], "teacher_stages": [2, 3]} for m in ("at", "nst", "kdsvd", "vid")}}


@pytest.mark.parametrize("method", sorted(FEATURE_ARGS))
def test_fit_trains_the_feature_methods(method):
    from kdlab import models

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 40, generator=g), torch.randint(0, 10, (96,), generator=g)
    torch.manual_seed(0)
    student, teacher = models.create("mnist1d_cnn_small", 10), models.create("mnist1d_cnn", 10)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    res = kdlab.fit(student, teacher, (x, y), method=method, method_args=FEATURE_ARGS[method], epochs=1,
                    batch_size=32, lr=0.05)
    assert any(not torch.equal(v, before[k]) for k, v in res.student.state_dict().items())
    assert f"loss_{method}" in res.history[-1]["train"]  # the feature term is logged by the method's name


def test_fit_feature_methods_on_plain_modules_name_their_paths():
    res = kdlab.fit(_mlp(1), _mlp(2), _data(64), method="sp", method_args={"student_paths": ["1"],
                                                                             "teacher_paths": ["1"]}, epochs=1)
    assert "loss_sp" in res.history[-1]["train"]
    kdlab.fit(_mlp(1), _mlp(2), _data(64), method="rkd", epochs=1)  # the pooled feature needs no path
    with pytest.raises(ValueError, match=r"^sp: the student \(Sequential\) has no forward_features, so name the module "
                                         r"whose output is its feature map in method_args\['student_paths'\]"):
        kdlab.fit(_mlp(1), _mlp(2), _data(64), method="sp", epochs=1)


@pytest.mark.parametrize("method, args", [
    ("nkd", {}),
    ("ctkd", {"temperature_mode": "instance", "hidden": 8}),  # the trainable temperature module trains with fit too
    ("mlkd", {"strong_augment": "none"}),  # tabular inputs have no image to RandAugment
])
def test_fit_runs_the_logit4_methods_on_tabular_data(method, args):
    res = kdlab.fit(_mlp(1), _mlp(2), _data(128, 0), eval=_data(64, 1), method=method, method_args=args, epochs=2,
                    batch_size=32, lr=0.05)
    assert len(res.history) == 2 and 0 <= res.report["agreement"] <= 100


def test_fit_runs_sdd_on_feature_maps():
    from kdlab import models

    torch.manual_seed(0)
    x, y = torch.randn(96, 1, 40), torch.randint(0, 10, (96,))
    res = kdlab.fit(models.create("mnist1d_cnn_small", 10), models.create("mnist1d_cnn", 10), (x, y), method="sdd",
                    method_args={"warmup": 1}, epochs=1, batch_size=32)
    assert len(res.history) == 1 and torch.isfinite(torch.tensor(res.history[0]["train"]["loss"]))
    with pytest.raises(Exception, match="sdd.*feature map"):  # a model without maps: one line naming the key
        kdlab.fit(_mlp(1), _mlp(2), _data(64, 0), method="sdd", epochs=1)
