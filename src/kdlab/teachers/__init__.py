"""Frozen teachers behind one protocol (:class:`Teacher`): a single network or an ensemble (:class:`FrozenTeacher`,
:class:`Ensemble`), R2KD's pruned ensemble, the exact teacher-logit cache, the teacher-output store of replayed crops
(``store``, ``store_build``, ``stored``, ``topk``), and published teachers by name, fetched once (``published``)."""

from kdlab.teachers.base import Teacher
from kdlab.teachers.cache import CachedTeacher, StaleCacheError, module_digest, tensor_digest
from kdlab.teachers.ensemble import Ensemble, disjoint_members
from kdlab.teachers.frozen import FrozenTeacher
from kdlab.teachers.pruned import PrunedEnsembleTeacher, prune_copy

__all__ = ["CachedTeacher", "Ensemble", "FrozenTeacher", "PrunedEnsembleTeacher", "StaleCacheError", "Teacher",
           "disjoint_members", "module_digest", "prune_copy", "tensor_digest"]
