"""Distillation methods, one module per paper, registered by name."""

from kdlab.methods.base import Method, Params, StepOutput, warmup_factor
from kdlab.methods.registry import build, get, names, register, validate_method_args

# importing a method module registers it
from kdlab.methods import cakd, ce, cmkd, dhkd, dist, dkd, kd, r2kd, ttm  # noqa: E402,F401

__all__ = ["Method", "Params", "StepOutput", "warmup_factor", "build", "get", "names", "register",
           "validate_method_args"]
