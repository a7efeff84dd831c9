"""FidelityAccumulator / AccuracyAccumulator: per-example sums, batch-size invariance, merge, no host sync."""

import math

import pytest
import torch

from kdlab.eval import (
    AccuracyAccumulator,
    FidelityAccumulator,
    accuracy,
    agreement,
    ece,
    logit_l2,
    nll,
    predictive_kl,
    topk_agreement,
)

N, C = 150, 10


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(N, C, generator=g) * 3
    s = t + torch.randn(N, C, generator=g) * 2  # related, so agreement is neither 0 nor 100
    y = torch.randint(0, C, (N,), generator=g)
    return t, s, y


def _run(t, s, y, batch_size, **kw):
    acc = FidelityAccumulator(C, **kw)
    for i in range(0, t.shape[0], batch_size):
        acc.update(teacher_logits=t[i:i + batch_size], student_logits=s[i:i + batch_size], labels=None if y is None else y[i:i + batch_size])
    return acc


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], float) and math.isnan(a[k]):
            assert math.isnan(b[k]), k
        else:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), k


def test_compute_equals_the_pure_functions_on_all_examples():
    t, s, y = _data()
    out = _run(t, s, y, 64, temperature=4.0).compute()
    assert list(out) == ["n", "n_labeled", "agreement", "top5_agreement", "kl", "kl_T4", "logit_l2", "student_acc",
                         "teacher_acc", "student_nll", "teacher_nll", "student_ece", "teacher_ece"]
    assert out["n"] == N and out["n_labeled"] == N
    expected = {
        "agreement": agreement(teacher_logits=t, student_logits=s), "top5_agreement": topk_agreement(teacher_logits=t, student_logits=s, k=5), "kl": predictive_kl(teacher_logits=t, student_logits=s),
        "kl_T4": predictive_kl(teacher_logits=t, student_logits=s, temperature=4.0), "logit_l2": logit_l2(teacher_logits=t, student_logits=s),
        "student_acc": accuracy(s, y), "teacher_acc": accuracy(t, y), "student_nll": nll(s, y),
        "teacher_nll": nll(t, y), "student_ece": ece(s, y), "teacher_ece": ece(t, y),
    }
    for k, v in expected.items():
        assert out[k] == pytest.approx(v, rel=1e-6), k
    assert 0 < out["agreement"] < 100 and out["kl_T4"] < out["kl"]


@pytest.mark.parametrize("batch_size", [1, 7, 64, N])
def test_identical_for_any_batch_size(batch_size):
    t, s, y = _data(1)
    _assert_same(_run(t, s, y, batch_size, temperature=2.5).compute(), _run(t, s, y, N, temperature=2.5).compute())


def test_merge_of_two_halves_equals_one_pass_and_sum_tensor_round_trips():
    t, s, y = _data(2)
    whole = _run(t, s, y, 50, temperature=4.0)
    a = _run(t[:61], s[:61], y[:61], 50, temperature=4.0)
    b = _run(t[61:], s[61:], y[61:], 50, temperature=4.0)
    assert a.compute()["n"] == 61
    _assert_same(a.merge(b).compute(), whole.compute())
    torch.testing.assert_close(a.sum_tensor(), whole.sum_tensor())
    # flat representation: what an all-reduce would ship
    rebuilt = FidelityAccumulator.from_sum_tensor(whole.sum_tensor(), **whole.config())
    _assert_same(rebuilt.compute(), whole.compute())
    _assert_same(FidelityAccumulator.from_state(whole.state()).compute(), whole.compute())
    # merging into / from an empty accumulator
    empty = FidelityAccumulator(C, temperature=4.0)
    _assert_same(empty.merge(whole).compute(), whole.compute())
    assert empty.sum_tensor().shape == (empty.size,)


def test_merge_and_load_reject_mismatched_configs():
    t, s, y = _data(3)
    a = _run(t, s, y, 50)
    with pytest.raises(ValueError, match="different configs"):
        a.merge(_run(t, s, y, 50, temperature=4.0))
    with pytest.raises(ValueError, match="length"):
        a.load_sum_tensor(torch.zeros(a.size + 1, dtype=torch.float64))


def test_all_reduce_in_a_single_process_gloo_group(tmp_path):
    import torch.distributed as dist

    t, s, y = _data(4)
    acc = _run(t, s, y, 50)
    before = acc.compute()
    acc.all_reduce()  # not initialised: no-op
    _assert_same(acc.compute(), before)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        acc.all_reduce()
        _assert_same(acc.compute(), before)
        empty = FidelityAccumulator(C)  # a rank without batches still contributes zeros
        empty.all_reduce()
        assert empty.sum_tensor().abs().sum() == 0
    finally:
        dist.destroy_process_group()


def test_update_never_syncs_with_the_host(monkeypatch):
    t, s, y = _data(5)
    fid, acc = FidelityAccumulator(C, temperature=4.0), AccuracyAccumulator(C)

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync inside update()")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "cpu", "numpy"):
            m.setattr(torch.Tensor, name, forbidden)
        for i in range(0, N, 32):
            fid.update(teacher_logits=t[i:i + 32], student_logits=s[i:i + 32], labels=y[i:i + 32])
            acc.update(s[i:i + 32], y[i:i + 32])
    assert fid.compute()["n"] == N and acc.compute()["n"] == N


def test_labels_out_of_range_and_nan_logits_are_reported_by_compute():
    t, s, y = _data(6)
    bad = y.clone()
    bad[3] = C
    acc = FidelityAccumulator(C)
    acc.update(teacher_logits=t, student_logits=s, labels=bad)  # no error yet: checking the range would need a host sync
    with pytest.raises(ValueError, match=r"1 of 150 labels were outside \[0, 9\]"):
        acc.compute()
    s_nan = s.clone()
    s_nan[5, 2] = float("nan")
    acc = FidelityAccumulator(C)
    acc.update(teacher_logits=t, student_logits=s_nan, labels=y)
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        acc.compute()


def test_unlabelled_batches_count_for_fidelity_only():
    t, s, y = _data(7)
    acc = FidelityAccumulator(C)
    acc.update(teacher_logits=t[:100], student_logits=s[:100], labels=y[:100])
    acc.update(teacher_logits=t[100:], student_logits=s[100:], labels=None)
    out = acc.compute()
    assert out["n"] == N and out["n_labeled"] == 100
    assert out["agreement"] == pytest.approx(agreement(teacher_logits=t, student_logits=s))
    assert out["student_acc"] == pytest.approx(accuracy(s[:100], y[:100]))
    unlabelled = _run(t, s, None, 64).compute()
    assert math.isnan(unlabelled["student_acc"]) and unlabelled["kl"] == pytest.approx(predictive_kl(teacher_logits=t, student_logits=s))


def test_keys_follow_topk_and_temperature_and_logits_with_grad_are_detached():
    t, s, y = _data(8)
    s = s.requires_grad_(True)
    acc = FidelityAccumulator(C, temperature=2.5, topk=3)
    acc.update(teacher_logits=t, student_logits=s, labels=y)
    assert not acc.sum_tensor().requires_grad
    out = acc.compute()
    assert "kl_T2.5" in out and "top3_agreement" in out and "top5_agreement" not in out
    assert out["top3_agreement"] == pytest.approx(topk_agreement(teacher_logits=t, student_logits=s.detach(), k=3))
    assert not any(k.startswith("kl_T") for k in _run(t, s.detach(), y, 50).compute())


def test_created_under_inference_mode_then_updated_outside():
    t, s, y = _data(9)
    acc = FidelityAccumulator(C)
    with torch.inference_mode():
        acc.update(teacher_logits=t[:70], student_logits=s[:70], labels=y[:70])
    acc.update(teacher_logits=t[70:], student_logits=s[70:], labels=y[70:])
    _assert_same(acc.compute(), _run(t, s, y, N).compute())


def test_accuracy_accumulator_matches_functions_for_any_batch_size():
    _, s, y = _data(10)
    for bs in (1, 7, N):
        acc = AccuracyAccumulator(C, n_bins=15)
        for i in range(0, N, bs):
            acc.update(s[i:i + bs], y[i:i + bs])
        out = acc.compute()
        assert out["n"] == N
        assert out["acc"] == pytest.approx(accuracy(s, y))
        assert out["nll"] == pytest.approx(nll(s, y), rel=1e-6)
        assert out["ece"] == pytest.approx(ece(s, y, n_bins=15), rel=1e-6)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: FidelityAccumulator(0), "num_classes"),
        (lambda: FidelityAccumulator(C, temperature=-1.0), "temperature"),
        (lambda: FidelityAccumulator(C, topk=0), "topk"),
        (lambda: FidelityAccumulator(C, n_bins=0), "n_bins"),
        (lambda: FidelityAccumulator(C).update(teacher_logits=torch.randn(4, C), student_logits=torch.randn(4, C + 1)), "same shape"),
        (lambda: FidelityAccumulator(C).update(teacher_logits=torch.randn(4, 3), student_logits=torch.randn(4, 3)), "num_classes=10"),
        (lambda: FidelityAccumulator(C).update(teacher_logits=torch.randn(4, C), student_logits=torch.randn(4, C), labels=torch.zeros(3).long()), "labels"),
        (lambda: FidelityAccumulator(C).compute(), "no examples"),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
