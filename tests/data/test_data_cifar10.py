"""CIFAR-10 reading: both official formats (python batches, binary records of 1 label byte + 3072 pixels), the
extracted trees, downloads from the official URL with the official checksums, and the archive of the other CIFAR."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import numpy as np
import pytest
import torch

import kdlab.data.cifar as cifar
from kdlab import builder, models
from kdlab.data import CropFlip, extract_archive, load_cifar10, load_cifar100, load_dataset
from kdlab.models import save_model

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def fake10(per_batch=4, n_test=6, seed=0):
    """Five training batches and a test batch of random images, labels 0..9 (both ends present)."""
    rng = np.random.default_rng(seed)

    def part(n):
        y = rng.integers(0, 10, size=n)
        y[:2] = (0, 9)
        return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), [int(v) for v in y]

    return [part(per_batch) for _ in range(5)], part(n_test)


def python_members(train, test, dumps, style="py2"):
    def batch(x, y, label):
        return dumps({b"batch_label": label, b"labels": y, b"data": x,
                      b"filenames": [f"img_{i}.png".encode() for i in range(len(y))]}, style)

    members = {f"cifar-10-batches-py/data_batch_{i + 1}": batch(x, y, f"training batch {i + 1} of 5".encode())
               for i, (x, y) in enumerate(train)}
    members["cifar-10-batches-py/test_batch"] = batch(*test, b"testing batch 1 of 1")
    members["cifar-10-batches-py/batches.meta"] = dumps(
        {b"label_names": [n.encode() for n in NAMES], b"num_cases_per_batch": 10000, b"num_vis": 3072}, style)
    return members


def records(x, y):
    return np.concatenate([np.asarray(y, np.uint8)[:, None], x], axis=1).tobytes()


def binary_members(train, test):
    members = {f"cifar-10-batches-bin/data_batch_{i + 1}.bin": records(x, y) for i, (x, y) in enumerate(train)}
    members["cifar-10-batches-bin/test_batch.bin"] = records(*test)
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(NAMES) + "\n\n").encode()  # trailing blank line
    return members


def expect_equal(splits, train, test):
    """The five batches concatenated in order, the test batch, the names, CIFAR-10's statistics."""
    assert splits.name == "cifar10" and splits.num_classes == 10
    x_train = np.concatenate([x for x, _ in train])
    assert splits.x_train.dtype == torch.uint8 and splits.x_train.shape == (len(x_train), 3, 32, 32)
    np.testing.assert_array_equal(splits.x_train.numpy().reshape(-1, 3072), x_train)
    np.testing.assert_array_equal(splits.x_test.numpy().reshape(-1, 3072), test[0])
    assert int(splits.x_train[0, 2, 1, 3]) == int(x_train[0, 2048 + 32 + 3])  # R, G, B planes, row-major
    assert splits.y_train.tolist() == sum((y for _, y in train), []) and splits.y_test.tolist() == test[1]
    assert splits.class_names == tuple(NAMES)
    assert splits.mean == (0.4914, 0.4822, 0.4465) and splits.std == (0.2470, 0.2435, 0.2616)
    assert splits.train_augment == CropFlip(32, padding=4)


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_python_archive(tmp_path, cifar_tools, style):
    train, test = fake10(seed=1)
    cifar_tools.write_tar(tmp_path / "cifar-10-python.tar.gz", python_members(train, test, cifar_tools.dumps, style))
    expect_equal(load_cifar10(tmp_path), train, test)
    assert (tmp_path / "cifar-10-python.npz").is_file()
    expect_equal(load_dataset("cifar10", root=tmp_path), train, test)  # from the cache now


def test_binary_archive_and_extracted_trees(tmp_path, cifar_tools):
    train, test = fake10(seed=2)
    archive = cifar_tools.write_tar(tmp_path / "cifar-10-binary.tar.gz", binary_members(train, test))
    expect_equal(load_cifar10(tmp_path, fmt="binary"), train, test)
    tree = tmp_path / "tree"
    extract_archive(archive, tree)
    expect_equal(load_cifar10(tree / "cifar-10-batches-bin"), train, test)
    expect_equal(load_cifar10(tree), train, test)  # a directory holding the extracted tree under its name


def test_a_hostile_pickle_never_runs(tmp_path, cifar_tools):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    members = python_members(*fake10(), cifar_tools.dumps)
    members["cifar-10-batches-py/data_batch_3"] = pickle.dumps({b"data": Exploit()}, protocol=3)
    cifar_tools.write_tar(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(ValueError, match=r"data_batch_3: refused to load the global (os|posix|nt)\.system. "
                                         r"Official CIFAR-10 pickles"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def test_broken_inputs_are_named(tmp_path, cifar_tools):
    train, test = fake10()
    members = python_members(train, test, cifar_tools.dumps)
    del members["cifar-10-batches-py/data_batch_5"]
    cifar_tools.write_tar(tmp_path / "a" / "cifar-10-python.tar.gz", members)
    with pytest.raises(ValueError, match="missing member cifar-10-batches-py/data_batch_5"):
        load_cifar10(tmp_path / "a")
    members = binary_members(train, test)
    members["cifar-10-batches-bin/test_batch.bin"] = records(test[0], [10] * len(test[1]))
    cifar_tools.write_tar(tmp_path / "b" / "cifar-10-binary.tar.gz", members)
    with pytest.raises(ValueError, match=r"test_batch.bin: label byte must lie in \[0, 10\)"):
        load_cifar10(tmp_path / "b")
    members["cifar-10-batches-bin/test_batch.bin"] = records(test[0], test[1])[:-1]
    cifar_tools.write_tar(tmp_path / "c" / "cifar-10-binary.tar.gz", members)
    with pytest.raises(ValueError, match=r"not a whole number of 3073-byte CIFAR-10 records \(1 label byte"):
        load_cifar10(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found in .*cifar-10-python.tar.gz.*load_cifar10"):
        load_cifar10(tmp_path / "empty")


def test_the_other_cifar_is_recognised_both_ways(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake()
    cifar_tools.write_tar(tmp_path / "x" / "cifar-10-python.tar.gz", cifar_tools.python_members(fake))
    with pytest.raises(ValueError, match=r"is a CIFAR-100 archive \(cifar-100-python/\); kdlab's cifar10 needs"):
        load_cifar10(tmp_path / "x")
    cifar_tools.write_tar(tmp_path / "y" / "cifar-100-python.tar.gz", python_members(*fake10(), cifar_tools.dumps))
    with pytest.raises(ValueError, match=r"is a CIFAR-10 archive .*data.name=cifar10 reads this one"):
        load_cifar100(tmp_path / "y")
    members = python_members(*fake10(), cifar_tools.dumps)
    members["cifar-10-batches-py/test_batch"] = cifar_tools.dumps({b"fine_labels": [1], b"data": np.zeros((1, 3072),
                                                                                                           np.uint8)})
    cifar_tools.write_tar(tmp_path / "z" / "cifar-10-python.tar.gz", members)
    with pytest.raises(ValueError, match=r"test_batch is a CIFAR-100 batch"):
        load_cifar10(tmp_path / "z")


def test_download_from_the_official_url_with_the_official_checksum(tmp_path, cifar_tools, monkeypatch):
    train, test = fake10(seed=5)
    asked = []

    def fake_download(url, root, md5, progress=True):  # no network: record what would be fetched, serve the fake
        asked.append((url, md5))
        name = url.rsplit("/", 1)[1]
        members = python_members(train, test, cifar_tools.dumps) if "python" in name else binary_members(train, test)
        return cifar_tools.write_tar(root / name, members)

    monkeypatch.setattr(cifar, "download_url", fake_download)
    expect_equal(load_cifar10(tmp_path / "p", download=True, progress=False), train, test)
    expect_equal(load_cifar10(tmp_path / "b", download=True, fmt="binary", progress=False), train, test)
    assert asked == [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
                     ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")]


def test_a_mirror_download_is_checked(tmp_path, cifar_tools, http_server):
    www, base = http_server
    train, test = fake10(seed=6)
    served = cifar_tools.write_tar(www / "cifar-10-python.tar.gz", python_members(train, test, cifar_tools.dumps))
    url = f"{base}/cifar-10-python.tar.gz"
    with pytest.raises(ValueError, match=f"expected {cifar.ARCHIVE_MD5['cifar-10-python.tar.gz']}"):
        load_cifar10(tmp_path / "r", download=True, url=url, progress=False)
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    expect_equal(load_cifar10(tmp_path / "r", download=True, url=url, md5=md5, progress=False), train, test)
    with pytest.raises(ValueError, match="not an official CIFAR-10 archive name"):
        load_cifar10(tmp_path / "s", download=True, url=f"{base}/cifar-100-python.tar.gz", progress=False)


def test_a_recipe_trains_from_a_generated_cifar10_archive(tmp_path, cifar_tools):
    rng = np.random.default_rng(0)

    def batch(n):
        return cifar_tools.dumps({b"labels": [int(v) for v in rng.integers(0, 10, n)],
                                  b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)})

    members = {f"cifar-10-batches-py/data_batch_{i}": batch(16) for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = batch(16)
    members["cifar-10-batches-py/batches.meta"] = cifar_tools.dumps({b"label_names": [b"c%d" % i for i in range(10)]})
    cifar_tools.write_tar(tmp_path / "data" / "cifar-10-python.tar.gz", members)
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_model(teacher, models.create("resnet56", 10), arch="resnet56", num_classes=10)
    cfg = builder.load_config("cifar10/resnet56-resnet20/dkd", [
        f"data.root={tmp_path / 'data'}", f"teacher.checkpoint={teacher}", f"out_dir={tmp_path / 'run'}",
        "optim.epochs=1", "optim.batch_size=16", "run.progress=false", "run.threads=1",
        "distill_data.second_view=cutmix"])
    builder.distil(cfg)
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["config"]["data"]["name"] == "cifar10" and final["fidelity"]["n"] == 16
    assert "loss_second_view" in (tmp_path / "run" / "metrics.jsonl").read_text()
