import pytest
import torch
from torch import nn

import kdlab
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
    assert all(not p.requires_grad for p in teacher.parameters())  # frozen by the method


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
    "batch_size": dict(batch_size=16),
    "epochs": dict(epochs=3),
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
