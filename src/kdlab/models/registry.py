"""Architectures by name: ``@register("resnet8")`` on a builder, ``create("resnet8", num_classes=100)`` to use it.

Names are exact. No two names may differ only by letter case (``resnet50`` is torchvision's ImageNet network,
``cifar_resnet50`` the benchmark's CIFAR one), so a case-insensitive match would only ever guess; a name that matches
another when case is ignored is refused with that name as the hint.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Callable

from torch import nn

from kdlab._checks import check_int

Builder = Callable[..., nn.Module]

_BUILDERS: dict[str, Builder] = {}
_ALIASES: dict[str, str] = {}
#: Names that meant another model in earlier kdlab versions: refused with the new name (never resolved silently,
#: since "ResNet50" now differs from torchvision's "resnet50" only by case). Weight files written under the old name
#: are read through :func:`renamed` (``kdlab.models.weights``).
RENAMED = {"ResNet50": "cifar_resnet50"}


def register(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(num_classes, **kwargs) -> nn.Module`` under ``name`` (and ``aliases``).

    Aliases resolve in :func:`create` but are not listed by :func:`names`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register: name must be a non-empty string, got {name!r}")

    def deco(builder: Builder) -> Builder:
        taken = {k.lower(): k for k in (*_BUILDERS, *_ALIASES)}
        for key in (name, *aliases):
            if key.lower() in taken:
                clash = taken[key.lower()]
                why = "twice" if clash == key else f"already as {clash!r} (names may not differ only by case)"
                raise ValueError(f"model name {key!r} is registered {why}; pick another name")
        _BUILDERS[name] = builder
        for alias in aliases:
            _ALIASES[alias] = name
        return builder

    return deco


def names() -> list[str]:
    """Sorted canonical names of every registered architecture."""
    return sorted(_BUILDERS)


def renamed(name: str) -> str:
    """The current name of a model that an earlier kdlab version called ``name`` (else ``name``)."""
    return RENAMED.get(name, name)


def canonical(name: str) -> str:
    """The registered name that ``name`` (a name or an alias) stands for; ValueError with hints if none."""
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {type(name).__name__}")
    if name in _BUILDERS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    if name in RENAMED:
        raise ValueError(f"model {name!r} is now called {RENAMED[name]!r} (the CIFAR-stem network of the KD "
                         f"benchmark); {name.lower()!r} is torchvision's ImageNet network")
    known = list(_BUILDERS) + list(_ALIASES)
    close = [k for k in known if k.lower() == name.lower()]  # at most one: names never differ only by case
    close += [c for c in difflib.get_close_matches(name, known, n=4, cutoff=0.5) if c not in close]
    hint = f"; did you mean {', '.join(repr(c) for c in close[:4])}?" if close else ""
    raise ValueError(f"unknown model name {name!r} (names are case-sensitive){hint} "
                     f"(known: {', '.join(sorted(_BUILDERS))})")


def create(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the architecture ``name`` with a ``num_classes``-way classifier; ``kwargs`` go to its builder."""
    key = canonical(name)
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
