import json

import pytest
import torch

from kdlab._io import load_tensors
from kdlab.engine.checkpoint import (CheckpointError, check_same_run, identity_hash, load_training_state,
                                    save_training_state)
from kdlab.models import load_weights, save_model
from kdlab.engine.metrics_log import MetricsLog, flatten
from kdlab.engine.schedule import depends_on_length, learning_rate


def test_step_schedule_drops_after_each_milestone():
    lrs = [learning_rate(e, 0.05, 240, "step", [150, 180, 210]) for e in (1, 150, 151, 180, 181, 210, 211, 240)]
    assert lrs == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005, 0.00005, 0.00005])


def test_cosine_and_constant():
    assert learning_rate(1, 0.1, 10, "cosine") == pytest.approx(0.1)
    assert learning_rate(6, 0.1, 10, "cosine") == pytest.approx(0.05)
    assert learning_rate(7, 0.1, 10, "constant") == 0.1
    with pytest.raises(ValueError, match="1-based"):
        learning_rate(0, 0.1, 10)
    with pytest.raises(ValueError, match="unknown schedule"):
        learning_rate(1, 0.1, 10, "linear")


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))


def test_training_state_roundtrip_restores_optimizer_and_rng(tmp_path):
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(5, 4)).sum().backward()
    opt.step()
    rng = {"cpu": torch.get_rng_state()}
    save_training_state(tmp_path / "c.safetensors", net, opt, rng, {"epoch": 3, "best": {"acc": 1.0}})

    net2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.5, momentum=0.9)
    rng2, info = load_training_state(tmp_path / "c.safetensors", net2, opt2)
    assert info["epoch"] == 3
    assert torch.equal(rng2["cpu"], rng["cpu"])
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 0.1
    for k in s1["state"]:
        assert torch.equal(s1["state"][k]["momentum_buffer"], s2["state"][k]["momentum_buffer"])


def test_truncated_or_garbage_checkpoint_is_a_clear_error(tmp_path):
    net = _net()
    save_model(tmp_path / "m.safetensors", net, arch="x", num_classes=3)
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    for name in ("cut", "junk"):
        with pytest.raises(CheckpointError, match=f"{name}.safetensors"):
            load_tensors(tmp_path / f"{name}.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_tensors(tmp_path / "absent.safetensors")


def test_weights_that_do_not_fit_are_rejected(tmp_path):
    save_model(tmp_path / "m.safetensors", _net())
    other = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(other, tmp_path / "m.safetensors")


def test_metrics_log_truncate_drops_epochs_after_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    for e in range(1, 5):
        log.append({"epoch": e, "train": {"loss": 1.0 / e}})
    with open(log.jsonl, "a") as f:
        f.write('{"epoch": 5, "tr')  # a line cut by a kill
    kept = log.truncate(2)
    assert [r["epoch"] for r in kept] == [1, 2]
    assert [json.loads(line)["epoch"] for line in log.jsonl.read_text().splitlines()] == [1, 2]
    header = log.csv.read_text().splitlines()[0]
    assert header == "epoch,train/loss"
    assert flatten({"a": {"b": 1}, "c": 2}) == {"a/b": 1, "c": 2}


def test_linear_warmup_then_the_schedule():
    assert [learning_rate(e, 0.1, 10, "step", [6], 0.1, warmup=4) for e in (1, 2, 4, 5, 6, 7)] == pytest.approx(
        [0.025, 0.05, 0.1, 0.1, 0.1, 0.01])
    # cosine over the epochs after the warm-up, starting at the full rate
    assert [learning_rate(e, 0.1, 6, "cosine", warmup=2) for e in (1, 2, 3, 5)] == pytest.approx(
        [0.05, 0.1, 0.1, 0.05])
    assert learning_rate(3, 0.1, 6, "constant", warmup=2) == 0.1
    assert depends_on_length("cosine") and not depends_on_length("step") and not depends_on_length("constant")


def test_only_the_length_of_an_epoch_pure_run_may_change_on_resume(tmp_path):
    def ident(**kw):
        return {"optim.epochs": 10, "optim.schedule": "step", "optim.lr": 0.05, **kw}

    stored = ident()
    info = {"epoch": 10, "identity_hash": identity_hash(stored), "identity": stored}
    longer = ident(**{"optim.epochs": 20})
    check_same_run(info, identity_hash(longer), longer, tmp_path)  # extended: no error
    with pytest.raises(CheckpointError, match="already trained 10 epochs"):
        shorter = ident(**{"optim.epochs": 5})
        check_same_run(info, identity_hash(shorter), shorter, tmp_path)
    cos = ident(**{"optim.schedule": "cosine"})
    cos_info = {"epoch": 10, "identity_hash": identity_hash(cos), "identity": cos}
    with pytest.raises(CheckpointError, match="the cosine schedule's learning rate depends on the number of epochs"):
        longer_cos = ident(**{"optim.schedule": "cosine", "optim.epochs": 20})
        check_same_run(cos_info, identity_hash(longer_cos), longer_cos, tmp_path)
    with pytest.raises(CheckpointError, match=r"optim\.lr \(0\.05 -> 0\.1\) differ \(to train longer, change the "
                                              r"number of epochs alone\)"):
        both = ident(**{"optim.epochs": 20, "optim.lr": 0.1})
        check_same_run(info, identity_hash(both), both, tmp_path)
