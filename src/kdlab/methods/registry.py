"""Methods by name: ``@register("kd")`` on the class, ``get("kd")`` for the class, ``create("kd", ...)`` for one."""

from __future__ import annotations

from typing import Any

import torch

from kdlab._checks import unknown_name
from kdlab.methods.base import Method

_METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def deco(cls: type[Method]) -> type[Method]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def names() -> list[str]:
    return sorted(_METHODS)


def get(name: str) -> type[Method]:
    try:
        return _METHODS[name]
    except KeyError:
        raise unknown_name("method", name, names()) from None


def create(name: str, student, teacher, num_classes: int, args: dict[str, Any] | None = None,
           probe: torch.Tensor | None = None, data=None) -> Method:
    """The method ``name`` around ``student`` and ``teacher``, its hyperparameters validated from ``args``. ``data``:
    the training loader, given to :meth:`Method.setup_data` (CRD needs it); ``probe``: a few real inputs, given to
    :meth:`Method.setup` (feature methods size their trainable parts from them and need one; the others ignore
    it)."""
    cls = get(name)
    method = cls(student, teacher, num_classes, cls.Params.model_validate(args or {}))
    if data is not None:
        method.setup_data(data)
    if probe is not None:
        method.setup(probe)
    return method
