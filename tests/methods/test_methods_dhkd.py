"""DHKD: the auxiliary head, its loss, the gradient-alignment backward; and the single-head failure case."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.losses import binary_kl_loss, binary_kl_norm_loss
from kdlab.methods import get
from kdlab.methods.dhkd import projected_sum
from kdlab.models import forward_features


def _flat(gs):
    return torch.cat([g.reshape(-1) for g in gs])


def test_projection_removes_the_conflicting_component():
    g = torch.Generator().manual_seed(0)
    g1 = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    g2 = [-2.0 * a + 0.1 * torch.randn(a.shape, generator=g) for a in g1]  # strongly opposed
    f1, f2 = _flat(g1), _flat(g2)
    assert float(f1 @ f2) < 0
    total = projected_sum(g1, g2)
    g2_proj = _flat(total) - f1
    assert abs(float(g2_proj @ f1)) < 1e-5 * float(f1.norm() * f2.norm())  # orthogonal to the CE gradient
    torch.testing.assert_close(g2_proj, f2 - (f2 @ f1) / (f1 @ f1) * f1)
    assert [t.shape for t in total] == [t.shape for t in g1]


def test_no_projection_without_conflict():
    g = torch.Generator().manual_seed(1)
    g1 = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    g2 = [a + 0.1 * torch.randn(a.shape, generator=g) for a in g1]
    assert float(_flat(g1) @ _flat(g2)) > 0
    torch.testing.assert_close(_flat(projected_sum(g1, g2)), _flat(g1) + _flat(g2))
    zero = [torch.zeros(3, 4), torch.zeros(5)]  # ‖g1‖ = 0: nothing to project onto, no NaN
    torch.testing.assert_close(_flat(projected_sum(zero, g2)), _flat(g2))
    with pytest.raises(ValueError, match="same"):
        projected_sum(g1, g2[:1])


def test_defaults_and_head_shapes(make_method):
    p = get("dhkd").Params()
    assert (p.head, p.hidden, p.dropout, p.alpha, p.temperature, p.ce_weight) == ("nonlinear", 200, 0.1, 1.0, 2.0, 1.0)
    method = make_method("dhkd")
    head = method.aux_head
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.Dropout, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head[0].in_features == 128 and head[0].out_features == 200 and head[-1].out_features == 10
    assert head[1].p == 0.1
    assert method.aligns_gradients
    linear = make_method("dhkd", {"head": "linear"})
    assert isinstance(linear.aux_head, nn.Linear) and not linear.aligns_gradients
    assert make_method("dhkd", {"head": "linear", "gradient_alignment": True}).aligns_gradients
    # the aux head is trained but is not part of the evaluated network
    assert {id(q) for q in head.parameters()} <= {id(q) for q in method.parameters()}
    assert not {id(q) for q in head.parameters()} & {id(q) for q in method.eval_model().parameters()}
    assert method.eval_model() is method.student


def test_loss_dict(make_method, make_batch):
    method = make_method("dhkd", {"alpha": 0.5, "ce_weight": 2.0}).eval()  # eval: dropout off, same aux output
    batch = make_batch()
    out = method(batch, 1)
    with torch.no_grad():
        z, feats = forward_features(method.student, batch.x)
        aux = method.aux_head(feats["pooled"])
        v = method.teacher.logits(batch.x)
    assert set(out.losses) == {"ce", "bkln"}
    torch.testing.assert_close(out.logits, z)  # the main (CE) head's logits
    torch.testing.assert_close(out.losses["ce"], 2.0 * F.cross_entropy(z, batch.y))
    torch.testing.assert_close(out.losses["bkln"], 0.5 * binary_kl_norm_loss(aux, v, temperature=2.0))
    late = make_method("dhkd", {"alpha_zero_from_epoch": 50}).eval()
    assert late(batch, 49).losses["bkln"].detach().item() > 0 and late(batch, 50).losses["bkln"].detach().item() == 0.0


def _expected_grads(method, out):
    params = [q for q in method.parameters() if q.requires_grad]
    g1 = torch.autograd.grad(out.losses["ce"], params, retain_graph=True, allow_unused=True)
    g2 = torch.autograd.grad(out.losses["bkln"], params, retain_graph=True, allow_unused=True)
    return params, g1, g2


@pytest.mark.parametrize("align", [True, False])
def test_backward_is_the_aligned_sum(make_method, make_batch, align):
    method = make_method("dhkd", {"gradient_alignment": align}).eval()
    method.student.register_parameter("unused", nn.Parameter(torch.zeros(3)))  # reached by neither term
    out = method(make_batch(), 1)
    params, g1, g2 = _expected_grads(method, out)
    used = [i for i, (a, b) in enumerate(zip(g1, g2)) if a is not None or b is not None]
    assert len(used) == len(params) - 1
    f1 = torch.cat([(g1[i] if g1[i] is not None else torch.zeros_like(params[i])).reshape(-1) for i in used])
    f2 = torch.cat([(g2[i] if g2[i] is not None else torch.zeros_like(params[i])).reshape(-1) for i in used])
    dot = f1 @ f2
    expected = f1 + f2 - ((dot / (f1 @ f1)) * f1 if align and dot < 0 else 0)
    for i in used:  # pre-existing gradients are accumulated into, not overwritten
        params[i].grad = torch.ones_like(params[i])
    method.backward(out)
    got = torch.cat([params[i].grad.reshape(-1) for i in used]) - 1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert method.student.unused.grad is None
    assert all(q.grad is None for q in method.teacher.module.parameters())


def test_backward_projects_when_gradients_conflict(make_method, make_batch):
    """Force a conflict: the aux head is dropped and BKLN is put on the main head with reversed sign."""
    method = make_method("dhkd").eval()
    batch = make_batch()
    z = method.student(batch.x)
    v = method.teacher.logits(batch.x)
    ce = F.cross_entropy(z, batch.y)
    from kdlab.methods.base import StepOutput

    out = StepOutput(z, {"ce": ce, "bkln": -3.0 * ce + 0.1 * binary_kl_norm_loss(z, v)}, v)
    params = [q for q in method.student.parameters()]
    g1 = torch.autograd.grad(out.losses["ce"], params, retain_graph=True)
    g2 = torch.autograd.grad(out.losses["bkln"], params, retain_graph=True)
    f1, f2 = _flat(g1), _flat(g2)
    assert float(f1 @ f2) < 0
    method.backward(out)
    g2_proj = _flat([q.grad for q in params]) - f1
    assert abs(float(g2_proj @ f1)) <= 1e-4 * float(f1.norm() * g2_proj.norm())
    assert all(q.grad is None for q in method.aux_head.parameters())


def test_single_head_bkl_uses_the_same_head(make_method, make_batch):
    p = get("single_head_bkl").Params()
    assert (p.ce_weight, p.bkl_weight, p.temperature) == (1.0, 1.0, 2.0)
    method = make_method("single_head_bkl", {"bkl_weight": 3.0})
    batch = make_batch()
    out = method(batch, 1)
    with torch.no_grad():
        z, v = method.student(batch.x), method.teacher.logits(batch.x)
    assert set(out.losses) == {"ce", "bkl"}
    torch.testing.assert_close(out.losses["bkl"], 3.0 * binary_kl_loss(z, v, temperature=2.0))
    torch.testing.assert_close(out.losses["ce"], F.cross_entropy(z, batch.y))
    assert list(method.parameters()) == list(method.student.parameters())  # no extra head
    with pytest.raises(ValueError, match="both 0"):
        get("single_head_bkl").Params(ce_weight=0, bkl_weight=0)
