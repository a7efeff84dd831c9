"""``kdlab export RUN --format torchscript|onnx``: a run's network as a file that runs without kdlab, carrying its
card (``model.json``: classes, input shape, preprocessing) and checked against PyTorch on real evaluation images."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kdlab import builder
from kdlab._io import CheckpointError
from kdlab.config import read_yaml
from kdlab.models import load_model
from kdlab.models.card import CARD_FILE, read_card
from kdlab.models.export import SUFFIX, export_model, max_logit_difference

CHECK_IMAGES = 8  # evaluation samples the exported logits are compared on


def _input_shape(text: str | None, card: dict | None, run: Path) -> tuple[int, ...]:
    if text:
        try:
            shape = tuple(int(d) for d in text.replace("x", ",").split(","))
        except ValueError:
            shape = ()
        if not shape or any(d < 1 for d in shape):
            raise ValueError(f"--input-shape {text!r} is not a shape such as 3,32,32")
        return shape
    if card is not None:
        return tuple(card["input_shape"])
    raise ValueError(f"cannot tell the input shape of {run}: it has no {CARD_FILE} (a run of kdlab before cards, or "
                     "weights from elsewhere); give --input-shape, e.g. 3,32,32")


def _config_of(run: Path) -> Path | None:
    config = run / "config.yaml" if run.is_dir() else run.with_name("config.yaml")
    return config if config.is_file() and "data" in read_yaml(config) else None


def check_batch(run: Path, shape: tuple[int, ...]) -> tuple[torch.Tensor, str]:
    """A few real evaluation inputs of the run's data set when they are there (its ``config.yaml``), else a random
    batch; and a phrase saying which."""
    config = _config_of(run)
    why = "no config.yaml beside the weights"
    if config is not None:
        try:
            cfg = builder.load_config(config, ["data.train_subset=1", f"data.test_subset={CHECK_IMAGES}",
                                               "data.workers=0", "data.download=false",
                                               "run.progress=false"])
            splits = builder.load_data(cfg)
            x = next(iter(splits.loader("test", CHECK_IMAGES))).x
            if tuple(x.shape[1:]) == shape:
                return x, f"{len(x)} evaluation samples of {cfg.data.name}"
            why = f"the data's inputs are {tuple(x.shape[1:])}, not --input-shape"
        except (OSError, ValueError) as exc:  # the data is not here (or not readable): the random batch still checks
            why = f"data not available: {str(exc).splitlines()[0][:120]}"
    x = torch.randn((4, *shape), generator=torch.Generator().manual_seed(0))
    return x, f"a random batch ({why})"


def _export(args) -> int:
    run = Path(args.run)
    weights = run / "model.safetensors" if run.is_dir() else run
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: RUN is a run directory (with model.safetensors) or a weights "
                                "file")
    card = read_card(run)
    arch = args.arch or (card or {}).get("arch")
    try:
        model = load_model(weights, arch=arch)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (kdlab export: --arch)") from None
    shape = _input_shape(args.input_shape, card, run)
    out = Path(args.out) if args.out else weights.with_suffix(SUFFIX[args.format])
    export_model(model, shape, out, args.format, {CARD_FILE: json.dumps(card)} if card is not None else None)
    x, what = check_batch(run, shape)
    try:
        diff = max_logit_difference(out, args.format, model, x)
        check = f"max |logit difference| from PyTorch on {what}: {diff:.1e}"
    except ValueError as exc:  # onnxruntime missing: the file is written, only the check is skipped
        check = f"not checked ({exc})"
    carried = (f"; {CARD_FILE} ({card['num_classes']} classes, preprocessing) in its metadata" if card is not None
               else f"; no {CARD_FILE} to carry")
    print(f"wrote {out} ({args.format}: input float32 [N, {', '.join(map(str, shape))}] normalised as in training, "
          f"output logits [N, C]{carried}); {check}")
    return 0
