"""Pure functional logit-distillation losses (contract: docs/reference/methods.md §1).

Every loss takes student logits ``z`` and teacher logits ``v`` of shape [N, C], detaches the teacher, computes in
float32 (float64 for float64 inputs) in log space, and returns the batch-mean (sum over classes, divided by N) unless
``reduction`` says "sum" or "none" (per-sample [N]). No CE term, no epoch logic, no state; the only switch is
:func:`set_validation`, which turns the synchronising input checks off for a hot training loop.
"""

from kdlab.losses._validate import set_validation, validation, validation_enabled
from kdlab.losses.binary_kl import binary_kl_loss, binary_kl_norm_loss
from kdlab.losses.cakd import cakd_loss, kl_decomposition
from kdlab.losses.correlation import (
    abs_cosine_distance_rows,
    cmkd_loss,
    cosine_similarity_rows,
    dist_loss,
    pearson_distance_rows,
    pearson_rows,
    r2kd_value_loss,
    spearman_loss,
)
from kdlab.losses.ctkd import ctkd_loss, curriculum_lambda, curriculum_temperature, reverse_gradient
from kdlab.losses.dkd import dkd_loss, dkd_parts
from kdlab.losses.kd import kd_loss
from kdlab.losses.mlkd import MLKD_TEMPERATURES, mlkd_loss, mlkd_parts
from kdlab.losses.nkd import nkd_loss
from kdlab.losses.ranks import hard_rank, soft_rank
from kdlab.losses.sdd import SDD_BASES, sdd_loss, sdd_region_weights
from kdlab.losses.standardize import logit_standardize
from kdlab.losses.strong_sets import (
    STRONG_SET_RULES,
    strong_set,
    strong_set_mass,
    strong_set_target,
    strong_set_topk,
)
from kdlab.losses.ttm import power_transform, ttm_loss, wttm_loss

__all__ = [
    # losses (docs/reference/methods.md §1)
    "kd_loss",
    "dkd_loss",
    "kl_decomposition",
    "cakd_loss",
    "ttm_loss",
    "wttm_loss",
    "dist_loss",
    "binary_kl_loss",
    "binary_kl_norm_loss",
    "r2kd_value_loss",
    "spearman_loss",
    "cmkd_loss",
    "logit_standardize",
    "nkd_loss",
    "mlkd_loss",
    "ctkd_loss",
    "sdd_loss",
    # CAKD strong sets
    "STRONG_SET_RULES",
    "strong_set",
    "strong_set_target",
    "strong_set_topk",
    "strong_set_mass",
    # building blocks
    "dkd_parts",
    "power_transform",
    "cosine_similarity_rows",
    "pearson_rows",
    "pearson_distance_rows",
    "abs_cosine_distance_rows",
    "hard_rank",
    "soft_rank",
    "mlkd_parts",
    "MLKD_TEMPERATURES",
    "sdd_region_weights",
    "SDD_BASES",
    "reverse_gradient",
    "curriculum_lambda",
    "curriculum_temperature",
    # validation switch
    "set_validation",
    "validation",
    "validation_enabled",
]
