"""Frozen teachers: ensembles (probability averaging) and the helpers that pick their members."""

from kdlab.teachers.ensemble import Ensemble, disjoint_members

__all__ = ["Ensemble", "disjoint_members"]
from kdlab.teachers.pruned import PrunedEnsembleTeacher, prune_copy  # noqa: E402,F401
__all__ += ["PrunedEnsembleTeacher", "prune_copy"]
