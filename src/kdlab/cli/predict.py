"""``kdlab predict RUN IMAGE...``: the top classes of image files, by name, with their probabilities.

The run's ``model.json`` gives the architecture, the class names and the evaluation preprocessing; the images are
decoded and preprocessed by those numbers (:func:`kdlab.data.preprocess.image_input`), as the exported file's user
would without kdlab.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kdlab._io import CheckpointError
from kdlab.data.preprocess import image_input
from kdlab.engine.device import resolve_device
from kdlab.models import load_model
from kdlab.models.card import CARD_FILE, read_card

__all__ = ["predict", "register"]


def predict(run: str | Path, images: list[str], top: int = 3, device: str = "cpu", batch_size: int = 64
            ) -> list[dict]:
    """``[{"image": path, "top": [{"class": name, "index": i, "prob": p}, ...]}]`` for each image, most probable
    class first."""
    run = Path(run)
    weights = run / "model.safetensors" if run.is_dir() else run
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: RUN is a run directory (with model.safetensors) or a weights "
                                "file")
    card = read_card(run)
    if card is None:
        raise CheckpointError(f"{run}: no {CARD_FILE} (and no card in the weights' metadata), so its classes and "
                              "preprocessing are unknown; retrain it with this kdlab, or use it from Python")
    dev = resolve_device(device)
    model = load_model(weights, arch=card.get("arch")).to(dev).eval()
    classes, k = card["classes"], max(1, min(top, card["num_classes"]))
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        x = torch.stack([image_input(p, card["preprocessing"]) for p in chunk]).to(dev)
        with torch.inference_mode():
            probs = torch.softmax(model(x).float(), dim=1).cpu()
        values, index = probs.topk(k, dim=1)
        for path, v, i in zip(chunk, values.tolist(), index.tolist()):
            out.append({"image": path, "top": [{"class": classes[c], "index": c, "prob": p} for p, c in zip(v, i)]})
    return out


def _predict(args) -> int:
    result = predict(args.run, args.images, args.top, args.device)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for r in result:
        print(f"{r['image']}: " + ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"]))
    return 0

