"""The documented argument names (README: ``student_logits, teacher_logits``; docs/losses.md: ``z, v``) are both
accepted, and a swapped pair is caught without a host sync."""

import pytest
import torch

from kdlab import losses as L

PAIR_LOSSES = [L.kd_loss, L.ttm_loss, L.wttm_loss, L.dist_loss, L.r2kd_value_loss, L.spearman_loss, L.cmkd_loss,
               L.binary_kl_loss, L.binary_kl_norm_loss]


def _pair():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 5, generator=g, requires_grad=True), torch.randn(8, 5, generator=g)


@pytest.mark.parametrize("loss", PAIR_LOSSES, ids=lambda f: f.__name__)
def test_documented_names_and_positions_give_the_same_value(loss):
    z, v = _pair()
    ref = loss(z, v)
    torch.testing.assert_close(loss(student_logits=z, teacher_logits=v), ref)
    torch.testing.assert_close(loss(z=z, v=v), ref)
    with pytest.raises(ValueError, match="give student_logits or z, not both"):
        loss(z=z, student_logits=z, teacher_logits=v)


def test_target_losses_take_the_names_too():
    z, v = _pair()
    y = torch.arange(8) % 5
    torch.testing.assert_close(L.dkd_loss(student_logits=z, teacher_logits=v, target=y), L.dkd_loss(z, v, y))
    mask = L.strong_set_topk(v, k=2)
    torch.testing.assert_close(L.cakd_loss(student_logits=z, teacher_logits=v, strong_mask=mask),
                               L.cakd_loss(z, v, mask))


@pytest.mark.parametrize("loss", PAIR_LOSSES, ids=lambda f: f.__name__)
def test_a_swapped_pair_is_an_error(loss):
    student, teacher = _pair()  # the student's logits require grad, the teacher's (no_grad) do not
    with pytest.raises(ValueError, match="the pair looks swapped"):
        loss(teacher, student)
    loss(teacher, student.detach())  # detached on purpose: allowed
    with L.validation(False):  # the check is metadata only: it holds with the synchronising checks off
        with pytest.raises(ValueError, match="the pair looks swapped"):
            loss(teacher, student)
