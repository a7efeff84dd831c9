"""Decode + augment throughput per core for streamed images: the plain torchvision-style PIL pipeline vs kdlab's
and vs candidates from the registry, on one generated folder of ImageNet-sized JPEGs.

    python benchmarks/decode.py                       # 300 JPEGs of about 500×375, 224 px crops, 5 rounds
    python benchmarks/decode.py --quick               # 30 JPEGs, 2 rounds (a smoke run)
    python benchmarks/decode.py --size 64 --rounds 3
    python benchmarks/decode.py --simd-path DIR       # also Pillow-SIMD, installed with `pip install --target DIR`

Run time on 2 CPU cores: full ~30 s, --quick ~5 s.

Every pipeline runs in this one process on one thread (images/second = images/second per core), in interleaved
rounds over the same files and the same crop boxes (``kdlab.data.crops.random_resized_crops``); the median round is
reported. Each row also gives its error against the reference output (mean / max absolute difference of the uint8
pixels), so the fastest *correct* option can be read off the table. Optional candidates (simplejpeg, PyTurboJPEG
with the system's libturbojpeg, Pillow-SIMD in a subprocess) are skipped with a note when they are not installed.

Pipelines (training crop: RandomResizedCrop(size) + flip; evaluation: Resize(⌊size·256/224⌋) + CenterCrop(size)):

* ``reference``: torchvision's PIL path written out (torchvision does not import here): ``Image.open`` →
  ``convert("RGB")`` → ``crop`` → ``resize(BILINEAR)`` → flip → ``ToTensor`` (float32 CHW / 255), which is what
  mdistiller and torchdistill run per image.
* ``kdlab exact``: ``kdlab.data.decode.decode_crop(reduce=False)`` — the same pixels, kept as uint8 (the float
  conversion and normalisation happen on the device, per batch).
* ``kdlab``: ``decode_crop`` as the loader runs it — JPEG DCT-domain downscaling (``Image.draft``) whenever the crop
  keeps at least ``size`` pixels per side.
* ``simplejpeg``: libjpeg-turbo through simplejpeg with the same DCT scaling (``min_width``/``min_height``), then
  Pillow's crop + resize.
* ``PyTurboJPEG``: the same through PyTurboJPEG's ``scaling_factor``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kdlab.data.crops import center_crop_box, eval_resize_size, random_resized_crops
from kdlab.data.decode import decode_center, decode_crop
from kdlab.engine.environment import describe_machine


def make_folder(root: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs (quality 90) of ImageNet's typical sizes (about 500×375, portrait and landscape), with smooth
    structure and texture like photographs (pure noise would make JPEG unrealistically slow)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = (int(rng.integers(400, 520)), int(rng.integers(330, 400)))
        if i % 4 == 3:
            w, h = h, w
        yy, xx = np.mgrid[0:h, 0:w] / rng.uniform(15, 60)
        phase = rng.uniform(0, 6, 3)
        img = 128 + 70 * np.sin(xx[..., None] + phase + np.cos(yy[..., None] * 0.7))
        img += 20 * np.sin(5 * yy + 3 * xx)[..., None] + rng.normal(0, 8, (h, w, 3))
        path = root / f"img_{i:04d}.JPEG"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def reference_train(path, box, size):
    top, left, h, w, flip = box
    with Image.open(path) as im:
        out = im.convert("RGB").crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
    if flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.asarray(out, dtype=np.float32) / 255.0).permute(2, 0, 1)  # ToTensor


def reference_eval(path, size):
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        r = eval_resize_size(size)
        nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        im = im.resize((nw, nh), Image.BILINEAR)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        out = im.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(out, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _scaled_crop(arr: np.ndarray, scale: float, box, size):
    top, left, h, w, flip = box
    # (a libjpeg M/8 scale rounds the output size up, so the recovered scale can overshoot by a fraction of a pixel)
    region = (left / scale, top / scale, min(arr.shape[1], (left + w) / scale), min(arr.shape[0], (top + h) / scale))
    out = Image.fromarray(arr).resize((size, size), Image.BILINEAR, box=region)
    return np.asarray(out.transpose(Image.FLIP_LEFT_RIGHT) if flip else out)


def simplejpeg_train(path, box, size, sj):
    data = Path(path).read_bytes()
    width, height = _header(sj, data)
    top, left, h, w, flip = box
    arr = sj.decode_jpeg(data, colorspace="RGB", min_width=math.ceil(width * size / w),
                         min_height=math.ceil(height * size / h))
    return _scaled_crop(arr, width / arr.shape[1], box, size)


def _header(sj, data):
    height, width = sj.decode_jpeg_header(data)[:2]
    return width, height


def turbojpeg_train(path, box, size, tj):
    data = Path(path).read_bytes()
    width, height = tj.decode_header(data)[:2]
    top, left, h, w, flip = box
    factor = (1, 1)
    for num, den in ((1, 8), (1, 4), (1, 2)):
        if w * num / den >= size and h * num / den >= size:
            factor = (num, den)
            break
    arr = tj.decode(data, pixel_format=0, scaling_factor=factor)  # TJPF_RGB
    return _scaled_crop(arr, width / arr.shape[1], box, size)


def simd_rows(simd_path: str, folder: Path, size: int, seed: int) -> dict:
    """kdlab's pipelines under Pillow-SIMD, in a subprocess (one Pillow per interpreter): seconds per pass."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([simd_path, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, __file__, "--child", str(folder), "--size", str(size), "--seed", str(seed)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child(folder: Path, size: int, seed: int) -> None:
    import PIL

    paths = sorted(folder.glob("*.JPEG"))
    sizes = [Image.open(p).size for p in paths]
    boxes = random_resized_crops(seed, 1, np.arange(len(paths)), [s[0] for s in sizes], [s[1] for s in sizes])
    t0 = time.perf_counter()
    train = [decode_crop(p, boxes[i], size) for i, p in enumerate(paths)]
    t1 = time.perf_counter()
    evals = [decode_center(p, center_crop_box(*sizes[i], size), size) for i, p in enumerate(paths)]
    t2 = time.perf_counter()
    np.savez(folder / "simd.npz", train=np.stack(train), eval=np.stack(evals))
    print(json.dumps({"version": PIL.__version__, "train": t1 - t0, "eval": t2 - t1}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 30 JPEGs, 2 rounds (unless given)")
    p.add_argument("--images", type=int, default=None, help="generated JPEGs (default 300, 30 with --quick)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, 2 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--simd-path", default=None, help="a --target directory holding pillow-simd")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    a.images = a.images or (30 if a.quick else 300)
    a.rounds = a.rounds or (2 if a.quick else 5)
    torch.set_num_threads(1)
    if a.child:
        return child(Path(a.child), a.size, a.seed)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_folder(folder, a.images, a.seed)
        sizes = [Image.open(q).size for q in paths]
        n, s = len(paths), a.size
        boxes = random_resized_crops(a.seed, 1, np.arange(n), [z[0] for z in sizes], [z[1] for z in sizes])
        cboxes = [center_crop_box(*z, s) for z in sizes]

        train = {"reference (PIL crop→resize→ToTensor)": lambda i: reference_train(paths[i], boxes[i], s),
                 "kdlab exact (uint8)": lambda i: decode_crop(paths[i], boxes[i], s, reduce=False),
                 "kdlab (DCT-scaled decode)": lambda i: decode_crop(paths[i], boxes[i], s)}
        evals = {"reference (PIL resize→crop→ToTensor)": lambda i: reference_eval(paths[i], s),
                 "kdlab (one box resize)": lambda i: decode_center(paths[i], cboxes[i], s)}
        notes = []
        try:
            import simplejpeg

            train[f"simplejpeg {simplejpeg.__version__} + PIL resize"] = (
                lambda i: simplejpeg_train(paths[i], boxes[i], s, simplejpeg))
        except ImportError:
            notes.append("simplejpeg: not installed (pip install simplejpeg)")
        try:
            import turbojpeg

            tj = turbojpeg.TurboJPEG()
            train[f"PyTurboJPEG {turbojpeg.__version__} + PIL resize"] = (
                lambda i: turbojpeg_train(paths[i], boxes[i], s, tj))
        except (ImportError, RuntimeError, OSError) as err:
            notes.append(f"PyTurboJPEG: unavailable ({str(err).splitlines()[0]})")

        def to_uint8(x):
            return (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy() if torch.is_tensor(x) else x

        ref_t = [to_uint8(train["reference (PIL crop→resize→ToTensor)"](i)) for i in range(n)]
        ref_e = [to_uint8(evals["reference (PIL resize→crop→ToTensor)"](i)) for i in range(n)]
        errors = {}
        for table, ref in ((train, ref_t), (evals, ref_e)):
            for name, fn in table.items():
                d = [np.abs(to_uint8(fn(i)).astype(int) - ref[i].astype(int)) for i in range(n)]
                errors[name] = (float(np.mean([x.mean() for x in d])), int(max(x.max() for x in d)))

        times: dict[str, list[float]] = {k: [] for k in (*train, *evals)}
        simd: list[dict] = []
        for _ in range(a.rounds):
            for table in (train, evals):
                for name, fn in table.items():
                    t0 = time.perf_counter()
                    for i in range(n):
                        fn(i)
                    times[name].append(time.perf_counter() - t0)
            if a.simd_path:
                simd.append(simd_rows(a.simd_path, folder, s, a.seed))
        if simd:
            with np.load(folder / "simd.npz") as z:
                for key, ref in (("train", ref_t), ("eval", ref_e)):
                    d = np.abs(z[key].astype(int) - np.stack(ref).astype(int))
                    errors[f"simd {key}"] = (float(d.mean()), int(d.max()))

    print(f"machine: {describe_machine()}; 1 thread, one process")
    print(f"{n} JPEGs (quality 90, about 500×375), output {s}×{s}, median of {a.rounds} interleaved rounds")
    print()
    print("| transform | pipeline | images/s per core | × reference | error vs reference (mean / max, uint8) |")
    print("|---|---|---:|---:|---|")
    for kind, table in (("train: RandomResizedCrop + flip", train), ("eval: resize + centre crop", evals)):
        ref_rate = None
        for name in table:
            rate = n / statistics.median(times[name])
            ref_rate = ref_rate or rate
            mean, mx = errors[name]
            print(f"| {kind} | {name} | {rate:.0f} | {rate / ref_rate:.2f} | {mean:.3f} / {mx} |")
        if simd:
            key = "train" if kind.startswith("train") else "eval"
            rate = n / statistics.median(r[key] for r in simd)
            mean, mx = errors[f"simd {key}"]
            print(f"| {kind} | kdlab under Pillow-SIMD {simd[0]['version']} | {rate:.0f} | {rate / ref_rate:.2f} | "
                  f"{mean:.3f} / {mx} |")
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
