"""Builders for small CIFAR-100 archives in the official formats, and a local HTTP server (tests/conftest.py's)."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import types
from dataclasses import dataclass

import numpy as np
import pytest


@dataclass
class FakeCifar:
    """The content of a tiny CIFAR-100: rows of 3072 pixel bytes, fine/coarse labels, names."""

    x_train: np.ndarray
    fine_train: list[int]
    coarse_train: list[int]
    x_test: np.ndarray
    fine_test: list[int]
    coarse_test: list[int]
    fine_names: list[str]
    coarse_names: list[str]


def make_fake(n_train: int = 20, n_test: int = 10, seed: int = 0) -> FakeCifar:
    rng = np.random.default_rng(seed)

    def split(n):
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n)
        fine[:2] = (0, 99)  # make sure the label range ends are exercised
        coarse = fine // 5
        return x, [int(v) for v in fine], [int(v) for v in coarse]

    xtr, ftr, ctr = split(n_train)
    xte, fte, cte = split(n_test)
    return FakeCifar(
        xtr, ftr, ctr, xte, fte, cte, [f"class_{i:02d}" for i in range(100)], [f"super_{i}" for i in range(20)]
    )


class Py2StylePickler(pickle._Pickler):
    """Writes ``str``/``bytes`` as Python 2 ``str`` opcodes (BINSTRING), as the official CIFAR files were written.

    (Python 3 would encode ``bytes`` at protocol 2 via ``_codecs.encode``, which the official files never contain.)
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin-1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def dumps(obj, style: str = "py2") -> bytes:
    """``py2``: protocol 2 with Python 2 strings and NumPy 1.x module names (like the official files);
    ``py3``: a plain protocol-3 pickle from this Python/NumPy."""
    if style == "py3":
        return pickle.dumps(obj, protocol=3)
    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")


def python_dicts(fake: FakeCifar, data_as: str = "ndarray") -> dict[str, dict]:
    def data(x):
        return x.tobytes() if data_as == "bytes" else x

    def split(x, fine, coarse, label):
        return {
            b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))],
            b"batch_label": label,
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": data(x),
        }

    return {
        "train": split(fake.x_train, fake.fine_train, fake.coarse_train, b"training batch 1 of 1"),
        "test": split(fake.x_test, fake.fine_test, fake.coarse_test, b"testing batch 1 of 1"),
        "meta": {
            b"fine_label_names": [s.encode() for s in fake.fine_names],
            b"coarse_label_names": [s.encode() for s in fake.coarse_names],
        },
    }


def python_members(fake: FakeCifar, style: str = "py2", data_as: str = "ndarray") -> dict[str, bytes]:
    return {f"cifar-100-python/{k}": dumps(v, style) for k, v in python_dicts(fake, data_as).items()}


def binary_records(x: np.ndarray, fine: list[int], coarse: list[int]) -> bytes:
    records = np.concatenate([np.asarray(coarse, np.uint8)[:, None], np.asarray(fine, np.uint8)[:, None], x], axis=1)
    return records.tobytes()


def binary_members(fake: FakeCifar) -> dict[str, bytes]:
    return {
        "cifar-100-binary/train.bin": binary_records(fake.x_train, fake.fine_train, fake.coarse_train),
        "cifar-100-binary/test.bin": binary_records(fake.x_test, fake.fine_test, fake.coarse_test),
        "cifar-100-binary/fine_label_names.txt": ("\n".join(fake.fine_names) + "\n").encode(),
        "cifar-100-binary/coarse_label_names.txt": ("\n".join(fake.coarse_names) + "\n").encode(),
    }


def write_tar(path, members: dict[str, bytes], mode: str = "w:gz"):
    """A tar(.gz) with a directory entry per top folder, then the members in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for top in sorted({name.split("/", 1)[0] for name in members if "/" in name}):
            info = tarfile.TarInfo(top)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def cifar_tools():
    """The builders above, as one namespace."""
    return types.SimpleNamespace(
        make_fake=make_fake,
        dumps=dumps,
        python_dicts=python_dicts,
        python_members=python_members,
        binary_records=binary_records,
        binary_members=binary_members,
        write_tar=write_tar,
    )


@pytest.fixture
def http_server(file_server):
    """Serve a folder on 127.0.0.1 (tests/conftest.py's ``file_server``); yields ``(directory, base_url)``."""
    return file_server.root, file_server.base


# ----------------------------------------------------------------------------------------------------------------
# image files on disk, in each layout kdlab reads (real JPEG/PNG files written by Pillow)
# ----------------------------------------------------------------------------------------------------------------
def image_array(label: int, seed: int, size=(48, 40)) -> np.ndarray:
    """An RGB image whose colour and stripe direction depend on ``label`` (learnable after any crop), plus noise."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 160) % 256], dtype=np.float64)
    stripes = np.sin((xx if label % 2 else yy) * (0.5 + 0.15 * (label % 3)))[..., None] * 50
    img = base + stripes + rng.normal(0, 12, (h, w, 3))
    return img.clip(0, 255).astype(np.uint8)


def write_image(path, label: int, seed: int, kind: str = "jpeg", size=(48, 40)) -> None:
    """``kind``: jpeg, png, grey (L JPEG), cmyk (CMYK JPEG), png_as_jpeg (PNG data under a .JPEG name),
    truncated (a JPEG cut in half), text (not an image)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = image_array(label, seed, size)
    im = Image.fromarray(arr)
    if kind == "jpeg":
        im.save(path, format="JPEG", quality=90)
    elif kind == "png" or kind == "png_as_jpeg":
        im.save(path, format="PNG")
    elif kind == "grey":
        im.convert("L").save(path, format="JPEG", quality=90)
    elif kind == "cmyk":
        im.convert("CMYK").save(path, format="JPEG", quality=90)
    elif kind == "truncated":
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "text":
        path.write_text("this is not an image\n")
    else:
        raise ValueError(kind)


def make_imagefolder(root, classes=("cat", "dog", "eel"), n_train=8, n_val=4, size=(48, 40), val_name="val",
                     kinds=None):
    """ROOT/train/<class>/img_k.jpg and ROOT/<val_name>/<class>/img_k.jpg; ``kinds[(split, class, k)]`` overrides
    the file kind (and its extension stays .jpg unless the kind is png)."""
    kinds = kinds or {}
    for split, n in (("train", n_train), (val_name, n_val)):
        for c, name in enumerate(classes):
            for k in range(n):
                kind = kinds.get((split, name, k), "jpeg")
                ext = ".png" if kind == "png" else ".jpg"
                write_image(root / split / name / f"img_{k}{ext}", c, seed=hash((split, c, k)) % 10_000, kind=kind,
                            size=size)
    return root


WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")


def make_imagenet(root, wnids=WNIDS, n_train=6, n_val=3, size=(56, 48), val="folders"):
    """ILSVRC-2012 layout; ``val``: folders, csv (flat + LOC_val_solution.csv), devkit (flat + extracted devkit whose
    ILSVRC ids are the reverse of the sorted-wnid order, so a sorted-order mapping would be wrong) or devkit_tar."""
    import tarfile

    import scipy.io

    for c, w in enumerate(wnids):
        for k in range(n_train):
            write_image(root / "train" / w / f"{w}_{k}.JPEG", c, seed=c * 100 + k, size=size)
    labels = []
    for k in range(n_val * len(wnids)):
        c = (k * 7 + 3) % len(wnids)
        labels.append(c)
        name = f"ILSVRC2012_val_{k + 1:08d}.JPEG"
        target = root / "val" / (wnids[c] if val == "folders" else "") / name
        write_image(target, c, seed=5000 + k, size=size)
    if val == "csv":
        rows = [f"ILSVRC2012_val_{k + 1:08d},{wnids[c]} 1 2 30 40 {wnids[c]} 3 4 20 20" for k, c in enumerate(labels)]
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(reversed(rows)) + "\n")
    if val in ("devkit", "devkit_tar"):
        n = len(wnids)
        ids = {w: n - i for i, w in enumerate(wnids)}  # ILSVRC ids in reverse sorted order
        dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
        synsets = np.zeros((n + 1,), dtype=dtype)
        for i, w in enumerate(wnids):
            synsets[i] = (ids[w], w, f"class {i}", "", 0)
        synsets[n] = (n + 1, "n00000001", "an inner node", "", 2)  # not a class: it has children
        data = root / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        scipy.io.savemat(data / "meta.mat", {"synsets": synsets})
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
            "".join(f"{ids[wnids[c]]}\n" for c in labels))
        if val == "devkit_tar":
            with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
                tar.add(root / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
            import shutil

            shutil.rmtree(root / "ILSVRC2012_devkit_t12")
    return root, labels


def make_tiny(root, wnids=WNIDS[:3], n_train=6, n_val=3, kinds=None):
    """tiny-imagenet-200 layout under ROOT (64×64 JPEGs)."""
    kinds = kinds or {}
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # not sorted, as the real file
    for c, w in enumerate(wnids):
        for k in range(n_train):
            write_image(base / "train" / w / "images" / f"{w}_{k}.JPEG", c, seed=c * 10 + k, size=(64, 64),
                        kind=kinds.get(("train", c, k), "jpeg"))
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for k in range(n_val * len(wnids)):
        c = k % len(wnids)
        write_image(base / "val" / "images" / f"val_{k}.JPEG", c, seed=900 + k, size=(64, 64),
                    kind=kinds.get(("val", c, k), "jpeg"))
        lines.append(f"val_{k}.JPEG\t{wnids[c]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


@pytest.fixture
def image_tools(tmp_path, monkeypatch):
    """The image-file builders above; ``$KDLAB_DATA`` (the image-index cache) points into ``tmp_path``."""
    monkeypatch.setenv("KDLAB_DATA", str(tmp_path / "kdlab-cache"))
    return types.SimpleNamespace(write_image=write_image, image_array=image_array, make_imagefolder=make_imagefolder,
                                 make_imagenet=make_imagenet, make_tiny=make_tiny, WNIDS=WNIDS)


_CONV_NO_BN_SCRIPT = """
import sys
from torch import nn
from kdlab import models
from kdlab.cli import main

@models.register("conv_no_bn")
def conv_no_bn(num_classes):  # BN-free: each rank's half batch computes what one process computes
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes))

sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def conv_no_bn_cli(tmp_path):
    """A script that runs ``kdlab``'s CLI with a BN-free student ``conv_no_bn`` registered (for 1 vs 2 processes)."""
    script = tmp_path / "kdlab_conv_no_bn.py"
    script.write_text(_CONV_NO_BN_SCRIPT)
    return script
