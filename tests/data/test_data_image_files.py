"""Image files read as they are: links followed but every folder listed once, 16-bit pixels scaled (not clipped),
the file check keyed by content and its cache named by content, the decoders' fast paths giving the same pixels."""

import gc
import io
import multiprocessing
import os
import shutil
import signal
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from kdlab.data import BadImageError, LayoutError, load_dataset
from kdlab.data import decode as decode_mod
from kdlab.data import image_index
from kdlab.data.crops import center_crop_box, random_resized_crops
from kdlab.data.decode import decode_center, decode_crop, decode_full, probe
from kdlab.data.image_index import check_images
from kdlab.data.image_stream import ImageSource
from kdlab.data.normalization import Normalization
from kdlab.data.stream import batch_tensor


# ------------------------------------------------------------------------------------------------------ links
def test_a_directory_link_loop_is_refused_with_its_path(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b", "c"), n_train=6, n_val=1)
    os.symlink(root / "train" / "a", root / "train" / "a" / "loop")  # os.walk(followlinks=True) went round 40 times
    with pytest.raises(LayoutError, match=r"train/a/loop is a link to a folder above it \(a loop\) to the folder "
                                          r".*train/a, which is listed already"):
        load_dataset("imagefolder", root=root, image_size=16, workers=0)


def test_two_paths_to_one_folder_are_refused(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b"), n_train=3, n_val=1)
    os.symlink(root / "train" / "a", root / "train" / "b" / "more")  # a's images would also be labelled b
    with pytest.raises(LayoutError, match=r"train/b/more is a second path to the folder .*train/a"):
        load_dataset("imagefolder", root=root, image_size=16, workers=0)


def test_links_to_files_and_to_folders_elsewhere_are_followed(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b"), n_train=3, n_val=1)
    outside = image_tools.make_imagefolder(tmp_path / "other", classes=("b",), n_train=2, n_val=1)
    shutil.rmtree(root / "train" / "b")
    os.symlink(outside / "train" / "b", root / "train" / "b")  # a class folder kept elsewhere
    os.symlink(root / "train" / "a" / "img_0.jpg", root / "train" / "a" / "linked.jpg")  # a file link
    s = load_dataset("imagefolder", root=root, image_size=16, workers=0)
    assert sorted(s.train.paths.tolist()) == ["a/img_0.jpg", "a/img_1.jpg", "a/img_2.jpg", "a/linked.jpg",
                                              "b/img_0.jpg", "b/img_1.jpg"]


def test_a_folder_that_cannot_be_listed_is_an_error_not_skipped(tmp_path, image_tools, monkeypatch):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b"), n_train=2, n_val=1)
    (root / "train" / "a" / "sub").mkdir()
    real = os.scandir

    def scandir(path):  # (the tests run as root, who can list a folder without permissions)
        if str(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(LayoutError, match=r"train/a/sub cannot be listed \(PermissionError: Permission denied\)"):
        load_dataset("imagefolder", root=root, image_size=16, workers=0)


def test_a_fifo_named_like_an_image_is_a_bad_file_not_a_hang(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b"), n_train=2, n_val=1)
    os.mkfifo(root / "train" / "a" / "pipe.jpg")
    os.symlink(root / "train" / "a" / "pipe.jpg", root / "train" / "b" / "to_pipe.jpg")

    def hung(*_):
        pytest.fail("opening the FIFO blocked")  # (not an OSError, which the decoder would catch)

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.raises(BadImageError, match=r"pipe.jpg: not a readable image \(OSError: not a regular file; 2 of the 6 files"):
            load_dataset("imagefolder", root=root, image_size=16, workers=0)
        s = load_dataset("imagefolder", root=root, image_size=16, workers=0, skip_bad=True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert s.num_train == 4 and len(s.skipped) == 2


# ---------------------------------------------------------------------------------------------------- modes
def _png16(arr: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG (colour type 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA) of uint16 ``[H, W, C]`` ``arr``."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("color_type", [0, 2, 4, 6])
def test_16_bit_pngs_decode_scaled_to_8_bits(tmp_path, image_tools, color_type):
    rgb = image_tools.image_array(2, seed=1, size=(48, 40))
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    channels = {0: grey[..., None], 2: rgb, 4: np.stack([grey, grey], -1), 6: np.dstack([rgb, grey])}[color_type]
    path = tmp_path / "deep.png"
    path.write_bytes(_png16(channels.astype(np.uint16) * 257, color_type))  # v·257: v in the high and the low byte
    want = np.repeat(grey[..., None], 3, -1) if color_type in (0, 4) else rgb
    assert np.array_equal(decode_full(path), want)  # 16-bit grey was clipped to white before (mean 254/255)
    assert probe(path) == (48, 40)
    ref = Image.fromarray(want).crop((3, 2, 3 + 30, 2 + 30)).resize((16, 16), Image.BILINEAR)
    assert np.array_equal(decode_crop(path, (2, 3, 30, 30, False), 16), np.asarray(ref))


def test_32_bit_integer_and_float_pixels_are_scaled_or_refused(tmp_path):
    values = (np.arange(48 * 40).reshape(40, 48) * 30).astype(np.int32)  # 0..57570: 16-bit values in mode I
    path = tmp_path / "wide.png"  # (a TIFF under an image name: files are opened by content)
    Image.fromarray(values, "I").save(path, format="TIFF")
    assert np.array_equal(decode_full(path)[..., 0], (values >> 8).astype(np.uint8))
    Image.fromarray(values * 4, "I").save(path, format="TIFF")
    with pytest.raises(BadImageError, match="32-bit integer pixels outside 0..65535"):
        probe(path)
    Image.fromarray(values.astype(np.float32) / 57570, "F").save(path, format="TIFF")
    with pytest.raises(BadImageError, match="floating-point pixels: no 8-bit scale"):
        probe(path)


# ------------------------------------------------------------------------------------------------ the index
def _same_byte_size(path_a, path_b) -> None:
    """Pad the smaller JPEG after its end marker (decoders stop there) until both have one byte size."""
    a, b = path_a.read_bytes(), path_b.read_bytes()
    small, n = (path_a, len(b) - len(a)) if len(a) < len(b) else (path_b, len(a) - len(b))
    small.write_bytes(small.read_bytes() + b"\0" * n)


def test_an_image_replaced_by_one_of_the_same_byte_size_and_time_is_checked_again(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b"), n_train=2, n_val=1, size=(48, 40))
    target = root / "train" / "a" / "img_1.jpg"
    new = tmp_path / "new.jpg"
    image_tools.write_image(new, 0, seed=7, size=(40, 56))
    _same_byte_size(target, new)
    s = load_dataset("imagefolder", root=root, image_size=16, workers=0)
    st = os.stat(target)
    shutil.copyfile(new, target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # same byte size, same modification time
    assert os.stat(target).st_size == st.st_size and os.stat(target).st_mtime_ns == st.st_mtime_ns
    again = load_dataset("imagefolder", root=root, image_size=16, workers=0)
    k = again.train.paths.tolist().index("a/img_1.jpg")
    assert again.train.sizes[k].tolist() == [40, 56]  # it kept 48×40 before
    # and a loader built before the change refuses the file instead of cropping it with the old size's box
    loader = s.loader("train", 4, augment=True, shuffle=True, seed=0)
    with pytest.raises(BadImageError, match=r"img_1.jpg: .*it is 40×56 now but 48×40 when the files were checked"):
        list(loader)


def test_the_index_is_named_by_content_so_a_subset_neither_overwrites_nor_rechecks(tmp_path, image_tools,
                                                                                      monkeypatch):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b", "c"), n_train=4, n_val=2)
    probed = []
    real = image_index._probe
    monkeypatch.setattr(image_index, "_probe", lambda p: probed.append(p) or real(p))
    load_dataset("imagefolder", root=root, image_size=16, workers=0)
    assert len(probed) == 18
    index_dir = tmp_path / "kdlab-cache" / "image-index"
    full = sorted(index_dir.glob("*.npz"))
    assert len(full) == 2  # train and val
    probed.clear()
    load_dataset("imagefolder", root=root, image_size=16, workers=0, train_subset=5, test_subset=3)
    assert probed == []  # the subset's entries come from the full lists' indexes
    assert len(list(index_dir.glob("*.npz"))) == 4 and all(p.is_file() for p in full)
    load_dataset("imagefolder", root=root, image_size=16, workers=0)
    assert probed == []  # the full run finds its own index again (it was overwritten by the subset's before)
    # a copy of the folder elsewhere (new paths, new times) is the same content: nothing to check
    shutil.copytree(root, tmp_path / "copy")
    load_dataset("imagefolder", root=tmp_path / "copy", image_size=16, workers=0)
    assert probed == []


def test_a_damaged_index_is_rebuilt_with_a_warning(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b"), n_train=2, n_val=1)
    s = load_dataset("imagefolder", root=root, image_size=16, workers=0)
    train_index = max((tmp_path / "kdlab-cache" / "image-index").glob("*.npz"), key=lambda p: p.stat().st_size)
    data = dict(np.load(train_index))
    data["width"] = data["width"] + 1  # sizes changed, the checksum not
    with open(train_index, "wb") as f:
        np.savez(f, **data)
    with pytest.warns(RuntimeWarning, match="do not match the checksum written with them"):
        checked, _ = check_images(s.train.take(slice(None)), what="x")
    assert np.array_equal(checked.sizes, s.train.sizes)


def test_file_keys_cover_size_head_and_tail(tmp_path):
    path = tmp_path / "x.bin"
    body = bytearray(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    path.write_bytes(bytes(body))
    key = image_index.file_key(path)
    for at in (0, 1023, 4999 - 1023, 4999):  # the first and the last KiB
        changed = bytearray(body)
        changed[at] ^= 1
        path.write_bytes(bytes(changed))
        assert image_index.file_key(path) != key, at
    path.write_bytes(bytes(body) + b"\0")
    assert image_index.file_key(path) != key
    assert image_index.file_key(tmp_path / "missing.jpg") != image_index.file_key(tmp_path / "gone.jpg")


# ----------------------------------------------------------------------------------------- fast paths, exactly
def _photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 30.0
    img = 128 + 60 * np.sin(xx + np.cos(yy))[..., None] * np.array([1, 0.6, -0.8]) + 25 * np.cos(3 * yy)[..., None]
    return (img + rng.normal(0, 6, (h, w, 3))).clip(0, 255).astype(np.uint8)


JPEG_KINDS = {"4:2:0": dict(subsampling=2), "4:2:2": dict(subsampling=1), "4:4:4": dict(subsampling=0),
              "progressive": dict(progressive=True), "restart markers": dict(restart_marker_blocks=3),
              "large header": dict(exif=b"Exif\0\0" + bytes(30_000)), "grey": {}, "cmyk": {}}


@pytest.mark.skipif(not decode_mod.TURBO, reason="simplejpeg is not installed (pip install -e '.[test]' brings it)")
@pytest.mark.parametrize("kind", sorted(JPEG_KINDS))
def test_the_libjpeg_turbo_path_gives_pillows_pixels(tmp_path, monkeypatch, kind):
    h, w = 217, 333  # not multiples of the 16-pixel blocks
    im = Image.fromarray(_photo(h, w))
    im = im.convert("L") if kind == "grey" else im.convert("CMYK") if kind == "cmyk" else im
    path = tmp_path / "x.jpg"
    im.save(path, format="JPEG", quality=90, **JPEG_KINDS[kind])
    boxes = random_resized_crops(0, 1, np.arange(30), w, h)
    cbox = center_crop_box(w, h, 64)
    sizes = (16, 64, 224)
    fast = [[decode_crop(path, boxes[k], s, expect=(w, h)) for k in range(30)] for s in sizes]
    fast_eval = decode_center(path, cbox, 64)
    monkeypatch.setattr(decode_mod, "TURBO", False)
    slow = [[decode_crop(path, boxes[k], s, expect=(w, h)) for k in range(30)] for s in sizes]
    assert all(np.array_equal(a, b) for fs, ss in zip(fast, slow) for a, b in zip(fs, ss))
    assert np.array_equal(fast_eval, decode_center(path, cbox, 64))


def test_normalising_in_place_equals_the_normalisation_for_every_pixel_value():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16).contiguous()
    for mean, std in (((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), (None, None), ((0.5,), (0.25,))):
        norm = Normalization(mean, std, 3, 4)
        assert torch.equal(norm.pixels_(x.float()), norm(x))  # all 256 values × 3 channels, bit for bit


@pytest.mark.parametrize("workers", [0, 1])
def test_cpu_batches_are_normalised_in_the_workers_with_the_same_numbers(tmp_path, image_tools, workers):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b", "c"), n_train=5, n_val=2)
    s = load_dataset("imagefolder", root=root, image_size=24, workers=workers)
    norm = Normalization(s.mean, s.std, 3, 4)
    for part, augment in (("train", True), ("test", False)):
        loader = s.loader(part, 4, augment=augment, shuffle=augment, seed=3)
        assert loader.source.normalization is not None and not loader._normalize_batches
        raw = ImageSource(s.train if part == "train" else s.test, 24, train=augment, seed=3)  # uint8, as before
        loader.set_epoch(2)
        for index, batch in zip(loader.batches(), list(loader)):
            x, _, _, _ = raw.load(raw.tasks(2, index))
            assert x.dtype == torch.uint8 and torch.equal(batch.x, norm(x))


def test_an_accelerator_run_gets_uint8_from_the_workers_and_normalises_on_the_device(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b"), n_train=2, n_val=1)
    s = load_dataset("imagefolder", root=root, image_size=16, workers=0)
    loader = s.loader("train", 2, augment=True, shuffle=True, seed=0, device="meta")  # (any non-CPU device)
    assert loader.source.normalization is None and loader._normalize_batches
    x, _, _, _ = loader.source.load(loader.source.tasks(1, np.arange(2)))
    assert x.dtype == torch.uint8


def test_a_worker_builds_its_batch_in_shared_memory():
    class Probe(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return batch_tensor((2, 3), torch.float32).is_shared()

    assert list(torch.utils.data.DataLoader(Probe(), batch_size=None, num_workers=1)) == [True, True]
    assert not batch_tensor((2, 3), torch.float32).is_shared()  # (in this process: ordinary memory)


def test_reduced_decoding_is_an_option_and_off_gives_the_exact_pixels(tmp_path, image_tools):
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b"), n_train=4, n_val=1, size=(96, 80))
    raw = {}
    for reduce in (True, False):
        s = load_dataset("imagefolder", root=root, image_size=8, workers=0, reduce=reduce)
        source = s.loader("train", 8, augment=True, shuffle=True, seed=1).source
        x, _, index, _ = ImageSource(s.train, 8, train=True, seed=1, reduce=reduce).load(
            source.tasks(1, np.arange(len(s.train))))
        raw[reduce] = x
        assert source.reduce is reduce
    tasks = source.tasks(1, np.arange(len(s.train)))
    exact = torch.stack([torch.tensor(decode_crop(s.train.path(i), box, 8, reduce=False)).permute(2, 0, 1)
                         for i, box in tasks])
    assert torch.equal(raw[False], exact) and not torch.equal(raw[True], exact)  # 8 px crops of 96×80: reduced


def test_a_dropped_loader_stops_its_kept_workers_at_once(tmp_path, image_tools):
    # the workers are kept for the loader's life; a loader in a reference cycle lived (with its workers) until the
    # cyclic collector ran, possibly inside a later loader's forked worker, where shutting down the parent's workers
    # broke their queues (CI: "semaphore or lock released too many times" in benchmarks/decode.py --quick)
    root = image_tools.make_imagefolder(tmp_path / "f", classes=("a", "b"), n_train=10, n_val=1)  # 20 batches of 1: more than the 8 prefetched
    s = load_dataset("imagefolder", root=root, image_size=16, workers=2)
    before = {p.pid for p in multiprocessing.active_children()}
    gc.disable()
    try:
        for whole_epoch in (True, False):
            loader = s.loader("train", 1, augment=True, shuffle=True, seed=0)
            if whole_epoch:
                assert len(list(loader)) == 20
            else:  # an epoch left part-way
                batches = iter(loader)
                next(batches)
                del batches
            workers = [p for p in multiprocessing.active_children() if p.pid not in before]
            assert len(workers) == 2
            del loader
            for p in workers:
                p.join(timeout=30)
            assert not any(p.is_alive() for p in workers)
    finally:
        gc.enable()
