"""Switching modules to eval mode for a moment, and back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode", "left_as_found"]


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


@contextmanager
def left_as_found(*modules: nn.Module) -> Iterator[None]:
    """Inside the block the modules may be frozen, switched to eval mode or trained; on exit every submodule's
    training flag and every parameter's ``requires_grad`` are as they were (a user's model is left as found)."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    grads = [(p, p.requires_grad) for module in modules for p in module.parameters()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag  # set directly: a custom train() (e.g. a frozen teacher's) must not reinterpret it
        for p, flag in grads:
            p.requires_grad_(flag)
