"""kdlab.engine.sgd.SGD: torch.optim.SGD's steps bit for bit, its state_dict format both ways, and no torch._dynamo."""

import subprocess
import sys

import pytest
import torch

from kdlab.engine.sgd import SGD


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _train(net, opt, steps: int, lrs=(0.1, 0.1, 0.05, 0.05, 0.01)) -> None:
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        opt.param_groups[0]["lr"] = lrs[step % len(lrs)]
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize("momentum,weight_decay,nesterov", [(0.9, 5e-4, False), (0.9, 0.0, True), (0.0, 1e-3, False)])
def test_steps_are_torch_optim_sgds_bit_for_bit(momentum, weight_decay, nesterov):
    a, b = _net(0), _net(0)
    ours = SGD(a.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    torchs = torch.optim.SGD(b.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    _train(a, ours, 7)
    _train(b, torchs, 7)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    mine, theirs = ours.state_dict(), torchs.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    assert mine["state"].keys() == theirs["state"].keys()
    for i in theirs["state"]:
        assert torch.equal(mine["state"][i]["momentum_buffer"], theirs["state"][i]["momentum_buffer"])


def test_a_state_dict_moves_between_the_two_and_training_goes_on_identically():
    a, b = _net(0), _net(0)
    ours = SGD(a.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    torchs = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    _train(a, ours, 3)
    _train(b, torchs, 3)
    # swap: each continues from the other's state (a checkpoint written before this class loads into it)
    a2, b2 = _net(5), _net(5)
    a2.load_state_dict(b.state_dict())
    b2.load_state_dict(a.state_dict())
    ours2 = SGD(a2.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    torchs2 = torch.optim.SGD(b2.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    ours2.load_state_dict(torchs.state_dict())
    torchs2.load_state_dict(ours.state_dict())
    # the saved hyperparameters (the last lr set, 0.05), as torch.optim restores them
    assert ours2.param_groups[0]["lr"] == torchs2.param_groups[0]["lr"] == 0.05
    _train(a2, ours2, 4)
    _train(b2, torchs2, 4)
    for p, q in zip(a2.parameters(), b2.parameters()):
        assert torch.equal(p, q)


def test_a_state_dict_of_another_model_is_refused():
    ours = SGD(_net(0).parameters(), lr=0.1, momentum=0.9)
    other = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="different number of parameters"):
        ours.load_state_dict(other.state_dict())


def test_stepping_imports_no_dynamo():
    code = ("import sys, torch\nfrom kdlab.engine.sgd import SGD\nnet = torch.nn.Linear(3, 2)\n"
            "opt = SGD(net.parameters(), lr=0.1, momentum=0.9)\nnet(torch.ones(1, 3)).sum().backward()\n"
            "opt.step(); opt.zero_grad(); opt.state_dict()\nassert 'torch._dynamo' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
