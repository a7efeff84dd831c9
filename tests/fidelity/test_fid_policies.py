"""Distillation-data policies, Batch.label_mask / per-sample temperature in the methods, split control."""

import pytest
import torch
import torch.nn.functional as F

from kdlab.config.schema import DistillDataConfig
from kdlab.data import BatchLoader
from kdlab.data.augment import Shift1D
from kdlab.data.batch import Batch
from kdlab.data.splits import DataSplits
from kdlab.fidelity.policies import augment_preset, build_policy, holdout_slices, select_split
from kdlab.losses import kd_loss
from kdlab.methods import create as build
from kdlab.models import create
from kdlab.teachers.frozen import FrozenTeacher


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
    splits = select_split(DistillDataConfig(holdout_fraction=0.5), _splits(), "student")
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


@pytest.mark.parametrize("preset", ["shift", "reverse", "scale", "stretch", "combined"])
def test_1d_presets_keep_shape_and_are_seeded(preset):
    x = torch.randn(32, 1, 40)
    a = augment_preset(x, preset, torch.Generator().manual_seed(5))
    b = augment_preset(x, preset, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


def test_reverse_and_scale_presets_do_what_they_say():
    x = torch.randn(64, 1, 40)
    out = augment_preset(x, "reverse", torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54
    ratio = augment_preset(x, "scale", torch.Generator().manual_seed(0)) / x
    assert bool(((ratio.flatten(1) - ratio.flatten(1)[:, :1]).abs() < 1e-5).all())
    assert 0.8 <= ratio.min() and ratio.max() <= 1.2


@pytest.mark.parametrize("preset", ["crop_flip", "rotate", "vflip", "color_jitter", "combined"])
def test_image_presets(preset):
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = augment_preset(x, preset, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1


def test_holdout_split_control():
    splits = _splits(n=40)
    t, h = holdout_slices(40, 0.25)
    assert (t, h) == (slice(0, 30), slice(30, 40))
    cfg = DistillDataConfig(holdout_fraction=0.25, split="holdout")
    assert torch.equal(select_split(cfg, splits, "teacher").x_train, splits.x_train[:30])
    assert torch.equal(select_split(cfg, splits, "student").x_train, splits.x_train[30:])
    both = select_split(cfg.model_copy(update={"split": "both"}), splits, "student")
    assert both.num_train == 40
    with pytest.raises(ValueError, match="holdout_fraction"):
        holdout_slices(3, 0.9)


# ---- methods honour label_mask and per-sample temperature ---------------------------------------------------
def _kd(ce_weight=1.0, kd_weight=1.0):
    torch.manual_seed(0)
    teacher = FrozenTeacher(create("mnist1d_mlp", 10))
    return build("kd", create("mnist1d_mlp", 10), teacher, 10,
                 {"temperature": 4.0, "ce_weight": ce_weight, "kd_weight": kd_weight})


def test_ce_is_taken_over_labelled_samples_only():
    m = _kd(kd_weight=0.0)
    x, y = torch.randn(6, 1, 40), torch.tensor([1, 2, 3, -1, -1, 4])
    mask = y >= 0
    out = m(Batch(x=x, y=y, index=torch.arange(6), label_mask=mask), 1)
    expected = F.cross_entropy(m.student(x)[mask], y[mask])
    torch.testing.assert_close(out.losses["ce"], expected)
    none = m(Batch(x=x, y=torch.full((6,), -1), index=torch.arange(6), label_mask=torch.zeros(6, dtype=bool)), 1)
    assert none.losses["ce"].item() == 0.0


def test_kd_per_sample_temperature_matches_per_group_losses():
    m = _kd(ce_weight=0.0)
    x = torch.randn(6, 1, 40)
    tau = torch.tensor([4.0, 4.0, 1.0, 1.0, 2.0, 4.0])
    out = m(Batch(x=x, y=torch.zeros(6, dtype=torch.long), index=torch.arange(6), temperature=tau), 1)
    z, v = m.student(x), m.teacher.logits(x)
    expected = sum(kd_loss(z[tau == t], v[tau == t], temperature=float(t), reduction="sum") for t in tau.unique()) / 6
    torch.testing.assert_close(out.losses["kd"], expected)
    same = m(Batch(x=x, y=torch.zeros(6, dtype=torch.long), index=torch.arange(6),
                   temperature=torch.full((6,), 4.0)), 1)
    torch.testing.assert_close(same.losses["kd"], kd_loss(z, v, temperature=4.0))


def test_label_using_methods_refuse_unlabelled_samples():
    torch.manual_seed(0)
    dkd = build("dkd", create("mnist1d_mlp", 10), FrozenTeacher(create("mnist1d_mlp", 10)), 10, {})
    b = Batch(x=torch.randn(4, 1, 40), y=torch.zeros(4, dtype=torch.long), index=torch.arange(4),
              label_mask=torch.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="labels beyond cross-entropy"):
        dkd(b, 1)
    b.label_mask, b.temperature = None, torch.ones(4)
    with pytest.raises(ValueError, match="temperature"):
        dkd(b, 1)


def test_batch_to_moves_new_fields():
    b = Batch(x=torch.zeros(2, 1, 4), y=torch.zeros(2, dtype=torch.long), index=torch.arange(2),
              label_mask=torch.ones(2, dtype=bool), temperature=torch.ones(2))
    c = b.to("cpu")
    assert torch.equal(c.label_mask, b.label_mask) and torch.equal(c.temperature, b.temperature)
