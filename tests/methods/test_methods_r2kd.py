"""R2KD: the loss dict and the second (augmented) view (its pruned-ensemble teacher: tests/teachers/test_pruned.py)."""

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from kdlab.data.mix import cutmix
from kdlab.losses import logit_standardize, r2kd_value_loss, spearman_loss
from kdlab.methods import get
from kdlab.teachers import prune_copy


def test_defaults():
    p = get("r2kd").Params()
    assert (p.lam, p.prune_amount, p.temperature, p.value_weight, p.rank_weight) == (0.7, 0.1, 4.0, 2.0, 2.0)
    assert (p.soft_rank, p.augment, p.pruned_bn_mode, p.ce_weight) == (False, "cutmix", "eval", 1.0)
    with pytest.raises(ValidationError, match="lam"):
        get("r2kd").Params(lam=1.2)


def _signal(method, x):
    with torch.no_grad():
        v = method.teacher.logits(x)
        vp = prune_copy(method.teacher.module, 0.1).eval()(x)
    return 0.7 * v + 0.3 * vp, v


@pytest.mark.parametrize("standardize", [False, True])
def test_loss_dict_without_second_view(make_method, make_batch, standardize):
    method = make_method("r2kd", {"augment": "none", "logit_standardization": standardize})
    batch = make_batch()
    out = method(batch, 1)
    with torch.no_grad():
        z = method.student(batch.x)
    mixed, v = _signal(method, batch.x)
    torch.testing.assert_close(out.teacher_logits, v)  # fidelity is measured against the unpruned teacher
    assert set(out.losses) == {"ce", "value"} and set(out.logs) == {"rank"}
    zs, vs = (logit_standardize(z), logit_standardize(mixed)) if standardize else (z, mixed)
    torch.testing.assert_close(out.losses["ce"], F.cross_entropy(z, batch.y))
    torch.testing.assert_close(out.losses["value"], 2.0 * r2kd_value_loss(zs, vs, temperature=4.0))
    torch.testing.assert_close(out.logs["rank"], 2.0 * spearman_loss(zs, vs, temperature=4.0))
    assert not out.logs["rank"].requires_grad


def test_soft_rank_joins_the_loss(make_method, make_batch):
    method = make_method("r2kd", {"augment": "none", "soft_rank": True, "rank_kappa": 0.05})
    batch = make_batch()
    out = method(batch, 1)
    with torch.no_grad():
        z = method.student(batch.x)
    mixed, _ = _signal(method, batch.x)
    assert set(out.losses) == {"ce", "value", "rank"} and not out.logs
    expected = 2.0 * spearman_loss(z, mixed, temperature=4.0, soft=True, kappa=0.05)
    torch.testing.assert_close(out.losses["rank"], expected)
    assert out.losses["rank"].requires_grad


def test_second_view_adds_only_distillation_terms(make_method, make_batch):
    method = make_method("r2kd")  # default: CutMix second view
    batch = make_batch()
    torch.manual_seed(11)
    out = method(batch, 1)
    assert set(out.losses) == {"ce", "value", "value_aug"} and set(out.logs) == {"rank", "rank_aug"}
    # replay the augmentation from the same global RNG state (the student MLP draws no random numbers)
    torch.manual_seed(11)
    x_hat = cutmix(batch.x, None, alpha=1.0)[0]
    assert not torch.equal(x_hat, batch.x)
    with torch.no_grad():
        z, z_hat = method.student(batch.x), method.student(x_hat)
    mixed_hat, _ = _signal(method, x_hat)
    torch.testing.assert_close(out.losses["ce"], F.cross_entropy(z, batch.y))  # CE on the clean view only
    torch.testing.assert_close(out.losses["value_aug"], 2.0 * r2kd_value_loss(z_hat, mixed_hat, temperature=4.0))
    clean = make_method("r2kd", {"augment": "none"})(batch, 1)
    torch.testing.assert_close(out.losses["value"], clean.losses["value"])
    torch.testing.assert_close(out.total, out.losses["ce"] + out.losses["value"] + out.losses["value_aug"])


def test_cutmixpick_keeps_the_highest_entropy_samples(make_method, make_batch):
    method = make_method("r2kd", {"augment": "cutmixpick", "pick_pool": 3})
    x = make_batch(n=6).x
    torch.manual_seed(5)
    x_hat, v_hat = method.second_view(x)
    torch.manual_seed(5)
    pool = torch.cat([cutmix(x, None, alpha=1.0)[0] for _ in range(3)])
    v_pool = method.teacher_signal.logits(pool)
    entropy = -(F.softmax(v_pool, 1) * F.log_softmax(v_pool, 1)).sum(1)
    keep = entropy.topk(6).indices
    assert x_hat.shape == x.shape
    torch.testing.assert_close(x_hat, pool[keep])
    torch.testing.assert_close(v_hat, method.teacher_signal.logits(x_hat))
    dropped = torch.ones(18, dtype=torch.bool)
    dropped[keep] = False
    assert float(entropy[keep].min()) >= float(entropy[dropped].max())


@pytest.mark.parametrize("kind", ["mixup", "cutout"])
def test_other_second_views_on_signals(make_method, make_batch, kind):
    method = make_method("r2kd", {"augment": kind, "cutout_size": 4})
    x = make_batch().x
    x_hat, v_hat = method.second_view(x)
    assert x_hat.shape == x.shape and not torch.equal(x_hat, x)
    torch.testing.assert_close(v_hat, method.teacher_signal.logits(x_hat))


def test_autoaugment_second_view_on_images(make_method, make_batch):
    method = make_method("r2kd", {"augment": "autoaugment"}, student="resnet8", teacher="resnet8")
    batch = make_batch(n=4, shape=(3, 8, 8))
    torch.manual_seed(0)
    out = method(batch, 1)
    assert set(out.losses) == {"ce", "value", "value_aug"} and torch.isfinite(out.total)


def test_method_moves_the_pruned_copy(make_method):
    method = make_method("r2kd")
    method.to(torch.float64)
    assert next(method.teacher_signal.pruned.parameters()).dtype == torch.float64
    assert next(method.teacher.module.parameters()).dtype == torch.float64
    assert method.describe()["second_view"] == "cutmix"
