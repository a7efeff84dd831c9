"""Method.adapt: the defaults that only suit CIFAR-100 (100 classes, 240 epochs, 32×32 images) are fitted to the run;
values the user gave are kept, or refused when they cannot work. And `kdlab methods`' one-line summaries."""

import pytest
import torch
from torch import nn

from kdlab import methods
from kdlab._checks import SettingError
from kdlab.data.batch import Batch
from kdlab.methods import RunFacts
from kdlab.teachers.frozen import FrozenTeacher


def _adapt(name, facts, given=(), **args):
    cls = methods.get(name)
    return cls.adapt(cls.Params(**args), facts, list(given) + list(args))


def test_ttm_beta_is_scaled_by_the_class_count_below_100_classes():
    hp, changes = _adapt("ttm", RunFacts(2, 240, (30,)))
    assert hp.beta == 2.0 and [c.key for c in changes] == ["beta"] and "C/100" in changes[0].why
    assert _adapt("ttm", RunFacts(100, 240, (3, 32, 32)))[1] == []  # CIFAR-100: the published default
    assert _adapt("ttm", RunFacts(2, 240, (30,)), beta=100.0)[0].beta == 100.0  # given: kept
    assert _adapt("wttm", RunFacts(2, 240, (30,)))[1] == []  # U_γ already scales WTTM's term


def test_unknown_given_keys_adapt_nothing():
    cls = methods.get("ttm")
    assert cls.adapt(cls.Params(), RunFacts(2, 240, (30,)), None)[1] == []  # a config of unknown origin


@pytest.mark.parametrize("classes, k", [(2, 1), (5, 4), (6, 5), (100, 5)])
def test_cakd_default_k_leaves_a_weak_set(classes, k):
    hp, _ = _adapt("cakd", RunFacts(classes, 240, (3, 32, 32)))
    assert hp.k == k


def test_cakd_given_k_beyond_the_classes_is_an_error_naming_the_key():
    with pytest.raises(SettingError, match=r"cakd: method\.args\.k=7 exceeds the number of classes \(5\)"):
        _adapt("cakd", RunFacts(5, 240, (3, 32, 32)), k=7)
    assert _adapt("cakd", RunFacts(5, 240, (3, 32, 32)), k=5)[0].k == 5  # S = every class: defined, kept


@pytest.mark.parametrize("name", ["dkd", "cakd"])
@pytest.mark.parametrize("epochs, warmup", [(10, 1), (60, 5), (120, 10), (240, 20), (400, 20)])
def test_default_warmup_is_dkds_share_of_the_run(name, epochs, warmup):
    hp, _ = _adapt(name, RunFacts(10, epochs, (1, 40)))
    assert hp.warmup == warmup
    assert _adapt(name, RunFacts(10, epochs, (1, 40)), warmup=20)[0].warmup == 20


def test_cakd_input_shape_is_refused_with_its_reason():
    """The feature shapes are read from a batch of the data (Method.setup), so the old probe argument is gone: a
    config that still gives it is told why, not silently accepted."""
    with pytest.raises(ValueError, match=r"'input_shape' is no longer an argument \(the feature shapes are read "
                                         r"from a batch of the data\); remove it"):
        methods.get("cakd").Params(feature=True, input_shape=[1, 40])
    assert _adapt("cakd", RunFacts(10, 240, (1, 40)), feature=True)[1] == []  # nothing shape-related to adapt


def test_every_method_has_a_plain_one_line_summary():
    for name in methods.names():
        text = methods.get(name).summary
        assert text and "\n" not in text and "`" not in text and len(text) < 110, name


# ------------------------------------------------------------------------------------------------------------------
# CAKD's feature level on a user's model without forward_features
# ------------------------------------------------------------------------------------------------------------------
class _Conv(nn.Module):
    """A user's 1-D CNN: no forward_features, stages named `body`, then `head`."""

    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(1, width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        return self.head(self.body(x).mean(-1))


def _cakd(args):
    torch.manual_seed(0)
    return methods.create("cakd", _Conv(8), FrozenTeacher(_Conv(16)), 4, {"feature": True, "k": 2, **args},
                          probe=torch.randn(2, 1, 12))


def test_cakd_features_without_forward_features_say_how_to_name_a_stage():
    with pytest.raises(SettingError, match=r"the student \(_Conv\) has no forward_features, so name the module whose "
                                           r"output is its feature map in method\.args\.student_stage: .*top-level "
                                           r"modules: body, head"):
        _cakd({})


def test_cakd_features_by_module_path():
    method = _cakd({"student_stage": "body", "teacher_stage": "body"})
    x = torch.randn(6, 1, 12)
    out = method(Batch(x=x, y=torch.randint(0, 4, (6,)), index=torch.arange(6)), 30)
    assert set(out.losses) == {"ce", "cakd", "cakd_feat"} and torch.isfinite(out.losses["cakd_feat"])
    assert tuple(method.connector[0].weight.shape) == (16, 8, 1)  # student 8 → teacher 16 channels


def test_a_feature_method_without_its_setup_says_what_to_call():
    method = methods.create("cakd", _Conv(8), FrozenTeacher(_Conv(16)), 4,
                            {"feature": True, "k": 2, "student_stage": "body", "teacher_stage": "body"})
    batch = Batch(x=torch.randn(6, 1, 12), y=torch.randint(0, 4, (6,)), index=torch.arange(6))
    with pytest.raises(RuntimeError, match=r"call method\.setup\(x\) with a few real inputs"):
        method(batch, 30)
    method.setup(batch.x)
    assert torch.isfinite(method(batch, 30).losses["cakd_feat"])
