"""Fidelity report on named sources, the distill_stream record and the independent-student control."""

import json

import pytest
import torch

from kdlab.config.schema import DistillDataConfig
from kdlab.data.splits import DataSplits
from kdlab.data.views import Shift1D
from kdlab.fidelity.sources import STREAM_LABEL, evaluate_sources, fidelity_with_control, read_distill_stream
from kdlab.models import create


@pytest.fixture(scope="module")
def splits():
    g = torch.Generator().manual_seed(0)
    return DataSplits("toy", torch.randn(70, 1, 40, generator=g), torch.arange(70) % 10,
                      torch.randn(30, 1, 40, generator=g), torch.arange(30) % 10, 10, train_augment=Shift1D(4))


def _model(seed):
    torch.manual_seed(seed)
    return create("mnist1d_cnn", 10).eval()


def test_model_against_itself_is_perfect_fidelity_on_every_source(splits):
    m = _model(0)
    policy = DistillDataConfig(augment="stretch", mixup_alpha=1.0, mixup_fraction=0.5, noise_prob=0.3,
                               extra=[{"name": "ood", "kind": "shuffled"}])
    rep = evaluate_sources(m, m, splits, ("test", "train_clean", "train_aug"), distill_data=policy, temperature=4.0)
    for source, r in rep.items():
        assert r["agreement"] == 100.0 and r["top5_agreement"] == 100.0, source
        assert abs(r["kl"]) < 1e-6 and abs(r["kl_T4"]) < 1e-6, source
        assert r["student_acc"] == r["teacher_acc"]
    assert rep["test"]["n"] == 30 and rep["train_clean"]["n"] == 70
    # train_aug: every input counts for agreement, only labelled ones for accuracy
    assert rep["train_aug"]["n"] > 70 and rep["train_aug"]["n_labeled"] < rep["train_aug"]["n"]


def test_metrics_do_not_depend_on_batch_size(splits):
    t, s = _model(0), _model(1)
    a = evaluate_sources(t, s, splits, ("test", "train_clean", "train_aug"), batch_size=7)
    b = evaluate_sources(t, s, splits, ("test", "train_clean", "train_aug"), batch_size=64)
    for source in a:
        for key, value in a[source].items():
            if isinstance(value, float):
                # per-example values are float32 (summed in float64): another batch size may round them differently
                assert value == pytest.approx(b[source][key], rel=1e-6, abs=1e-9), (source, key)
    assert a["test"]["agreement"] < 100.0  # two random nets disagree: the test can fail


def test_ensemble_of_copies_equals_member(splits):
    t, s = _model(0), _model(1)
    one = evaluate_sources(t, s, splits, ("test",))["test"]
    three = evaluate_sources([t, t, t], s, splits, ("test",))["test"]
    for key in ("agreement", "kl", "teacher_acc", "teacher_nll", "teacher_ece"):
        assert three[key] == pytest.approx(one[key], abs=1e-5), key


def test_distill_stream_is_read_from_the_last_epoch(tmp_path):
    records = [{"epoch": 1, "train": {"acc": 50.0, "agreement": 60.0, "kl": 0.5}},
               {"epoch": 2, "train": {"acc": 55.0, "agreement": 70.0, "kl": 0.4}, "test": {}}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    r = read_distill_stream(tmp_path)
    assert (r["agreement"], r["kl"], r["student_acc"], r["epoch"]) == (70.0, 0.4, 55.0, 2)
    assert r["label"] == STREAM_LABEL
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        read_distill_stream(tmp_path / "missing")


def test_control_gap_is_the_agreement_difference(splits):
    t, s, c = _model(0), _model(0), _model(2)
    out = fidelity_with_control(t, s, c, splits, ("test", "train_clean"))
    assert out["student"]["test"]["agreement"] == 100.0
    for src in ("test", "train_clean"):
        assert out["agreement_over_control"][src] == pytest.approx(
            100.0 - out["control"][src]["agreement"])
    assert out["control"]["test"]["agreement"] < 100.0


def test_bad_sources_and_missing_run_dir(splits):
    m = _model(0)
    with pytest.raises(ValueError, match="sources"):
        evaluate_sources(m, m, splits, ("validation",))
    with pytest.raises(ValueError, match="run_dir"):
        evaluate_sources(m, m, splits, ("distill_stream",))
