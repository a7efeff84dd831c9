"""The teacher's logits on a fixed evaluation set, stored once and reused by every later run and seed.

A run needs them for every evaluation (agreement, KL) and for the teacher's own numbers in ``final.json``; they do
not change while the teacher's weights, the data and its preprocessing stay the same. The file
``<root>/<hash>.safetensors`` holds them with their key (teacher weights hash, data hash, normalisation, precision)
and the SHA-256 of the logits themselves in its metadata. A file whose key differs is never served (it is
recomputed and replaced); one whose logits no longer match their checksum (changed or corrupted on disk) is
recomputed and replaced with a warning. Where ``root`` cannot be written (a read-only ``$KDLAB_DATA``) the logits
are computed in memory, with one warning.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from kdlab._io import CheckpointError, digest, load_tensors, save_tensors

__all__ = ["stored_logits"]

_FORMAT = 2  # 2: the logits' SHA-256 in the metadata


def stored_logits(key: dict[str, Any], compute: Callable[[], torch.Tensor], root: Path) -> tuple[torch.Tensor, bool]:
    """``(logits, reused)``: the logits stored under ``key`` in ``root``, or ``compute()`` stored there now."""
    key = {"format": _FORMAT, **key}
    text = json.dumps(key, sort_keys=True)
    path = Path(root) / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.safetensors"
    if path.is_file():
        try:
            tensors, meta = load_tensors(path)
        except CheckpointError:
            tensors, meta = {}, {}  # a truncated or foreign file: computed again and replaced below
        if meta.get("key") == text and "logits" in tensors:
            if meta.get("sha256") == digest(tensors["logits"]):
                return tensors["logits"], True
            warnings.warn(f"stored teacher logits {path} do not match the checksum written with them (changed or "
                          "corrupted on disk); computing them again", RuntimeWarning, stacklevel=2)
    logits = compute()
    try:
        save_tensors(path, {"logits": logits}, {"key": text, "sha256": digest(logits)})
    except OSError as exc:  # a read-only data directory: the run goes on without storing them
        warnings.warn(f"the teacher's test logits were computed but cannot be stored ({exc}); the next run computes "
                      "them again", RuntimeWarning, stacklevel=2)
    return logits, False
