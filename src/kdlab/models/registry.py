"""Architectures by name: ``@register("resnet8")`` on a builder, ``create("resnet8", num_classes=100)`` to use it."""

from __future__ import annotations

import difflib
import inspect
from typing import Callable

from torch import nn

from kdlab._checks import check_int

Builder = Callable[..., nn.Module]

_BUILDERS: dict[str, Builder] = {}
_ALIASES: dict[str, str] = {}


def register(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(num_classes, **kwargs) -> nn.Module`` under ``name`` (and ``aliases``).

    Aliases resolve in :func:`create` but are not listed by :func:`names`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register: name must be a non-empty string, got {name!r}")

    def deco(builder: Builder) -> Builder:
        for key in (name, *aliases):
            if key in _BUILDERS or key in _ALIASES:
                raise ValueError(f"model name {key!r} is registered twice; pick another name")
        _BUILDERS[name] = builder
        for alias in aliases:
            _ALIASES[alias] = name
        return builder

    return deco


def names() -> list[str]:
    """Sorted canonical names of every registered architecture."""
    return sorted(_BUILDERS)


def _resolve(name: str) -> str:
    if name in _BUILDERS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    # Case-insensitive fallback so that "resnet50" finds "ResNet50"; only when the match is unique.
    known = list(_BUILDERS) + list(_ALIASES)
    folded = [k for k in known if k.lower() == name.lower()]
    if len(folded) == 1:
        return _ALIASES.get(folded[0], folded[0])
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown model name {name!r}{hint} (known: {', '.join(sorted(_BUILDERS))})")


def create(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the architecture ``name`` with a ``num_classes``-way classifier; ``kwargs`` go to its builder."""
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {type(name).__name__}")
    key = _resolve(name)
    num_classes = check_int(num_classes, "num_classes", 2, note=f" (for model {key!r})")
    builder = _BUILDERS[key]
    params = inspect.signature(builder).parameters
    accepted = [p for p in params if p != "num_classes"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ValueError(
            f"model {key!r} does not take argument(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'no extra arguments'}"
        )
    return builder(num_classes=num_classes, **kwargs)
