"""Dataset archives: safe (gzipped) tar reading and extraction, and md5-checked downloads.

Nothing here knows a dataset. Every member of an archive is checked before anything is read or written: absolute
paths, ``..`` components, links and device files are refused. A gzip stream is decompressed whole before parsing, so
truncation and CRC errors are always caught. A download streams into a temporary file beside its target, is
md5-checked and only then renamed into place (:func:`kdlab._io.atomic_write`), so the final name only ever holds a
verified file. Errors name the file, say what is wrong and end with ``remedy``: what to do (a loader passes its own,
e.g. where to get the dataset).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm.auto import tqdm

from kdlab._io import atomic_write

__all__ = ["download_url", "extract_archive", "read_members"]

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


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_url(
    url: str,
    dest: str | os.PathLike,
    md5: str,
    *,
    filename: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` into directory ``dest`` and verify its md5; returns the file's path.

    Streams to a temporary file in ``dest`` (with a tqdm bar), checks the md5, then renames atomically, so the final
    name only ever holds a verified file. On a mismatch the temporary file is removed and ``ValueError`` names the
    file and both checksums. An existing file with the right md5 is reused without downloading.
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"url must be a non-empty string; got {url!r}")
    if not isinstance(md5, str) or not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise ValueError(f"md5 must be 32 hex digits; got {md5!r}")
    md5 = md5.lower()
    name = filename or PurePosixPath(urllib.parse.urlparse(url).path).name
    if not name or name in (".", ".."):
        raise ValueError(f"cannot tell a file name from url {url!r}; pass filename=")
    target = Path(dest) / name
    if target.is_file():
        if _md5(target) == md5:
            return target
        warnings.warn(f"{target} exists but its md5 is not {md5}; downloading it again", RuntimeWarning, stacklevel=2)

    def fetch(out: BinaryIO) -> None:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError) as err:
            raise ConnectionError(
                f"could not download {url} ({err}); check the URL and your connection, or put the file at "
                f"{target} yourself"
            ) from None
        digest = hashlib.md5(usedforsecurity=False)
        with response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        actual = digest.hexdigest()
        if actual != md5:  # raised inside the atomic write: the temporary file is removed, the target untouched
            raise ValueError(
                f"downloaded {name} from {url} has md5 {actual}, expected {md5}; the partial file was removed. "
                f"The server sent a different or damaged file: retry, or use another mirror"
            )

    atomic_write(target, fetch)
    return target
