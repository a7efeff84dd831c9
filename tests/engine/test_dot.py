"""DOT, the distillation-oriented trainer (kdlab.engine.dot): its step against the update rule written out (a
parameter reached by both terms, by the CE term only, by the distillation terms only), Δ = 0 being SGD, exact
resume from its state dict, the loop running it for any method, and the settings it refuses."""

import copy

import pytest
import torch
from torch import nn

from kdlab._checks import SettingError
from kdlab.builder import load_config, plan
from kdlab.engine.dot import DOT, dot_backward
from kdlab.engine.loop import LoopSettings, make_optimizer


class Toy(nn.Module):
    """shared → (head: CE only), (aux: distillation only); both terms reach `shared`."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(5, 4)
        self.head = nn.Linear(4, 3)
        self.aux = nn.Linear(4, 3)

    def losses(self, x, y):
        h = torch.tanh(self.shared(x))
        ce = nn.functional.cross_entropy(self.head(h), y)
        kd = (self.aux(h) - 0.5).square().mean() + 0.3 * h.square().mean()
        return {"ce": ce, "kd": kd}


def _data(step):
    g = torch.Generator().manual_seed(step)
    return torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)


def reference_dot(model, steps, lr, mu, delta, wd):
    """The update rule (mdistiller's engine/dot.py, weight decay on every step of a distillation-only parameter):
    task buffer (μ−Δ or μ), distillation buffer (μ+Δ or μ), θ ← θ − η·v_task − η·v_kd."""
    params = dict(model.named_parameters())
    v_task, v_kd = {}, {}
    for step in range(steps):
        x, y = _data(step)
        losses = model.losses(x, y)
        g_t = dict(zip(params, torch.autograd.grad(losses["ce"], list(params.values()), retain_graph=True,
                                                   allow_unused=True)))
        g_k = dict(zip(params, torch.autograd.grad(losses["kd"], list(params.values()), allow_unused=True)))
        with torch.no_grad():
            for name, p in params.items():
                gt, gk = g_t[name], g_k[name]
                if gt is not None:
                    d = gt + wd * p
                    v_task[name] = d.clone() if name not in v_task else (mu - delta if gk is not None else mu) * \
                        v_task[name] + d
                    p -= lr * v_task[name]
                if gk is not None:
                    d = gk if gt is not None else gk + wd * p
                    v_kd[name] = d.clone() if name not in v_kd else (mu + delta if gt is not None else mu) * \
                        v_kd[name] + d
                    p -= lr * v_kd[name]


def _train(model, opt, steps, first=0):
    params = [p for g in opt.param_groups for p in g["params"]]
    for step in range(first, first + steps):
        x, y = _data(step)
        opt.zero_grad(set_to_none=True)
        dot_backward(model.losses(x, y), params, opt)
        opt.step()


@pytest.mark.parametrize("wd", [0.0, 5e-4])
def test_dot_step_equals_the_update_rule(wd):
    torch.manual_seed(0)
    model = Toy().double()
    ref = copy.deepcopy(model)
    opt = DOT(model.parameters(), lr=0.1, momentum=0.9, delta=0.075, weight_decay=wd)
    _train(model, opt, 4)
    reference_dot(ref, 4, 0.1, 0.9, 0.075, wd)
    for (name, a), (_, b) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    state = opt.state[model.shared.weight]
    assert set(state) == {"momentum_buffer", "momentum_kd_buffer"}
    assert set(opt.state[model.head.weight]) == {"momentum_buffer"} and set(opt.state[model.aux.weight]) == {
        "momentum_kd_buffer"}


def test_dot_with_no_delta_is_sgd_on_the_summed_loss():
    torch.manual_seed(0)
    a = Toy().double()
    b = copy.deepcopy(a)
    _train(a, DOT(a.parameters(), lr=0.1, momentum=0.9, delta=0.0, weight_decay=5e-4), 5)
    sgd = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in range(5):
        x, y = _data(step)
        sgd.zero_grad()
        sum(b.losses(x, y).values()).backward()
        sgd.step()
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=name)


def test_dot_state_dict_resumes_exactly():
    torch.manual_seed(0)
    a = Toy().double()
    opt = DOT(a.parameters(), lr=0.1, momentum=0.9, delta=0.075, weight_decay=5e-4)
    _train(a, opt, 2)
    saved_model, saved_opt = copy.deepcopy(a.state_dict()), copy.deepcopy(opt.state_dict())
    assert saved_opt["param_groups"][0]["delta"] == 0.075
    _train(a, opt, 3, first=2)
    b = Toy().double()
    b.load_state_dict(saved_model)
    opt_b = DOT(b.parameters(), lr=0.1, momentum=0.9, delta=0.075, weight_decay=5e-4)
    opt_b.load_state_dict(saved_opt)
    _train(b, opt_b, 3, first=2)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), name


def test_dot_refuses_what_cannot_work(tmp_path):
    with pytest.raises(ValueError, match="must lie in"):
        DOT(Toy().parameters(), lr=0.1, momentum=0.95, delta=0.075)
    s = LoopSettings(epochs=1, lr=0.1, optimizer="dot", grad_clip=1.0)
    with pytest.raises(ValueError, match="optim.grad_clip do not apply"):
        make_optimizer(Toy(), s)
    with pytest.raises(ValueError, match="no 'ce'"):
        dot_backward({"kd": torch.zeros((), requires_grad=True)}, list(Toy().parameters()),
                     DOT(Toy().parameters(), lr=0.1))
    with pytest.raises(Exception, match="momentum − dot_delta"):
        load_config("mnist1d/kd_dot", ["optim.dot_delta=0.95"])
    with pytest.raises(Exception, match="grad_clip does not apply to optimizer dot"):
        load_config("mnist1d/kd_dot", ["optim.grad_clip=1.0"])
    cfg = load_config("mnist1d/dhkd", ["optim.optimizer=dot"])
    with pytest.raises(SettingError, match=r"optim.optimizer=dot .* method 'dhkd' makes its own update direction"):
        plan(cfg, 10, (1, 40))
    assert plan(load_config("mnist1d/ofd", ["optim.optimizer=dot"]), 10, (1, 40)).cfg.optim.optimizer == "dot"


def test_the_loop_trains_any_method_with_dot(tmp_path, random_teacher):
    """KD and OFD under DOT through kdlab.fit's path (`kdlab train`): the optimizer state holds both buffers."""
    from kdlab import builder
    from kdlab._io import load_tensors

    for method in ("kd", "ofd"):
        out = tmp_path / method
        cfg = builder.load_config(f"mnist1d/{method}" if method != "kd" else "mnist1d/kd_dot", [
            f"teacher.checkpoint={random_teacher}", "teacher.arch=mnist1d_cnn_small", "data.train_subset=256",
            "data.test_subset=64", "optim.epochs=2", "optim.optimizer=dot", "eval.every=1", f"out_dir={out}",
            "run.progress=false", "run.tensorboard=false"])
        builder.distil(cfg)
        tensors, meta = load_tensors(out / "checkpoint.safetensors")
        keys = {k.split(".", 2)[2] for k in tensors if k.startswith("optim.")}
        assert keys == {"momentum_buffer", "momentum_kd_buffer"}, method
        assert '"delta": 0.075' in meta["optimizer"]
