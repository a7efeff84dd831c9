"""The run plan: what a run *is*, resolved once from its config (or ``kdlab.fit``'s arguments) and its data.

:func:`plan` validates the method's arguments into its typed ``Params`` once, fits the defaults that only suit the
CIFAR-100 recipe to the run (``Method.adapt``: class count, epochs) and fixes the run's *identity*: every setting
that changes training — the adapted arguments included — plus the digests of what the config names but does not
hold (the teacher's weights, a warm start's, a teacher-output store, ``kdlab.fit``'s data). The config itself is
never changed. A resume (the checkpoint's identity), a sweep (``kdlab.sweep.state``), the demo and the experiments
all compare :attr:`RunPlan.identity_hash` and nothing else. A run directory holds the plan twice: ``config.yaml``
(:attr:`RunPlan.record`, the config with the arguments the run used, which reruns it) and ``plan.json``
(:meth:`RunPlan.describe`: identity, facts, digests, adaptations), from which a sweep plans a cell again without
loading its data or teacher (:func:`replan`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import yaml

from kdlab import distributed as dist
from kdlab import methods
from kdlab._checks import SettingError
from kdlab._io import atomic_write_text
from kdlab.config import RunConfig
from kdlab.config import load_config as _load_config
from kdlab.data.second_view import ViewSpec
from kdlab.engine.checkpoint import identity_hash
from kdlab.engine.metrics_log import flatten
from kdlab.methods import Adaptation, FeatureMethod, Method, Params, RunFacts
from kdlab.methods.second_view import SecondView, refuse_unusable
from kdlab.models import stage_shapes

__all__ = ["PLAN_FILE", "RunPlan", "load_config", "plan", "read_plan", "reads_features", "replan"]

PLAN_FILE = "plan.json"
_FORMAT = 1

#: what does not change training: where it is written, display, failure handling, decoding processes, what is
#: measured beside it (the per-bin report, gradient conflicts)
NOT_IDENTITY: dict[str, Any] = {"out_dir": True, "run": {"progress", "tensorboard", "curves", "dist_timeout",
                                                         "on_divergence", "grad_conflict_every"},
                                "data": {"workers"}, "eval": {"bins"}}
#: the sections of kdlab.fit's config that are its arguments (the rest are defaults it does not use)
FIT_IDENTITY = {"seed", "method", "optim", "eval"}

_log = logging.getLogger("kdlab")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read and validate a run config, ``method.args`` included (against the method's own ``Params``)."""
    return _load_config(path, overrides, method_schema=lambda name: methods.get(name).Params)


@dataclass(frozen=True)
class Added:
    """A method added to the run's method (``method.add``): its class, typed and adapted hyperparameters, weight."""

    method: type[Method]
    params: Params
    weight: float
    adaptations: tuple[Adaptation, ...] = ()


@dataclass(frozen=True)
class RunPlan:
    """One run, resolved: the config as given, the method with its typed and adapted hyperparameters, the facts
    they were fitted to and the digests of the run's external inputs. Immutable; :meth:`with_digests` adds
    digests known later (the teacher is loaded after the plan decides whether it is needed)."""

    cfg: RunConfig
    method: type[Method]
    params: Params
    adaptations: tuple[Adaptation, ...]
    facts: RunFacts
    digests: Mapping[str, Any] = field(default_factory=dict)
    # made from kdlab.fit's objects: its config holds only fit's hyperparameters (seed, method, optim, eval); the
    # data, the teacher and the student's structure are in the digests
    objects: bool = False
    added: tuple[Added, ...] = ()  # methods whose terms are added to this one's (method.add)

    # ------------------------------------------------------------------------------------------- the method(s)
    @property
    def name(self) -> str:
        """The method, as reports name it: ``wttm`` or ``wttm+crd``."""
        return "+".join([self.method.name, *(a.method.name for a in self.added)])

    def needs_teacher(self) -> bool:
        return self.method.needs_teacher(self.params) or any(a.method.needs_teacher(a.params) for a in self.added)

    def cacheable(self) -> bool:
        """Whether the exact logit cache may serve every method of the run (``Method.cacheable``)."""
        return self.method.cacheable(self.params) and all(a.method.cacheable(a.params) for a in self.added)

    def needs_full_teacher_distribution(self) -> bool:
        return self.method.needs_full_teacher_distribution(self.params) or any(
            a.method.needs_full_teacher_distribution(a.params) for a in self.added)

    def build_method(self, student, teacher, num_classes: int) -> Method:
        """The run's method, built from the plan's hyperparameters, with the added methods attached."""
        method = self.method(student, teacher, num_classes, self.params)
        for a in self.added:
            method.add(a.method(student, teacher, num_classes, a.params), a.weight)
        view = second_view(self.cfg)
        if view is not None:
            method.set_second_view(view)
        return method

    def with_digests(self, **digests: Any) -> RunPlan:
        return replace(self, digests={**self.digests, **{k: v for k, v in digests.items() if v is not None}})

    @cached_property
    def record(self) -> dict[str, Any]:
        """``config.yaml``: the config with the method's arguments as the run uses them (adapted defaults
        included), so ``kdlab train config.yaml`` reruns exactly this run; for ``kdlab.fit``, its identity."""
        if self.objects:
            return {"kdlab.fit": self.identity}
        return self._with_params(self.cfg.model_dump(mode="json"))

    def _with_params(self, dump: dict[str, Any]) -> dict[str, Any]:
        """``dump`` (of the config) with every method's arguments as the run uses them."""
        dump["method"]["args"] = self.params.model_dump(mode="json")
        for entry, a in zip(dump["method"].get("add", []), self.added):
            entry["args"] = a.params.model_dump(mode="json")
        return dump

    @cached_property
    def identity(self) -> dict[str, Any]:
        """Flat ``{key: value}`` of everything that changes training, and the digests."""
        section = self._with_params(self.cfg.model_dump(mode="json", include=FIT_IDENTITY, exclude=NOT_IDENTITY)
                                    if self.objects
                                    else self.cfg.model_dump(mode="json", exclude=NOT_IDENTITY))
        # an added method's keys by its position: method.add.0.name, method.add.0.args.weight, ...
        section["method"]["add"] = {str(i): entry for i, entry in enumerate(section["method"].get("add", []))}
        return {**flatten(section, sep="."), **self.digests}

    @cached_property
    def identity_hash(self) -> str:
        return identity_hash(self.identity)

    def describe(self) -> dict[str, Any]:
        """``plan.json``: what :func:`replan` needs, and what the run is, for people."""
        return {"format": _FORMAT, "identity_hash": self.identity_hash,
                "facts": {"num_classes": self.facts.num_classes, "input_shape": list(self.facts.input_shape)},
                "digests": dict(self.digests), "adaptations": self.adapted_defaults(), "identity": self.identity}

    def adapted_defaults(self) -> list[dict[str, Any]]:
        """Every adapted default, keyed by the argument (``warmup``; an added method's as ``add.0.args.k``): what the
        log, ``plan.json`` and ``final.json`` report."""
        out = [asdict(c) for c in self.adaptations]
        for i, a in enumerate(self.added):
            out += [{**asdict(c), "key": f"add.{i}.args.{c.key}"} for c in a.adaptations]
        return out

    def write(self, out_dir: Path) -> None:
        """``plan.json``, then ``config.yaml`` (atomically each: a directory with a config.yaml has its plan)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / PLAN_FILE, json.dumps(self.describe(), indent=2))
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(self.record, sort_keys=False))

    def log_adaptations(self, name: Callable[[str], str] = str) -> None:
        """One warning per adapted default (rank 0), the keys worded by ``name`` (``kdlab.fit``: its arguments)."""
        if not dist.is_main():
            return
        for c in self.adapted_defaults():
            key = f"method.{c['key']}" if c["key"].startswith("add.") else f"method.args.{c['key']}"
            _log.warning(f"kdlab: {name(key)} = {_shown(c['value'])} instead of the default "
                         f"{_shown(c['default'])}: {c['why']} (give it explicitly to keep another value)")


def _shown(value: Any) -> str:
    """An adapted value for a reader: floats to 4 significant digits (0.09, not 0.09000000000000001)."""
    return repr(float(f"{value:.4g}")) if isinstance(value, float) else repr(value)


def plan(cfg: RunConfig, num_classes: int, input_shape: Sequence[int], digests: Mapping[str, Any] | None = None,
         objects: bool = False, stages: Mapping[str, Any] | None = None) -> RunPlan:
    """The plan of ``cfg`` on data of ``num_classes`` classes and samples of ``input_shape``: the method's
    arguments validated once and adapted (only those the user did not give, ``cfg.method.given``). ``objects``:
    ``kdlab.fit``'s plan (:attr:`RunPlan.objects`); ``stages``: its built networks' stage shapes
    (``RunFacts.stages``; otherwise computed from the config's zoo names)."""
    if stages is None and reads_features(cfg):
        stages = _stages(cfg, num_classes, tuple(input_shape))
    facts = RunFacts(num_classes, cfg.optim.epochs, tuple(input_shape), stages)
    cls, hp, changes = _resolve(cfg.method, facts)
    if cfg.optim.optimizer == "dot" and cls.backward is not Method.backward:
        raise SettingError(f"{{optimizer}}=dot takes the CE term's and the distillation terms' gradients apart itself, "
                           f"but method {cls.name!r} makes its own update direction from them (its backward); use "
                           "{optimizer}=sgd", optimizer="optim.optimizer")
    added = []
    for section in cfg.method.add:
        a_cls, a_hp, a_changes = _resolve(section, facts)
        added.append(Added(a_cls, a_hp, section.weight, a_changes))
    if cfg.distill_data.second_view != "none":  # refused before the teacher is loaded
        refuse_unusable(cfg.distill_data.second_view, [(cls, hp), *((a.method, a.params) for a in added)])
    return RunPlan(cfg, cls, hp, changes, facts, dict(digests or {}), objects, tuple(added))


def second_view(cfg: RunConfig) -> SecondView | None:
    """The second view of ``distill_data.second_view`` (None: none), its parameters from the config."""
    d = cfg.distill_data
    if d.second_view == "none":
        return None
    spec = ViewSpec(d.second_view, cutmix_alpha=d.second_view_cutmix_alpha, mixup_alpha=d.second_view_mixup_alpha,
                    cutout_size=d.second_view_cutout_size, pick_pool=d.second_view_pick_pool,
                    policy=d.second_view_policy)
    return SecondView(spec, d.second_view_weight)


def reads_features(cfg: RunConfig) -> bool:
    """Whether the method or an added one reads features (a :class:`~kdlab.methods.FeatureMethod`)."""
    return any(issubclass(methods.get(section.name), FeatureMethod) for section in [cfg.method, *cfg.method.add])


def _stages(cfg: RunConfig, num_classes: int, input_shape: tuple[int, ...]) -> dict[str, Any] | None:
    """``RunFacts.stages``: both zoo networks' stage shapes on this input (meta device), or None when either network
    is not a zoo name (a factory: its stages are only known once built) or cannot be built (its own error comes when
    the run builds it)."""
    archs = {"student": cfg.student.arch, "teacher": cfg.teacher.arch}
    if not all(isinstance(a, str) for a in archs.values()):
        return None
    try:
        return {who: stage_shapes(arch, num_classes, input_shape) for who, arch in archs.items()}
    except (KeyError, ValueError, TypeError, RuntimeError):
        return None


def _resolve(section: Any, facts: RunFacts) -> tuple[type[Method], Params, tuple[Adaptation, ...]]:
    """A method section (``method`` or an entry of ``method.add``): its class, its typed arguments adapted to
    ``facts`` (only those the user did not give, ``section.given``), and the adaptations."""
    cls = methods.get(section.name)
    adapted, changes = cls.adapt(cls.Params.model_validate(section.args or {}), facts, section.given)
    return cls, adapted, tuple(changes)


def read_plan(out_dir: Path) -> dict[str, Any] | None:
    """The ``plan.json`` of a run directory (None: there is none; a file of another format: ValueError)."""
    path = Path(out_dir) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot be read ({exc}); move the directory away") from None
    if not isinstance(stored, dict) or stored.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a plan this kdlab writes (format {_FORMAT}); move the directory away")
    return stored


def replan(cfg: RunConfig, stored: Mapping[str, Any]) -> RunPlan:
    """The plan ``cfg`` would have on the data and inputs of a stored run (its ``plan.json``): what a sweep compares
    with that run's identity without loading the data or the teacher."""
    facts = stored["facts"]
    return plan(cfg, facts["num_classes"], facts["input_shape"], stored["digests"])
