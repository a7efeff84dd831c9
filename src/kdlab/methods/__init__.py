"""Distillation methods, one module per paper, registered by name."""

from kdlab.methods.base import Adaptation, LogitMethod, Method, Params, RunFacts, StepOutput, warmup_factor
from kdlab.methods.feature import FeatureMethod
from kdlab.methods.registry import create, get, names, register

# importing a method module registers it
from kdlab.methods import at, cakd, ce, cmkd, crd, ctkd, dhkd, dist, dkd, fitnet, kd, kdsvd  # noqa: E402,F401
from kdlab.methods import mlkd, nkd, nst, ofd, pkt, r2kd, reviewkd, rkd, sdd, sp, ttm, vid  # noqa: E402,F401

__all__ = ["Adaptation", "FeatureMethod", "RunFacts", "LogitMethod", "Method", "Params", "StepOutput", "warmup_factor", "create", "get",
           "names", "register"]
