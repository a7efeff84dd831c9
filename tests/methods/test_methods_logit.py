"""DKD, TTM, WTTM, DIST and CMKD: loss dicts recomputed from kdlab.losses, defaults, DKD's warm-up."""

import pytest
import torch
import torch.nn.functional as F

from kdlab.losses import cmkd_loss, dist_loss, dkd_loss, ttm_loss, wttm_loss
from kdlab.methods import get


def _logits(method, batch):
    with torch.no_grad():
        return method.student(batch.x), method.teacher.logits(batch.x)


def test_dkd_defaults_match_the_cifar_recipe():
    p = get("dkd").Params()
    assert (p.alpha, p.beta, p.temperature, p.warmup, p.ce_weight) == (1.0, 8.0, 4.0, 20, 1.0)


@pytest.mark.parametrize("epoch, factor", [(1, 1 / 20), (10, 0.5), (20, 1.0), (200, 1.0)])
def test_dkd_loss_dict_and_warmup(make_method, make_batch, epoch, factor):
    method = make_method("dkd", {"beta": 6.0, "ce_weight": 0.5})
    batch = make_batch()
    out = method(batch, epoch)
    z, v = _logits(method, batch)
    assert set(out.losses) == {"ce", "dkd"}
    torch.testing.assert_close(out.losses["ce"], 0.5 * F.cross_entropy(z, batch.y))
    expected = factor * dkd_loss(z, v, batch.y, alpha=1.0, beta=6.0, temperature=4.0)
    torch.testing.assert_close(out.losses["dkd"], expected)
    assert float(out.logs["warmup"]) == pytest.approx(factor)
    torch.testing.assert_close(out.total, out.losses["ce"] + out.losses["dkd"])
    torch.testing.assert_close(out.teacher_logits, v)


def test_dkd_without_warmup_is_full_strength_at_epoch_one(make_method, make_batch):
    batch = make_batch()
    out = make_method("dkd", {"warmup": 0})(batch, 1)
    full = make_method("dkd")(batch, 20)
    torch.testing.assert_close(out.losses["dkd"], full.losses["dkd"])


def test_ttm_and_wttm_defaults_are_the_resnet32x4_resnet8x4_values():
    ttm, wttm = get("ttm").Params(), get("wttm").Params()
    assert (ttm.gamma, ttm.beta, ttm.ce_weight) == (0.1, 100.0, 1.0)
    assert (wttm.gamma, wttm.beta, wttm.ce_weight) == (0.1, 3.0, 1.0)


@pytest.mark.parametrize("name, fn", [("ttm", ttm_loss), ("wttm", wttm_loss)])
def test_ttm_family_loss_dict(make_method, make_batch, name, fn):
    method = make_method(name, {"gamma": 0.3, "beta": 7.0})
    batch = make_batch()
    out = method(batch, 1)  # no warm-up: epoch does not matter
    z, v = _logits(method, batch)
    assert set(out.losses) == {"ce", name}
    torch.testing.assert_close(out.losses["ce"], F.cross_entropy(z, batch.y))
    torch.testing.assert_close(out.losses[name], 7.0 * fn(z, v, gamma=0.3))
    torch.testing.assert_close(out.losses[name], method(batch, 200).losses[name])


def test_dist_loss_dict_and_defaults(make_method, make_batch):
    p = get("dist").Params()
    assert (p.beta, p.gamma, p.temperature, p.ce_weight) == (2.0, 2.0, 4.0, 1.0)
    method = make_method("dist")
    batch = make_batch()
    out = method(batch, 1)
    z, v = _logits(method, batch)
    assert set(out.losses) == {"ce", "dist"}
    torch.testing.assert_close(out.losses["ce"], F.cross_entropy(z, batch.y))
    torch.testing.assert_close(out.losses["dist"], dist_loss(z, v, beta=2.0, gamma=2.0, temperature=4.0))


@pytest.mark.parametrize("standardize", [False, True])
def test_cmkd_loss_dict_is_not_doubled(make_method, make_batch, standardize):
    method = make_method("cmkd", {"logit_standardization": standardize})
    batch = make_batch()
    out = method(batch, 1)
    z, v = _logits(method, batch)
    assert set(out.losses) == {"ce", "cmkd"}
    # cmkd_loss already holds the factor 2·τ²: the method adds no second factor of 2
    torch.testing.assert_close(
        out.losses["cmkd"], cmkd_loss(z, v, temperature=4.0, kappa=0.01, logit_standardization=standardize)
    )
    torch.testing.assert_close(out.losses["ce"], F.cross_entropy(z, batch.y))
