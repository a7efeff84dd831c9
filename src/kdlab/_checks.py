"""Argument checks shared across kdlab: an int that is not a bool, a finite real number, a positive temperature, and
:class:`SettingError`, a bad run setting named by its config key.

A leaf: it imports nothing from kdlab. Each ``check_*`` returns the value as a plain ``int``/``float`` or raises
``error`` (``ValueError`` unless a call site's contract says otherwise) with a message naming the argument and the
value it got. The loss layer keeps its own checks (``kdlab.losses._validate``): they are that layer's contract.
"""

from __future__ import annotations

import difflib
import math
from numbers import Integral, Real
from typing import Any, Callable

__all__ = ["SettingError", "check_int", "check_positive", "check_real", "is_int", "is_real", "unknown_name"]


def unknown_name(what: str, name: str, known: list[str]) -> ValueError:
    """The error for a ``name`` that is not one of ``known``: up to three close ones, then every known name."""
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ValueError(f"unknown {what} {name!r}{hint}; known: {', '.join(known)}")


class SettingError(ValueError):
    """A bad run setting, named by its config key: ``SettingError("lower {k}", k="method.args.k")``.

    The layer that finds the problem knows only the config key; the front end that took the setting words it for
    its user: the CLI prints the key as written in a config (``method.args.k``), ``kdlab.fit`` re-raises it with
    :meth:`renamed` in its own argument names (``method_args['k']``). Only the named ``{placeholders}`` are
    replaced, so the rest of the message may hold any text (shapes, dicts).
    """

    def __init__(self, template: str, **keys: str):
        self.template, self.keys = template, keys
        super().__init__(self.render())

    def render(self, name: Callable[[str], str] = str) -> str:
        text = self.template
        for placeholder, key in self.keys.items():
            text = text.replace("{" + placeholder + "}", name(key))
        return text

    def renamed(self, name: Callable[[str], str]) -> "SettingError":
        """The same error worded with ``name(config_key)`` for every key."""
        return SettingError(self.render(name))


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), and not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number (int, float, numpy scalar), and not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check_int(
    value: Any, name: str, minimum: int = 0, maximum: int | None = None, *, note: str = "",
    error: type[Exception] = ValueError,
) -> int:
    """``int(value)`` for an int in ``[minimum, maximum]`` (no upper bound for ``None``); ``note`` explains it."""
    if is_int(value) and value >= minimum and (maximum is None or value <= maximum):
        return int(value)
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    raise error(f"{name} must be an int {bound}{note}; got {value!r}")


def check_real(
    value: Any, name: str, *, minimum: float | None = None, above: float | None = None, note: str = "",
    error: type[Exception] = ValueError,
) -> float:
    """``float(value)`` for a finite real number ``>= minimum`` or ``> above`` (when given)."""
    if (
        is_real(value)
        and math.isfinite(value)
        and (minimum is None or value >= minimum)
        and (above is None or value > above)
    ):
        return float(value)
    bound = "" if minimum is None else f" >= {minimum:g}"
    bound += "" if above is None else f" > {above:g}"
    raise error(f"{name} must be a finite number{bound}{note}; got {value!r}")


def check_positive(value: Any, name: str, *, error: type[Exception] = ValueError) -> float:
    """``float(value)`` for a positive finite number, e.g. a temperature; anything ``float()`` takes (a 0-d tensor,
    a numpy scalar) except a bool."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise error(f"{name} must be a positive number, got {value!r}") from None
    if isinstance(value, bool) or not 0 < number < math.inf:
        raise error(f"{name} must be a positive finite number, got {value!r}")
    return number
