"""``kdlab export RUN --format torchscript|onnx``: a run's network as a file that runs without kdlab."""

from __future__ import annotations

from pathlib import Path

import torch

from kdlab import builder
from kdlab.config import read_yaml
from kdlab.models import load_model
from kdlab.models.export import SUFFIX, export_model, max_logit_difference


def _input_shape(text: str | None, run: Path) -> tuple[int, ...]:
    if text:
        try:
            shape = tuple(int(d) for d in text.replace("x", ",").split(","))
        except ValueError:
            shape = ()
        if not shape or any(d < 1 for d in shape):
            raise ValueError(f"--input-shape {text!r} is not a shape such as 3,32,32")
        return shape
    config = run / "config.yaml" if run.is_dir() else run.with_name("config.yaml")
    if config.is_file() and "data" in read_yaml(config):  # a run of `kdlab train`/`kdlab teacher`: its data set
        return tuple(builder.load_data(builder.load_config(config, [])).x_test.shape[1:])
    raise ValueError(f"cannot tell the input shape of {run} (no config.yaml of `kdlab train`); give --input-shape, "
                     "e.g. 3,32,32")


def _export(args) -> int:
    run = Path(args.run)
    weights = run / "model.safetensors" if run.is_dir() else run
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: RUN is a run directory (with model.safetensors) or a weights "
                                "file")
    model = load_model(weights, arch=args.arch)
    shape = _input_shape(args.input_shape, run)
    out = Path(args.out) if args.out else weights.with_suffix(SUFFIX[args.format])
    export_model(model, shape, out, args.format)
    x = torch.randn((4, *shape), generator=torch.Generator().manual_seed(0))
    try:
        diff = max_logit_difference(out, args.format, model, x)
        check = f"max |logit difference| from PyTorch on a random batch: {diff:.1e}"
    except ValueError as exc:  # onnxruntime missing: the file is written, only the check is skipped
        check = f"not checked ({exc})"
    print(f"wrote {out} ({args.format}: input float32 [N, {', '.join(map(str, shape))}] normalised as in training, "
          f"output logits [N, C]); {check}")
    return 0
