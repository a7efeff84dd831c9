import pytest
import torch
from torch import nn

import kdlab


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
