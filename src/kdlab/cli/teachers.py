"""``kdlab teacher fetch NAME`` and ``kdlab teacher import FILE``: teachers that someone else trained.

``kdlab teacher CONFIG`` trains a teacher (:mod:`kdlab.cli.train`). ``kdlab teacher fetch repdistiller:resnet32x4``
downloads and converts a published teacher once (:mod:`kdlab.teachers.published`; ``--list`` shows them all), the
file that ``teacher.checkpoint=repdistiller:resnet32x4`` uses. ``kdlab teacher import ...`` converts a file you have:
a torchvision state dict, a RepDistiller / mdistiller checkpoint (``ckpt_epoch_240.pth``), or a safetensors file.
Both results record the arch and class count, so they need no ``teacher.arch``. argparse knows each command as a
single token (``"teacher fetch"``, ``"teacher import"``); :func:`kdlab.cli.main` joins the two words, so a config file
literally named ``fetch`` or ``import`` must be given as ``./fetch``.
"""

from __future__ import annotations

from pathlib import Path

from kdlab.models import count_parameters, load_model, save_model
from kdlab.models.features import classifier_of
from kdlab.models.registry import canonical
from kdlab.teachers import published


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


def _fetch(args) -> int:
    if args.list:
        source = None
        for t in published.catalogue():
            where = t.url if t.member else t.url.rsplit("/", 1)[0] + "/"
            if where != source:
                source = where
                print(f"{where} ({'no published checksum' if t.sha256 is None else 'the sha256 prefix in each name'})")
            print(f"  {t.spec:38s} {t.num_classes:4d} classes  top-1 {t.top1:5.2f}%  {t.member or t.filename}")
        return 0
    if not args.names:
        raise ValueError("name a published teacher (kdlab teacher fetch repdistiller:resnet32x4; --list shows them)")
    if args.url and len(args.names) > 1:
        raise ValueError("--url is the address of one published file: fetch one name at a time with it")
    for name in args.names:
        teacher = published.lookup(name)
        if teacher is None:
            raise ValueError(f"{name}: not a published teacher's name (kdlab teacher fetch --list shows them); a file "
                             "is used as teacher.checkpoint as it is")
        path = published.fetch(teacher, root=args.root, url=args.url, progress=None)
        model = load_model(path)
        print(f"{teacher.spec} -> {path}: {teacher.arch}, {teacher.num_classes} classes, "
              f"{count_parameters(model):,} parameters")
    return 0

