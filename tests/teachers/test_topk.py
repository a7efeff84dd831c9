"""FKD's top-k teacher outputs with the remaining mass: what the reconstruction keeps, and its measured KL."""

import math

import pytest
import torch

from kdlab.eval.metrics import kl_per_example
from kdlab.losses import kd_loss
from kdlab.teachers.topk import topk_compress, topk_expand


def _logits(n=64, c=100, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, c, generator=g)


def test_top_k_probabilities_and_the_tail_mass_are_kept():
    v = _logits()
    p = v.softmax(1)
    log_p, index, log_rest = topk_compress(v, 10)
    assert log_p.dtype == torch.float16 and index.dtype == torch.int16 and log_rest.dtype == torch.float32
    q = topk_expand(log_p, index, log_rest, 100).softmax(1)
    top = p.topk(10, dim=1)
    assert torch.equal(index.long(), top.indices)  # the classes, in decreasing order
    torch.testing.assert_close(q.gather(1, top.indices), top.values, rtol=2e-3, atol=1e-6)  # float16 log-probs
    tail = torch.ones_like(p, dtype=torch.bool).scatter(1, top.indices, False)
    torch.testing.assert_close((q * tail).sum(1), (p * tail).sum(1), rtol=2e-3, atol=1e-6)  # the remaining mass
    torch.testing.assert_close(q.sum(1), torch.ones(64))
    assert torch.equal(q.argmax(1), p.argmax(1))
    # the tail is shared evenly: R / (C - k) on each of the other classes
    torch.testing.assert_close(q[tail].view(64, 90), ((p * tail).sum(1, keepdim=True) / 90).expand(64, 90),
                               rtol=2e-3, atol=1e-7)


def test_kl_is_bounded_by_the_tail_mass_and_falls_with_k():
    v = _logits(scale=4.0)
    kls = []
    for k in (1, 5, 10, 50, 99):
        log_p, index, log_rest = topk_compress(v, k)
        kl = kl_per_example(v, topk_expand(log_p, index, log_rest, 100))
        rest = log_rest.exp()
        # KL(p || p̂) = R · KL(p_tail/R || uniform) <= R · log(C - k), up to the float16 rounding of the top k
        assert torch.all(kl <= rest * math.log(100 - k) + 2e-3), k
        kls.append(float(kl.mean()))
    assert kls == sorted(kls, reverse=True) and kls[-1] < 1e-3 < kls[0]


def test_a_uniform_tail_is_reconstructed_exactly():
    v = torch.full((3, 20), -2.0)
    v[:, :4] = torch.tensor([5.0, 3.0, 2.0, 1.0])
    log_p, index, log_rest = topk_compress(v, 4)
    q = topk_expand(log_p, index, log_rest, 20)
    assert float(kl_per_example(v, q).max()) < 1e-6


def test_an_empty_tail_stays_finite_in_the_losses():
    v = torch.tensor([[0.0, -200.0, -200.0], [50.0, 0.0, -400.0]])  # tail mass underflows to 0
    log_p, index, log_rest = topk_compress(v, 1)
    q = topk_expand(log_p, index, log_rest, 3)
    assert torch.isfinite(q).all()
    assert torch.isfinite(kd_loss(torch.zeros(2, 3), q, temperature=4.0))


def test_k_must_leave_a_tail():
    with pytest.raises(ValueError, match="k must be an int in \\[1, 9\\]"):
        topk_compress(torch.zeros(2, 10), 10)
    with pytest.raises(ValueError, match="k must be an int"):
        topk_compress(torch.zeros(2, 10), 0)
