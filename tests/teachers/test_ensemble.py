"""Ensemble teachers: combination rules, frozen members, validation, disjoint member pools."""

import copy

import pytest
import torch
from torch import nn

from kdlab.teachers import Ensemble, disjoint_members

IN, C = 6, 5


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(IN, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, C))


def _x(n=16):
    return torch.randn(n, IN, generator=torch.Generator().manual_seed(99))


@pytest.mark.parametrize("rule,temp", [("prob", None), ("tempered_prob", 3.0), ("logit", None)])
def test_m_copy_ensemble_equals_its_member(rule, temp):
    member = _net(0).eval()
    x = _x()
    with torch.no_grad():
        z = member(x)
        out = Ensemble([copy.deepcopy(member) for _ in range(4)], rule=rule, temperature=temp)(x)
    scale = temp or 1.0
    # same distribution (logits are defined up to a per-row constant)
    torch.testing.assert_close(torch.softmax(out, 1), torch.softmax(z / scale, 1), rtol=1e-5, atol=1e-6)
    if rule == "logit":
        torch.testing.assert_close(out, z)


def test_prob_rule_is_log_of_mean_member_softmax():
    members = [_net(s) for s in range(3)]
    x = _x()
    ens = Ensemble(members)
    with torch.no_grad():
        probs = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
        out = ens(x)
    torch.testing.assert_close(out, probs.log(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.softmax(out, 1), probs, rtol=1e-5, atol=1e-7)
    # averaging probabilities is not averaging logits: the rules must differ on distinct members
    with torch.no_grad():
        mean_logits = Ensemble(members, rule="logit")(x)
    assert not torch.allclose(torch.softmax(mean_logits, 1), probs, atol=1e-4)


def test_tempered_prob_and_logit_rules_match_their_formulas():
    members = [_net(s) for s in range(3)]
    x = _x()
    with torch.no_grad():
        zs = torch.stack([m.eval()(x) for m in members])
        tempered = Ensemble(members, rule="tempered_prob", temperature=4.0)(x)
        logit = Ensemble(members, rule="logit")(x)
    torch.testing.assert_close(tempered, torch.softmax(zs / 4.0, -1).mean(0).log(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logit, zs.mean(0))


def test_members_stay_in_eval_mode_and_frozen():
    members = [_net(s) for s in range(2)]
    for m in members:
        m.train()
    ens = Ensemble(members)
    parent = nn.ModuleDict({"teacher": ens, "student": _net(5)})
    parent.train()
    assert ens.training and parent["student"].training
    assert all(not sub.training for m in ens.members for sub in m.modules())
    assert all(not p.requires_grad for p in ens.parameters())
    stats = members[0][1].running_mean.clone()
    x = _x()
    out1, out2 = ens(x), ens(x)
    torch.testing.assert_close(out1, out2)  # dropout off
    torch.testing.assert_close(members[0][1].running_mean, stats)  # BN statistics untouched
    ens.eval()
    assert not ens.training


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"members": []}, ValueError, "at least one"),
        ({"members": [nn.Linear(2, 2), "model"]}, TypeError, r"members\[1\]"),
        ({"members": nn.Linear(2, 2)}, TypeError, "list"),
        ({"members": [nn.Linear(2, 2)], "rule": "median"}, ValueError, "rule"),
        ({"members": [nn.Linear(2, 2)], "rule": "tempered_prob"}, ValueError, "temperature"),
        ({"members": [nn.Linear(2, 2)], "rule": "tempered_prob", "temperature": 0.0}, ValueError, "positive"),
        ({"members": [nn.Linear(2, 2)], "rule": "prob", "temperature": 4.0}, ValueError, "only used"),
    ],
)
def test_constructor_validation(kwargs, err, match):
    with pytest.raises(err, match=match):
        Ensemble(**kwargs)


def test_class_count_mismatch_raises_on_forward_naming_each_member():
    ens = Ensemble([nn.Linear(IN, 5), nn.Linear(IN, 7)])
    assert ens.num_classes is None
    with pytest.raises(ValueError, match="member 0: 5 classes.*member 1: 7 classes"):
        ens(_x())
    ok = Ensemble([nn.Linear(IN, 5), nn.Linear(IN, 5)])
    ok(_x())
    assert ok.num_classes == 5


def test_disjoint_members_slices():
    pool = list(range(10))
    slices = [disjoint_members(pool, 3, i) for i in range(3)]
    assert slices == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert len({m for sl in slices for m in sl}) == 9  # pairwise disjoint
    with pytest.raises(ValueError, match="pool of 10 teachers is too small.*need 12"):
        disjoint_members(pool, 3, 3)
    with pytest.raises(ValueError, match="size"):
        disjoint_members(pool, 0, 0)
    with pytest.raises(ValueError, match="seed_index"):
        disjoint_members(pool, 2, -1)
