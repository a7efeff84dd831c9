"""Whether a finished run's result can be trusted, read from its ``final.json``.

A run that ends with exit 0 may still not be a result: the divergence guard fired and the run trained on
(``run.on_divergence=warn``), a guard rule was building when a short run ended (``final.json``'s ``divergence``,
:mod:`kdlab.engine.guard`), or a number it reports is NaN or infinite. A sweep records such a cell as ``failed``
with the reason (:mod:`kdlab.sweep.cell`, :mod:`kdlab.sweep.runner`), and ``kdlab table`` leaves it out of every
mean and names it (:mod:`kdlab.sweep.table`).

:func:`read_final` reads a ``final.json`` for them: a truncated file or one without the numbers a table needs is one
line naming the file. A run the guard stopped (``run.on_divergence=stop``, the default) writes ``stopped.json``
instead (:func:`read_stopped`): the table counts it as failed rather than leaving its seed out unsaid.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["distrust", "read_final", "read_stopped"]

_REPORTED = ("student", "teacher", "fidelity", "test")  # the sections whose numbers a table or a sweep reports
_MISSING = object()


def read_final(path: Path) -> dict[str, Any]:
    """The run report ``path`` (a ``final.json``); ``ValueError`` naming the file when it is not valid JSON or lacks
    the run's accuracies."""
    try:
        final = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable final.json (truncated or corrupt?): {exc}; rerun that run or move "
                         "its directory away") from None
    role = final.get("role", "student") if isinstance(final, dict) else None
    need = [(role, "best_acc"), (role, "last_acc"), ("wall_time_s",)]
    if isinstance(final, dict) and role == "student" and "teacher" in final:
        need.append(("teacher", "acc"))
    for keys in need:
        node: Any = final
        for k in keys:
            node = node.get(k, _MISSING) if isinstance(node, dict) else _MISSING
        if node is _MISSING:
            raise ValueError(f"{path}: no '{'.'.join(str(k) for k in keys)}' (not a final.json of a finished kdlab "
                             "run, or written by another version); rerun that run or move its directory away")
    return final


def read_stopped(path: Path) -> dict[str, Any]:
    """A ``stopped.json`` (a run the divergence guard stopped; :mod:`kdlab.builder.run`), or ``ValueError`` naming
    the file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        doc, why = None, str(exc)
    else:
        why = "no 'stopped' record"
    if not isinstance(doc, dict) or not isinstance(doc.get("stopped"), dict):
        raise ValueError(f"{path}: not a readable stopped.json ({why}); rerun that run or move its directory away")
    return doc


def _non_finite(node: Any, where: str) -> str | None:
    if isinstance(node, dict):
        for k, v in node.items():
            found = _non_finite(v, f"{where}.{k}")
            if found:
                return found
    elif isinstance(node, float) and not math.isfinite(node):
        return f"{where} is {node}"
    return None


def distrust(final: dict[str, Any]) -> str | None:
    """Why the run that wrote ``final`` (its ``final.json``, or ``stopped.json``) is not a result to trust, or
    ``None``."""
    stopped = final.get("stopped")
    if stopped:
        return (f"the divergence guard stopped it at epoch {stopped.get('epoch')} ('{stopped.get('rule')}'): "
                f"{stopped.get('message')}")
    d = final.get("divergence")
    if d:
        when = "when the run ended" if d.get("ended") else "and the run trained on (run.on_divergence=warn)"
        why = d.get("message") or f"the '{d.get('rule')}' rule fired at epoch {d.get('epoch')}"
        return f"the divergence guard found '{d.get('rule')}' at epoch {d.get('epoch')} {when}: {why}"
    for section in _REPORTED:
        found = _non_finite(final.get(section), section)
        if found:
            return f"a reported number is not finite: {found}"
    return None
