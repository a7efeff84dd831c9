"""The training state: one safetensors file (``checkpoint.safetensors``), written atomically, no pickles.

It holds the method's state (student + trainable extras), the optimizer state, the RNG states, and a JSON blob in
the metadata (epoch, best, the run's identity and its hash). One file, so one rename makes it visible: a kill at any
moment leaves either the previous or the new checkpoint, never a mix.

The run's *identity* is a flat ``{key: value}`` dict of everything that changes training (config values, the
teacher's weights hash, the data). A rerun on the same directory resumes only when its identity hashes the same, or
differs only in the number of epochs of an epoch-pure schedule (a longer run: the finished one is extended);
otherwise :func:`check_same_run` refuses it and names the keys that differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from kdlab._io import CheckpointError, load_tensors, read_metadata, save_tensors
from kdlab.engine.schedule import depends_on_length

__all__ = ["CheckpointError", "check_same_run", "identity_hash", "load_training_state", "read_training_info",
           "save_training_state"]

FORMAT = "kdlab-state-1"


def identity_hash(identity: dict[str, Any]) -> str:
    """16 hex digits of SHA-256 over the identity's canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_same_run(info: dict[str, Any], run_hash: str, identity: dict[str, Any] | None, where: Path) -> None:
    """Refuse to resume a checkpoint made by a run with another identity; the message names the differing keys.

    One change is not a refusal: the number of epochs alone, when the lr schedule does not depend on it (step or
    constant; :func:`~kdlab.engine.schedule.depends_on_length`) and the checkpoint has not trained past it. Every
    epoch already trained then ran exactly as in a run started with the new length, so a finished run is extended
    (or a killed one shortened) by rerunning with only ``optim.epochs`` changed."""
    if info.get("identity_hash") == run_hash:
        return
    stored = info.get("identity")
    hint = ""
    if isinstance(stored, dict) and identity is not None:
        keys = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
        if keys == [EPOCHS]:
            reason = _why_not_extendable(info, identity)
            if reason is None:
                return
            hint = f" ({reason})"
        elif EPOCHS in keys:
            hint = " (to train longer, change the number of epochs alone)"
        shown = ", ".join(f"{k} ({_short(stored.get(k))} -> {_short(identity.get(k))})" for k in keys[:8])
        more = f" and {len(keys) - 8} more" if len(keys) > 8 else ""
        what = f"its {shown}{more} differ{hint}"
    else:
        what = f"its identity hash differs ({info.get('identity_hash')} vs {run_hash})"
    raise CheckpointError(
        f"{where} holds a run with other settings: {what}. Rerun with the original settings to resume it, or use a "
        "new out_dir (or delete that directory) to start over")


EPOCHS = "optim.epochs"  # the identity key of the run's length


def _why_not_extendable(info: dict[str, Any], identity: dict[str, Any]) -> str | None:
    """None when a run differing from the checkpoint only in its length may resume it, else why not."""
    schedule = identity.get("optim.schedule", "step")
    if depends_on_length(schedule):
        return (f"the {schedule} schedule's learning rate depends on the number of epochs, so the epochs already "
                "trained would differ; only a step or constant schedule can be extended")
    trained = info.get("epoch", 0)
    if identity.get(EPOCHS, 0) < trained:
        return f"the checkpoint has already trained {trained} epochs"
    return None


def _short(value: Any) -> str:
    text = "unset" if value is None else str(value)
    return text if len(text) <= 24 else text[:12] + "…"


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
    meta = {"format": FORMAT, "info": json.dumps(info), "optimizer": json.dumps(opt_plain)}
    save_tensors(path, tensors, meta)


def read_training_info(path: str | Path) -> dict[str, Any]:
    """The JSON info of a training-state file (epoch, best, identity and its hash), without reading its tensors."""
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a kdlab training-state file")
    return json.loads(meta["info"])


def load_training_state(path: str | Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer
                        ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore method and optimizer in place; returns (rng states, info)."""
    tensors, meta = load_tensors(path)
    if meta.get("format") != FORMAT:
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
