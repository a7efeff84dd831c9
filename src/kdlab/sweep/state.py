"""Where a cell stands, read from its directory before anything runs.

* ``new``: nothing there yet (or no config: the run never started);
* ``finished``: ``final.json`` of the same config (the config hash, ``kdlab.config.config_hash``): skipped;
* ``interrupted``: a run of the same config without ``final.json``: run again, which resumes from its checkpoint;
* ``changed``: the directory holds a run of another config: reported with the keys that differ, never overwritten.

The resume guard of ``build`` still checks the run's full identity (the teacher's weights too) when an interrupted
cell starts again; this check only keeps a sweep from starting cells it must not touch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from kdlab.config import ConfigError, RunConfig, config_hash
from kdlab.engine.metrics_log import flatten
from kdlab.sweep.cell import Cell

__all__ = ["CellState", "cell_state"]

State = Literal["new", "finished", "interrupted", "changed"]
_EXCLUDED = {"out_dir", "run.progress", "run.tensorboard"}  # what config_hash leaves out


@dataclass(frozen=True)
class CellState:
    state: State
    reason: str | None = None
    final: dict[str, Any] | None = None  # of a finished cell


def _differences(new: dict[str, Any], old: dict[str, Any]) -> str:
    a, b = flatten(new, sep="."), flatten(old, sep=".")
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in _EXCLUDED)
    shown = ", ".join(f"{k}: {b.get(k)!r} there, {a.get(k)!r} now" for k in keys[:3])
    return shown + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")


def cell_state(cell: Cell) -> CellState:
    """The state of ``cell``'s directory (its config is validated here: a bad one raises ``ConfigError``)."""
    cfg = cell.config()
    out = Path(cell.out_dir)
    stored_path = out / "config.yaml"
    if not stored_path.is_file():
        if (out / "checkpoint.safetensors").is_file() or (out / "final.json").is_file():
            return CellState("changed", f"{out} holds a run without config.yaml; move it away to train this cell")
        return CellState("new")
    try:
        stored = RunConfig.model_validate(yaml.safe_load(stored_path.read_text(encoding="utf-8")))
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{stored_path}: cannot be read as a run config ({exc}); move the directory away") from None
    if config_hash(stored) != config_hash(cfg):
        why = _differences(cfg.model_dump(mode="json"), stored.model_dump(mode="json"))
        return CellState("changed", f"{out} holds a run of another config ({why}); left as it is: use another "
                                    "out or move that directory away")
    final = out / "final.json"
    if final.is_file():
        return CellState("finished", final=json.loads(final.read_text(encoding="utf-8")))
    return CellState("interrupted")
