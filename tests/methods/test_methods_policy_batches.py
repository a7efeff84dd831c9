"""Methods honour the batch fields the data policies set: ``label_mask`` (CE on labelled samples only) and a
per-sample ``temperature``; methods that use labels beyond CE refuse unlabelled samples."""

import pytest
import torch
import torch.nn.functional as F

from kdlab.data.batch import Batch
from kdlab.losses import kd_loss
from kdlab.methods import create as build
from kdlab.models import create
from kdlab.teachers.frozen import FrozenTeacher


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
