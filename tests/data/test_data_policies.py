"""Distillation-data policies: the clean/preset inputs, input-only MixUp, noise, extra sources, temperatures."""

import pytest
import torch

from kdlab.config.schema import DistillDataConfig
from kdlab.data import BatchLoader
from kdlab.data.policies import build_policy
from kdlab.data.splits import DataSplits, select_split
from kdlab.data.views import Shift1D


def _splits(n=40, length=40):
    g = torch.Generator().manual_seed(0)
    return DataSplits("toy", torch.randn(n, 1, length, generator=g), torch.arange(n) % 10,
                      torch.randn(10, 1, length, generator=g), torch.arange(10), 10, train_augment=Shift1D(4))


def _batch(splits, n=16):
    loader = BatchLoader(splits.x_train, splits.y_train, n, shuffle=True, augment=splits.train_augment, seed=3)
    return next(iter(loader))


def _policy(splits, **kw):
    return build_policy(DistillDataConfig(**kw), splits, "cpu", generator=torch.Generator().manual_seed(1))


def test_default_config_is_off_and_batches_pass_untouched():
    splits = _splits()
    assert DistillDataConfig().policy == "none"
    b = _batch(splits)
    assert _policy(splits, holdout_fraction=0.0)(b, 1) is b


def test_augment_none_gives_the_clean_stored_samples():
    splits = _splits()
    b = _batch(splits)
    out = _policy(splits, augment="none")(b, 1)
    assert torch.equal(out.x, splits.x_train[b.index])
    assert out.view is None and out.label_mask is None and out.temperature is None
    assert torch.equal(out.y, b.y)


def test_mixup_mixes_exactly_the_fraction_with_one_lambda():
    splits = _splits()
    b = _batch(splits, 16)
    out = _policy(splits, augment="none", mixup_alpha=1.0, mixup_fraction=0.5)(b, 1)
    clean = splits.x_train[b.index]
    changed = (out.x != clean).flatten(1).any(1)
    assert int(changed.sum()) == 8 and torch.equal(out.label_mask, ~changed)
    assert torch.equal(out.y[changed], torch.full((8,), -1))  # unlabelled samples carry no label
    # every mixed row is λ·x_i + (1−λ)·x_j for one λ shared by the batch
    lams = []
    for i in torch.nonzero(changed).flatten().tolist():
        fits = [((out.x[i] - clean[j]).flatten() @ (clean[i] - clean[j]).flatten()
                 / (clean[i] - clean[j]).flatten().square().sum()).item() for j in range(16) if j != i]
        resid = [(out.x[i] - (a * clean[i] + (1 - a) * clean[j])).abs().max().item()
                 for a, j in zip(fits, [j for j in range(16) if j != i])]
        lams.append(fits[min(range(len(resid)), key=resid.__getitem__)])
    assert max(lams) - min(lams) < 1e-4


def test_mixup_hard_labels_is_an_explicit_option():
    splits = _splits()
    b = _batch(splits)
    out = _policy(splits, augment="none", mixup_alpha=1.0, mixup_hard_labels=True)(b, 1)
    assert out.label_mask is None and bool((out.y >= 0).all())
    with pytest.raises(ValueError, match="mixup_alpha"):
        DistillDataConfig(mixup_hard_labels=True)


def test_noise_replacement_rate_and_values():
    splits = _splits(n=400)
    loader = BatchLoader(splits.x_train, splits.y_train, 400, shuffle=False)
    b = next(iter(loader))
    out = _policy(splits, augment="none", noise_prob=0.2, noise_std=2.0)(b, 1)
    noisy = ~out.label_mask
    assert 50 < int(noisy.sum()) < 110  # Binomial(400, 0.2): mean 80, sd 8
    assert torch.equal(out.x[~noisy], b.x[~noisy])
    assert abs(out.x[noisy].std().item() - 2.0) < 0.1


def test_extra_sources_are_appended_unlabelled_with_their_temperature():
    splits = select_split(DistillDataConfig(holdout_fraction=0.5), _splits(), "teacher")
    cfg = dict(augment="none", holdout_fraction=0.5, temperatures={"data": 4.0, "ood": 1.0, "held": 2.0},
               extra=[{"name": "ood", "kind": "shuffled", "per_batch": 0.5}, {"name": "held", "kind": "holdout"}])
    b = _batch(splits, 8)
    out = _policy(splits, **cfg)(b, 1)
    assert out.x.shape == (8 + 4 + 2, 1, 40)
    assert torch.equal(out.label_mask, torch.tensor([True] * 8 + [False] * 6))
    assert torch.equal(out.temperature, torch.tensor([4.0] * 8 + [1.0] * 4 + [2.0] * 2))
    assert bool((out.index[8:] == -1).all()) and bool((out.y[8:] == -1).all())
    # shuffled OOD samples are permutations of real training signals: same sorted values as one of them
    pool = splits.x_train.flatten(1).sort(1).values
    for row in out.x[8:12].flatten(1).sort(1).values:
        assert bool(((pool - row).abs().max(1).values < 1e-6).any())
    held = splits.holdout_x.flatten(1)
    for row in out.x[12:].flatten(1):
        assert bool(((held - row).abs().max(1).values == 0).any())


def test_temperatures_must_cover_the_active_sources():
    with pytest.raises(ValueError, match="missing"):
        DistillDataConfig(noise_prob=0.1, temperatures={"data": 4.0})
    with pytest.raises(ValueError, match="holdout_fraction"):
        DistillDataConfig(split="holdout")


def test_unknown_or_mismatched_preset_is_rejected():
    splits = _splits()
    with pytest.raises(ValueError, match="preset"):
        _policy(splits, augment="rotate")  # an image preset on 1-D signals
    with pytest.raises(ValueError, match="unknown"):
        _policy(splits, augment="sideways")
