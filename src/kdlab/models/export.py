"""A trained network as a file that runs without kdlab: TorchScript (PyTorch only) or ONNX (any ONNX runtime).

The exported network takes what the kdlab network took: a float32 batch ``[N, *input_shape]``, already normalised
as the run's loader normalised it, and returns logits ``[N, C]``; the batch size is free. ONNX export needs the
optional extra ``pip install "kdlab[onnx]"`` (onnx and onnxscript, PyTorch's exporter packages, plus onnxruntime to
check the file). :func:`max_logit_difference` runs the file and compares its logits with the network's.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdlab._io import atomic_write_bytes
from kdlab._modes import eval_mode

__all__ = ["FORMATS", "export_model", "max_logit_difference"]

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
ONNX_EXTRA = 'ONNX export needs the onnx extra: pip install "kdlab[onnx]" (onnx, onnxscript, onnxruntime)'


def export_model(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, fmt: str,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` (traced in eval mode on a zero batch of ``input_shape``) to ``path`` as ``fmt``, atomically.
    ``metadata`` (name → text, e.g. ``{"model.json": card}``) goes into the file: TorchScript extra files (read back
    with ``torch.jit.load(path, _extra_files={name: ""})``), ONNX ``metadata_props``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = Path(path)
    example = torch.zeros((2, *input_shape), dtype=next(model.parameters()).dtype)
    with eval_mode(model), torch.no_grad(), warnings.catch_warnings():
        # tracing freezes the models' input-shape checks (a TracerWarning each), and recent PyTorch marks torch.jit
        # deprecated: neither changes the exported logits, which are checked against the model
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if fmt == "torchscript":
            buf = io.BytesIO()
            torch.jit.save(torch.jit.trace(model, example), buf, _extra_files=dict(metadata or {}))
            data = buf.getvalue()
        else:
            data = _onnx_bytes(model, example, metadata or {})
    atomic_write_bytes(path, data)
    return path


def _onnx_bytes(model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> bytes:
    try:
        import onnx  # (torch.onnx's exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError:
        raise ValueError(ONNX_EXTRA) from None
    # the exporter logs a line per optional torchvision operator it cannot find; they are not used here
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(model, (example,), input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **metadata})
    return proto.SerializeToString()


def max_logit_difference(path: str | Path, fmt: str, model: nn.Module, x: torch.Tensor) -> float:
    """max |logits(file) − logits(model)| on the batch ``x``: the exported file run by its own runtime (TorchScript
    by ``torch.jit.load``, ONNX by onnxruntime on the CPU)."""
    with eval_mode(model), torch.no_grad():
        want = model(x).float().numpy()
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            got = loaded(x).float().numpy()
    elif fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise ValueError(ONNX_EXTRA) from None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    else:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    return float(np.abs(got - want).max())
