"""init_from_teacher: θ = λθ_t + (1−λ)θ_rand per tensor, exact endpoints, BatchNorm statistics."""

import pytest
import torch
from torch import nn

from kdlab.models.init_from_teacher import init_from_teacher, recompute_bn_stats
from kdlab.models import create


def _pair(arch="mnist1d_cnn"):
    torch.manual_seed(0)
    teacher = create(arch, 10)
    # give the teacher non-default BN statistics, as a trained one has
    with torch.no_grad():
        teacher.train()
        teacher(torch.randn(64, 1, 40) * 3 + 1)
    teacher.eval()
    torch.manual_seed(1)
    return teacher, create(arch, 10)


def _loader(n_batches=3, size=16, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 40, generator=g) * 2 - 0.5, torch.zeros(size, dtype=torch.long))
            for _ in range(n_batches)]


def test_lambda_one_copies_teacher_bit_exactly():
    teacher, student = _pair()
    init_from_teacher(student, teacher, 1.0, _loader())
    for name, t in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[name], t), name


def test_lambda_zero_leaves_random_init_untouched():
    teacher, student = _pair()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    init_from_teacher(student, teacher, 0.0, _loader())
    for name, v in student.state_dict().items():
        assert torch.equal(v, before[name]), name


@pytest.mark.parametrize("lam", [0.25, 0.7])
def test_interpolates_every_parameter(lam):
    teacher, student = _pair()
    before = {k: v.clone() for k, v in student.named_parameters()}
    init_from_teacher(student, teacher, lam, _loader())
    t_params = dict(teacher.named_parameters())
    for name, p in student.named_parameters():
        torch.testing.assert_close(p, lam * t_params[name] + (1 - lam) * before[name], rtol=0, atol=1e-6)


def test_bn_recompute_is_cumulative_average_over_loader():
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Flatten(), nn.Linear(40, 5), nn.BatchNorm1d(5))  # noqa: E731
    teacher, student = make(), make()
    teacher[2].running_mean.fill_(7.0)
    loader = _loader(n_batches=4)
    init_from_teacher(student, teacher, 0.5, loader)
    with torch.no_grad():
        acts = torch.cat([student[1](b[0].flatten(1)) for b in loader])
    # equal batch sizes: the cumulative average of batch means is the mean over all samples
    torch.testing.assert_close(student[2].running_mean, acts.mean(0), rtol=1e-5, atol=1e-5)
    batch_vars = torch.stack([student[1](b[0].flatten(1)).var(0, unbiased=True) for b in loader]).detach()
    torch.testing.assert_close(student[2].running_var, batch_vars.mean(0), rtol=1e-5, atol=1e-5)
    assert student[2].momentum == 0.1 and student.training  # restored


def test_bn_keep_interpolates_statistics():
    teacher, student = _pair()
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    init_from_teacher(student, teacher, 0.4, bn="keep")
    for name, v in student.state_dict().items():
        if "running_" in name:
            torch.testing.assert_close(v, 0.4 * teacher.state_dict()[name] + 0.6 * s_before[name])
        if "num_batches_tracked" in name:
            assert torch.equal(v, s_before[name])


def test_shape_mismatch_names_the_tensor():
    teacher, student = create("mnist1d_cnn", 10), create("mnist1d_cnn", 5)
    with pytest.raises(ValueError, match=r"tensor '\w[\w.]*' has shape"):
        init_from_teacher(student, teacher, 0.5, _loader())


def test_bad_arguments():
    teacher, student = _pair()
    with pytest.raises(ValueError, match="lam"):
        init_from_teacher(student, teacher, 1.5)
    with pytest.raises(ValueError, match="loader"):
        init_from_teacher(student, teacher, 0.5)
    with pytest.raises(ValueError, match="bn"):
        init_from_teacher(student, teacher, 0.5, _loader(), bn="reset")
    with pytest.raises(ValueError, match="same architecture"):
        init_from_teacher(create("mnist1d_mlp", 10), teacher, 0.5, _loader())
    with pytest.raises(ValueError, match="no batches"):
        recompute_bn_stats(student, [])
