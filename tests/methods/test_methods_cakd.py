"""CAKD at the logit and feature level: loss values recomputed from kdlab.losses, warm-up, the trainable connector."""

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from kdlab.losses import cakd_loss, kl_decomposition, strong_set_mass
from kdlab.methods import get
from kdlab.models import forward_features


def test_defaults():
    p = get("cakd").Params()
    assert (p.strong_set, p.k, p.mass) == ("topk", 5, 0.9)
    assert (p.gamma, p.alpha, p.beta, p.temperature, p.warmup, p.ce_weight) == (1.0, 1.0, 8.0, 4.0, 20, 1.0)
    assert (p.logit, p.feature, p.feature_temperature, p.feature_top_fraction) == (True, False, 4.0, 0.1)
    with pytest.raises(ValidationError, match="at least one of"):
        get("cakd").Params(logit=False, feature=False)
    with pytest.raises(ValidationError, match="strong_set"):
        get("cakd").Params(strong_set="top5")


def _topk_mask(v, k):
    return torch.zeros_like(v, dtype=torch.bool).scatter_(1, v.topk(k, dim=1).indices, True)


@pytest.mark.parametrize("rule", ["target", "topk", "mass"])
@pytest.mark.parametrize("epoch, factor", [(1, 0.05), (25, 1.0)])
def test_logit_level_loss_dict(make_method, make_batch, rule, epoch, factor):
    method = make_method("cakd", {"strong_set": rule, "k": 3, "alpha": 2.0, "beta": 6.0, "gamma": 0.5})
    batch = make_batch()
    out = method(batch, epoch)
    with torch.no_grad():
        z, v = method.student(batch.x), method.teacher.logits(batch.x)
    if rule == "target":
        mask = F.one_hot(batch.y, 10).bool()
    elif rule == "topk":
        mask = _topk_mask(v, 3)
    else:
        mask = strong_set_mass(v, threshold=0.9, temperature=1.0)
    assert set(out.losses) == {"ce", "cakd"}
    torch.testing.assert_close(out.losses["ce"], F.cross_entropy(z, batch.y))
    expected = factor * cakd_loss(z, v, mask, alpha=2.0, beta=6.0, gamma=0.5, temperature=4.0)
    torch.testing.assert_close(out.losses["cakd"], expected)
    assert float(out.logs["strong_set_size"]) == pytest.approx(mask.sum(1).float().mean().item())


def test_target_rule_equals_dkd(make_method, make_batch):
    batch = make_batch()
    cakd = make_method("cakd", {"strong_set": "target", "gamma": 1.0, "beta": 6.0})(batch, 7)
    dkd = make_method("dkd", {"alpha": 1.0, "beta": 6.0})(batch, 7)
    torch.testing.assert_close(cakd.losses["cakd"], dkd.losses["dkd"], rtol=1e-5, atol=1e-6)


def test_mass_rule_with_empty_weak_set_is_finite(make_method, make_batch):
    out = make_method("cakd", {"strong_set": "mass", "mass": 1.0})(make_batch(), 30)
    assert torch.isfinite(out.losses["cakd"])


def test_describe_reports_the_rule(make_method):
    d = make_method("cakd", {"k": 4}).describe()
    assert d["strong_set"] == "topk" and "top-4" in d["strong_set_rule"] and d["feature"] is False
    d = make_method("cakd", {"strong_set": "mass", "mass": 0.8, "feature": True}).describe()
    assert d["strong_set"] == "mass" and "0.8" in d["strong_set_rule"] and "feature_rule" in d


def test_k_larger_than_the_class_count_is_a_clear_error(make_method, make_batch):
    with pytest.raises(ValueError, match="k=11"):
        make_method("cakd", {"k": 11})(make_batch(), 1)


def _expected_feature_loss(method, batch, fraction=0.1, tau=4.0, gamma=1.0, alpha=1.0, beta=8.0):
    """Independent recomputation: connector → resize → rows (n, c) over positions → top-fraction mask."""
    _, s_feats = forward_features(method.student, batch.x)
    _, t_feats = method.teacher.features(batch.x)
    s, t = method.connector(s_feats["stages"][-1]), t_feats["stages"][-1]
    if s.shape[2:] != t.shape[2:]:
        s = F.interpolate(s, size=t.shape[2:], mode="bilinear" if s.dim() == 4 else "linear", align_corners=False)
    n, c = t.shape[:2]
    s_rows, t_rows = s.reshape(n * c, -1), t.reshape(n * c, -1)
    k = max(1, round(fraction * t_rows.shape[1]))
    bcd, scd, wcd = kl_decomposition(s_rows, t_rows, _topk_mask(t_rows, k), temperature=tau)
    return tau**2 * (gamma * bcd + alpha * scd + beta * wcd).mean()


@pytest.mark.parametrize(
    "student, teacher, shape, conv",
    [
        ("mnist1d_mlp", "mnist1d_cnn", (1, 40), nn.Conv1d),  # student map [N,128,1] → resized to the teacher's 10
        ("vgg8", "resnet8", (3, 16, 16), nn.Conv2d),  # 512 ch at 2×2 → 64 ch at 4×4 (bilinear)
    ],
)
def test_feature_level_connector_is_trained_and_loss_is_exact(make_method, make_batch, student, teacher, shape, conv):
    args = {"feature": True, "feature_alpha": 0.5, "feature_beta": 3.0}
    method = make_method("cakd", args, student=student, teacher=teacher, shape=shape)
    assert isinstance(method.connector[0], conv) and method.connector[0].kernel_size == (1,) * (len(shape) - 1)
    connector_ids = {id(p) for p in method.connector.parameters()}
    assert connector_ids <= {id(p) for p in method.parameters()}, "the connector must reach the optimizer"
    batch = make_batch(n=4, shape=shape)
    method.train()
    out = method(batch, 20)
    assert set(out.losses) == {"ce", "cakd", "cakd_feat"}
    method.eval()  # same BN mode for the recomputation (train-mode BN would see the same batch, but be explicit)
    with torch.no_grad():
        expected = _expected_feature_loss(method, batch, alpha=0.5, beta=3.0)
        got = method(batch, 20).losses["cakd_feat"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    method.train()
    method.backward(out)
    grads = [p.grad for p in method.connector.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_feature_warmup_and_feature_only(make_method, make_batch):
    args = {"feature": True, "logit": False}
    method = make_method("cakd", args).eval()
    batch = make_batch()
    early, late = method(batch, 2).losses, method(batch, 40).losses
    assert set(late) == {"ce", "cakd_feat"}
    torch.testing.assert_close(early["cakd_feat"], 0.1 * late["cakd_feat"])


def test_the_setup_probe_leaves_the_student_untouched(make_method):
    from kdlab.methods import create as build
    from kdlab.models import create

    teacher = make_method("cakd").teacher
    student = create("mnist1d_cnn_small", 10).train()
    state = {k: t.clone() for k, t in student.state_dict().items()}
    method = build("cakd", student, teacher, 10, {"feature": True}, probe=torch.randn(4, 1, 40))
    assert student.training, "the student's mode is restored after the shape probe"
    # BN running statistics and the batch counter are unchanged: the probe ran in eval mode
    assert all(torch.equal(t, state[k]) for k, t in student.state_dict().items())
    assert method.connector[0].in_channels == 16 and method.connector[0].out_channels == 64


def test_a_stage_path_that_names_no_module_is_an_error_naming_the_key(make_method):
    with pytest.raises(ValueError, match=r"cakd: the student's and the teacher's features could not be read.*"
                                         r"stage path 'layer9' does not name a submodule"):
        make_method("cakd", {"feature": True, "student_stage": "layer9"})
