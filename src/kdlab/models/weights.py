"""Model weight files: a network's state dict as safetensors, with ``arch`` and ``num_classes`` in the metadata so
:func:`load_model` can rebuild a zoo model from the file alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kdlab._io import CheckpointError, load_tensors, read_metadata, save_tensors
from kdlab.models.registry import create

__all__ = ["load_model", "load_weights", "save_model", "weights_metadata"]

FORMAT = "kdlab-model-1"


def weights_metadata(arch: str | None = None, num_classes: int | None = None,
                     extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The metadata of a weights file (what :func:`load_model` reads back)."""
    meta = {"format": FORMAT}
    if arch is not None:
        meta["arch"] = arch
    if num_classes is not None:
        meta["num_classes"] = str(num_classes)
    if extra:
        meta["extra"] = json.dumps(extra)
    return meta


def save_model(path: str | Path, model: torch.nn.Module, arch: str | None = None, num_classes: int | None = None,
               extra: dict[str, Any] | None = None) -> None:
    save_tensors(path, model.state_dict(), weights_metadata(arch, num_classes, extra))


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    tensors, _ = load_tensors(path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {type(model).__name__}: {exc}") from None
    return model


def load_model(path: str | Path, arch: str | None = None, num_classes: int | None = None) -> torch.nn.Module:
    """Rebuild a zoo model from a kdlab weights file (``model.safetensors``, ``best.safetensors``): its architecture
    and class count come from the file's metadata, or from ``arch``/``num_classes`` where it has none. Returned on
    the CPU in train mode; call ``.eval()`` (and ``.to(device)``) before predicting. ``kdlab.load_model``."""
    meta = read_metadata(path)
    file_arch = meta.get("arch")
    if arch is not None and file_arch is not None and arch != file_arch:
        raise CheckpointError(f"{path}: holds a {file_arch!r} model but the config says arch {arch!r}")
    arch = arch or file_arch
    if arch is None:
        raise CheckpointError(f"{path}: no architecture recorded (weights of a model that is not in kdlab's zoo, e.g. "
                              "from kdlab.fit); give the zoo name (kdlab.load_model(path, arch=...), `kdlab eval "
                              "--arch`) or load them into your own model with kdlab.models.load_weights")
    n = int(meta["num_classes"]) if "num_classes" in meta else num_classes
    if n is None:
        raise CheckpointError(f"{path}: no class count recorded; give num_classes")
    if num_classes is not None and n != num_classes:
        raise CheckpointError(f"{path}: model has {n} classes but the data has {num_classes}")
    return load_weights(create(arch, n), path)
