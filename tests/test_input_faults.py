"""No silently wrong result, no traceback for bad input: inputs at one scale, the exact teacher-logit cache by
default (float16/bfloat16 opt-in, overflow an error), unusable devices, modules and epochs refused in one line."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import kdlab
from kdlab import models
from kdlab.cli import main
from kdlab.data import BatchLoader
from kdlab.data.views import Shift1D
from kdlab.teachers.cache import CacheOverflowError, CachedTeacher
from kdlab.teachers.frozen import FrozenTeacher

cuda = torch.cuda.is_available()


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    return x, x[:, :4].argmax(1)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


# ---------------------------------------------------------------------------------------------------------------
# kdlab.fit
# ---------------------------------------------------------------------------------------------------------------
def test_fit_refuses_uint8_inputs_instead_of_training_and_reporting_at_two_scales():
    x, y = _data()
    pixels = (x.abs() * 40).clamp(max=255).to(torch.uint8)
    with pytest.raises(ValueError, match=r"train inputs are uint8.*x.float\(\) / 255"):
        kdlab.fit(_mlp(), _mlp(1), (pixels, y), method="kd", epochs=1)
    with pytest.raises(ValueError, match=r"eval inputs are uint8"):
        kdlab.fit(_mlp(), _mlp(1), (x, y), eval=(pixels, y), method="kd", epochs=1)
    kdlab.fit(_mlp(), _mlp(1), (pixels.float() / 255, y), method="kd", epochs=1)  # converted: one scale


class _Tuple(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _mlp()

    def forward(self, x):
        z = self.net(x)
        return z, z.detach()


def test_fit_refuses_a_module_that_returns_a_tuple():
    with pytest.raises(ValueError, match=r"the student returned a tuple, not a logits tensor"):
        kdlab.fit(_Tuple(), _mlp(1), _data(), method="kd", epochs=1)
    with pytest.raises(ValueError, match=r"the teacher returned a tuple"):
        kdlab.fit(_mlp(), _Tuple(), _data(), method="kd", epochs=1)


def test_fit_refuses_float64_modules_and_says_how_to_convert():
    with pytest.raises(ValueError, match=r"student's parameters are torch.float64.*student.float\(\)"):
        kdlab.fit(_mlp().double(), _mlp(1), _data(), method="kd", epochs=1)
    with pytest.raises(ValueError, match=r"teacher's parameters are torch.float64"):
        kdlab.fit(_mlp(), _mlp(1).double(), _data(), method="kd", epochs=1)


@pytest.mark.skipif(cuda, reason="this machine has a GPU")
def test_fit_refuses_a_device_it_does_not_have():
    with pytest.raises(ValueError, match=r"device='cuda' but this PyTorch .* is a CPU-only build|no CUDA GPU"):
        kdlab.fit(_mlp(), _mlp(1), _data(), method="kd", epochs=1, device="cuda")
    with pytest.raises(ValueError, match=r"device='gpu0' is not a device"):
        kdlab.fit(_mlp(), _mlp(1), _data(), method="kd", epochs=1, device="gpu0")


def test_fit_refuses_an_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"out_dir .*f is a file, not a directory"):
        kdlab.fit(_mlp(), _mlp(1), _data(), method="kd", epochs=1, out_dir=tmp_path / "f")


def test_epochs_0_is_refused_by_fit_and_the_cli(capsys):
    with pytest.raises(ValueError, match=r"epochs: Input should be greater than or equal to 1"):  # fit's words
        kdlab.fit(_mlp(), None, _data(), method="ce", epochs=0)
    assert main(["train", "mnist1d/kd", "optim.epochs=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdlab: error:") and "optim.epochs" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(cuda, reason="this machine has a GPU")
@pytest.mark.parametrize("device,says", [("cuda", "CPU-only build"), ("cuda:3", "CPU-only build"), ("tpu", "is not a device"),
                                         ("meta", "kdlab runs on cpu, cuda or mps")])
def test_cli_unusable_device_is_one_line_exit_2(tmp_path, capsys, device, says):
    code = main(["train", "mnist1d/kd", f"out_dir={tmp_path / 'r'}", f"run.device={device}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"run.device={device!r}" in err and says in err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------------------------
# the teacher-logit cache
# ---------------------------------------------------------------------------------------------------------------
def _run_args(out, teacher, *extra):
    return ["train", "mnist1d/kd", f"out_dir={out}", f"teacher.checkpoint={teacher}", "teacher.arch=mnist1d_cnn_small",
            "data.train_subset=1000", "data.test_subset=200", "optim.epochs=4", "optim.milestones=[3]",
            "run.progress=false", "run.tensorboard=false", *extra]


@pytest.fixture(scope="module")
def cnn_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "teacher"
    assert main(["teacher", "mnist1d/teacher", f"out_dir={out}", "teacher.arch=mnist1d_cnn_small",
                 "data.train_subset=1000", "data.test_subset=200", "optim.epochs=3", "optim.milestones=[2]",
                 "run.progress=false", "run.tensorboard=false", "run.threads=1"]) == 0
    return out / "model.safetensors"


def _rows(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("epoch_time_s")
    return rows


def test_the_default_cache_trains_bit_identically_to_the_live_teacher(tmp_path, cnn_teacher):
    assert main(_run_args(tmp_path / "live", cnn_teacher, "teacher.cache.enabled=false")) == 0
    assert main(_run_args(tmp_path / "cached", cnn_teacher)) == 0  # enabled: auto, dtype: float32 (defaults)
    final = json.loads((tmp_path / "cached" / "final.json").read_text())
    assert final["config"]["teacher"]["cache"] == {"enabled": "auto", "storage": "memory", "dtype": "float32",
                                                    "path": None, "fill": "auto", "store": None}
    live = load_file(tmp_path / "live" / "model.safetensors")
    cached = load_file(tmp_path / "cached" / "model.safetensors")
    assert all(torch.equal(live[k], cached[k]) for k in live)
    assert _rows(tmp_path / "live") == _rows(tmp_path / "cached")
    # float16 storage is the opt-in approximation: the trained weights move
    assert main(_run_args(tmp_path / "half", cnn_teacher, "teacher.cache.dtype=float16")) == 0
    half = load_file(tmp_path / "half" / "model.safetensors")
    assert any(not torch.equal(live[k], half[k]) for k in live)


class _Loud(nn.Module):
    """A teacher whose logits are finite but beyond float16's range (max 65504)."""

    def forward(self, x):
        z = x.flatten(1)[:, :10]
        return z * 1e6


def _loader():
    g = torch.Generator().manual_seed(0)
    return BatchLoader(torch.randn(16, 1, 40, generator=g), torch.randint(0, 10, (16,), generator=g), 8,
                       augment=Shift1D(2))


def test_float16_storage_refuses_logits_it_cannot_hold_where_float32_and_bfloat16_store_them():
    with pytest.raises(CacheOverflowError, match=r"logits up to .*e\+0[67].*float16.*teacher.cache.dtype=float32"):
        CachedTeacher(FrozenTeacher(_Loud()), _loader(), dtype="float16", precompute=True, progress=False)
    for dtype in ("float32", "bfloat16"):
        cache = CachedTeacher(FrozenTeacher(_Loud()), _loader(), dtype=dtype, precompute=True, progress=False)
        assert torch.isfinite(cache.values.float()).all()


@pytest.mark.parametrize("dtype,bits", [("float16", 11), ("bfloat16", 8)])
def test_rounded_storage_errs_by_at_most_half_an_ulp_of_each_logit(dtype, bits):
    torch.manual_seed(0)
    teacher = FrozenTeacher(models.create("mnist1d_cnn_small", 10))
    exact = CachedTeacher(teacher, _loader(), dtype="float32", precompute=True, progress=False).values
    rounded = CachedTeacher(teacher, _loader(), dtype=dtype, precompute=True, progress=False).values.float()
    # round to nearest with `bits` significant bits: |error| ≤ |z|·2^-bits (normal range)
    bound = exact.abs() * 2.0 ** -bits + 1e-7
    assert ((rounded - exact).abs() <= bound).all()
    assert (rounded != exact).any()  # it does round
