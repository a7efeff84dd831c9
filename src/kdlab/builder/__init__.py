"""The composition root: a run config (or a user's own objects) → a run plan → data, models, teacher, method → the
engine's loop → ``final.json``.

Three entry points assemble through the same code, so the CLI and the Python API cannot drift apart
(:mod:`kdlab.builder.entry`): :func:`train_teacher` (``kdlab teacher``), :func:`distil` (``kdlab train``) and
:func:`distil_objects` (``kdlab.fit``). Each resolves its run once into a :class:`RunPlan` (:mod:`kdlab.builder.plan`:
the method's typed, adapted hyperparameters and the run's identity, which resume and sweeps compare), gathers what
the run reads (:mod:`kdlab.builder.inputs`: process, data, networks), decides how the teacher's outputs are served
(:mod:`kdlab.builder.teacher`: live, exact cache, store, stored test logits) and runs it (:mod:`kdlab.builder.run`).
No module here needs another to be read first, and none branches on a data set's or a method's name.
"""

from kdlab.builder.entry import distil, distil_objects, plan_of, train_teacher
from kdlab.builder.inputs import check_classes, load_data, load_teacher_module, make_loaders
from kdlab.builder.plan import RunPlan, load_config, plan, read_plan, replan
from kdlab.builder.run import STOPPED, RunParts
from kdlab.builder.teacher import (cached_teacher, expected_view_fraction, teacher_cache_from_config,
                                 teacher_store_from_config)

__all__ = ["STOPPED", "RunParts", "RunPlan", "cached_teacher", "check_classes", "distil", "distil_objects",
           "expected_view_fraction", "load_config", "load_data", "load_teacher_module", "make_loaders", "plan", "plan_of",
           "read_plan", "replan", "teacher_cache_from_config", "teacher_store_from_config", "train_teacher"]
