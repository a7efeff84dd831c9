"""Archives and downloads: safe (gzipped) tar reading and extraction, and verified, resumable downloads.

Nothing here knows a dataset. Every member of an archive is checked before anything is read or written: absolute
paths, ``..`` components, links and device files are refused. A gzip stream is decompressed whole before parsing, so
truncation and CRC errors are always caught. A download streams into a ``.part`` file beside its target, is checked
(md5 and/or sha256, and the caller's own check) and only then renamed into place (:func:`kdlab._io.atomic_write`), so
the final name only ever holds a verified file; an interrupted one is resumed with an HTTP Range request. Errors name
the file, say what is wrong and end with ``remedy``: what to do (a loader passes its own, e.g. where to get the
dataset).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from kdlab._bar import tqdm
from kdlab._io import atomic_write

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["directory_lock", "download_url", "extract_archive", "file_digest", "read_members"]

#: What to do about a damaged archive when the caller does not say.
REMEDY = "get a fresh copy"


def _check_member(member: tarfile.TarInfo, archive: Path, remedy: str) -> None:
    """Refuse members that could write outside the destination or are not plain files/directories."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise ValueError(
            f"{archive}: unsafe member {name!r} (absolute path or '..'); refusing to read or extract it. "
            f"Official dataset archives contain no such paths: {remedy}"
        )
    if not (member.isfile() or member.isdir()):
        raise ValueError(
            f"{archive}: member {name!r} is a link or special file; refusing it. Official dataset archives contain "
            f"only regular files and directories: {remedy}"
        )


def _decompress(archive: Path, remedy: str) -> bytes:
    raw = archive.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # not gzip: maybe a plain tar
        return raw
    try:
        # Whole-stream decompression also checks gzip's CRC-32 and length trailer, catching silent bit flips.
        return gzip.decompress(raw)
    except EOFError:
        raise ValueError(
            f"{archive} is truncated (the gzip stream ends early, {len(raw)} bytes on disk); the download was "
            f"probably interrupted. Delete it and {remedy}"
        ) from None
    except (gzip.BadGzipFile, zlib.error, OSError) as err:
        raise ValueError(f"{archive} has corrupt gzip data ({err}); delete it and {remedy}") from None


def read_members(archive: str | os.PathLike, *, remedy: str = REMEDY) -> dict[str, memoryview]:
    """Every regular file of a (gzipped) tar archive, by normalised name, read in memory without touching the disk.

    ``ValueError`` for a truncated, corrupt or empty archive or an unsafe member, ending with ``remedy``.
    """
    archive = Path(archive)
    data = _decompress(archive, remedy)
    view = memoryview(data)
    members: dict[str, memoryview] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                _check_member(member, archive, remedy)
                if not member.isfile():
                    continue
                end = member.offset_data + member.size
                if end > len(data):
                    raise ValueError(
                        f"{archive} is truncated (member {member.name!r} is cut off); delete it and {remedy}"
                    )
                members[str(PurePosixPath(member.name))] = view[member.offset_data : end]
    except tarfile.TarError as err:
        raise ValueError(
            f"{archive} is not a valid tar archive or is truncated ({err}); delete it and {remedy}"
        ) from None
    if not members:
        raise ValueError(f"{archive} contains no files (truncated or empty archive); delete it and {remedy}")
    return members


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, *, remedy: str = REMEDY) -> Path:
    """Safely extract a (gzipped) tar archive into ``dest``; returns ``dest``.

    Every member is checked first: absolute paths, ``..`` components, links and device files are refused with a
    ``ValueError`` and nothing is written. Where available (Python ≥ 3.12, 3.11.4, 3.10.12) ``filter="data"``
    enforces the same again inside :mod:`tarfile`.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive} does not exist; {remedy}")
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive, remedy)
            dest.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - old Pythons; members were vetted above
                tar.extractall(dest, members=members)
    except EOFError:
        raise ValueError(f"{archive} is truncated; delete it and {remedy}") from None
    except (tarfile.TarError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(f"{archive} is corrupt or truncated ({err}); delete it and {remedy}") from None
    return dest


def _hasher(algorithm: str):
    return hashlib.new(algorithm, usedforsecurity=False)  # a checksum against damage, not a signature


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (read in 1 MiB chunks): ``"md5"`` or ``"sha256"``."""
    h = _hasher(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_hex(value: str | None, what: str, lengths: range) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]+", value) or len(value) not in lengths:
        digits = f"{lengths.start}" if len(lengths) == 1 else f"{lengths.start} to {lengths.stop - 1}"
        raise ValueError(f"{what} must be {digits} hex digits; got {value!r}")
    return value.lower()


def _mismatch(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """Why ``path`` does not have the expected checksums (a sha256 may be a prefix, as torchvision's file names
    give it), or None when it has them."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is not None:
            actual = file_digest(path, algorithm)
            if not actual.startswith(expected):  # an md5 is always whole (32 digits)
                return f"{algorithm} {actual}, expected {expected}"
    return None


@contextmanager
def directory_lock(directory: Path):
    """Hold an exclusive lock on ``directory``: two processes downloading into it (the ranks of a torchrun job) take
    turns, and the second finds the first's file. The lock is ``flock`` on the directory itself, so no file is left
    behind; where the file system refuses that (NFS emulates flock with write locks, which a directory cannot take),
    on a hidden ``.lock`` file in it. Without ``fcntl`` (Windows) nothing is locked."""
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # pragma: no cover - NFS: EBADF / ENOLCK for a directory
            os.close(fd)
            fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def download_url(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    *,
    sha256: str | None = None,
    filename: str | None = None,
    progress: bool | None = True,
    timeout: float = 60.0,
    check: Callable[[Path], None] | None = None,
    hint: str = "",
) -> Path:
    """Download ``url`` into directory ``dest``, verified; returns the file's path.

    The bytes go to ``dest/.NAME.part`` (with a tqdm bar; ``progress=None`` shows it on a terminal only); only when
    the transfer is complete, the checksums match (``md5``; ``sha256``, whole or a prefix of at least 8 digits) and
    ``check(partial)`` has not raised, the file is renamed to ``dest/NAME`` (:func:`kdlab._io.atomic_write`), so that
    name only ever holds a verified file. An interrupted transfer (connection lost, a server that sends less than it
    announced, Ctrl-C) keeps the ``.part`` file and raises ``ConnectionError``: the next call resumes it with an HTTP
    Range request (a server that ignores the range sends the whole file again). Wrong content (a checksum mismatch,
    ``check`` raising ``ValueError``) removes it and raises ``ValueError`` naming both checksums. An existing ``NAME``
    is reused when it matches (or when no checksum is given). Processes downloading into the same ``dest`` take turns.
    ``hint`` ends the line said when the server cannot be reached (e.g. where a mirror can be named).
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"url must be a non-empty string; got {url!r}")
    md5 = _check_hex(md5, "md5", range(32, 33))
    sha256 = _check_hex(sha256, "sha256", range(8, 65))
    name = filename or PurePosixPath(urllib.parse.urlparse(url).path).name
    if not name or name in (".", "..") or "/" in name:
        raise ValueError(f"cannot tell a file name from url {url!r}; pass filename=")
    target = Path(dest) / name
    partial = target.parent / f".{name}.part"

    def fetch(out: BinaryIO) -> None:
        offset = os.fstat(out.fileno()).st_size
        digests = {a: _hasher(a) for a in ("md5", "sha256")}
        if offset:  # resuming: the digests start from the bytes already there
            with open(partial, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    for h in digests.values():
                        h.update(chunk)
        response = _open(url, offset, timeout, target, hint)
        if response is None:  # the server cannot serve the rest (416): start over
            response, offset = _open(url, 0, timeout, target, hint), 0
        with response:
            status = getattr(response, "status", None)
            if offset and (status != 206 or not _resumes_at(response, offset)):  # the whole file is coming again
                offset = 0
            if not offset:
                out.seek(0)
                out.truncate()
                digests = {a: _hasher(a) for a in ("md5", "sha256")}
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            received = offset
            with tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=name,
                      disable=None if progress is None else not progress) as bar:
                while True:
                    try:
                        chunk = response.read(1 << 20)
                    except (OSError, http.client.HTTPException) as err:  # the network, not the disk (write below)
                        out.flush()
                        raise _interrupted(url, partial, received, total, err) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    for h in digests.values():
                        h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received < total:
            out.flush()
            raise _interrupted(url, partial, received, total, "the server closed the connection")
        for algorithm, expected in (("md5", md5), ("sha256", sha256)):
            actual = digests[algorithm].hexdigest()
            if expected is not None and not actual.startswith(expected):
                raise ValueError(
                    f"downloaded {name} from {url} has {algorithm} {actual}, expected {expected}; the partial file "
                    f"was removed. The server sent a different or damaged file: retry, or use another mirror"
                )
        out.flush()
        if check is not None:
            check(partial)

    with directory_lock(target.parent):
        if target.is_file():  # downloaded before, or put there by hand
            why = _mismatch(target, md5, sha256)
            if why is None:
                return target
            warnings.warn(f"{target} exists but has {why}; downloading it again", RuntimeWarning, stacklevel=2)
        try:
            atomic_write(target, fetch, partial=partial)
        except BaseException as exc:
            # keep what an interrupted transfer got (the next call resumes it); wrong or no content goes
            if partial.exists() and (not isinstance(exc, (ConnectionError, KeyboardInterrupt, OSError))
                                     or partial.stat().st_size == 0):
                partial.unlink()
            raise
    return target


def _open(url: str, offset: int, timeout: float, target: Path, hint: str):
    """The response to GET ``url`` (from byte ``offset`` on), None when the server says the range cannot be served
    (416), or a one-line ``ConnectionError`` that names the URL and where to put the file by hand."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return None
        reason = f"HTTP {err.code} {err.reason}"
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = str(getattr(err, "reason", None) or err) or type(err).__name__
    raise ConnectionError(f"could not download {url} ({reason}); check the URL and your connection, or put the "
                          f"file at {target} yourself{hint}")


def _resumes_at(response, offset: int) -> bool:
    """A 206 answer whose Content-Range starts at ``offset``."""
    m = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return m is not None and int(m.group(1)) == offset


def _interrupted(url: str, partial: Path, received: int, total: int | None, why) -> ConnectionError:
    of = f" of {total}" if total is not None else ""
    return ConnectionError(f"the download of {url} stopped after {received}{of} bytes ({why}); run the same command "
                           f"again to resume it ({partial} is kept until then)")
