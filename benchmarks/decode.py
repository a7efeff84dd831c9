"""Streamed-image loader throughput per core: kdlab's loader vs torchvision's ImageFolder pipeline (when torchvision
imports) and vs the same pipeline in plain PIL (always), on one generated folder of photograph JPEGs.

    python benchmarks/decode.py                   # 384 JPEGs of about 500×375, 224 px, 1 and 2 workers, 3 rounds
    python benchmarks/decode.py --quick           # 48 JPEGs, 1 round (a smoke run)
    python benchmarks/decode.py --workers 1 4 --rounds 5 --images 768

Run time on 2 CPU cores: full ~5 min, --quick ~30 s.

The folder: ``--images`` JPEGs (quality 90, 440–520 × 340–400 px, every fourth portrait) cut and zoomed from the
photographs scikit-learn ships (``sklearn.datasets.load_sample_images``: a temple and a flower), in 4 classes,
the same files under ``train/`` and ``val/``. Pipelines, each a ``DataLoader``-style loader with batches of 64:

* ``torchvision``: ``ImageFolder`` + ``resized_crop`` (bilinear, antialiased) + ``hflip`` + ``to_tensor`` +
  ``normalize`` per image (what ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``
  run), ``default_collate``; evaluation ``Resize(256)`` + ``CenterCrop(224)``. Given kdlab's crop boxes and flips
  (``kdlab.data.random_resized_crops``, torchvision's algorithm), so every pipeline decodes the same crops.
* ``PIL reference``: the same steps written with Pillow, numpy and torch (no torchvision), which is also the
  reference for the pixel check.
* ``kdlab``: ``load_dataset("imagefolder")`` → ``loader(...)``, as a CPU training run reads it: decoding through
  libjpeg-turbo directly (simplejpeg, when installed), the crop resampled by Pillow, normalised in the worker.
* ``kdlab, Pillow decode``: the same with simplejpeg switched off; ``kdlab, normalised in the training process``:
  normalisation left to the training process (as before it moved into the workers; as on a CUDA run, where the
  device does it).

**images/s per core** = images ÷ CPU seconds of the training process and its worker processes together (``getrusage``
of the process and its reaped children), so it does not depend on the machine's other load the way wall time does;
**CPU ms / image** is its inverse. Rounds interleave the pipelines; the median round is reported. A second table
times the single steps in one thread (JPEG decode at full and DCT-reduced size, the resample, the normalisation),
which bound what any loader can reach; a third the per-file key of the image index (:mod:`kdlab.data.image_index`)
against reading ``stat`` only or hashing the whole file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from kdlab.data import decode as decode_mod
from kdlab.data import image_index, load_dataset
from kdlab.data.crops import center_crop_box, eval_resize_size, random_resized_crops
from kdlab.data.decode import decode_crop
from kdlab.data.image_stream import IMAGENET_MEAN, IMAGENET_STD, ImageSource
from kdlab.data.normalization import Normalization
from kdlab.engine.environment import describe_machine

BATCH = 64
CLASSES = 4


def make_folder(root: Path, n: int, seed: int = 0) -> None:
    """``root/{train,val}/class_k/img_i.JPEG``: ``n`` photographs, cut and zoomed from scikit-learn's two."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]  # 640×427 each
    for i in range(n):
        w, h = int(rng.integers(440, 520)), int(rng.integers(340, 400))
        if i % 4 == 3:
            w, h = h, w
        zoom = rng.uniform(1.0, 1.6)
        src = photos[i % 2]
        big = src.resize((int(src.width * zoom), int(src.height * zoom)), Image.BICUBIC)
        cw, ch = min(w, big.width), min(h, big.height)
        x0, y0 = int(rng.integers(0, big.width - cw + 1)), int(rng.integers(0, big.height - ch + 1))
        im = big.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BICUBIC)
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        for split in ("train", "val"):
            path = root / split / f"class_{i % CLASSES}" / f"img_{i:04d}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            im.save(path, quality=90)


# ------------------------------------------------------------------------------------ the compared pipelines
class Boxes:
    """kdlab's crop boxes and flips of one epoch, by file path (every pipeline crops the same way)."""

    def __init__(self, images, seed: int, epoch: int):
        index = np.arange(len(images))
        boxes = random_resized_crops(seed, epoch, index, images.sizes[:, 0], images.sizes[:, 1])
        self.by_path = {images.path(i): boxes[k] for k, i in enumerate(index)}


def pil_train(path, box, size, mean, std):
    top, left, h, w, flip = box
    with Image.open(path) as im:
        out = im.convert("RGB").crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
    if flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    x = torch.from_numpy(np.array(out, dtype=np.uint8)).permute(2, 0, 1).float().div(255)  # ToTensor
    return (x - mean) / std  # Normalize


def pil_eval(path, size, mean, std):
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        r = eval_resize_size(size)
        nw, nh = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        im = im.resize((nw, nh), Image.BILINEAR)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        out = im.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.array(out, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    return (x - mean) / std


class Files(Dataset):
    """(path, label) pairs through ``transform(path)``: the per-image pipelines under a standard DataLoader."""

    def __init__(self, items, transform):
        self.items, self.transform = items, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        return self.transform(path), label


def torchvision_pipelines(tv, F, items, boxes: Boxes, size: int):
    mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    resize, crop = tv.transforms.Resize(eval_resize_size(size)), tv.transforms.CenterCrop(size)

    def train(path):
        top, left, h, w, flip = boxes.by_path[path]
        img = tv.datasets.folder.pil_loader(path)
        img = F.resized_crop(img, top, left, h, w, [size, size], tv.transforms.InterpolationMode.BILINEAR,
                             antialias=True)
        if flip:
            img = F.hflip(img)
        return F.normalize(F.to_tensor(img), mean, std)

    def evaluate(path):
        return F.normalize(F.to_tensor(crop(resize(tv.datasets.folder.pil_loader(path)))), mean, std)

    return Files(items, train), Files(items, evaluate)


class _Unfused(ImageSource):
    """kdlab's source that leaves normalisation to the training process (the loader then normalises each batch)."""

    def normalized(self, normalization):
        return None


def kdlab_loaders(splits, part: str, seed: int, fused: bool = True):
    loader = splits.loader(part, BATCH, augment=part == "train", shuffle=part == "train", seed=seed)
    if not fused:
        src = loader.source
        unfused = _Unfused(src.images, src.size, train=src.train, seed=src.seed, reduce=src.reduce)
        loader = type(loader)(unfused, BATCH, shuffle=loader.shuffle, pad=loader.pad, seed=seed,
                              workers=loader.workers, normalization=loader.normalization, labels=loader.labels)
    return loader


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_epoch(make) -> tuple[float, float, int]:
    """(CPU seconds of this process and its workers, wall seconds, images) of one pass over ``make()``."""
    c0, t0, n = _cpu(), time.perf_counter(), 0
    for batch in make():
        x = batch.x if hasattr(batch, "x") else batch[0]
        n += int(x.shape[0])
    return _cpu() - c0, time.perf_counter() - t0, n


# --------------------------------------------------------------------------------------- single steps, one thread
def _best(fn, items, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        for item in items:
            fn(item)
        best = min(best, time.process_time() - t0)
    return best / len(items)


def step_rows(images, size: int, reps: int) -> list[tuple[str, float]]:
    """Seconds per image of each step alone (best of ``reps`` passes over the files, one thread)."""
    paths = [images.path(i) for i in range(len(images))]
    boxes = random_resized_crops(0, 1, np.arange(len(paths)), images.sizes[:, 0], images.sizes[:, 1])
    decoded = {}
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    norm = Normalization(IMAGENET_MEAN, IMAGENET_STD, 3, 4)
    crop = {}  # one decoded crop (set below) for the per-pixel steps
    out = torch.empty(1, 3, size, size)

    def load(k, scale=1):
        with Image.open(paths[k]) as im:
            if scale > 1:
                im.draft("RGB", (im.size[0] // scale, im.size[1] // scale))
            im.load()
            return im.convert("RGB") if scale == 1 else im

    def resample(k):
        im = decoded.get(k) or decoded.setdefault(k, load(k))
        top, left, h, w, flip = boxes[k]
        out = im.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
        return out.transpose(Image.FLIP_LEFT_RIGHT) if flip else out

    def to_tensor_normalize(k):
        x = torch.from_numpy(np.array(crop["x"], copy=True)).permute(2, 0, 1).contiguous().float().div(255)
        return (x - mean) / std

    def normalize_in_place(k):
        np.copyto(out.numpy()[0], crop["x"].transpose(2, 0, 1))
        norm.pixels_(out)

    idx = list(range(len(paths)))
    rows = [("JPEG decode, full size (Pillow)", _best(lambda k: load(k), idx, reps))]
    if decode_mod.simplejpeg is not None:
        rows.append(("JPEG decode, full size (libjpeg-turbo via simplejpeg)",
                     _best(lambda k: decode_mod.simplejpeg.decode_jpeg(Path(paths[k]).read_bytes(), "RGB"), idx,
                           reps)))
    rows += [("JPEG decode at 1/2 (Pillow draft, DCT scaling)", _best(lambda k: load(k, 2), idx, reps)),
             ("JPEG decode at 1/4 (Pillow draft)", _best(lambda k: load(k, 4), idx, reps))]
    for k in idx:
        resample(k)  # decode once, outside the timing
    crop["x"] = np.asarray(resample(0))
    rows += [(f"crop + resample to {size} + flip (Pillow bilinear)", _best(resample, idx, reps)),
             ("ToTensor + Normalize (torchvision-style, new tensors)", _best(to_tensor_normalize, idx, reps)),
             ("HWC uint8 → normalised CHW float32 in place (kdlab worker)", _best(normalize_in_place, idx, reps))]
    turbo = decode_mod.TURBO
    for on in ((True, False) if turbo else (False,)):
        decode_mod.TURBO = on
        name = "libjpeg-turbo direct" if on else "Pillow decode"
        rows.append((f"kdlab training sample: decode_crop, {name}",
                     _best(lambda k: decode_crop(paths[k], boxes[k], size), idx, reps)))
    decode_mod.TURBO = turbo
    return rows


def key_rows(paths: list[str], reps: int) -> list[tuple[str, float]]:
    """Seconds per file of the image index's key candidates (page cache warm)."""
    def full_hash(path):
        with open(path, "rb") as f:
            return hashlib.blake2b(f.read(), digest_size=16).digest()

    return [("os.stat: byte size + mtime (the key before)", _best(os.stat, paths, reps)),
            ("file_key: byte size + first and last KiB, BLAKE2b (the key now)",
             _best(image_index.file_key, paths, reps)),
            ("whole file, BLAKE2b", _best(full_hash, paths, reps))]


# ----------------------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 48 JPEGs, 1 round (unless given)")
    p.add_argument("--images", type=int, default=None, help="generated JPEGs (default 384, 48 with --quick)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare (default 1 2)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, 1 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.images = a.images or (48 if a.quick else 384)
    a.rounds = a.rounds or (1 if a.quick else 3)
    torch.set_num_threads(1)
    notes = []
    try:
        import torchvision as tv
        import torchvision.transforms.functional as F
    except Exception as err:  # noqa: BLE001 - any failure to import means: not comparable here
        tv = F = None
        notes.append(f"torchvision: not importable here ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
                     "run this script in an environment with torchvision for its rows (docs/performance.md)")
    if decode_mod.simplejpeg is None:
        notes.append("simplejpeg: not installed, so kdlab decodes through Pillow (pip install simplejpeg)")
    elif not decode_mod.TURBO:
        notes.append("simplejpeg: installed, but Pillow's JPEG codec is not libjpeg-turbo, so it is not used")

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["KDLAB_DATA"] = str(Path(tmp) / "cache")  # this folder's image index only
        root = Path(tmp) / "folder"
        make_folder(root, a.images, a.seed)
        splits = {w: load_dataset("imagefolder", root=root, image_size=a.size, workers=w, progress=False)
                  for w in a.workers}
        any_split = splits[a.workers[0]]
        s = a.size
        mean_t = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std_t = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        epoch = 1
        boxes = Boxes(any_split.train, a.seed, epoch)
        items = {part: [(imgs.path(i), int(imgs.labels[i])) for i in range(len(imgs))]
                 for part, imgs in (("train", any_split.train), ("test", any_split.test))}
        pil = {"train": Files(items["train"], lambda q: pil_train(q, boxes.by_path[q], s, mean_t, std_t)),
               "test": Files(items["test"], lambda q: pil_eval(q, s, mean_t, std_t))}
        tvs = None
        if tv is not None:
            tv_train, tv_eval = torchvision_pipelines(tv, F, items["train"], boxes, s)
            tv_eval.items = items["test"]
            tvs = {"train": tv_train, "test": tv_eval}

        def torch_loader(ds, part, w):
            gen = torch.Generator().manual_seed(a.seed)
            return lambda: DataLoader(ds[part], batch_size=BATCH, shuffle=part == "train", num_workers=w,
                                      generator=gen)

        def kdlab_run(part, w, fused=True, turbo=True):
            def make():
                decode_mod.TURBO = turbo and saved_turbo  # (forked workers inherit it)
                loader = kdlab_loaders(splits[w], part, a.seed, fused)
                loader.set_epoch(epoch)
                return iter(loader)
            return make

        saved_turbo = decode_mod.TURBO
        pipelines = {}
        for part in ("train", "test"):
            for w in a.workers:
                if tvs is not None:
                    pipelines[(part, "torchvision ImageFolder + transforms", w)] = torch_loader(tvs, part, w)
                pipelines[(part, "PIL reference (the same steps, no torchvision)", w)] = torch_loader(pil, part, w)
                pipelines[(part, "kdlab", w)] = kdlab_run(part, w)
                if saved_turbo:
                    pipelines[(part, "kdlab, Pillow decode (no simplejpeg)", w)] = kdlab_run(part, w, turbo=False)
                pipelines[(part, "kdlab, normalised in the training process", w)] = kdlab_run(part, w, fused=False)
        results = {k: [] for k in pipelines}
        for _ in range(a.rounds):
            for key, make in pipelines.items():
                results[key].append(run_epoch(make))
        decode_mod.TURBO = saved_turbo

        # the same crops: kdlab's normalised batch against the reference, image by image
        check = np.arange(min(16, len(any_split.train)))
        source = ImageSource(any_split.train, s, train=True, seed=a.seed).normalized(
            Normalization(IMAGENET_MEAN, IMAGENET_STD, 3, 4))
        x, _, index, _ = source.load(source.tasks(epoch, check))
        ref = torch.stack([pil["train"][i][0] for i in index.tolist()])
        diffs = {"PIL reference": float((x - ref).abs().max())}
        if tvs is not None:
            diffs["torchvision"] = float((x - torch.stack([tvs["train"][i][0] for i in index.tolist()])).abs().max())
        # DCT-reduced decoding (the default where a crop keeps ``size`` px per side at 1/2): how often, how far off
        tr = any_split.train
        boxes_r = random_resized_crops(a.seed, epoch, np.arange(len(tr)), tr.sizes[:, 0], tr.sizes[:, 1])
        errs = []
        for i in range(len(tr)):
            top, left, h, w, _ = boxes_r[i]
            if decode_mod._reducible(int(tr.sizes[i, 0]), int(tr.sizes[i, 1]), -(-int(tr.sizes[i, 0]) * s // w),
                                     -(-int(tr.sizes[i, 1]) * s // h)):
                fast = decode_crop(tr.path(i), boxes_r[i], s).astype(int)
                errs.append(np.abs(fast - decode_crop(tr.path(i), boxes_r[i], s, reduce=False).astype(int)))
        steps = step_rows(any_split.train, s, 2 if a.quick else 3)
        keys = key_rows([imgs.path(i) for imgs in (any_split.train, any_split.test) for i in range(len(imgs))],
                        2 if a.quick else 5)

    load = os.getloadavg()
    print(f"machine: {describe_machine()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")
    print(f"{a.images} JPEGs (quality 90, about 500×375, photographs), {s}×{s} crops, batches of {BATCH}, "
          f"median of {a.rounds} interleaved round(s); per core = per CPU second of the loader's processes")
    print()
    base = "torchvision ImageFolder + transforms" if tvs is not None else "PIL reference (the same steps, no torchvision)"
    print(f"| transform | pipeline | workers | images/s per core | CPU ms / image | wall images/s | "
          f"× {'torchvision' if tvs is not None else 'PIL reference'} per core |")
    print("|---|---|---:|---:|---:|---:|---:|")
    label = {"train": "train: RandomResizedCrop + flip + normalise", "test": "eval: resize + centre crop + normalise"}
    for (part, name, w), runs in results.items():
        cpu = statistics.median(r[0] / r[2] for r in runs)
        wall = statistics.median(r[2] / r[1] for r in runs)
        base_cpu = statistics.median(r[0] / r[2] for r in results[(part, base, w)])
        print(f"| {label[part]} | {name} | {w} | {1 / cpu:.0f} | {1e3 * cpu:.2f} | {wall:.0f} | {base_cpu / cpu:.2f} |")
    print()
    print("Training crops of 16 images, kdlab's normalised batch against: "
          + ", ".join(f"{k} max |Δ| = {v:.3g}" for k, v in diffs.items()))
    reduced = (f"mean |Δ| {np.mean([e.mean() for e in errs]):.3f}, max {max(int(e.max()) for e in errs)} grey levels "
               "against the exact crops" if errs else "none")
    print(f"DCT-reduced JPEG decoding (reduce=True, the default): {len(errs)} of {len(tr)} training crops at {s} px; "
          f"{reduced}")
    print()
    print("| step (one thread, no loader) | ms / image |")
    print("|---|---:|")
    for name, sec in steps:
        print(f"| {name} | {1e3 * sec:.3f} |")
    print()
    print("| image-index key (page cache warm) | µs / file |")
    print("|---|---:|")
    for name, sec in keys:
        print(f"| {name} | {1e6 * sec:.1f} |")
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
