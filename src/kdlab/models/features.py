"""Features of any classifier: the zoo's own ``forward_features``, or forward hooks addressed by module path."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor, nn

from kdlab._modes import eval_mode
from kdlab.models._base import ZooModel
from kdlab.models.registry import create


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once); only ``requires_grad`` ones if asked."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"count_parameters: model must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def classifier_of(model: nn.Module) -> nn.Linear:
    """The final classifier: ``model.classifier`` when it is an ``nn.Linear``, else the last ``nn.Linear`` in
    ``model.modules()`` order. Raises ``ValueError`` when the model has no ``nn.Linear``."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"classifier_of: model must be an nn.Module, got {type(model).__name__}")
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Linear):
        return head
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear module, so its classifier (and pooled feature) cannot be "
            "found; give the model a final nn.Linear (e.g. as attribute `classifier`)"
        )
    return last


def forward_features(
    model: nn.Module, x: Tensor, stage_paths: Sequence[str] | None = None, preact: bool = False
) -> tuple[Tensor, dict]:
    """``(logits, {"stages": [Tensor, ...], "pooled": Tensor [N, D]})`` for any classifier returning logits.

    - ``stage_paths`` is None and the model has ``forward_features`` (every zoo model): that method is used.
      ``preact``: the features also hold ``"preact"``, each stage's pre-activation (``ZooModel``'s docstring); only
      zoo models give them, any other model is a ValueError naming what is missing.
    - Otherwise one forward pass with temporary forward hooks: ``pooled`` is the input of
      :func:`classifier_of` (the model's ``classifier`` Linear, else its last ``nn.Linear``), flattened to
      [N, D]; ``stages`` are the outputs of the submodules named by ``stage_paths`` (``model.get_submodule``
      paths such as ``"layer2"`` or ``"features.3"``), in that order; empty when ``stage_paths`` is None or [].
      Pass ``stage_paths=[]`` to force the hook path on a model whose own ``forward_features`` follows another
      convention (e.g. timm's, which returns only a feature map).
    A module that runs more than once in a forward pass contributes its last call. Hooks are always removed.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"forward_features: model must be an nn.Module, got {type(model).__name__}")
    if preact:
        if stage_paths is not None or not isinstance(model, ZooModel):
            raise ValueError(
                f"{type(model).__name__} gives no pre-activation features: they are the tensors before each stage's "
                "last ReLU, which forward hooks on module outputs cannot reach; use a kdlab zoo architecture "
                "(kdlab.models.names())")
        return model.forward_features(x, preact=True)
    if stage_paths is None and callable(getattr(model, "forward_features", None)):
        out = model.forward_features(x)
        if not (
            isinstance(out, tuple)
            and len(out) == 2
            and isinstance(out[1], dict)
            and {"stages", "pooled"} <= set(out[1])
        ):
            raise ValueError(
                f"{type(model).__name__}.forward_features must return (logits, {{'stages': [...], 'pooled': ...}}), "
                f"got {type(out).__name__} (timm's convention?); read its features with forward hooks instead: pass "
                "stage_paths=[] or module paths of model.named_modules() (a feature method's student_paths/"
                "teacher_paths or student_stage/teacher_stage)"
            )
        return out

    if isinstance(stage_paths, str):
        raise ValueError(f"stage_paths must be a list of module paths, not the string {stage_paths!r}")
    paths = list(stage_paths or [])
    stage_modules = []
    for path in paths:
        try:
            stage_modules.append(model.get_submodule(path))
        except AttributeError:
            children = ", ".join(name for name, _ in model.named_children()) or "none"
            raise ValueError(
                f"stage path {path!r} does not name a submodule of {type(model).__name__} "
                f"(top-level children: {children}); use a dotted path from model.named_modules()"
            ) from None
    head = classifier_of(model)

    captured: dict[str, tuple] = {}
    outputs: list = [None] * len(paths)

    def grab_pooled(_module, args, kwargs):
        inp = args[0] if args else kwargs["input"]
        captured["pooled"] = (inp, _version(inp))

    def grab_stage(i):
        def hook(_module, _args, output):
            outputs[i] = (output, _version(output))

        return hook

    handles = [head.register_forward_pre_hook(grab_pooled, with_kwargs=True)]
    try:
        for i, module in enumerate(stage_modules):
            handles.append(module.register_forward_hook(grab_stage(i)))
        logits = model(x)
    finally:
        for h in handles:
            h.remove()

    if not isinstance(logits, Tensor):
        raise ValueError(
            f"{type(model).__name__} must return a logits Tensor from forward, got {type(logits).__name__}"
        )
    if "pooled" not in captured:
        raise ValueError(
            f"the classifier {head!r} of {type(model).__name__} was not called during forward, so there is no "
            "pooled feature; make sure the final nn.Linear (or `model.classifier`) produces the logits"
        )
    stages = []
    for path, item in zip(paths, outputs):
        if item is None:
            raise ValueError(f"stage module {path!r} was not called during forward; choose a module that runs")
        out, version = item
        if not isinstance(out, Tensor):
            raise ValueError(f"stage module {path!r} returned {type(out).__name__}, not a Tensor; pick a submodule")
        _check_unmodified(out, version, f"stage module {path!r}")
        stages.append(out)
    pooled, version = captured["pooled"]
    _check_unmodified(pooled, version, "the classifier input")
    # [N, ..., D] -> [N, ...·D]; an unbatched [D] input becomes [1, D].
    pooled = pooled.unsqueeze(0) if pooled.dim() == 1 else pooled.flatten(1)
    return logits, {"stages": stages, "pooled": pooled}


def _version(t) -> int | None:
    # Inference-mode tensors have no version counter (and nothing can be checked there).
    try:
        return t._version
    except (AttributeError, RuntimeError):
        return None


def _check_unmodified(t: Tensor, version: int | None, what: str) -> None:
    # A hooked output that a later in-place op (e.g. `out += identity`, ReLU(inplace=True)) changes is no longer the
    # module's output; returning it would be silently wrong.
    if version is not None and _version(t) != version:
        raise ValueError(
            f"the output of {what} was modified in place later in the forward pass, so it cannot be returned as a "
            "feature; hook a module whose output is not changed in place (e.g. the whole block instead of its last "
            "BatchNorm)"
        )


@lru_cache(maxsize=64)
def stage_shapes(arch: str, num_classes: int, input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The per-sample shapes ([C, H, W] or [C, L]) of the zoo network ``arch``'s ``forward_features`` stages on
    inputs of ``input_shape``, computed on the meta device (no weights, no arithmetic: milliseconds). What a feature
    method's defaults are fitted to before any network is built (``RunFacts.stages``)."""
    with torch.device("meta"):
        return stage_shapes_of(create(arch, num_classes), torch.empty(2, *input_shape))


def stage_shapes_of(model: nn.Module, x: Tensor) -> tuple[tuple[int, ...], ...]:
    """The per-sample shapes of a built network's ``forward_features`` stages on the inputs ``x`` (no gradient, the
    network in eval mode for the pass, so its BatchNorm statistics are left as they were)."""
    with torch.no_grad(), eval_mode(model):
        _, features = forward_features(model, x)
    return tuple(tuple(f.shape[1:]) for f in features["stages"])
