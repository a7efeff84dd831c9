"""Crop geometry (a pure function of seed, epoch, index, size; torchvision's algorithm) and decoding one file."""

import math

import numpy as np
import pytest
from PIL import Image

from kdlab.data import crops
from kdlab.data.crops import center_crop_box, random_resized_crops
from kdlab.data.decode import BadImageError, decode_center, decode_crop, decode_full, probe


def torchvision_get_params(u, width, height, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params, written out from its source, fed our uniforms u[0..22]."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for k in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[2 * k])
        aspect_ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[2 * k + 1])
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(u[20] * (height - h + 1))  # torch.randint(0, height - h + 1)
            j = int(u[21] * (width - w + 1))
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def test_crops_follow_torchvision_and_are_a_pure_function_of_seed_epoch_index():
    rng = np.random.default_rng(0)
    n = 3000
    index = rng.permutation(10_000)[:n]
    w = rng.integers(20, 600, n)
    h = rng.integers(20, 600, n)
    w[:50], h[:50] = 900, 12  # extreme aspect ratios: the centred fallback
    boxes = random_resized_crops(3, 7, index, w, h)
    u = crops.uniforms(crops.derive_seed(3, 7, crops._STREAM_CROPS), index, crops._PER_IMAGE)
    for k in range(n):
        assert boxes[k][:4] == torchvision_get_params(u[k], int(w[k]), int(h[k])), k
    assert (boxes.top[:50] == boxes.height[:50] * 0 + (12 - boxes.height[:50]) // 2).all()  # fallback centred
    # per image, not per batch: one at a time, in another order, gives the same boxes
    perm = rng.permutation(n)[:200]
    single = [random_resized_crops(3, 7, [index[k]], w[k], h[k])[0] for k in perm]
    assert single == [boxes[k] for k in perm]
    # the boxes lie in the image; the area and ratio ranges hold where a try fitted; flips are fair
    assert (boxes.top >= 0).all() and (boxes.left >= 0).all()
    assert (boxes.top + boxes.height <= h).all() and (boxes.left + boxes.width <= w).all()
    big = (w >= 200) & (h >= 200)  # (rounding moves the area fraction of tiny images)
    frac = boxes.height[big] * boxes.width[big] / (h[big] * w[big])
    assert 0.075 < frac.min() < 0.1 and frac.max() <= 1.0
    assert 0.45 < boxes.flip.mean() < 0.55
    # other epochs and seeds draw other boxes
    assert random_resized_crops(3, 8, index, w, h).top.tolist() != boxes.top.tolist()
    assert random_resized_crops(4, 7, index, w, h).top.tolist() != boxes.top.tolist()


def test_uniforms_are_uniform_and_distinct_per_index():
    u = crops.uniforms(12345, np.arange(20_000), 3)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.03  # neighbouring indices are not correlated


def _jpeg(tmp_path, arr, name="a.jpg", **kw):
    path = tmp_path / name
    Image.fromarray(arr).save(path, format="JPEG", quality=92, **kw)
    return path


def _photo(h=350, w=400, seed=0):
    """Smooth structure plus texture, like a photograph's spectrum (not pure noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 40.0
    img = 128 + 60 * np.sin(xx + np.cos(yy))[..., None] * np.array([1, 0.6, -0.8]) + 25 * np.cos(3 * yy)[..., None]
    return (img + rng.normal(0, 6, (h, w, 3))).clip(0, 255).astype(np.uint8)


def test_exact_crop_equals_torchvision_pipeline_and_reduced_decoding_is_within_tolerance(tmp_path):
    path = _jpeg(tmp_path, _photo())
    ref_img = Image.open(path).convert("RGB")
    boxes = random_resized_crops(0, 1, np.arange(40), 400, 350)
    reduced = 0
    for k in range(40):
        top, left, h, w, flip = boxes[k]
        for size in (32, 64, 224):
            ref = ref_img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
            if flip:
                ref = ref.transpose(Image.FLIP_LEFT_RIGHT)
            ref = np.asarray(ref).astype(int)
            exact = decode_crop(path, boxes[k], size, reduce=False)
            assert np.array_equal(exact, ref)  # bit for bit torchvision's crop → resize (PIL path)
            fast = decode_crop(path, boxes[k], size).astype(int)
            diff = np.abs(fast - ref)
            # the stated tolerance of DCT-scaled decoding (docs/performance.md): mean ≤ 2, max ≤ 24 grey levels
            assert diff.mean() <= 2.0 and diff.max() <= 24, (k, size, diff.mean(), diff.max())
            reduced += int(min(w, h) >= 2 * size)
    assert reduced > 20  # the reduced path was really taken


def test_centre_crop_box_equals_resize_then_centre_crop(tmp_path):
    for w, h in ((400, 350), (333, 500), (64, 64), (1000, 257)):
        path = _jpeg(tmp_path, _photo(h, w), f"{w}x{h}.jpg")
        im = Image.open(path).convert("RGB")
        for size in (32, 224):
            r = size * 256 // 224
            short, long = min(w, h), max(w, h)
            nw, nh = (r, int(r * long / short)) if w <= h else (int(r * long / short), r)
            resized = im.resize((nw, nh), Image.BILINEAR)
            top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
            ref = np.asarray(resized.crop((left, top, left + size, top + size))).astype(int)
            out = decode_center(path, center_crop_box(w, h, size), size, reduce=False).astype(int)
            assert np.abs(out - ref).max() <= 1  # one resampling of the box = the two steps, up to rounding
            fast = decode_center(path, center_crop_box(w, h, size), size).astype(int)
            assert np.abs(fast - ref).mean() <= 2.0


@pytest.mark.parametrize("kind", ["grey", "cmyk", "png_as_jpeg", "png"])
def test_other_modes_and_formats_decode_as_rgb(tmp_path, image_tools, kind):
    path = tmp_path / ("x.png" if kind == "png" else "x.JPEG")
    image_tools.write_image(path, 1, seed=0, kind=kind, size=(48, 40))
    full = decode_full(path)
    assert full.shape == (40, 48, 3) and full.dtype == np.uint8
    assert probe(path) == (48, 40)
    crop = decode_crop(path, (2, 3, 30, 30, True), 16)
    assert crop.shape == (16, 16, 3)
    if kind == "grey":
        assert (full[..., 0] == full[..., 1]).all()


@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_unreadable_files_are_one_line_errors_naming_the_file(tmp_path, image_tools, kind):
    path = tmp_path / "broken.jpg"
    image_tools.write_image(path, 0, seed=0, kind=kind)
    for call in (lambda: probe(path), lambda: decode_full(path), lambda: decode_crop(path, (0, 0, 8, 8, False), 8)):
        with pytest.raises(BadImageError) as err:
            call()
        assert str(path) in str(err.value) and "\n" not in str(err.value) and "data.skip_bad" in str(err.value)
