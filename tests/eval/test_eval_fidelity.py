"""fidelity_report / evaluate_accuracy / summarize_seeds."""

import math
import statistics
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import kdlab
from kdlab.eval import (
    accuracy,
    agreement,
    ece,
    evaluate_accuracy,
    fidelity_report,
    logit_l2,
    nll,
    predictive_kl,
    summarize_seeds,
    topk_agreement,
)
from kdlab.teachers import Ensemble

IN, C, N = 8, 6, 100


def _net(seed, classes=C):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(IN, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, classes))


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, IN, generator=g), torch.randint(0, C, (N,), generator=g)


def _close(a, b, rel=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=rel, abs=1e-7), k


def test_same_module_as_teacher_and_student_is_perfectly_faithful():
    model = _net(0).train()  # dropout would break agreement if the report did not switch to eval mode
    out = fidelity_report(model, model, _data(), batch_size=32)
    assert out["agreement"] == 100.0 and out["top5_agreement"] == 100.0
    assert out["kl"] == pytest.approx(0.0, abs=1e-7) and out["kl"] >= 0.0
    assert out["logit_l2"] == 0.0
    for m in ("acc", "nll", "ece"):
        assert out[f"student_{m}"] == out[f"teacher_{m}"]


def test_report_equals_metrics_on_full_logits_and_is_batch_size_invariant():
    teacher, student = _net(1), _net(2)
    x, y = _data(1)
    with torch.no_grad():
        t, s = teacher.eval()(x), student.eval()(x)
    expected = {
        "n": N, "n_labeled": N, "agreement": agreement(teacher_logits=t, student_logits=s), "top5_agreement": topk_agreement(teacher_logits=t, student_logits=s),
        "kl": predictive_kl(teacher_logits=t, student_logits=s), "kl_T4": predictive_kl(teacher_logits=t, student_logits=s, temperature=4.0), "logit_l2": logit_l2(teacher_logits=t, student_logits=s),
        "student_acc": accuracy(s, y), "teacher_acc": accuracy(t, y), "student_nll": nll(s, y),
        "teacher_nll": nll(t, y), "student_ece": ece(s, y), "teacher_ece": ece(t, y),
    }
    reports = {bs: fidelity_report(teacher, student, (x, y), batch_size=bs, temperature=4) for bs in (1, 7, 64, N)}
    for bs, rep in reports.items():
        assert list(rep) == list(expected), bs
        _close(rep, expected)
    assert 0 < expected["agreement"] < 100  # a non-trivial pair, so the comparison means something


def test_all_data_forms_give_the_same_report():
    teacher, student = _net(3), _net(4)
    x, y = _data(2)

    @dataclass
    class Batch:
        x: torch.Tensor
        y: torch.Tensor

    forms = {
        "pair": (x, y),
        "dataset": TensorDataset(x, y),
        "loader": DataLoader(TensorDataset(x, y), batch_size=9),
        "tuples": [(x[i:i + 30], y[i:i + 30]) for i in range(0, N, 30)],
        "objects": [Batch(x[i:i + 40], y[i:i + 40]) for i in range(0, N, 40)],
    }
    ref = fidelity_report(teacher, student, forms["pair"], batch_size=N)
    for name, data in forms.items():
        _close(fidelity_report(teacher, student, data, batch_size=16), ref)


def test_transform_is_applied_to_every_input_batch_for_both_models():
    teacher, student = _net(5), _net(6)
    x, y = _data(3)
    got = fidelity_report(teacher, student, (x, y), batch_size=17, transform=lambda b: (b - 0.5) * 3)
    _close(got, fidelity_report(teacher, student, ((x - 0.5) * 3, y), batch_size=N))
    assert got != fidelity_report(teacher, student, (x, y))


def test_report_runs_in_eval_mode_and_restores_training_state():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(self.training)
            return x

    student = nn.Sequential(_net(7), Probe()).train()
    student[0][3].eval()  # a submodule deliberately in eval inside a training model
    flags = [m.training for m in student.modules()]
    members = [_net(8), _net(9)]
    for p in members[1].parameters():
        p.requires_grad_(False)
    grads = [p.requires_grad for m in members for p in m.parameters()]
    bn_mean = student[0][1].running_mean.clone()

    out = fidelity_report(members, student, _data(4), batch_size=25)

    assert seen == [False] * 4  # four batches, all in eval mode
    assert [m.training for m in student.modules()] == flags
    assert all(m.training for m in members[0].modules())  # Ensemble set them to eval; the report restored them
    assert [p.requires_grad for m in members for p in m.parameters()] == grads
    torch.testing.assert_close(student[0][1].running_mean, bn_mean)  # eval mode: BN statistics untouched
    assert out["n"] == N


def test_teacher_list_is_a_prob_ensemble():
    members = [_net(10), _net(11), _net(12)]
    student = _net(13)
    data = _data(5)
    _close(fidelity_report(members, student, data), fidelity_report(Ensemble(members), student, data))


def test_class_count_mismatch_names_both_numbers():
    with pytest.raises(ValueError, match="teacher returns 6 .* student returns 4"):
        fidelity_report(_net(14), _net(15, classes=4), _data())


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"data": torch.randn(4, IN)}, TypeError, "lone tensor"),
        ({"data": 5}, TypeError, "data must be"),
        ({"data": [torch.randn(4, IN)]}, TypeError, "batch 0"),
        ({"data": (torch.randn(4, IN), torch.zeros(3).long())}, ValueError, "labels must have shape"),
        ({"data": []}, ValueError, "no batches"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"device": "nonsense"}, ValueError, "device"),
        ({"temperature": 0}, ValueError, "temperature"),
        ({"teacher": []}, ValueError, "empty list"),
        ({"teacher": "resnet"}, TypeError, "teacher"),
        ({"student": [nn.Linear(IN, C)]}, TypeError, "student"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    args = {"teacher": _net(16), "student": _net(17), "data": _data()} | kwargs
    with pytest.raises(err, match=match):
        fidelity_report(**args)


def test_evaluate_accuracy_shares_the_batching_and_matches_the_functions():
    model = _net(18).train()
    x, y = _data(6)
    with torch.no_grad():
        z = model.eval()(x)
    model.train()
    for bs in (1, 33, N):
        out = evaluate_accuracy(model, TensorDataset(x, y), batch_size=bs, n_bins=5)
        assert out["n"] == N
        assert out["acc"] == pytest.approx(accuracy(z, y))
        assert out["nll"] == pytest.approx(nll(z, y), rel=1e-5)
        assert out["ece"] == pytest.approx(ece(z, y, n_bins=5), rel=1e-5)
    assert model.training
    with pytest.raises(ValueError, match="no labels"):
        evaluate_accuracy(model, (x, None))


def test_package_level_entry_point():
    model = _net(19)
    assert kdlab.fidelity_report(model, model, _data())["agreement"] == 100.0


def test_summarize_seeds_mean_and_sample_std():
    runs = [
        {"agreement": 70.0, "kl": 0.30, "n": 100, "name": "seed0", "flag": True},
        {"agreement": 74.0, "kl": 0.20, "n": 100, "name": "seed1", "flag": False},
        {"agreement": 75.0, "kl": 0.25, "n": 100, "name": "seed2", "flag": True},
    ]
    out = summarize_seeds(runs)
    assert out["n_seeds"] == 3
    assert out["agreement_mean"] == pytest.approx(73.0)
    # ddof=1: sqrt(((−3)² + 1² + 2²) / 2) = sqrt(7)
    assert out["agreement_std"] == pytest.approx(math.sqrt(7.0))
    assert out["kl_std"] == pytest.approx(statistics.stdev([0.30, 0.20, 0.25]))
    assert out["n_mean"] == 100 and out["n_std"] == 0.0
    assert not any(k.startswith(("name", "flag")) for k in out)  # strings and bools are not metrics
    single = summarize_seeds(runs[:1])
    assert single["agreement_mean"] == 70.0 and single["agreement_std"] == 0.0
    with pytest.raises(ValueError, match="'kl' is numeric in some runs"):
        summarize_seeds([runs[0], {"agreement": 1.0, "n": 1}])
    with pytest.raises(ValueError, match="empty"):
        summarize_seeds([])
