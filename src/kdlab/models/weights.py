"""Model weight files.

kdlab writes a network's state dict as safetensors with ``arch`` and ``num_classes`` in the metadata (a network
built by a factory: ``factory``, its import string and arguments as JSON, :mod:`kdlab.models.factory`), so
:func:`load_model` can rebuild the model from the file alone. It reads:

* ``.safetensors`` — kdlab's own, or any safetensors state dict (then the arch must be given);
* PyTorch files (``.pth``, ``.pt``, ``.tar``) through ``torch.load(weights_only=True)`` only, so a file that would
  import Python objects is refused, never unpickled. A bare state dict, or a dict holding one under ``model`` or
  ``state_dict`` (RepDistiller's and mdistiller's checkpoints); ``module.`` prefixes (DataParallel) are stripped. Such
  a file records no architecture, so the arch must be given. RepDistiller's key names are mapped to kdlab's
  (:mod:`kdlab.models.foreign`); torchvision's need none.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import re
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdlab._checks import SettingError
from kdlab._io import CheckpointError, load_tensors, save_tensors
from kdlab.models.factory import Arch, create_arch, is_factory
from kdlab.models.features import classifier_of
from kdlab.models.foreign import to_kdlab_names
from kdlab.models.registry import canonical, create, renamed

__all__ = ["ArchMismatchError", "INERT_GLOBALS", "PYTORCH_SUFFIXES", "load_model", "load_weights", "model_from_state",
           "read_state_dict", "save_model", "state_from_bytes", "weights_metadata"]

FORMAT = "kdlab-model-1"
PYTORCH_SUFFIXES = (".pth", ".pt", ".tar")
_WRAPPERS = ("model", "state_dict")  # keys under which training checkpoints keep the state dict


class ArchMismatchError(CheckpointError):
    """A weights file that records another architecture than the one asked for (``file_arch`` vs ``arch``)."""

    def __init__(self, path: Path, file_arch: str, arch: str):
        self.path, self.file_arch, self.arch = path, file_arch, arch
        super().__init__(f"{path}: holds a {file_arch!r} model but arch {arch!r} was asked for; the file records "
                         f"its arch, so set the arch to {file_arch} or leave it unset")


def weights_metadata(arch: Arch | None = None, num_classes: int | None = None,
                     extra: dict[str, Any] | None = None, card: dict[str, Any] | None = None) -> dict[str, str]:
    """The metadata of a weights file (what :func:`load_model` reads back; ``card``: the network's
    :mod:`kdlab.models.card`, so the file alone says its classes and preprocessing)."""
    meta = {"format": FORMAT}
    if card is not None:
        meta["card"] = json.dumps(card)
    if is_factory(arch):
        meta["factory"] = json.dumps({"factory": arch["factory"], "args": dict(arch.get("args") or {})})
    elif arch is not None:
        meta["arch"] = arch
    if num_classes is not None:
        meta["num_classes"] = str(num_classes)
    if extra:
        meta["extra"] = json.dumps(extra)
    return meta


def save_model(path: str | Path, model: torch.nn.Module, arch: Arch | None = None, num_classes: int | None = None,
               extra: dict[str, Any] | None = None) -> None:
    save_tensors(path, model.state_dict(), weights_metadata(arch, num_classes, extra))


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0].split('. ')[0]}" if text else type(exc).__name__


def _torch_file(path: Path) -> dict[str, Tensor]:
    if tarfile.is_tarfile(path):
        raise CheckpointError(f"{path}: a tar archive, not a weights file; extract it (tar xf {path.name}) and point "
                              "at a checkpoint inside (cifar_teachers.tar holds <arch>_vanilla/ckpt_epoch_240.pth), "
                              "or let kdlab do it: teacher.checkpoint=repdistiller:<arch>")
    return _torch_state(path, path)


def state_from_bytes(data: bytes | memoryview, where: str, allow: Sequence[Any] = ()) -> dict[str, Tensor]:
    """The state dict in a PyTorch file's bytes (an archive member), read with ``torch.load(weights_only=True)`` as
    :func:`read_state_dict` reads a file; ``allow``: extra globals the restricted unpickler may build (inert data
    types only, e.g. :data:`INERT_GLOBALS`); ``where`` names the source in errors. ``module.`` prefixes stripped."""
    return _strip_module(_torch_state(io.BytesIO(bytes(data)), where, allow))


#: Globals that RepDistiller-style training checkpoints hold beside the weights and that only carry data: the
#: training options (``argparse.Namespace``) and numpy scalars (an accuracy), under numpy 2's and numpy 1's module
#: names. No code runs when they are built.
_NP_SCALAR = np.float64(0).__reduce__()[0]  # numpy's scalar rebuilder (numpy.core in 1.x, numpy._core in 2.x)
INERT_GLOBALS: tuple[Any, ...] = (
    argparse.Namespace, np.dtype, *((_NP_SCALAR, f"{m}.multiarray.scalar") for m in ("numpy.core", "numpy._core")),
    *(type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "bool")),
)


def _torch_state(source: Path | io.BytesIO, where: str | Path, allow: Sequence[Any] = ()) -> dict[str, Tensor]:
    try:
        with torch.serialization.safe_globals(list(allow)):
            obj = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if blocked is None:  # garbage, or an opcode the restricted unpickler does not run
            detail = re.search(r"Unsupported [^\n]*", str(exc))
            raise CheckpointError(f"{where}: not a readable PyTorch file (truncated or corrupt?): "
                                  f"{detail.group(0) if detail else _first_line(exc)}") from None
        raise CheckpointError(
            f"{where}: refused: it holds Python objects besides tensors (it would import {blocked.group(1)}), and "
            "kdlab loads PyTorch files only with torch.load(weights_only=True); save just the state dict "
            "(torch.save(model.state_dict(), ...)) or a safetensors file") from None
    except Exception as exc:  # noqa: BLE001  torch raises RuntimeError, EOFError, KeyError, ... on a bad file
        raise CheckpointError(f"{where}: not a readable PyTorch file (truncated or corrupt?): {_first_line(exc)}"
                              ) from None
    if _is_state_dict(obj):
        return dict(obj)
    held = [k for k in _WRAPPERS if isinstance(obj, Mapping) and _is_state_dict(obj.get(k))]
    if len(held) == 1:
        return dict(obj[held[0]])
    found = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else type(obj).__name__
    why = "two state dicts ('model' and 'state_dict')" if len(held) > 1 else found
    raise CheckpointError(f"{where}: holds {why}; expected a state dict (name -> tensor), bare or under 'model' or "
                          "'state_dict'")


def _strip_module(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(state dict, metadata) of a ``.safetensors`` or PyTorch weights file; ``module.`` prefixes stripped. PyTorch
    files have no metadata. Any other file, or a PyTorch file that is not plain tensors, is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    name = path.name.lower()
    if name.endswith(".safetensors"):
        state, meta = load_tensors(path)
    elif name.endswith(PYTORCH_SUFFIXES):
        state, meta = _torch_file(path), {}
    else:
        raise CheckpointError(f"{path}: unknown weights file type; kdlab reads .safetensors and PyTorch files "
                              f"({', '.join(PYTORCH_SUFFIXES)})")
    return _strip_module(state), meta


def _fit(model: nn.Module, state: dict[str, Tensor], path: Path, what: str) -> nn.Module:
    ours = model.state_dict()
    # BatchNorm's batch counter (PyTorch >= 0.4.1) is absent from files saved before it existed; BatchNorm's own
    # loader sets it to 0 then, and so does this (it only matters for momentum=None, which no zoo model uses)
    counters = {k: torch.zeros_like(v) for k, v in ours.items() if k.endswith(".num_batches_tracked") and k not in state}
    state = {**state, **counters}
    missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    if missing or unexpected:
        parts = [f"{len(names)} tensors {kind}, e.g. {', '.join(names[:3])}"
                 for kind, names in (("missing", missing), ("unexpected", unexpected)) if names]
        raise CheckpointError(f"{path}: weights do not fit {what} (another architecture?): {'; '.join(parts)}")
    wrong = [k for k in ours if ours[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{path}: weights do not fit {what}: {len(wrong)} tensors of another shape, e.g. {k} "
                              f"is {tuple(state[k].shape)} in the file and {tuple(ours[k].shape)} in the model")
    model.load_state_dict(state, strict=True)
    return model


def load_weights(model: torch.nn.Module, path: str | Path, arch: str | None = None) -> torch.nn.Module:
    """Load a weights file into ``model`` (strict: same names and shapes). With ``arch`` (a zoo name), RepDistiller's
    key names for that architecture are accepted too."""
    state, _ = read_state_dict(path)
    if arch is not None:
        state = to_kdlab_names(canonical(arch), state)
    return _fit(model, state, Path(path), arch or type(model).__name__)


def _head_classes(model: nn.Module, state: dict[str, Tensor]) -> int | None:
    """The class count of ``state``: rows of the weight of ``model``'s classifier under the same name."""
    head = classifier_of(model)
    key = next((f"{n}.weight" for n, m in model.named_modules() if m is head), None)
    return int(state[key].shape[0]) if key in state and state[key].dim() == 2 else None


def load_model(path: str | Path, arch: Arch | None = None, num_classes: int | None = None) -> torch.nn.Module:
    """Rebuild a zoo model from a weights file: arch and class count from kdlab's metadata, else from ``arch`` and the
    rows of the file's classifier weight; ``num_classes`` (the data's) must agree with the file. Returned on the CPU in
    train mode; call ``.eval()`` (and ``.to(device)``) before predicting. ``kdlab.load_model``."""
    path = Path(path)
    state, meta = read_state_dict(path)
    return model_from_state(state, meta, path, arch, num_classes)


def model_from_state(state: dict[str, Tensor], meta: dict[str, str], path: str | Path, arch: Arch | None = None,
                     num_classes: int | None = None) -> torch.nn.Module:
    """:func:`load_model` on a state dict already read (``meta``: kdlab's metadata, or empty); ``path`` names its
    source in errors. ``arch`` (or the file's metadata) may name a factory: its network is built and must fit."""
    if "factory" in meta or is_factory(arch):
        return _factory_model(state, meta, Path(path), arch, num_classes)
    file_arch = renamed(meta["arch"]) if "arch" in meta else None  # files written before a model was renamed
    if arch is not None and file_arch is not None and canonical(arch) != canonical(file_arch):  # type: ignore[arg-type]
        raise ArchMismatchError(path, file_arch, arch)  # type: ignore[arg-type]
    arch = arch or file_arch
    if arch is None:
        raise CheckpointError(f"{path}: the file records no architecture; give it (teacher.arch=NAME in a config, "
                              "kdlab.load_model(path, arch=...), `kdlab eval --arch`), or convert the file once: "
                              f"kdlab teacher import {path} --arch NAME --out OUT.safetensors")
    state = to_kdlab_names(canonical(arch), state)
    guess = int(meta["num_classes"]) if "num_classes" in meta else (num_classes or 2)
    model = create(arch, guess)
    n = int(meta["num_classes"]) if "num_classes" in meta else _head_classes(model, state)
    if n is not None and num_classes is not None and n != num_classes:
        raise CheckpointError(f"{path}: model has {n} classes but the data has {num_classes}")
    if n is not None and n != guess:
        model = create(arch, n)
    return _fit(model, state, path, arch)  # a file whose names do not fit: the error lists them


def _factory_model(state: dict[str, Tensor], meta: dict[str, str], path: Path, arch: Arch | None,
                   num_classes: int | None) -> torch.nn.Module:
    """A factory's network (the file's ``factory`` metadata, else ``arch``) with the file's weights: the factory is
    called with its recorded arguments, which fix the class count."""
    recorded = json.loads(meta["factory"]) if "factory" in meta else None
    given = {"factory": arch["factory"], "args": dict(arch.get("args") or {})} if is_factory(arch) else arch
    if recorded is not None and given is not None and given != recorded:
        raise CheckpointError(f"{path}: holds a network of {json.dumps(recorded)} but the config says arch "
                              f"{json.dumps(given)} (leave the arch unset: the file records its network)")
    if recorded is None and "arch" in meta:
        raise CheckpointError(f"{path}: holds a {meta['arch']!r} model but the config says arch {json.dumps(given)} "
                              "(leave the arch unset: the file records its network)")
    spec = recorded or given
    try:
        model = create_arch(spec, num_classes or 0)
    except SettingError as exc:  # the file's factory cannot be built here: name the file
        if recorded is None:
            raise
        raise CheckpointError(f"{path}: its network is built by a factory, which failed here: "
                              f"{exc.render(lambda k: k.rpartition('.')[2])}") from None
    n = _head_classes(model, state) if any(isinstance(m, nn.Linear) for m in model.modules()) else None
    if n is not None and num_classes is not None and n != num_classes:
        raise CheckpointError(f"{path}: model has {n} classes but the data has {num_classes}")
    return _fit(model, state, path, spec["factory"])
