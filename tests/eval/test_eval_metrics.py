"""Pure metric functions: hand-computed values and naive per-example references (loops live only here)."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdlab.eval import (
    FidelityAccumulator,
    accuracy,
    agreement,
    ece,
    linear_cka,
    logit_l2,
    mean_std,
    nll,
    predictive_kl,
    reliability_bins,
    summarize_seeds,
    topk_agreement,
)

NEG = float("-inf")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_agreement_and_accuracy_hand_example():
    t = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 5.0], [1.0, 4.0, 0.0]])
    s = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 9.0], [1.0, 0.0, 3.0], [5.0, 0.0, 1.0]])
    # argmax t = [0, 1, 2, 1]; argmax s = [0, 2, 2, 0] → 2 of 4 agree
    assert agreement(teacher_logits=t, student_logits=s) == pytest.approx(50.0)
    assert accuracy(s, torch.tensor([0, 2, 1, 1])) == pytest.approx(50.0)
    assert accuracy(t, torch.tensor([0, 1, 2, 1])) == pytest.approx(100.0)


def test_topk_agreement_hand_example_and_ties():
    t = torch.tensor([[0.0, 0.0, 9.0, 0.0], [9.0, 0.0, 0.0, 0.0], [0.0, 9.0, 0.0, 0.0]])
    # teacher top-1 = [2, 0, 1]; its rank in the student row: 1, 3, 0
    s = torch.tensor([[5.0, 4.0, 4.5, 0.0], [0.0, 3.0, 2.0, 1.0], [0.0, 7.0, 0.0, 0.0]])
    assert topk_agreement(teacher_logits=t, student_logits=s, k=1) == pytest.approx(100 / 3)
    assert topk_agreement(teacher_logits=t, student_logits=s, k=2) == pytest.approx(200 / 3)
    assert topk_agreement(teacher_logits=t, student_logits=s, k=4) == pytest.approx(100.0)
    assert topk_agreement(teacher_logits=t, student_logits=s, k=50) == pytest.approx(100.0)  # k >= C: always inside
    # ties: student row all equal → argmax is class 0; k=1 must agree with top-1 agreement exactly
    t2 = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    s2 = torch.zeros(2, 3)
    assert topk_agreement(teacher_logits=t2, student_logits=s2, k=1) == agreement(teacher_logits=t2, student_logits=s2) == pytest.approx(50.0)
    assert topk_agreement(teacher_logits=t2, student_logits=s2, k=2) == pytest.approx(100.0)


def test_topk_k1_equals_agreement_on_random_logits():
    t = torch.randn(200, 7, generator=_gen(1)).round()  # rounding creates many ties
    s = torch.randn(200, 7, generator=_gen(2)).round()
    assert topk_agreement(teacher_logits=t, student_logits=s, k=1) == pytest.approx(agreement(teacher_logits=t, student_logits=s))


def test_predictive_kl_matches_definition_without_t_squared():
    t = torch.randn(6, 5, generator=_gen(3), dtype=torch.float64) * 3
    s = torch.randn(6, 5, generator=_gen(4), dtype=torch.float64) * 3
    for temp in (1.0, 4.0):
        p, q = torch.softmax(t / temp, 1), torch.softmax(s / temp, 1)
        expected = (p * (p.log() - q.log())).sum(1)
        per = predictive_kl(teacher_logits=t, student_logits=s, temperature=temp, reduction="none")
        torch.testing.assert_close(per, expected)
        assert predictive_kl(teacher_logits=t, student_logits=s, temperature=temp) == pytest.approx(expected.mean().item())
        # batch-mean KL as torch defines it, with no T² factor
        ref = F.kl_div(F.log_softmax(s / temp, 1), F.log_softmax(t / temp, 1), reduction="batchmean", log_target=True)
        assert predictive_kl(teacher_logits=t, student_logits=s, temperature=temp) == pytest.approx(ref.item())
    # teacher is p: the direction matters
    assert predictive_kl(teacher_logits=t, student_logits=s) != pytest.approx(predictive_kl(teacher_logits=s, student_logits=t))
    assert predictive_kl(teacher_logits=t, student_logits=t) == 0.0


def test_predictive_kl_zero_mass_classes_are_not_nan():
    t = torch.tensor([[0.0, NEG, 1.0]])
    s = torch.tensor([[0.5, 2.0, 0.0]])
    p = torch.softmax(t, 1)
    expected = sum(p[0, c] * (p[0, c].log() - torch.log_softmax(s, 1)[0, c]) for c in (0, 2))
    assert predictive_kl(teacher_logits=t, student_logits=s) == pytest.approx(expected.item())


def test_nll_per_example_non_square_catches_row_column_mixups():
    n, c = 7, 4  # N != C so a transposed gather cannot even index the same cells
    logits = torch.randn(n, c, generator=_gen(5))
    y = torch.tensor([3, 0, 2, 1, 3, 0, 1])  # differs per row
    naive = torch.tensor([-math.log(math.exp(logits[i, y[i]]) / sum(math.exp(v) for v in logits[i])) for i in range(n)])
    per = nll(logits, y, reduction="none")
    assert per.shape == (n,)
    torch.testing.assert_close(per, naive.float(), rtol=1e-5, atol=1e-6)
    assert nll(logits, y) == pytest.approx(naive.mean().item(), rel=1e-5)
    # a mix-up (using y as row indices into column 0, or the same label for every row) gives different values
    assert not torch.allclose(per, -torch.log_softmax(logits, 1)[:, 0])


def test_ece_hand_computed_with_edge_confidences():
    # C=4 rows whose max-softmax confidences are exactly 1/4, 1/2, 1/2, 1 and e/(e+3).
    logits = torch.tensor([
        [0.0, 0.0, 0.0, 0.0],   # conf 0.25 exactly on an edge → lower bin 0 = (0, 0.25]; pred 0
        [0.0, 0.0, NEG, NEG],   # conf 0.5 on an edge → bin 1 = (0.25, 0.5]; pred 0
        [0.0, 0.0, NEG, NEG],   # conf 0.5 → bin 1; pred 0
        [5.0, NEG, NEG, NEG],   # conf 1 → last bin; pred 0
        [1.0, 0.0, 0.0, 0.0],   # conf e/(e+3) ≈ 0.475 → bin 1; pred 0
    ])
    y = torch.tensor([0, 1, 0, 0, 2])  # correct: 1, 0, 1, 1, 0
    conf = torch.softmax(logits, 1).max(1).values
    assert conf[:4].tolist() == [0.25, 0.5, 0.5, 1.0]  # precondition: the edges are hit exactly
    bins = reliability_bins(logits, y, n_bins=4)
    assert bins["count"].tolist() == [1, 3, 0, 1]
    c4 = math.e / (math.e + 3)
    # bin 0: n=1, acc 1, conf 1/4; bin 1: n=3, acc 1/3, conf (1/2 + 1/2 + c4)/3; bin 3: n=1, acc 1, conf 1
    expected = (1 / 5) * abs(1 - 0.25) + (3 / 5) * abs(1 / 3 - (1.0 + c4) / 3) + 0.0
    assert ece(logits, y, n_bins=4) == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(bins["acc"][[0, 1, 3]], torch.tensor([1.0, 1 / 3, 1.0], dtype=torch.float64))
    assert torch.isnan(bins["acc"][2]) and torch.isnan(bins["conf"][2])
    torch.testing.assert_close(bins["edges"], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    # with 10 bins, 0.5 is the upper edge of bin 4 and 0.25 lies inside bin 2
    assert reliability_bins(logits, y, n_bins=10)["count"].tolist() == [0, 0, 1, 0, 3, 0, 0, 0, 0, 1]


def test_ece_matches_naive_loop_over_bins():
    logits = torch.randn(300, 6, generator=_gen(6), dtype=torch.float64) * 2
    y = torch.randint(0, 6, (300,), generator=_gen(7))
    probs = torch.softmax(logits, 1)
    conf, pred = probs.max(1)
    for n_bins in (1, 10, 15):
        total = 0.0
        for k in range(n_bins):
            lo, hi = k / n_bins, (k + 1) / n_bins
            in_bin = [i for i in range(300) if (lo < conf[i] <= hi) or (k == 0 and conf[i] == 0)]
            if in_bin:
                acc_k = sum(float(pred[i] == y[i]) for i in in_bin) / len(in_bin)
                conf_k = sum(float(conf[i]) for i in in_bin) / len(in_bin)
                total += len(in_bin) / 300 * abs(acc_k - conf_k)
        assert ece(logits, y, n_bins=n_bins) == pytest.approx(total, rel=1e-9, abs=1e-12)


def test_logit_l2_per_example():
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    s = torch.tensor([[3.0, 4.0], [1.0, 1.0], [0.0, 4.0]])
    torch.testing.assert_close(logit_l2(teacher_logits=t, student_logits=s, reduction="none"), torch.tensor([5.0, 0.0, 5.0]))
    assert logit_l2(teacher_logits=t, student_logits=s) == pytest.approx(10 / 3)


def _cka_reference(x, y):
    # kernel form with the centring matrix H (Kornblith et al. 2019): HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: torch.trace(a @ h @ b @ h)  # noqa: E731
    return (hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l))).item()


@pytest.mark.parametrize("n,p,q", [(40, 5, 8), (12, 30, 20)])  # both Gram branches (N ≥ features and N < features)
def test_linear_cka_reference_identity_and_invariances(n, p, q):
    x = torch.randn(n, p, generator=_gen(8), dtype=torch.float64)
    y = torch.randn(n, q, generator=_gen(9), dtype=torch.float64) + x[:, :1] * 2  # partly related
    value = linear_cka(x, y)
    assert value == pytest.approx(_cka_reference(x, y), rel=1e-10)
    assert 0.0 < value < 1.0
    assert linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    q_rot, _ = torch.linalg.qr(torch.randn(p, p, generator=_gen(10), dtype=torch.float64))
    assert linear_cka(x @ q_rot * 7.5, y) == pytest.approx(value, rel=1e-9)  # orthogonal + isotropic scale
    assert linear_cka(x + 3.0, y * 0.01) == pytest.approx(value, rel=1e-9)  # centring removes shifts
    # anisotropic scaling is *not* an invariance: the test would notice a normalised-per-feature implementation
    assert linear_cka(x * torch.linspace(0.1, 10, p, dtype=torch.float64), y) != pytest.approx(value, rel=1e-3)


def test_linear_cka_flattens_feature_maps_and_validates():
    x = torch.randn(10, 3, 4, 4, generator=_gen(11))
    assert linear_cka(x, x.flatten(1)) == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x, torch.randn(9, 5))
    with pytest.raises(ValueError, match="zero variance"):
        linear_cka(torch.ones(10, 3), torch.randn(10, 2))
    with pytest.raises(ValueError, match="at least 2"):
        linear_cka(torch.randn(1, 3), torch.randn(1, 3))


def test_half_precision_inputs_are_computed_in_float32():
    t = torch.randn(64, 10, generator=_gen(12)) * 4
    s = torch.randn(64, 10, generator=_gen(13)) * 4
    per = predictive_kl(teacher_logits=t.half(), student_logits=s.half(), reduction="none")
    assert per.dtype == torch.float32
    torch.testing.assert_close(per, predictive_kl(teacher_logits=t.half().float(), student_logits=s.half().float(), reduction="none"))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: agreement(teacher_logits=torch.randn(3, 4), student_logits=torch.randn(3, 5)), "same shape"),
        (lambda: agreement(teacher_logits=torch.randn(3), student_logits=torch.randn(3)), "2-D"),
        (lambda: agreement(teacher_logits=torch.randn(0, 3), student_logits=torch.randn(0, 3)), "zero examples"),
        (lambda: predictive_kl(teacher_logits=torch.randn(3, 4), student_logits=torch.randn(3, 4), temperature=0), "temperature"),
        (lambda: predictive_kl(teacher_logits=torch.randn(3, 4), student_logits=torch.randn(3, 4), reduction="sum"), "reduction"),
        (lambda: nll(torch.randn(3, 4), torch.tensor([0, 1, 4])), r"\[0, 3\]"),
        (lambda: nll(torch.randn(3, 4), torch.tensor([0.0, 1.0, 2.0])), "integer"),
        (lambda: accuracy(torch.randn(3, 4), torch.tensor([0, 1])), r"shape \[N\]"),
        (lambda: accuracy(torch.arange(12).view(3, 4), torch.tensor([0, 1, 2])), "floating"),
        (lambda: ece(torch.randn(3, 4), torch.tensor([0, 1, 2]), n_bins=0), "n_bins"),
        (lambda: topk_agreement(teacher_logits=torch.randn(3, 4), student_logits=torch.randn(3, 4), k=0), "k must"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_tensor_raises_type_error():
    with pytest.raises(TypeError, match="t_logits"):
        agreement(teacher_logits=[[1.0, 2.0]], student_logits=torch.randn(1, 2))



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bin_index_edges_and_zero_confidence(dtype):
    from kdlab.eval.metrics import _bin_index

    edge = torch.tensor(0.1, dtype=dtype)  # the float nearest to 1/10, which is how edge 1 is defined
    above = torch.nextafter(edge, torch.tensor(1.0, dtype=dtype))
    conf = torch.stack([torch.tensor(0.0, dtype=dtype), edge, above, torch.tensor(0.95, dtype=dtype),
                        torch.tensor(1.0, dtype=dtype)])
    assert _bin_index(conf, 10).tolist() == [0, 0, 1, 9, 9]


def test_teacher_and_student_logits_are_keyword_only():
    """The losses take (student, teacher), reports (teacher, student): positional pairs are refused, not swapped."""
    t, s = torch.randn(4, 3), torch.randn(4, 3)
    for fn in (agreement, topk_agreement, predictive_kl, logit_l2, FidelityAccumulator(3).update):
        with pytest.raises(TypeError):
            fn(t, s)


def test_mean_std_prints_no_spread_for_one_seed():
    assert mean_std(summarize_seeds([{"acc": 91.0}]), "acc") == "91.00"
    assert mean_std(summarize_seeds([{"acc": 91.0}, {"acc": 93.0}]), "acc") == "92.00 ± 1.41"
    assert mean_std(summarize_seeds([{"acc": 91.0}]), "kl") == "–"
