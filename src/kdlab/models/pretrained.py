"""Fine-tuning: a network started from pretrained weights, its classifier replaced for the data's classes.

:func:`resolve_weights` is the one place a weight reference becomes a state dict (today a weights file, any format
:func:`~kdlab.models.weights.read_state_dict` reads; named published weights plug in here). :func:`load_pretrained`
loads every tensor of the reference into the model except the classifier's when its class count differs from the
model's: that head (``classifier_of(model)``, e.g. ``fc`` of a ResNet) keeps the architecture's own initialisation,
drawn from the run's seed, and the report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from kdlab._io import CheckpointError
from kdlab.models.features import classifier_of
from kdlab.models.foreign import to_kdlab_names
from kdlab.models.registry import canonical, renamed
from kdlab.models.weights import ArchMismatchError, read_state_dict

__all__ = ["load_pretrained", "resolve_weights"]


def resolve_weights(ref: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A weight reference → ``(state dict, metadata)``. A path to a ``.safetensors`` or PyTorch file (read with
    ``torch.load(weights_only=True)``)."""
    return read_state_dict(ref)


def load_pretrained(model: nn.Module, arch: str, ref: str | Path) -> dict[str, Any]:
    """Load ``ref`` into ``model`` (zoo architecture ``arch``), all tensors but a classifier of another class count,
    which is left as initialised. Returns ``{"weights", "loaded", "head", "head_replaced", "file_classes",
    "num_classes"}``. A file of another architecture is an :class:`ArchMismatchError`; other tensors that do not fit
    are a :class:`CheckpointError` naming them."""
    state, meta = resolve_weights(ref)
    file_arch = renamed(meta["arch"]) if "arch" in meta else None
    if file_arch is not None and canonical(file_arch) != canonical(arch):
        raise ArchMismatchError(Path(ref), file_arch, arch)
    state = to_kdlab_names(canonical(arch), state)
    head = classifier_of(model)
    name = next(n for n, m in model.named_modules() if m is head)
    head_keys = {f"{name}.{p}" for p, _ in head.named_parameters()}
    ours = model.state_dict()
    replace = {k for k in head_keys if k in state and state[k].shape != ours[k].shape}
    body = {k: v for k, v in state.items() if k not in replace}
    missing = sorted(set(ours) - set(body) - replace)
    unexpected = sorted(set(body) - set(ours))
    wrong = [k for k in body if k in ours and body[k].shape != ours[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(ks)} tensors {kind}, e.g. {', '.join(ks[:3])}" for kind, ks in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)) if ks]
        raise CheckpointError(f"{ref}: pretrained weights do not fit {arch} (another architecture?): "
                              f"{'; '.join(parts)}")
    model.load_state_dict({**ours, **body}, strict=True)
    weight = state.get(f"{name}.weight")
    return {"weights": str(ref), "loaded": len(body), "head": name, "head_replaced": bool(replace),
            "file_classes": int(weight.shape[0]) if weight is not None and weight.dim() == 2 else None,
            "num_classes": int(head.out_features)}
