"""A network's description, so that it can be used without kdlab and without the data: ``model.json``.

A run writes it next to ``model.safetensors`` (and into ``final.json`` and the weights files' metadata); ``kdlab
export`` copies it into the exported file (ONNX ``metadata_props``, TorchScript extra files) and ``kdlab predict``
reads its preprocessing and class names. It holds::

    format        "kdlab-model-card-1"
    arch          the zoo architecture (kdlab.models.create(arch, num_classes))
    num_classes, classes     class count and names (an image folder: its sorted folder names; else the data set's
                             names, or the indices "0".."C-1")
    input_shape   one input [C, H, W] (or [C, L]); the network takes float32 [N, *input_shape], returns logits [N, C]
    preprocessing kdlab.data.preprocess.eval_preprocessing: resize, crop, scale, mean, std as numbers
    role, data, teacher_arch, method   where it came from
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlab._io import CheckpointError, atomic_write_text, read_metadata

__all__ = ["CARD_FILE", "FORMAT", "model_card", "read_card", "write_card"]

CARD_FILE = "model.json"
FORMAT = "kdlab-model-card-1"


def model_card(*, arch: str | None, num_classes: int, classes: Sequence[str] | None, input_shape: Sequence[int],
               preprocessing: dict[str, Any], **where: Any) -> dict[str, Any]:
    """The card of a network (JSON-ready); ``classes`` None: the indices as names."""
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    return {"format": FORMAT, "arch": arch, "num_classes": int(num_classes), "classes": names,
            "input_shape": [int(d) for d in input_shape], "preprocessing": dict(preprocessing),
            **{k: v for k, v in where.items() if v is not None}}


def write_card(directory: str | Path, card: dict[str, Any]) -> Path:
    path = Path(directory) / CARD_FILE
    atomic_write_text(path, json.dumps(card, indent=2) + "\n")
    return path


def read_card(run: str | Path) -> dict[str, Any] | None:
    """The card of a run directory or weights file: ``model.json`` in the directory (beside the file), else the
    weights file's own metadata (a ``.safetensors`` written by a run); None when neither has one."""
    run = Path(run)
    path = run / CARD_FILE if run.is_dir() else run.with_name(CARD_FILE)
    if path.is_file():
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable model card ({exc})") from None
        if not isinstance(card, dict) or card.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a kdlab model card (format {FORMAT!r} expected)")
        return card
    weights = run / "model.safetensors" if run.is_dir() else run
    if weights.is_file() and weights.name.lower().endswith(".safetensors"):
        text = read_metadata(weights).get("card")
        return json.loads(text) if text else None
    return None
