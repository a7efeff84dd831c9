"""``run.compile`` covers every path a method runs the student through, checked with dynamo's frame counter (not by
reading code): a compiled ``forward`` alone is bypassed by ``forward_features``, which feature methods and DHKD call
directly."""

import functools

import pytest
import torch
from torch._dynamo.utils import counters

from kdlab.cli import main


@pytest.fixture
def frames():
    torch._dynamo.reset()
    counters.clear()
    yield lambda: counters["frames"]["ok"]
    torch._dynamo.reset()


@pytest.mark.parametrize("name, args", [("cakd", {"feature": True}), ("dhkd", {})])
def test_method_compile_covers_the_feature_path(name, args, make_method, make_batch, frames):
    plain = make_method(name, args, student="mnist1d_cnn_small")
    method = make_method(name, args, student="mnist1d_cnn_small")
    method.compile(backend="eager")
    x = make_batch().x
    method.student.forward_features(x)  # failed before: {} frames (nn.Module.compile compiles __call__ only)
    assert frames() >= 1
    before = frames()
    method.eval_model()(x)  # the evaluated (and saved) network's forward is compiled too
    assert frames() > before
    batch = make_batch()
    plain.train(), method.train()
    torch.manual_seed(0)  # DHKD's auxiliary head has dropout: the same draws for both
    expected = plain(batch, 30).losses
    torch.manual_seed(0)
    got = method(batch, 30).losses
    for key in expected:  # the eager backend computes exactly what the plain model does
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    assert set(method.student.state_dict()) == set(plain.student.state_dict())  # checkpoints stay interchangeable


def test_run_compile_compiles_the_feature_path_of_a_config_run(tmp_path, random_teacher, monkeypatch, frames):
    real, compiled = torch.compile, []

    def eager(fn, *args, **kwargs):  # the eager backend: no C++ toolchain needed, same numbers
        compiled.append(getattr(fn, "__name__", type(fn).__name__))
        return real(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", eager)
    assert main(["train", "mnist1d/cakd", "method.args.feature=true", "run.compile=true", "optim.epochs=1",
                 "optim.milestones=[]", "data.train_subset=64", "data.test_subset=32", "student.arch=mnist1d_cnn_small",
                 "teacher.arch=mnist1d_cnn_small", f"teacher.checkpoint={random_teacher}", "run.progress=false",
                 "run.tensorboard=false", f"out_dir={tmp_path / 'run'}"]) == 0
    assert "forward_features" in compiled and "_call_impl" in compiled
    assert frames() >= 2
