"""Switching modules to eval mode for a moment, and back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Every module and submodule in eval mode inside the block; each one's own training flag restored on exit
    (so a module that was partly in eval mode, like a frozen part of a network, comes back exactly as it was)."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag
