"""Pure functional distillation losses (contract: docs/reference/methods.md §1; feature losses: §13–§16).

Logit losses take student logits ``z`` and teacher logits ``v`` of shape [N, C], compute in log space, and return the
batch-mean (sum over classes, divided by N) unless ``reduction`` says "sum" or "none" (per-sample [N]). Feature
losses (``fitnet_loss``, ``at_loss``, ``nst_loss``, ``pkt_loss``, ``rkd_loss``, ``sp_loss``, ``kdsvd_loss``,
``vid_loss``) take the student's and the teacher's features — a tensor each, or sequences in stage order for the
multi-stage ones — and the method's hyperparameters, and return the unweighted loss. Every loss detaches the
teacher and computes in float32 (float64 for float64 inputs). No CE term, no epoch logic, no state, no trainable
part (the methods own regressors and connectors); the only switch is :func:`set_validation`, which turns the
synchronising input checks off for a hot training loop.
"""

from kdlab.losses._features import pool_to_match
from kdlab.losses._validate import set_validation, validation, validation_enabled
from kdlab.losses.attention import at_loss, attention_map, nst_loss
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
from kdlab.losses.crd import crd_loss
from kdlab.losses.ctkd import ctkd_loss, curriculum_lambda, curriculum_temperature, reverse_gradient
from kdlab.losses.dkd import dkd_loss, dkd_parts
from kdlab.losses.hint import fitnet_loss, vid_loss
from kdlab.losses.kdsvd import kdsvd_loss
from kdlab.losses.kd import kd_loss
from kdlab.losses.mlkd import MLKD_TEMPERATURES, mlkd_loss, mlkd_parts
from kdlab.losses.nkd import nkd_loss
from kdlab.losses.ofd import ofd_loss, ofd_margin
from kdlab.losses.ranks import hard_rank, soft_rank
from kdlab.losses.reviewkd import hcl_loss
from kdlab.losses.relational import pkt_loss, rkd_loss, sp_loss
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
    # feature losses (docs/reference/methods.md §13–§16)
    "fitnet_loss",
    "at_loss",
    "nst_loss",
    "pkt_loss",
    "rkd_loss",
    "sp_loss",
    "kdsvd_loss",
    "vid_loss",
    "ofd_loss",
    "crd_loss",
    "hcl_loss",
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
    "attention_map",
    "pool_to_match",
    "hard_rank",
    "soft_rank",
    "ofd_margin",
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
