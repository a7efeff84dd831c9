"""Archives and downloads: unsafe members are refused before anything is written; downloads are checked (md5,
sha256, the caller's check) and renamed into place only when verified; an interrupted one resumes (HTTP Range)."""

from __future__ import annotations

import hashlib
import socket
import tarfile

import numpy as np
import pytest

from kdlab.data import download_url, extract_archive, load_cifar100


def test_unsafe_archives_are_refused(tmp_path, cifar_tools):
    fake = cifar_tools.make_fake()
    for bad in ("../escape.txt", "/abs/escape.txt", "cifar-100-binary/../../escape.txt"):
        members = {**cifar_tools.binary_members(fake), bad: b"x"}
        path = cifar_tools.write_tar(tmp_path / "in" / "evil.tar.gz", members)
        with pytest.raises(ValueError, match="unsafe member"):
            extract_archive(path, tmp_path / "out" / "deep")
        with pytest.raises(ValueError, match="unsafe member"):
            load_cifar100(path)
    assert not (tmp_path / "out").exists()  # nothing was written
    assert not (tmp_path / "escape.txt").exists()


def test_symlink_member_is_refused(tmp_path):
    path = tmp_path / "link.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("cifar-100-binary/train.bin")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ValueError, match="link or special file"):
        extract_archive(path, tmp_path / "out")


# ----------------------------------------------------------------------------------------------------------- download
def serve(cifar_tools, www, members):
    """Put an archive of ``members`` on the server as cifar-100-python.tar.gz; returns its path and md5."""
    served = cifar_tools.write_tar(www / "cifar-100-python.tar.gz", members)
    return served, hashlib.md5(served.read_bytes()).hexdigest()


def test_download_success_and_reuse(tmp_path, cifar_tools, http_server):
    www, base = http_server
    served, md5 = serve(cifar_tools, www, cifar_tools.python_members(cifar_tools.make_fake(seed=11)))
    dest = tmp_path / "dest"
    path = download_url(f"{base}/cifar-100-python.tar.gz", dest, md5, progress=False)
    assert path == dest / "cifar-100-python.tar.gz" and path.read_bytes() == served.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["cifar-100-python.tar.gz"]  # no temp files left
    served.unlink()  # a verified file already there is reused, without asking the server
    assert download_url(f"{base}/cifar-100-python.tar.gz", dest, md5.upper(), progress=False) == path


def test_download_wrong_md5_removes_partial_file(tmp_path, cifar_tools, http_server):
    www, base = http_server
    _, actual = serve(cifar_tools, www, cifar_tools.binary_members(cifar_tools.make_fake(seed=12)))
    dest = tmp_path / "dest"
    wrong = "0" * 32
    with pytest.raises(ValueError, match=rf"cifar-100-python.tar.gz .* has md5 {actual}, expected {wrong}"):
        download_url(f"{base}/cifar-100-python.tar.gz", dest, wrong, progress=False)
    assert list(dest.iterdir()) == []


def test_download_errors(tmp_path, http_server):
    _, base = http_server
    with pytest.raises(ConnectionError, match=r"could not download .*missing\.tar\.gz"):
        download_url(f"{base}/missing.tar.gz", tmp_path, "0" * 32, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"]  # the served folder only: no temporary file left
    with pytest.raises(ValueError, match="md5 must be 32 hex digits"):
        download_url(f"{base}/x.tar.gz", tmp_path, "abc")


# ------------------------------------------------------------------------------- resumable, sha256-checked downloads
def _payload(tmp, name="weights.bin", n=300_000, seed=0):
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    (tmp / name).write_bytes(data)
    return data, hashlib.sha256(data).hexdigest()


def test_an_interrupted_download_keeps_its_part_and_resumes_with_a_range_request(tmp_path, file_server):
    data, sha = _payload(file_server.root)
    dest = tmp_path / "dest"
    file_server.cut["weights.bin"] = 100_000  # announces 300000 bytes, closes after 100000
    with pytest.raises(ConnectionError, match=r"stopped after 100000 of 300000 bytes .*run the same command again to "
                                              r"resume it"):
        download_url(f"{file_server.base}/weights.bin", dest, sha256=sha[:8], progress=False)
    assert not (dest / "weights.bin").exists()  # never a partial file under the final name
    assert (dest / ".weights.bin.part").read_bytes() == data[:100_000]
    path = download_url(f"{file_server.base}/weights.bin", dest, sha256=sha[:8], progress=False)
    assert path.read_bytes() == data and sorted(p.name for p in dest.iterdir()) == ["weights.bin"]
    assert file_server.requests == [("weights.bin", None), ("weights.bin", "bytes=100000-")]
    assert file_server.sent["weights.bin"] == 300_000  # 100000, then only the 200000 that were missing


def test_a_server_that_ignores_the_range_sends_the_whole_file_again(tmp_path, file_server):
    data, sha = _payload(file_server.root)
    dest = tmp_path / "dest"
    file_server.cut["weights.bin"] = 1000
    with pytest.raises(ConnectionError):
        download_url(f"{file_server.base}/weights.bin", dest, sha256=sha, progress=False)
    file_server.ignore_range = True
    path = download_url(f"{file_server.base}/weights.bin", dest, sha256=sha, progress=False)
    assert path.read_bytes() == data  # the kept 1000 bytes were dropped, not doubled


def test_a_stale_part_longer_than_the_file_starts_over(tmp_path, file_server):
    data, sha = _payload(file_server.root, n=5000)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / ".weights.bin.part").write_bytes(b"x" * 6000)  # left by another file under the same name
    path = download_url(f"{file_server.base}/weights.bin", dest, sha256=sha, progress=False)
    assert path.read_bytes() == data
    assert file_server.requests == [("weights.bin", "bytes=6000-"), ("weights.bin", None)]  # 416, then all of it


def test_a_wrong_sha256_keeps_nothing(tmp_path, file_server):
    _, sha = _payload(file_server.root)
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=rf"weights.bin from .* has sha256 {sha}, expected 0badc0de; the partial file "
                                         "was removed"):
        download_url(f"{file_server.base}/weights.bin", dest, sha256="0badc0de", progress=False)
    assert list(dest.iterdir()) == []
    with pytest.raises(ValueError, match="sha256 must be 8 to 64 hex digits"):
        download_url(f"{file_server.base}/weights.bin", dest, sha256="abc")


def test_a_failing_check_keeps_nothing(tmp_path, file_server):
    _payload(file_server.root)
    dest = tmp_path / "dest"
    seen = []

    def check(partial):
        seen.append((partial.name, partial.stat().st_size))
        raise ValueError(f"{partial}: not what was expected")

    with pytest.raises(ValueError, match="not what was expected"):
        download_url(f"{file_server.base}/weights.bin", dest, check=check, progress=False)
    assert seen == [(".weights.bin.part", 300_000)] and list(dest.iterdir()) == []


def test_offline_is_one_line_naming_the_url_and_where_to_put_the_file(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: connection refused, like a machine without a route
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights.bin"
    with pytest.raises(ConnectionError) as err:
        download_url(url, tmp_path / "dest", sha256="0badc0de", progress=False, hint=", or use a mirror")
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"could not download {url} (")
    assert line.endswith(f"or put the file at {tmp_path / 'dest' / 'weights.bin'} yourself, or use a mirror")
    assert list((tmp_path / "dest").iterdir()) == []


def test_two_downloaders_of_one_file_take_turns(tmp_path, file_server, at_once):
    data, sha = _payload(file_server.root, n=2_000_000)
    dest = tmp_path / "dest"
    results, errors = at_once(lambda: download_url(f"{file_server.base}/weights.bin", dest, sha256=sha, progress=False),
                              2)
    assert not errors and results == [dest / "weights.bin"] * 2 and results[0].read_bytes() == data
    assert len(file_server.requests) == 1  # the second found the first's verified file
