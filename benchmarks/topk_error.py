"""How much a stored teacher output loses: KL(full ‖ reconstructed) and each logit method's loss and gradient error,
for float16 logits and FKD's top-k with the remaining mass (``kdlab.teachers.topk``), on real ImageNet teachers.

    python benchmarks/topk_error.py --teacher resnet34-b627a593.pth --student resnet18-f37072fd.pth --images DIR
    python benchmarks/topk_error.py --quick            # a smoke run on generated stand-ins (below)
    python benchmarks/topk_error.py --teacher runs/digits/teacher/model.safetensors --student \
        runs/digits/kd-seed0/model.safetensors --images DIGITS/val --image-size 16 --crops 1 --show-k 1,2,3,5

Run time on 2 CPU cores: full ~2 min, --quick ~10 s.

Needs data that is not in the repository: trained teacher and student weights and a folder of images. ``--quick``
without them generates stand-ins and runs every table on them: randomly initialised ResNet-34 → ResNet-18 (1000
classes) saved as weights files, 4 generated JPEGs (``decode.py``'s generator), 16 crops of 64 px each (64 views, one
batch); its numbers say nothing about real teachers. ``--quick`` with the three given: 4 crops per image. The full
time is the ImageNet-shaped run (14 images × 32 crops at 224 px), measured with such stand-in weights (the speed does
not depend on the weights).

``--teacher`` / ``--student``: weights files ``kdlab.models.load_model`` reads (torchvision's released ImageNet
weights, docs/reference/imagenet.md §3, or a kdlab run's model.safetensors). ``--images``: a folder of images (searched
recursively); ``--crops`` RandomResizedCrops of each (``--image-size`` px, ``kdlab.data.crops.random_resized_crops``,
seed 0) are the views. docs/performance.md reports two runs: the trained resnet20 teacher and KD student of the
digits showcase (benchmarks/digits_kd.py; 10 classes), and ImageNet-shaped models (1000 classes, 224 px) on the 14
photographs shipped in scikit-image's and scikit-learn's wheels (``skimage/data``: astronaut, brick, camera, chelsea,
coffee, coins, grass, gravel, hubble_deep_field, motorcycle_left, motorcycle_right, rocket;
``sklearn/datasets/images``: china, flower), 32 crops each.

Per precision: the mean, 99th percentile and max of KL(p ‖ p̂) at T = 1, the mean at T = 4, and the mean tail
mass R (top-k). Per method: each shipped ImageNet recipe (``configs/imagenet/resnet34-resnet18/<method>.yaml``; kd
also at T = 4, the CIFAR recipes' value) evaluated with the student's logits z on batches of 64 shuffled views,
labels = the teacher's argmax (photographs have none), past any warm-up: the relative error of the distillation
terms |L(z, v̂) − L(z, v)| / L(z, v) and of their gradient ‖∇_z L(z, v̂) − ∇_z L(z, v)‖ / ‖∇_z L(z, v)‖,
averaged over the batches. Methods read the teacher only through ``logits_for_batch``; the gradient is the
method's own.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from kdlab import methods, models
from kdlab.config import RECIPES_DIR
from kdlab.data.batch import Batch
from kdlab.data.crops import random_resized_crops
from kdlab.data.decode import decode_crop, probe
from kdlab.data.folders import IMAGE_EXTENSIONS
from kdlab.data.image_stream import IMAGENET_MEAN, IMAGENET_STD
from kdlab.data.normalization import Normalization
from kdlab.engine.environment import describe_machine
from kdlab.eval.metrics import kl_per_example
from kdlab.losses import validation
from kdlab.models import load_model, save_model
from kdlab.teachers.topk import topk_compress, topk_expand

try:  # run as a script from the repository root
    from decode import make_folder
except ImportError:  # pragma: no cover - imported as benchmarks.topk_error
    from benchmarks.decode import make_folder

METHODS = ("kd", "dkd", "dist", "ttm", "wttm", "cmkd", "single_head_bkl")
KS = (1, 2, 3, 5, 10, 20, 50, 100)


class _Logits(nn.Module):
    """A 'student' that returns fixed logits z (a leaf with a gradient), so a method's loss can be evaluated."""

    def __init__(self, z: torch.Tensor):
        super().__init__()
        self.z = nn.Parameter(z.clone())

    def forward(self, x):
        return self.z


class _Teacher:
    def __init__(self, v):
        self.v = v

    def logits_for_batch(self, batch):
        return self.v

    def to(self, *a, **k):
        return self


def views(images: list[Path], crops: int, size: int) -> torch.Tensor:
    norm = Normalization(IMAGENET_MEAN, IMAGENET_STD, 3, 4)
    out = []
    for i, path in enumerate(images):
        w, h = probe(str(path))
        boxes = random_resized_crops(0, 1, np.arange(i * crops, (i + 1) * crops), w, h)
        out += [torch.from_numpy(decode_crop(str(path), boxes[j], size).copy()).permute(2, 0, 1) for j in range(crops)]
    return norm(torch.stack(out))


@torch.inference_mode()
def logits(model: nn.Module, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]).float()


def recipe(name: str) -> dict:
    path = RECIPES_DIR / "imagenet" / "resnet34-resnet18" / f"{name}.yaml"
    return (yaml.safe_load(path.read_text())["method"].get("args") or {}) if path.is_file() else {}


def method_terms(name: str, args: dict, z: torch.Tensor, v: torch.Tensor, y: torch.Tensor):
    """(distillation loss, its gradient wrt z) of method ``name`` with teacher logits ``v``."""
    m = methods.create(name, _Logits(z), _Teacher(v), z.shape[1], args)
    batch = Batch(x=torch.zeros(len(z), 1), y=y, index=torch.arange(len(z)))
    with validation(False):
        out = m(batch, 1000)
    loss = sum(t for k, t in out.losses.items() if k != "ce")
    (grad,) = torch.autograd.grad(loss, m.student.z)
    return float(loss.detach()), grad


def stand_ins(root: Path) -> tuple[str, str, Path]:
    """``--quick`` without real inputs: random ResNet-34 / ResNet-18 weights files and 4 generated JPEGs."""
    paths = []
    for arch in ("resnet34", "resnet18"):
        torch.manual_seed(0)
        paths.append(str(root / f"{arch}.safetensors"))
        save_model(paths[-1], models.create(arch, 1000), arch=arch, num_classes=1000)
    (root / "images").mkdir()
    make_folder(root / "images", 4)
    return paths[0], paths[1], root / "images"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=None, help="weights file (required unless --quick)")
    ap.add_argument("--teacher-arch", default=None, help="needed for a torchvision .pth, e.g. resnet34")
    ap.add_argument("--student", default=None, help="weights file (required unless --quick)")
    ap.add_argument("--student-arch", default=None)
    ap.add_argument("--images", default=None, type=Path, help="a folder of images (required unless --quick)")
    ap.add_argument("--crops", type=int, default=None, help="crops per image (default 32; --quick: 4, or 16 generated)")
    ap.add_argument("--image-size", type=int, default=None, help="crop size in px (default 224; 64 generated)")
    ap.add_argument("--show-k", default="5,10,20,100", help="the top-k columns of the method table")
    ap.add_argument("--quick", action="store_true", help="smoke run; without --teacher/--student/--images on "
                    "generated stand-ins (random ResNet-34 -> ResNet-18, 4 generated JPEGs)")
    args = ap.parse_args(argv)
    given = [x is not None for x in (args.teacher, args.student, args.images)]
    if any(given) and not all(given) or not (all(given) or args.quick):
        ap.error("give --teacher, --student and --images, or none of them with --quick (generated stand-ins)")
    with tempfile.TemporaryDirectory() as tmp:
        if not any(given):
            args.teacher, args.student, args.images = stand_ins(Path(tmp))
            print("--quick: generated stand-ins (random resnet34 -> resnet18, 4 generated JPEGs); the numbers say "
                  "nothing about trained teachers")
        crops = (16 if not any(given) else 4) if args.quick else 32
        args.crops = args.crops or crops
        args.image_size = args.image_size or (64 if not any(given) else 224)
        report(args)


def report(args) -> None:
    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    x = views(images, args.crops, args.image_size)
    teacher, student = load_model(args.teacher, args.teacher_arch), load_model(args.student, args.student_arch)
    v, z = logits(teacher, x), logits(student, x)
    n, c = v.shape
    p = v.softmax(1)
    agree = 100 * float((z.argmax(1) == v.argmax(1)).float().mean())
    print(f"machine: {describe_machine()}")
    print(f"{len(images)} images x {args.crops} crops = {n} views ({args.image_size} px), {c} classes; teacher "
          f"{type(teacher).__name__} ({args.teacher}), student {type(student).__name__}; teacher's top-1 "
          f"probability: median {float(p.max(1).values.median()):.3f}, student-teacher agreement {agree:.1f}%\n")

    recon = {"float16": v.half().float()}
    rest = {}
    for k in (k for k in KS if k < c):
        log_p, index, log_rest = topk_compress(v, k)
        recon[f"top-{k}"] = topk_expand(log_p, index, log_rest, c)
        rest[f"top-{k}"] = log_rest.exp()
    print("| teacher outputs | bytes / view | KL(p ‖ p̂) T=1 mean | p99 | max | KL T=4 mean | tail mass R mean |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, vh in recon.items():
        kl = kl_per_example(v, vh).double()
        kl4 = kl_per_example(v, vh, temperature=4.0).double()
        bpv = 2 * c if name == "float16" else 4 * int(name[4:]) + 4
        r = f"{float(rest[name].mean()):.4f}" if name in rest else "—"
        print(f"| {name} | {bpv} | {float(kl.mean()):.2e} | {float(kl.quantile(0.99)):.2e} | {float(kl.max()):.2e} | "
              f"{float(kl4.mean()):.2e} | {r} |")

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    batches = [perm[i:i + 64] for i in range(0, n - 63, 64)] or [perm]
    y = v.argmax(1)
    cases = [(m, recipe(m)) for m in METHODS] + [("kd", {**recipe("kd"), "temperature": 4.0})]
    shown = ["float16"] + [f"top-{k}" for k in args.show_k.split(",") if int(k) < c]
    print(f"\nrelative error of the distillation loss / of its gradient wrt the student logits ({len(batches)} batches "
          "of 64 views); needs full = Method.needs_full_teacher_distribution(hp)")
    print("| method (ImageNet recipe) | needs full | " + " | ".join(shown) + " |")
    print("|---|---|" + "---:|" * len(shown))
    for name, margs in cases:
        cls = methods.get(name)
        needs = cls.needs_full_teacher_distribution(cls.Params.model_validate(margs))
        cells = []
        for key in shown:
            le, ge = [], []
            for b in batches:
                l_full, g_full = method_terms(name, margs, z[b], v[b], y[b])
                l_hat, g_hat = method_terms(name, margs, z[b], recon[key][b], y[b])
                le.append(abs(l_hat - l_full) / abs(l_full))
                ge.append(float((g_hat - g_full).norm() / g_full.norm()))
            cells.append(f"{np.mean(le):.1e} / {np.mean(ge):.1e}")
        label = f"{name} ({', '.join(f'{k}={v}' for k, v in margs.items() if k in ('temperature', 'gamma', 'beta'))})"
        print(f"| {label} | {'yes' if needs else 'no'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
