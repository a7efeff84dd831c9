"""Frozen teachers: a single frozen model, ensembles (probability averaging) and the helper that picks their members,
and R2KD's pruned-ensemble teacher. The exact teacher-logit cache (``CachedTeacher``) lives in
``kdlab.teachers.cache``; import it from there.
"""

from kdlab.teachers.ensemble import Ensemble, disjoint_members
from kdlab.teachers.frozen import FrozenTeacher
from kdlab.teachers.pruned import PrunedEnsembleTeacher, prune_copy

__all__ = ["Ensemble", "FrozenTeacher", "PrunedEnsembleTeacher", "disjoint_members", "prune_copy"]
