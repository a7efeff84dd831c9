"""CIFAR-100 reading: both official formats, extracted trees, the cache, downloads, and every kind of broken input."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle

import numpy as np
import pytest
import torch

import kdlab.data.cifar as cifar
from kdlab.data import CropFlip, extract_archive, load_cifar100, load_dataset


def expect_equal(splits, fake):
    """The loaded splits hold exactly the fake archive's images (as [N, 3, 32, 32]) and fine labels."""
    assert splits.name == "cifar100" and splits.num_classes == 100
    assert splits.x_train.dtype == torch.uint8 and splits.x_train.shape == (len(fake.fine_train), 3, 32, 32)
    assert splits.x_test.shape == (len(fake.fine_test), 3, 32, 32)
    np.testing.assert_array_equal(splits.x_train.numpy().reshape(-1, 3072), fake.x_train)
    np.testing.assert_array_equal(splits.x_test.numpy().reshape(-1, 3072), fake.x_test)
    # The row layout is 1024 red, then green, then blue bytes, each plane row-major.
    assert int(splits.x_train[0, 1, 0, 1]) == int(fake.x_train[0, 1024 + 1])
    assert splits.y_train.dtype == torch.int64
    assert splits.y_train.tolist() == fake.fine_train and splits.y_test.tolist() == fake.fine_test
    assert splits.class_names == tuple(fake.fine_names)
    assert splits.mean == (0.5071, 0.4867, 0.4408) and splits.std == (0.2675, 0.2565, 0.2761)
    assert splits.train_augment == CropFlip(32, padding=4)


# ------------------------------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize(
    ("style", "data_as"),
    [("py2", "ndarray"), ("py3", "ndarray"), ("py2", "bytes")],
    ids=["official", "numpy2", "bytes"],
)
def test_python_archive_roundtrip(tmp_path, cifar_tools, style, data_as):
    fake = cifar_tools.make_fake(seed=1)
    cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", cifar_tools.python_members(fake, style, data_as))
    expect_equal(load_cifar100(tmp_path), fake)
    assert (tmp_path / "cifar-100-python.npz").is_file()


def test_binary_archive_roundtrip(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake(seed=2)
    cifar_tools.write_tar(tmp_path / "cifar-100-binary.tar.gz", cifar_tools.binary_members(fake))
    expect_equal(load_cifar100(tmp_path, fmt="binary"), fake)
    assert (tmp_path / "cifar-100-binary.npz").is_file()


def test_archive_path_and_plain_tar(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake(seed=3)
    path = cifar_tools.write_tar(tmp_path / "my-copy.tar", cifar_tools.binary_members(fake), mode="w")
    expect_equal(load_cifar100(path), fake)
    assert (tmp_path / "my-copy.npz").is_file()
    expect_equal(load_cifar100(tmp_path / "my-copy.npz"), fake)  # the cache itself is a valid root


@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_extracted_directories(tmp_path, cifar_tools, fmt):
    fake = cifar_tools.make_fake(seed=4)
    members = cifar_tools.python_members(fake) if fmt == "python" else cifar_tools.binary_members(fake)
    archive = cifar_tools.write_tar(tmp_path / "dl" / f"cifar-100-{fmt}.tar.gz", members)
    extract_archive(archive, tmp_path / "data")
    tree = tmp_path / "data" / f"cifar-100-{fmt}"
    assert tree.is_dir()
    expect_equal(load_cifar100(tmp_path / "data"), fake)  # directory holding the tree
    (tmp_path / "data" / f"cifar-100-{fmt}.npz").unlink()
    expect_equal(load_cifar100(tree), fake)  # the tree itself


def test_auto_prefers_python_and_fmt_filters(tmp_path, cifar_tools):
    py, binary = cifar_tools.make_fake(seed=5), cifar_tools.make_fake(seed=6)
    cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", cifar_tools.python_members(py))
    cifar_tools.write_tar(tmp_path / "cifar-100-binary.tar.gz", cifar_tools.binary_members(binary))
    expect_equal(load_cifar100(tmp_path), py)
    expect_equal(load_cifar100(tmp_path, fmt="binary"), binary)
    with pytest.raises(ValueError, match="fmt must be"):
        load_cifar100(tmp_path, fmt="png")


def test_load_dataset_dispatch(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake(seed=7)
    cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", cifar_tools.python_members(fake))
    expect_equal(load_dataset("CIFAR-100", root=tmp_path), fake)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_dataset("svhn", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="expected the ILSVRC-2012 layout"):  # a name of a data set on disk
        load_dataset("imagenet", root=tmp_path)


# -------------------------------------------------------------------------------------------------------------- cache
def test_cache_is_used_then_invalidated(tmp_path, cifar_tools, monkeypatch):
    fake = cifar_tools.make_fake(seed=8)
    archive = cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", cifar_tools.python_members(fake))
    load_cifar100(tmp_path)
    calls = []
    real_parse = cifar._parse_source
    monkeypatch.setattr(cifar, "_parse_source", lambda *a: calls.append(a) or real_parse(*a))
    expect_equal(load_cifar100(tmp_path), fake)
    assert calls == []  # served from the .npz

    other = cifar_tools.make_fake(seed=9)  # replacing the archive makes the cache stale
    cifar_tools.write_tar(archive, cifar_tools.python_members(other))
    os.utime(archive, ns=(1, 1))
    with pytest.warns(RuntimeWarning, match="older than its source"):
        expect_equal(load_cifar100(tmp_path), other)
    assert len(calls) == 1


def test_corrupt_cache_is_rebuilt_with_warning(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake(seed=10)
    cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", cifar_tools.python_members(fake))
    load_cifar100(tmp_path)
    cache = tmp_path / "cifar-100-python.npz"
    cache.write_bytes(b"not a zip file")
    with pytest.warns(RuntimeWarning, match="invalid"):
        expect_equal(load_cifar100(tmp_path), fake)
    assert np.load(cache)["x_train"].shape == (20, 3, 32, 32)  # rewritten


def test_corrupt_cache_without_source_is_an_error(tmp_path):
    (tmp_path / "cifar-100-python.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cifar-100-python\.npz is invalid.*no archive"):
        load_cifar100(tmp_path)


# ----------------------------------------------------------------------------------------------------- broken inputs
def test_missing_archive_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not found in .*download=True"):
        load_cifar100(tmp_path / "nowhere")


def test_truncated_archive(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake()
    path = cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", cifar_tools.python_members(fake))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cifar-100-python.tar.gz is truncated"):
        load_cifar100(tmp_path)


def test_truncated_plain_tar(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake()
    path = cifar_tools.write_tar(tmp_path / "x.tar", cifar_tools.binary_members(fake), mode="w")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"x.tar .*truncated"):
        load_cifar100(path)


def test_corrupt_gzip_bytes(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake()
    path = cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", cifar_tools.python_members(fake))
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the trailer: only whole-stream checking notices
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"cifar-100-python.tar.gz has corrupt gzip data"):
        load_cifar100(tmp_path)
    data = bytearray(gzip.compress(b"\x00" * 5000))
    data[20:40] = b"\xff" * 20  # garbage inside the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"cifar-100-python.tar.gz has corrupt gzip data"):
        load_cifar100(tmp_path)


def test_not_an_archive(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    path.write_bytes(b"<html>404 not found</html>" * 40)
    with pytest.raises(ValueError, match="not a valid tar archive"):
        load_cifar100(tmp_path)


def test_cifar10_archive_is_recognised(tmp_path, cifar_tools):
    batch = {b"batch_label": b"x", b"labels": [1, 2], b"data": np.zeros((2, 3072), np.uint8), b"filenames": []}
    members = {"cifar-10-batches-py/data_batch_1": cifar_tools.dumps(batch)}
    cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    with pytest.raises(ValueError, match="CIFAR-10 archive"):
        load_cifar100(tmp_path)


def test_cifar10_pickle_inside_cifar100_tree(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake()
    members = cifar_tools.python_members(fake)
    members["cifar-100-python/train"] = cifar_tools.dumps({b"labels": [1], b"data": np.zeros((1, 3072), np.uint8)})
    cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    with pytest.raises(ValueError, match=r"cifar-100-python/train is a CIFAR-10 batch"):
        load_cifar100(tmp_path)


def test_pickle_with_a_global_is_refused_and_never_runs(tmp_path, cifar_tools):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    fake = cifar_tools.make_fake()
    members = cifar_tools.python_members(fake)
    members["cifar-100-python/train"] = pickle.dumps({b"data": Exploit()}, protocol=3)
    cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    with pytest.raises(ValueError, match=r"cifar-100-python/train: refused to load the global (os|posix|nt)\.system"):
        load_cifar100(tmp_path)
    assert not marker.exists()


def test_only_the_three_numpy_globals_are_allowed(tmp_path):
    assert set(cifar._ALLOWED_GLOBALS) == {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
    # Another numpy global (a callable that reads files) is refused all the same.
    with pytest.raises(ValueError, match=r"refused to load the global numpy\.load"):
        cifar._unpickle(b"\x80\x02cnumpy\nload\nq\x00.", "x.pkl")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (b"fine_labels", None, r"missing key b'fine_labels'"),
        (b"data", None, r"missing key b'data'"),
        (b"data", np.zeros((20, 3000), np.uint8), r"b'data' must be a uint8 array of shape \(N, 3072\)"),
        (b"data", np.zeros((20, 3072), np.float32), r"b'data' must be a uint8 array"),
        (b"data", b"\x00" * 3073, r"not a multiple of 3072"),
        (b"fine_labels", list(range(19)), r"b'fine_labels' must be a list of 20 integer labels"),
        (b"fine_labels", [100] * 20, r"b'fine_labels' must lie in \[0, 100\)"),
        (b"coarse_labels", [20] * 20, r"b'coarse_labels' must lie in \[0, 20\)"),
    ],
)
def test_malformed_python_split(tmp_path, cifar_tools, key, value, message):
    fake = cifar_tools.make_fake()
    dicts = cifar_tools.python_dicts(fake)
    if value is None:
        del dicts["train"][key]
    else:
        dicts["train"][key] = value
    members = {f"cifar-100-python/{k}": cifar_tools.dumps(v) for k, v in dicts.items()}
    cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    with pytest.raises(ValueError, match=message):
        load_cifar100(tmp_path)


def test_missing_member_and_bad_meta(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake()
    members = cifar_tools.python_members(fake)
    del members["cifar-100-python/meta"]
    cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    with pytest.raises(ValueError, match="missing member cifar-100-python/meta"):
        load_cifar100(tmp_path)
    members["cifar-100-python/meta"] = cifar_tools.dumps({b"fine_label_names": [b"a"] * 10})
    cifar_tools.write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    with pytest.raises(ValueError, match="expected 100 non-empty fine label names; got 10"):
        load_cifar100(tmp_path)


def test_binary_wrong_record_size(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake()
    members = cifar_tools.binary_members(fake)
    # CIFAR-10 style records: one label byte + 3072 pixels.
    members["cifar-100-binary/train.bin"] = np.zeros((5, 3073), np.uint8).tobytes()
    cifar_tools.write_tar(tmp_path / "cifar-100-binary.tar.gz", members)
    with pytest.raises(ValueError, match=r"train.bin: 15365 bytes is not a whole number of 3074-byte.*CIFAR-10"):
        load_cifar100(tmp_path)


def test_binary_label_out_of_range(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake()
    fake.fine_test[3] = 150
    cifar_tools.write_tar(tmp_path / "cifar-100-binary.tar.gz", cifar_tools.binary_members(fake))
    with pytest.raises(ValueError, match=r"test.bin: fine label byte must lie in \[0, 100\)"):
        load_cifar100(tmp_path)


def test_load_with_download(tmp_path, cifar_tools, http_server):
    www, base = http_server
    fake = cifar_tools.make_fake(seed=13)
    served = cifar_tools.write_tar(www / "cifar-100-python.tar.gz", cifar_tools.python_members(fake))
    url = f"{base}/cifar-100-python.tar.gz"
    root = tmp_path / "root"
    # The default checksum is the official one, which this small archive cannot match.
    with pytest.raises(ValueError, match=f"expected {cifar.ARCHIVE_MD5['cifar-100-python.tar.gz']}"):
        load_cifar100(root, download=True, url=url, progress=False)
    assert not (root / "cifar-100-python.tar.gz").exists()
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    expect_equal(load_cifar100(root, download=True, url=url, md5=md5, progress=False), fake)
    assert (root / "cifar-100-python.tar.gz").is_file() and (root / "cifar-100-python.npz").is_file()
    with pytest.raises(ValueError, match="pass md5="):
        load_cifar100(tmp_path / "other", download=True, url=f"{base}/mirror.bin", progress=False)
