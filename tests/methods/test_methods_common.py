"""Properties every distillation method must have: registration, validated params, trainable-only gradients."""

import pytest
import torch
from pydantic import ValidationError

import kdlab.methods as methods
from kdlab.losses import logit_standardize

# every registered method is covered here as soon as it is registered (no list to keep); a few need arguments that
# make the test meaningful (r2kd's second view off by default would leave its augmented-view terms out)
DISTILLERS = [name for name in methods.names() if name != "ce"]
TEST_ARGS = {"r2kd": {"augment": "cutmix"}, "cakd": {"feature": True}, "mlkd": {"strong_augment": "cutout"}}
# the feature methods pair stages of mnist1d_cnn_small (16x20, 16x10) with mnist1d_cnn's (…, 64x20, 64x10)
STAGES = {"student_stages": [0, 1], "teacher_stages": [2, 3]}
TEST_ARGS |= {"fitnet": {"student_stage": 0, "teacher_stage": 2}, "at": STAGES, "nst": STAGES, "kdsvd": STAGES,
              "vid": STAGES}
TEST_NETS = {name: {"student": "mnist1d_cnn_small"} for name in ("fitnet", "at", "nst", "pkt", "rkd", "sp", "kdsvd",
                                                                   "vid")}
TEST_NETS |= {"sdd": {"student": "mnist1d_cnn_small"}}
# methods whose distillation terms are softmax-based and so take the logit-standardisation switch
# (r2kd standardises the mixed signal ṽ, which its own test checks)
SOFTMAX_BASED = ["cakd", "cmkd", "dist", "dkd", "ttm", "wttm", "kd", "nkd", "ctkd"]


def test_every_method_is_registered():
    assert {"ce", "kd", "dkd", "cakd", "ttm", "wttm", "dist", "r2kd", "cmkd", "dhkd", "single_head_bkl"} <= set(
        methods.names())


@pytest.mark.parametrize("name", DISTILLERS)
def test_params_reject_unknown_keys_and_out_of_range_values(name):
    cls = methods.get(name).Params
    with pytest.raises(ValidationError, match="extra"):
        cls.model_validate({"no_such_option": 1})
    bounded = [k for k in ("temperature", "ce_weight") if k in cls.model_fields]
    assert bounded, f"{name} has neither temperature nor ce_weight"
    for key in bounded:
        with pytest.raises(ValidationError, match=key):
            cls.model_validate({key: -1.0})


@pytest.mark.parametrize("name", DISTILLERS)
def test_gradients_reach_only_trainable_parameters(name, make_method, make_batch):
    method = make_method(name, TEST_ARGS.get(name), **TEST_NETS.get(name, {}))
    teacher = method.teacher.module
    before = {k: t.clone() for k, t in teacher.state_dict().items()}
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in method.parameters()}, "teacher parameters must not be optimised"
    opt = torch.optim.SGD(method.parameters(), lr=0.5)
    method.train()
    out = method(make_batch(), epoch=30)
    assert set(out.losses) and all(t.dim() == 0 and torch.isfinite(t) for t in out.losses.values())
    method.backward(out)
    assert all(p.grad is None for p in teacher.parameters())
    student_grads = [p.grad for p in method.student.parameters()]
    assert all(g is not None for g in student_grads), "every student parameter is used by the loss"
    assert sum(float(g.abs().sum()) for g in student_grads) > 0
    opt.step()
    for k, t in teacher.state_dict().items():
        assert torch.equal(t, before[k]), f"teacher tensor {k} changed"
    assert not teacher.training, "the teacher stays in eval mode"
    assert method.eval_model() is method.student


@pytest.mark.parametrize("name", SOFTMAX_BASED)
def test_logit_standardization_switch_equals_standardised_inputs(name, make_method, make_batch):
    """With the switch on, the distillation terms equal those of the same method fed standardised logits."""
    batch = make_batch()
    on = make_method(name, {"logit_standardization": True})
    off = make_method(name)
    off.load_state_dict(on.state_dict())

    class Standardised(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return logit_standardize(self.net(x))

    z = on.student(batch.x)
    # feed the "off" method networks whose outputs are already standardised
    off.student = Standardised(off.student)
    off.teacher.module = Standardised(off.teacher.module).eval()
    out_on, out_off = on(batch, 30), off(batch, 30)
    assert torch.allclose(out_on.logits, z)
    for key in out_on.losses:
        if key == "ce":
            continue  # CE always uses the raw logits
        torch.testing.assert_close(out_on.losses[key], out_off.losses[key], rtol=1e-5, atol=1e-6)
    changed = any(
        not torch.allclose(out_on.losses[k], make_method(name)(batch, 30).losses[k])
        for k in out_on.losses if k != "ce"
    )
    assert changed, "switching standardisation on must change the distillation terms"


@pytest.mark.parametrize("name", DISTILLERS)
def test_every_distiller_names_its_term_weights_for_the_guards_advice(name):
    # the divergence guard's "lower the weight of the largest term" names these (RKD: distance 25 and angle 50, which
    # a user could not guess from the term's name 'rkd')
    cls = methods.get(name)
    hp = cls.Params(**TEST_ARGS.get(name, {}))
    weights = cls.loss_weights(hp)
    assert weights and set(weights) <= set(type(hp).model_fields) and "ce_weight" not in weights
    assert all(isinstance(v, float) and v == getattr(hp, k) for k, v in weights.items() if k != "feature_gamma")


def test_term_weights_that_are_not_named_weight_are_declared():
    def of(name, **args):
        cls = methods.get(name)
        return cls.loss_weights(cls.Params(**args))
    assert of("rkd") == {"feat_weight": 1.0, "distance_weight": 25.0, "angle_weight": 50.0}
    assert of("dkd") == {"alpha": 1.0, "beta": 8.0} and of("dist") == {"beta": 2.0, "gamma": 2.0}
    assert of("ttm") == {"beta": 100.0}  # not γ = 1/T, which is no weight
    assert of("cakd") == {"gamma": 1.0, "alpha": 1.0, "beta": 8.0}
    assert of("cakd", logit=False, feature=True) == {"feature_gamma": 1.0, "feature_alpha": 1.0, "feature_beta": 8.0}
    assert methods.get("ce").loss_weights(methods.get("ce").Params()) == {}
