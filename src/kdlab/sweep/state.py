"""Where a cell stands, read from its directory before anything runs.

* ``new``: nothing there yet (or no config: the run never started);
* ``finished``: ``final.json`` of the same run — the cell's plan, made again on the stored run's data facts and
  input digests (``plan.json``, :func:`kdlab.builder.replan`), has the stored run's identity: skipped;
* ``interrupted``: the same run without ``final.json``: run again, which resumes from its checkpoint;
* ``changed``: the directory holds another run: reported with the keys that differ, never overwritten.

The comparison is the one a resume makes (the run's identity, adapted method defaults included), so a sweep never
calls "changed" what ``kdlab train`` would resume or find finished. The resume guard of ``build`` still checks the
digests of the teacher's weights anew when an interrupted cell starts again; this check only keeps a sweep from
starting cells it must not touch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kdlab import builder
from kdlab.config import ConfigError
from kdlab.sweep.cell import Cell

__all__ = ["CellState", "cell_state"]

State = Literal["new", "finished", "interrupted", "changed"]


@dataclass(frozen=True)
class CellState:
    state: State
    reason: str | None = None
    final: dict[str, Any] | None = None  # of a finished cell


def _differences(new: dict[str, Any], old: dict[str, Any]) -> str:
    keys = sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k))
    shown = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys[:3])
    return shown + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")


def cell_state(cell: Cell) -> CellState:
    """The state of ``cell``'s directory (its config is validated here: a bad one raises ``ConfigError``)."""
    cfg = cell.config()
    out = Path(cell.out_dir)
    if not (out / "config.yaml").is_file():
        if (out / "checkpoint.safetensors").is_file() or (out / "final.json").is_file():
            return CellState("changed", f"{out} holds a run without config.yaml; move it away to train this cell")
        return CellState("new")
    try:
        stored = builder.read_plan(out)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if stored is None:
        return CellState("changed", f"{out} holds a run without plan.json (an older kdlab's); left as it is: use "
                                    "another out or move that directory away")
    plan = builder.replan(cfg, stored)
    if plan.identity_hash != stored["identity_hash"]:
        why = _differences(plan.identity, stored["identity"])
        return CellState("changed", f"{out} holds a run of another config ({why}); left as it is: use another "
                                    "out or move that directory away")
    final = out / "final.json"
    if final.is_file():
        return CellState("finished", final=json.loads(final.read_text(encoding="utf-8")))
    return CellState("interrupted")
