"""R2KD's pruned copy and the pruned-ensemble teacher ṽ = λ·v + (1−λ)·v_P (kdlab.teachers.pruned)."""

import pytest
import torch
from torch import nn

from kdlab.teachers import FrozenTeacher, PrunedEnsembleTeacher, prune_copy


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 1, bias=False),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 7),
    )
    with torch.no_grad():  # non-trivial BN statistics, so "untouched" is a real check
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 1.5)
    return net.eval()


def test_prune_copy_zeroes_exactly_the_smallest_weights_per_layer():
    net = _net()
    before = {k: t.clone() for k, t in net.state_dict().items()}
    pruned = prune_copy(net, 0.1)
    layers = [(i, m) for i, m in enumerate(net) if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 3
    for i, m in layers:
        w, wp = m.weight.detach(), pruned[i].weight.detach()
        assert w.abs().unique().numel() == w.numel(), "the test needs distinct |w|"
        k = round(0.1 * w.numel())
        zeroed = wp == 0
        assert int(zeroed.sum()) == k
        # the zeroed entries are the k smallest |w|, the others are copied exactly
        assert float(w[zeroed].abs().max()) < float(w[~zeroed].abs().min())
        assert torch.equal(wp[~zeroed], w[~zeroed])
        if m.bias is not None:
            assert torch.equal(pruned[i].bias, m.bias)
    for k, t in pruned[1].state_dict().items():  # BN untouched
        assert torch.equal(t, before[f"1.{k}"])
    for k, t in net.state_dict().items():  # the original is unchanged
        assert torch.equal(t, before[k])
    assert not any(p.requires_grad for p in pruned.parameters())
    assert pruned is not net and pruned[0].weight.data_ptr() != net[0].weight.data_ptr()


def test_prune_copy_rounds_per_layer_and_validates():
    lin = nn.Linear(5, 5)  # 25 weights: round(2.5) = 2 (Python rounding, as torch's pruning utilities)
    assert int((prune_copy(lin, 0.1).weight == 0).sum()) == 2
    assert int((prune_copy(lin, 0.0).weight == 0).sum()) == 0
    for bad in (-0.1, 1.0, float("nan"), True):
        with pytest.raises(ValueError, match="amount"):
            prune_copy(lin, bad)
    with pytest.raises(ValueError, match="nn.Module"):
        prune_copy(lin.weight, 0.1)


def test_pruned_ensemble_teacher_mixes_logits():
    net = _net()
    teacher = FrozenTeacher(net)
    ens = PrunedEnsembleTeacher(teacher, lam=0.7, amount=0.1)
    x = torch.randn(6, 3, 5, 5)
    with torch.no_grad():
        v, vp = net(x), prune_copy(net, 0.1).eval()(x)
    assert not torch.allclose(v, vp), "pruning must change the logits for the test to mean something"
    torch.testing.assert_close(ens.logits(x), 0.7 * v + 0.3 * vp)
    batch = type("B", (), {"x": x})()
    torch.testing.assert_close(ens.logits_for_batch(batch), 0.7 * v + 0.3 * vp)
    assert ens.module is net and ens.describe()["lam"] == 0.7
    assert 0.09 < ens.describe()["pruned_zero_fraction"] < 0.11
    with pytest.raises(ValueError, match="lam"):
        PrunedEnsembleTeacher(teacher, lam=1.5)
    with pytest.raises(ValueError, match="FrozenTeacher"):
        PrunedEnsembleTeacher(net)
    with pytest.raises(ValueError, match="pruned_bn_mode"):
        PrunedEnsembleTeacher(teacher, pruned_bn_mode="batch")


def test_pruned_ensemble_features_are_the_unpruned_teachers():
    from kdlab.models import create

    torch.manual_seed(0)
    net = create("mnist1d_cnn", 10).eval()
    base = FrozenTeacher(net)
    ens = PrunedEnsembleTeacher(base, lam=0.6)
    x = torch.randn(4, 1, 40)
    logits, feats = ens.features(x)
    v, base_feats = base.features(x)
    torch.testing.assert_close(logits, 0.6 * v + 0.4 * ens.pruned_logits(x))
    torch.testing.assert_close(feats["pooled"], base_feats["pooled"])


def test_pruned_bn_train_mode_uses_batch_statistics():
    net = _net()
    ens = PrunedEnsembleTeacher(FrozenTeacher(net), pruned_bn_mode="train")
    reference = prune_copy(net, 0.1).train()
    x = torch.randn(6, 3, 5, 5)
    with torch.no_grad():
        expected = reference(x)
    torch.testing.assert_close(ens.pruned_logits(x), expected)
    assert not ens.pruned_logits(x).requires_grad
    assert not torch.allclose(expected, prune_copy(net, 0.1).eval()(x))
    assert not net.training, "the unpruned teacher stays in eval mode"
