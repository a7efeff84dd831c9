"""Builders for small CIFAR-100 archives in the official formats, and a local HTTP server."""

from __future__ import annotations

import functools
import http.server
import io
import pickle
import struct
import tarfile
import threading
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
def http_server(tmp_path, monkeypatch):
    """Serve ``tmp_path/www`` on 127.0.0.1 (ephemeral port); yields ``(directory, base_url)``."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "www"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
