"""Archives and downloads: unsafe members are refused before anything is written; downloads are md5-checked and
renamed into place only when verified."""

from __future__ import annotations

import hashlib
import tarfile

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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["www"]  # the served folder only: no temporary file left
    with pytest.raises(ValueError, match="md5 must be 32 hex digits"):
        download_url(f"{base}/x.tar.gz", tmp_path, "abc")
