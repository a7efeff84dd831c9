"""Distillation methods, one module per paper, registered by name."""

from kdlab.methods.base import Adaptation, LogitMethod, Method, Params, RunFacts, StepOutput, warmup_factor
from kdlab.methods.registry import create, get, names, register

# importing a method module registers it
from kdlab.methods import cakd, ce, cmkd, ctkd, dhkd, dist, dkd, kd, mlkd, nkd, r2kd, sdd, ttm  # noqa: E402,F401

__all__ = ["Adaptation", "RunFacts", "LogitMethod", "Method", "Params", "StepOutput", "warmup_factor", "create", "get",
           "names", "register"]
