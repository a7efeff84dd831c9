"""Adding methods to a method (``method.add``), as the papers combine them: WTTM + CRD, DHKD + ReviewKD, KD + AT.

The run's method (the *primary*) owns the added methods as submodules (:meth:`Method.add`), so their trainable parts
are optimised, checkpointed and synchronised under DDP with the primary's, and the primary's own behaviour — a
custom backward (DHKD's gradient alignment), its DDP preparation, its evaluated network — covers the whole
combination. One combined step (:func:`combined_step`):

* the student runs once on the step's batch: its logits and features (the stages every part asks for) are served to
  the primary and to each added method through :class:`Served`, which stands in for the student during the step;
* the teacher runs at most once: its outputs on the batch are shared through :class:`ServedTeacher`;
* the primary's terms are kept as they are; each added method's terms are multiplied by its weight and named by
  it (``crd``, ``at``; ``fitnet_hint`` where the term does not start with the method's name); its CE term is
  dropped — CE is counted once, by the primary.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from kdlab.models import forward_features

__all__ = ["Served", "ServedTeacher", "combined_step"]


class Served(nn.Module):
    """Stands in for the student during one combined step: the step's input gets the outputs computed once (the
    same autograd graph for every part); any other input (a second view) goes to the real student."""

    def __init__(self, student: nn.Module, x: Tensor, logits: Tensor, features: dict[str, Any] | None,
                 paths: dict[tuple[str, ...] | None, list[int]]):
        super().__init__()
        object.__setattr__(self, "real", student)  # not a submodule: the parts must not see its parameters twice
        self.x, self.logits, self.features, self.paths = x, logits, features, paths

    def forward(self, x: Tensor) -> Tensor:
        return self.logits if x is self.x else self.real(x)

    def forward_features(self, x: Tensor, preact: bool = False) -> tuple[Tensor, dict[str, Any]]:
        return self.served(x, None, preact)

    def served(self, x: Tensor, paths: list[str] | None, preact: bool = False) -> tuple[Tensor, dict[str, Any]]:
        """(logits, features) of ``x`` with the stages of ``paths`` (module paths; None: the model's own
        ``forward_features``; ``preact``: with each stage's pre-activation), as
        :func:`kdlab.models.forward_features` would give them."""
        if x is not self.x or self.features is None or (preact and "preact" not in self.features):
            return forward_features(self.real, x, paths, preact=preact)
        if paths is None:
            return self.logits, self.features
        stages = [self.features["stages"][i] for i in self.paths[tuple(paths)]]
        return self.logits, {"stages": stages, "pooled": self.features["pooled"]}


class ServedTeacher:
    """The teacher during one combined step: its logits and features on the step's batch computed once, shared by
    every part (:class:`~kdlab.teachers.Teacher`); anything else goes to the teacher itself."""

    def __init__(self, teacher, batch, features: tuple[Tensor, dict[str, Any]] | None, paths):
        self.teacher, self.batch, self._features, self.paths = teacher, batch, features, paths
        self._logits: Tensor | None = features[0] if features is not None else None

    @property
    def module(self) -> nn.Module:
        return self.teacher.module

    def logits(self, x: Tensor) -> Tensor:
        return self.teacher.logits(x)

    def logits_for_batch(self, batch) -> Tensor:
        if batch is not self.batch:
            return self.teacher.logits_for_batch(batch)
        if self._logits is None:
            self._logits = self.teacher.logits_for_batch(batch)
        return self._logits

    def features(self, x: Tensor, stage_paths: list[str] | None = None, preact: bool = False):
        if self._features is None or x is not self.batch.x or (preact and "preact" not in self._features[1]):
            return self.teacher.features(x, stage_paths, preact=preact)
        logits, feats = self._features
        if stage_paths is None:
            return logits, feats
        return logits, {"stages": [feats["stages"][i] for i in self.paths[tuple(stage_paths)]],
                        "pooled": feats["pooled"]}

    def to(self, device):
        self.teacher.to(device)
        return self

    def describe(self) -> dict:
        return self.teacher.describe()


def _union(paths: list[list[str] | None], who: str) -> tuple[list[str] | None,
                                                             dict[tuple[str, ...] | None, list[int]]]:
    """One list of module paths covering every part's, and where each part's stages are in it (None: the model's own
    ``forward_features`` stages, read by every part)."""
    named = [p for p in paths if p is not None]
    if not named:
        return None, {}
    if len(named) < len(paths):
        raise ValueError(f"method.add: the combined methods read the {who}'s stages in two ways (the model's own "
                         "forward_features and named modules); name the modules in every method's stage arguments")
    union: list[str] = []
    for p in named:
        union += [q for q in p if q not in union]
    return union, {tuple(p): [union.index(q) for q in p] for p in named}


def _reads(part, who: str) -> list[str] | None | bool:
    """The stage paths ``part`` reads of ``who`` on the step's batch, or False when it reads no features."""
    uses = getattr(part, "uses_features", None)
    return part.stage_paths(who) if callable(uses) and uses() else False


def _preact(part, who: str) -> bool:
    """Whether ``part`` reads ``who``'s pre-activations (OFD, ReviewKD) on the step's batch."""
    return _reads(part, who) is not False and part.preact(who)


def _set_student(method, student: nn.Module) -> None:
    # the run's method owns the student (a submodule); an added method holds it as a plain attribute (Method.add)
    if "student" in method._modules:
        method._modules["student"] = student
    else:
        method.__dict__["student"] = student


def combined_step(method, batch, epoch: int):
    """One training step of ``method`` with its added methods (module docstring). Returns the merged StepOutput."""
    parts = list(method.added)
    every = [method, *parts]
    student, teacher, x = method.student, method.teacher, batch.x
    s_paths, s_index = _union([r for r in (_reads(m, "student") for m in every) if r is not False], "student")
    t_paths, t_index = _union([r for r in (_reads(m, "teacher") for m in every) if r is not False], "teacher")
    t_out = None
    s_pre, t_pre = (any(_preact(m, who) for m in every) for who in ("student", "teacher"))
    if s_paths is not None or callable(getattr(student, "forward_features", None)):
        logits, feats = forward_features(student, x, s_paths, preact=s_pre)  # zoo models: the cost of their forward
    else:
        logits, feats = student(x), None
    if any(_reads(m, "teacher") is not False for m in every):
        t_out = teacher.features(x, t_paths, preact=t_pre)  # one teacher pass gives its logits and its features
    served, shared = Served(student, x, logits, feats, s_index), ServedTeacher(teacher, batch, t_out, t_index)
    try:
        for m in every:
            _set_student(m, served)
            m.teacher = shared
        out = method.forward(batch, epoch)
        added = [(p, p(batch, epoch)) for p in parts]
    finally:
        for m in every:
            _set_student(m, student)
            m.teacher = teacher
    for part, o in added:
        weight = method.added_weights[part.name]
        for key, value in o.losses.items():
            if key != "ce":
                out.losses[_named(part.name, key, out.losses)] = weight * value
        for key, value in o.logs.items():
            out.logs[_named(part.name, key, out.logs)] = value
    return out


def _named(method: str, key: str, taken: dict) -> str:
    name = key if key.startswith(method) else f"{method}_{key}"
    if name in taken:
        raise ValueError(f"method.add: two terms are named {name!r}; add each method once")
    return name
