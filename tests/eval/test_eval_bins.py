"""Per-bin fidelity by teacher confidence and entropy (kdlab.eval.bins): identities, hand-made cases, edge cases."""

import math

import pytest
import torch

from kdlab.eval import fidelity_report
from kdlab.eval.bins import BinCollector, bin_rows, fidelity_bins, quantile_edges, summarize_bins
from kdlab.eval.metrics import predictive_kl


def _logits(n=200, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    s = t + torch.randn(n, c, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    return t, s, y


@pytest.mark.parametrize("n_bins", [1, 3, 10])
def test_counts_sum_to_n_and_bin_means_recombine_to_the_global_metrics(n_bins):
    t, s, y = _logits()
    out = fidelity_bins(teacher_logits=t, student_logits=s, labels=y, n_bins=n_bins)
    overall_kl = predictive_kl(teacher_logits=t, student_logits=s)
    overall_agree = 100.0 * (t.argmax(1) == s.argmax(1)).double().mean().item()
    for key in ("confidence", "entropy"):
        b = out[key]
        assert sum(b["count"]) == 200 and len(b["count"]) == n_bins and len(b["edges"]) == n_bins + 1
        weighted = lambda name: sum(c * v for c, v in zip(b["count"], b[name]) if c) / 200  # noqa: E731
        assert weighted("kl") == pytest.approx(overall_kl, rel=1e-12)
        assert weighted("agreement") == pytest.approx(overall_agree, rel=1e-12)
        assert b["edges"] == sorted(b["edges"])
    # 200 distinct confidences in 10 equal-count bins: 20 each
    if n_bins == 10:
        assert out["confidence"]["count"] == [20] * 10


def test_a_student_equal_to_the_teacher_agrees_everywhere_with_zero_kl():
    t, _, y = _logits(n=100)
    out = fidelity_bins(teacher_logits=t, student_logits=t.clone(), labels=y, n_bins=5)
    for key in ("confidence", "entropy"):
        assert out[key]["agreement"] == [100.0] * 5
        assert out[key]["kl"] == [0.0] * 5
        assert out[key]["student_acc"] == out[key]["teacher_acc"]


def test_hand_made_logits_give_known_bins():
    # 4 samples, 2 classes; teacher confidences sigmoid(0)=.5, sigmoid(1), sigmoid(2), sigmoid(3): sorted as given
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    s = torch.tensor([[0.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 0])
    out = fidelity_bins(teacher_logits=t, student_logits=s, labels=y, n_bins=2)["confidence"]
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # edges: sorted[0], sorted[floor(1·3/2)=1], sorted[3]; bins (lo, hi], first closed: {0, 1}, {2, 3}
    assert out["edges"] == pytest.approx([0.5, sig(1), sig(3)])
    assert out["count"] == [2, 2]
    # argmax ties go to class 0: sample 0 teacher 0 / student 0 (agree), sample 1 teacher 0 / student 1
    assert out["agreement"] == [50.0, 100.0]  # sample 3: student logits tie -> class 0, as the teacher
    assert out["teacher_acc"] == [50.0, 100.0]
    assert out["student_acc"] == [100.0, 100.0]
    kl1 = sig(1) * math.log(sig(1) / sig(-1)) + sig(-1) * math.log(sig(-1) / sig(1))
    kl3 = sig(3) * math.log(sig(3) / 0.5) + sig(-3) * math.log(sig(-3) / 0.5)
    assert out["kl"] == pytest.approx([kl1 / 2, kl3 / 2], rel=1e-12)
    assert out["mean"] == pytest.approx([(0.5 + sig(1)) / 2, (sig(2) + sig(3)) / 2])
    # entropy orders the samples the other way round: the most confident teacher has the lowest entropy
    ent = fidelity_bins(teacher_logits=t, student_logits=s, labels=y, n_bins=2)["entropy"]
    assert ent["count"] == [2, 2] and ent["agreement"] == [100.0, 50.0]
    assert ent["edges"][-1] == pytest.approx(math.log(2))


def test_ties_share_a_bin_and_a_constant_teacher_leaves_the_other_bins_empty():
    t = torch.zeros(6, 3)  # every confidence 1/3, every entropy log 3
    s = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    out = fidelity_bins(teacher_logits=t, student_logits=s, labels=torch.zeros(6, dtype=torch.long), n_bins=4)
    for key in ("confidence", "entropy"):
        assert out[key]["count"] == [6, 0, 0, 0]
        assert out[key]["kl"][1:] == [None] * 3 and out[key]["student_acc"][1:] == [None] * 3
        assert len(set(out[key]["edges"])) == 1
    # ties across an edge: 3 samples at .5 confidence and 3 higher, 2 bins -> the tied ones together
    t = torch.tensor([[0.0, 0.0]] * 3 + [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    out = fidelity_bins(teacher_logits=t, student_logits=t, n_bins=4)["confidence"]
    assert sum(out["count"]) == 6 and out["count"][0] == 3


def test_fewer_samples_than_bins():
    t, s, y = _logits(n=3)
    out = fidelity_bins(teacher_logits=t, student_logits=s, labels=y, n_bins=10)
    for key in ("confidence", "entropy"):
        assert sum(out[key]["count"]) == 3 and len(out[key]["count"]) == 10
        assert sum(c > 0 for c in out[key]["count"]) == 3  # distinct keys: one sample per non-empty bin


def test_without_labels_the_accuracies_are_none_and_the_rest_is_reported():
    t, s, _ = _logits(n=20)
    out = fidelity_bins(teacher_logits=t, student_logits=s, n_bins=2)["confidence"]
    assert out["student_acc"] == [None, None] and out["teacher_acc"] == [None, None]
    assert all(v is not None for v in out["kl"])


def test_quantile_edges_are_sample_values_and_errors_are_plain():
    v = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0])
    assert quantile_edges(v, 4).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert quantile_edges(v, 2).tolist() == [1.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="non-empty"):
        quantile_edges(torch.tensor([]), 2)
    with pytest.raises(ValueError, match="rows must be"):
        summarize_bins(torch.zeros(0, 7))
    with pytest.raises(ValueError, match="n_bins"):
        fidelity_bins(teacher_logits=torch.zeros(2, 2), student_logits=torch.zeros(2, 2), n_bins=0)


def test_the_collector_in_any_batch_order_with_indices_equals_the_whole_set():
    t, s, y = _logits(n=50)
    whole = fidelity_bins(teacher_logits=t, student_logits=s, labels=y, n_bins=5)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    col = BinCollector(5)
    for part in perm.split(7):
        col.update(teacher_logits=t[part], student_logits=s[part], labels=y[part], index=part)
    assert col.compute() == whole  # exactly: the rows are put back in index order before binning
    with pytest.raises(ValueError, match="index with every batch"):
        col.update(teacher_logits=t[:2], student_logits=s[:2], labels=y[:2])


def test_rows_are_float64_and_half_precision_logits_are_read_in_float32():
    t, s, y = _logits(n=8)
    rows = bin_rows(teacher_logits=t.half(), student_logits=s.half(), labels=y)
    assert rows.dtype == torch.float64 and rows.shape == (8, 7)


def test_fidelity_report_gives_the_bins_of_the_same_logits():
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(5, 4), torch.nn.Linear(5, 4)
    x, y = torch.randn(64, 5), torch.randint(0, 4, (64,))
    report = fidelity_report(teacher, student, (x, y), batch_size=10, bins=4)
    with torch.no_grad():
        expected = fidelity_bins(teacher_logits=teacher(x), student_logits=student(x), labels=y, n_bins=4)
    assert report["bins"]["confidence"]["count"] == expected["confidence"]["count"]
    for key in ("confidence", "entropy"):
        for name in ("kl", "agreement", "student_acc"):
            assert report["bins"][key][name] == pytest.approx(expected[key][name], rel=1e-6)
    assert "bins" not in fidelity_report(teacher, student, (x, y))  # off unless asked
