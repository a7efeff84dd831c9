"""The frozen teacher: eval mode, no gradients, forward under ``torch.inference_mode``."""

from __future__ import annotations

import torch
from torch import nn

from kdlab.models.features import forward_features


class FrozenTeacher:
    """Wraps a teacher module so that it can only be used for inference.

    Deliberately not an ``nn.Module``: a method that stores it is not given the teacher's parameters, so they never
    reach the optimizer, the checkpoint of the student, or a DistributedDataParallel wrapper.
    """

    def __init__(self, module: nn.Module):
        if not isinstance(module, nn.Module):
            raise TypeError(f"teacher must be an nn.Module, got {type(module).__name__}")
        self.module = module.eval().requires_grad_(False)

    def to(self, device) -> "FrozenTeacher":
        self.module.to(device)
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher logits for exactly this input (no cache)."""
        with torch.inference_mode():
            out = self.module(x)
        # Inference tensors may not be saved for backward; a clone outside inference mode is a normal tensor.
        return out.clone()

    def logits_for_batch(self, batch) -> torch.Tensor:
        """Teacher logits for a training batch; a cached teacher looks them up by (index, view)."""
        return self.logits(batch.x)

    def features(self, x: torch.Tensor, stage_paths: list[str] | None = None, preact: bool = False):
        """``(logits, {"stages": [...], "pooled": ...})`` for feature-level methods; ``stage_paths`` and ``preact``
        (also ``"preact"``: each stage's pre-activation) as in :func:`~kdlab.models.features.forward_features`
        (None: the model's own ``forward_features``)."""
        with torch.inference_mode():
            logits, feats = forward_features(self.module, x, stage_paths, preact=preact)
        clone = lambda t: t.clone()  # noqa: E731
        out = {"stages": [clone(s) for s in feats["stages"]], "pooled": clone(feats["pooled"])}
        if preact:
            out["preact"] = [clone(p) for p in feats["preact"]]
        return clone(logits), out

    def describe(self) -> dict:
        return {"type": type(self.module).__name__, "params": sum(p.numel() for p in self.module.parameters())}
