"""Checkpoints: safetensors only (no pickles), written atomically (temp file + fsync + rename).

Two kinds of file:
- model weights (``model.safetensors``, ``best.safetensors``): the network's state dict, with ``arch`` and
  ``num_classes`` in the metadata so ``load_model`` can rebuild it;
- the training state (``checkpoint.safetensors``): method state (student + trainable extras), optimizer state,
  RNG states, and a JSON blob (epoch, history, best, config hash) in the metadata. One file, so one rename
  makes it visible: a kill at any moment leaves either the previous or the new checkpoint, never a mix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from kdlab._io import atomic_write_bytes


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model/run."""


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; copies are cheap next to a training epoch
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    atomic_write_bytes(path, st_save(_plain(tensors), metadata=metadata))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; a missing, truncated or corrupt file is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        from safetensors import safe_open  # metadata lives in the header

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None
    return tensors, metadata


# -- model weights -------------------------------------------------------------------------------------------

def save_model(path: str | Path, model: torch.nn.Module, arch: str | None = None, num_classes: int | None = None,
               extra: dict[str, Any] | None = None) -> None:
    meta = {"format": "kdlab-model-1"}
    if arch is not None:
        meta["arch"] = arch
    if num_classes is not None:
        meta["num_classes"] = str(num_classes)
    if extra:
        meta["extra"] = json.dumps(extra)
    save_tensors(path, model.state_dict(), meta)


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    tensors, _ = load_tensors(path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {type(model).__name__}: {exc}") from None
    return model


def load_model(path: str | Path, arch: str | None = None, num_classes: int | None = None) -> torch.nn.Module:
    """Rebuild a zoo model from a kdlab weights file (arch and class count from its metadata)."""
    from kdlab import models

    _, meta = load_tensors(path)
    file_arch = meta.get("arch")
    if arch is not None and file_arch is not None and arch != file_arch:
        raise CheckpointError(f"{path}: holds a {file_arch!r} model but the config says arch {arch!r}")
    arch = arch or file_arch
    if arch is None:
        raise CheckpointError(f"{path}: no architecture recorded; give the arch in the config")
    n = int(meta["num_classes"]) if "num_classes" in meta else num_classes
    if n is None:
        raise CheckpointError(f"{path}: no class count recorded; give num_classes")
    if num_classes is not None and n != num_classes:
        raise CheckpointError(f"{path}: model has {n} classes but the data has {num_classes}")
    return load_weights(models.create(arch, n), path)


# -- training state ------------------------------------------------------------------------------------------

def _split_optimizer_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {"param_groups": state["param_groups"], "state": {}}
    for idx, entry in state["state"].items():
        plain_entry = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                plain_entry[key] = value
        plain["state"][str(idx)] = plain_entry
    return tensors, plain


def _join_optimizer_state(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[int, dict] = {int(i): dict(e) for i, e in plain["state"].items()}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_training_state(path: str | Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        rng: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v for k, v in method.state_dict().items()}
    opt_tensors, opt_plain = _split_optimizer_state(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors.update({f"rng.{k}": v for k, v in rng.items()})
    meta = {"format": "kdlab-state-1", "info": json.dumps(info), "optimizer": json.dumps(opt_plain)}
    save_tensors(path, tensors, meta)


def load_training_state(path: str | Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer
                        ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore method and optimizer in place; returns (rng states, info)."""
    tensors, meta = load_tensors(path)
    if meta.get("format") != "kdlab-state-1":
        raise CheckpointError(f"{path}: not a kdlab training-state file")
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        method.load_state_dict(model, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: state does not fit this run's models: {exc}") from None
    device = next((p.device for p in method.parameters()), torch.device("cpu"))
    opt = {k: v.to(device) for k, v in tensors.items() if k.startswith("optim.")}
    optimizer.load_state_dict(_join_optimizer_state(opt, json.loads(meta["optimizer"])))
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return rng, json.loads(meta["info"])
