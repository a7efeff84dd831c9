"""Which methods may train from FKD's top-k teacher outputs: `Method.needs_full_teacher_distribution(hp)`."""

import pytest

from kdlab import methods


@pytest.mark.parametrize("name, args, needs", [
    ("kd", {"temperature": 1.0}, False),  # FKD's soft labels: KL to softmax(v), top-k and tail mass kept
    ("kd", {"temperature": 4.0}, True),  # the temperature re-weights the evenly spread tail
    ("kd", {"temperature": 1.0, "logit_standardization": True}, True),  # mean and spread of all raw logits
    ("ce", {}, False),  # the teacher only feeds the fidelity report
    ("dkd", {}, True), ("dist", {}, True), ("ttm", {}, True), ("wttm", {}, True), ("cmkd", {}, True),
    ("single_head_bkl", {}, True), ("dhkd", {}, True), ("r2kd", {}, True), ("cakd", {}, True),
    # the feature methods never read the teacher's logits (its features come from the live teacher)
    *((name, {}, False) for name in ("fitnet", "at", "nst", "pkt", "rkd", "sp", "kdsvd", "vid")),
    ("nkd", {"temperature": 1.0}, True),  # the non-target distribution renormalised over the C − 1 classes
    ("ctkd", {}, True), ("mlkd", {}, True), ("sdd", {}, True),
])
def test_needs_full_teacher_distribution(name, args, needs):
    cls = methods.get(name)
    assert cls.needs_full_teacher_distribution(cls.Params.model_validate(args)) is needs


def test_every_registered_method_answers():
    for name in methods.names():
        cls = methods.get(name)
        assert isinstance(cls.needs_full_teacher_distribution(cls.Params.model_validate({})), bool), name
