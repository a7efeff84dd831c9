"""The teacher's logits on a fixed evaluation set, stored once and reused by every later run and seed.

A run needs them for every evaluation (agreement, KL) and for the teacher's own numbers in ``final.json``; they do
not change while the teacher's weights, the data and its preprocessing stay the same. The file
``<root>/<hash>.safetensors`` holds them with their key (teacher weights hash, data hash, normalisation, precision)
in its metadata; a file whose key differs is never served (it is recomputed and replaced).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch

from kdlab._io import CheckpointError, load_tensors, save_tensors

__all__ = ["stored_logits"]

_FORMAT = 1


def stored_logits(key: dict[str, Any], compute: Callable[[], torch.Tensor], root: Path) -> tuple[torch.Tensor, bool]:
    """``(logits, reused)``: the logits stored under ``key`` in ``root``, or ``compute()`` stored there now."""
    key = {"format": _FORMAT, **key}
    text = json.dumps(key, sort_keys=True)
    path = Path(root) / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.safetensors"
    if path.is_file():
        try:
            tensors, meta = load_tensors(path)
            if meta.get("key") == text and "logits" in tensors:
                return tensors["logits"], True
        except CheckpointError:
            pass  # a truncated or foreign file: computed again and replaced below
    logits = compute()
    save_tensors(path, {"logits": logits}, {"key": text})
    return logits, False
