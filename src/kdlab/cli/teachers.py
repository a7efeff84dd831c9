"""``kdlab teacher import FILE --arch NAME --out model.safetensors``: published teacher weights → a kdlab weights file.

``kdlab teacher CONFIG`` trains a teacher (:mod:`kdlab.cli.train`); ``kdlab teacher import ...`` converts one that
someone else trained: a torchvision state dict, a RepDistiller / mdistiller checkpoint (``ckpt_epoch_240.pth``), or
a safetensors file. The result records the arch and class count, so ``teacher.checkpoint=model.safetensors`` needs no
``teacher.arch``. argparse knows the command as the single token ``"teacher import"``; :func:`route` joins the two
words, so a config file literally named ``import`` must be given as ``./import``.
"""

from __future__ import annotations

from pathlib import Path

from kdlab.models import count_parameters, load_model, save_model
from kdlab.models.features import classifier_of
from kdlab.models.registry import canonical


def _import(args) -> int:
    out = Path(args.out)
    if out.exists():
        raise ValueError(f"{out} exists; remove it or choose another --out (kdlab never overwrites weights)")
    if not out.name.endswith(".safetensors"):
        raise ValueError(f"--out {out}: the converted weights are a .safetensors file; give a name ending in it")
    model = load_model(args.file, arch=args.arch, num_classes=args.num_classes)
    arch, n = canonical(args.arch), classifier_of(model).out_features
    save_model(out, model, arch=arch, num_classes=n, extra={"imported_from": Path(args.file).name})
    print(f"{args.file} -> {out}: {arch}, {n} classes, {count_parameters(model):,} parameters")
    return 0
