"""Shared fixtures for the kdlab.losses tests: seeded random logits (no global RNG state is touched)."""

import pytest
import torch


@pytest.fixture
def make_logits():
    """make_logits(n, c, scale=1.0, seed=0, dtype=torch.float64) -> (z, v): independent seeded normal logits."""

    def _make(n=6, c=7, scale=1.0, seed=0, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
        v = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
        return z.to(dtype), v.to(dtype)

    return _make


@pytest.fixture
def make_target():
    def _make(n=6, c=7, seed=1):
        return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))

    return _make


@pytest.fixture(autouse=True)
def _validation_on():
    # every test starts and ends with validation on, whatever a failing test left behind
    from kdlab.losses import set_validation

    set_validation(True)
    yield
    set_validation(True)
