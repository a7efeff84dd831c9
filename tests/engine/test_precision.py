"""The device path: options resolve per device, and the loop applies autocast and channels_last to every step."""

import pytest
import torch
from torch import nn

from kdlab import methods
from kdlab.data import BatchLoader
from kdlab.engine.loop import LoopSettings, train_loop
from kdlab.engine.precision import DevicePath, autocast, resolve, to_channels_last


def test_resolve_keeps_cuda_only_options_off_on_cpu():
    with pytest.warns(UserWarning, match="bf16 applies to CUDA only"):
        dp = resolve("cpu", "bf16", channels_last=True, compile=True)
    assert dp == DevicePath("cpu", bf16=False, channels_last=False, compile=True)
    assert dp.precision == "fp32"
    assert resolve("cuda:0", "bf16", True) == DevicePath("cuda", bf16=True, channels_last=True)
    with pytest.raises(ValueError, match="run.precision"):
        resolve("cpu", "fp16")


def test_autocast_and_channels_last_helpers():
    a = torch.randn(4, 4)
    with autocast("cpu", True):
        assert (a @ a).dtype == torch.bfloat16
    with autocast("cpu", False):
        assert (a @ a).dtype == torch.float32
    x = torch.randn(2, 3, 5, 5)
    assert to_channels_last(x).is_contiguous(memory_format=torch.channels_last)
    signal = torch.randn(2, 1, 40)
    assert to_channels_last(signal) is signal  # 1-D signals keep their layout


class _Probe(nn.Module):
    """A tiny conv classifier that records the layout and dtype it computes in."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)
        self.seen = []

    def forward(self, x):
        h = self.conv(x)
        self.seen.append((x.is_contiguous(memory_format=torch.channels_last), h.dtype))
        return self.fc(h.mean((2, 3)))


def test_loop_runs_each_step_under_the_device_path():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 3, 6, 6, generator=g), torch.randint(0, 5, (24,), generator=g)
    torch.manual_seed(0)
    student = _Probe()
    method = methods.create("ce", student, None, 5, {})
    # forced on CPU (resolve() would switch both off here) to exercise the loop's wiring
    dp = DevicePath("cpu", bf16=True, channels_last=True)
    dp.model(method)
    assert student.conv.weight.is_contiguous(memory_format=torch.channels_last)
    s = LoopSettings(epochs=1, lr=0.1, progress=False, device_path=dp)
    result = train_loop(method, BatchLoader(x, y, 8, seed=0), None, 5, s)
    assert len(student.seen) == 3 and all(cl and dt == torch.bfloat16 for cl, dt in student.seen)
    assert student.conv.weight.dtype == torch.float32  # autocast: fp32 master weights
    assert torch.isfinite(torch.tensor(result.history[0]["train"]["loss"]))
