"""Published teachers by name, fetched once: ``repdistiller:<arch>`` and ``torchvision:<arch>[.<weights>]``.

``teacher.checkpoint`` (and ``kdlab teacher fetch NAME``, ``kdlab eval --teacher NAME``) may name a teacher that its
authors published instead of a file; :func:`resolve` turns the name into a weights file, downloading and converting it
the first time:

* ``repdistiller:<arch>``: the CIFAR-100 teachers of RepDistiller (Tian et al., ICLR 2020) in the archive that
  mdistiller (Zhao et al., CVPR 2022) releases, ``cifar_teachers.tar`` (``cifar_teachers/<arch>_vanilla/
  ckpt_epoch_240.pth``, the files every CIFAR KD paper starts from). **No checksum of it is published**, so it is
  accepted when every member passes the CIFAR-100 reader's safe tar rules (:func:`kdlab.data.archive.read_members`)
  and the six teacher checkpoints are there; its sha256 is then recorded beside it (``cifar_teachers.tar.sha256``,
  in ``sha256sum -c`` format) and checked on every later use. A member is read with ``torch.load(weights_only=True)``
  (which may build only tensors and the inert data types of :data:`kdlab.models.weights.INERT_GLOBALS`), renamed to
  kdlab's keys (:mod:`kdlab.models.foreign`) and stored as safetensors.
* ``torchvision:<arch>[.<weights>]``: torchvision's ImageNet weights, ``IMAGENET1K_V1`` (the weights of the KD papers)
  unless ``.IMAGENET1K_V2`` is named. Their URLs and the SHA-256 prefixes in their file names are written below as
  facts read off torchvision's source (``torchvision/models/resnet.py``, ``mobilenetv2.py``); the download is checked
  against the prefix as torchvision itself checks it, read with ``weights_only=True`` and stored as safetensors.
* Anything else is a path, used as it is.

Where: ``$KDLAB_DATA/teachers/<scheme>/<name>.safetensors`` (arch, class count and where it came from in the
metadata); downloads go to ``$KDLAB_DATA/teachers/downloads/`` (resumable, verified before they get their name, see
:func:`kdlab.data.archive.download_url`). The archive stays there for the other five teachers; a torchvision file is
removed once converted. Without internet: put the published file into ``downloads/`` by hand, give the URL or path of
a copy (``url=``, ``kdlab teacher fetch --url``), or set ``$KDLAB_TEACHER_MIRROR`` to a base URL or folder under which
the published file names are found.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from kdlab._io import CheckpointError, atomic_write_text
from kdlab.data import default_root
from kdlab.data.archive import directory_lock, download_url, file_digest, read_members
from kdlab.models.weights import INERT_GLOBALS, model_from_state, read_state_dict, save_model, state_from_bytes

__all__ = ["MIRROR_ENV", "PublishedTeacher", "catalogue", "fetch", "lookup", "resolve", "teachers_dir"]

#: Environment variable: a base URL under which the published files are found by their names (a mirror).
MIRROR_ENV = "KDLAB_TEACHER_MIRROR"

REPDISTILLER_URL = "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar"
_CKPT = "ckpt_epoch_240.pth"
# kdlab arch -> (the archive's folder, the teacher's CIFAR-100 top-1 as the KD papers quote it, docs/reference/methods.md
# §11). The folders are those mdistiller's mdistiller/models/cifar/__init__.py reads (cifar_model_dict).
_REPDISTILLER = {
    "resnet56": ("resnet56_vanilla", 72.34),
    "resnet110": ("resnet110_vanilla", 74.31),
    "resnet32x4": ("resnet32x4_vanilla", 79.42),
    "wrn_40_2": ("wrn_40_2_vanilla", 75.61),
    "vgg13": ("vgg13_vanilla", 74.64),
    "cifar_resnet50": ("ResNet50_vanilla", 79.34),  # RepDistiller's "ResNet50"
}

TORCHVISION_URL = "https://download.pytorch.org/models/"
# (arch, weights) -> (file name, ImageNet top-1 as torchvision states it): torchvision/models/{resnet,mobilenetv2}.py,
# the *_Weights enums. The 8 hex digits in a file name are the start of its SHA-256.
_TORCHVISION = {
    ("resnet18", "IMAGENET1K_V1"): ("resnet18-f37072fd.pth", 69.758),
    ("resnet34", "IMAGENET1K_V1"): ("resnet34-b627a593.pth", 73.314),
    ("resnet50", "IMAGENET1K_V1"): ("resnet50-0676ba61.pth", 76.130),
    ("resnet50", "IMAGENET1K_V2"): ("resnet50-11ad3fa6.pth", 80.858),
    ("resnet101", "IMAGENET1K_V1"): ("resnet101-63fe2227.pth", 77.374),
    ("resnet101", "IMAGENET1K_V2"): ("resnet101-cd907fc2.pth", 81.886),
    ("resnet152", "IMAGENET1K_V1"): ("resnet152-394f9c45.pth", 78.312),
    ("resnet152", "IMAGENET1K_V2"): ("resnet152-f82ba261.pth", 82.284),
    ("mobilenet_v2", "IMAGENET1K_V1"): ("mobilenet_v2-b0353104.pth", 71.878),
    ("mobilenet_v2", "IMAGENET1K_V2"): ("mobilenet_v2-7ebf99e0.pth", 72.154),
}
DEFAULT_WEIGHTS = "IMAGENET1K_V1"  # the KD papers' (torchvision's own default is V2 where V2 exists)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]+):(.*)$")  # two letters at least: "C:\..." stays a path


@dataclass(frozen=True)
class PublishedTeacher:
    """One published teacher: ``spec`` is its full name (``torchvision:resnet34.IMAGENET1K_V1``)."""

    spec: str
    arch: str
    num_classes: int
    url: str  # of the published file
    sha256: str | None  # published checksum of the file (torchvision: a prefix); None: none is published
    member: str | None  # the folder/file inside the archive, for an archive
    top1: float  # published top-1 (%)

    @property
    def scheme(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def stem(self) -> str:
        return self.spec.split(":", 1)[1]


def catalogue() -> list[PublishedTeacher]:
    """Every published teacher kdlab can fetch, RepDistiller's then torchvision's."""
    out = [PublishedTeacher(f"repdistiller:{arch}", arch, 100, REPDISTILLER_URL, None, f"{folder}/{_CKPT}", top1)
           for arch, (folder, top1) in _REPDISTILLER.items()]
    for (arch, weights), (name, top1) in _TORCHVISION.items():
        prefix = name.rsplit("-", 1)[1].split(".")[0]
        out.append(PublishedTeacher(f"torchvision:{arch}.{weights}", arch, 1000, TORCHVISION_URL + name, prefix, None,
                                    top1))
    return out


def lookup(spec: str) -> PublishedTeacher | None:
    """The published teacher ``spec`` names, or None when it is a path. An unknown name in a known scheme, or an
    unknown scheme that is not an existing file, is a ``ValueError`` listing what there is."""
    m = _SCHEME.match(str(spec))
    if m is None or Path(spec).exists():
        return None
    scheme, name = m.groups()
    known = catalogue()
    if scheme == "repdistiller":
        hit = [t for t in known if t.spec == spec]
    elif scheme == "torchvision":
        arch, _, weights = name.partition(".")
        hit = [t for t in known if t.spec == f"torchvision:{arch}.{weights or DEFAULT_WEIGHTS}"]
    else:
        raise ValueError(f"{spec}: unknown teacher source {scheme!r}: a published teacher is named "
                         "repdistiller:<arch> or torchvision:<arch>[.<weights>] (`kdlab teacher fetch --list`), "
                         "anything else is a file path (no such file here)")
    if not hit:
        names = ", ".join(t.stem for t in known if t.scheme == scheme)
        raise ValueError(f"{spec}: no such published teacher; {scheme} publishes {names}")
    return hit[0]


def teachers_dir(root: str | os.PathLike | None = None) -> Path:
    """``root/teachers`` (default ``$KDLAB_DATA/teachers``): converted teachers and their downloads."""
    return Path(root).expanduser() / "teachers" if root is not None else default_root() / "teachers"


def resolve(spec: str | os.PathLike, *, root: str | os.PathLike | None = None, url: str | None = None,
            progress: bool | None = None) -> Path:
    """The weights file ``spec`` names: a published teacher (fetched and converted the first time, see the module
    docstring) or a path (returned as it is, existing or not). ``url``: where to download the published file from
    instead (a mirror's URL, or a local copy's path); ``progress``: the download's bar (None: on a terminal only)."""
    teacher = lookup(str(spec))
    if teacher is None:
        return Path(spec)
    return fetch(teacher, root=root, url=url, progress=progress)


def fetch(teacher: PublishedTeacher, *, root: str | os.PathLike | None = None, url: str | None = None,
          progress: bool | None = None) -> Path:
    """``teacher`` as a kdlab weights file under :func:`teachers_dir`, downloaded and converted if it is not there
    yet. Processes fetching the same teacher (the ranks of a torchrun job) take turns; the second finds the file."""
    base = teachers_dir(root)
    out = base / teacher.scheme / f"{teacher.stem}.safetensors"
    with directory_lock(out.parent):
        if out.is_file():
            return out
        source = _as_url(url) if url else _mirrored(teacher.filename) or teacher.url
        hint = (f", or set ${MIRROR_ENV} to a base URL or folder that has {teacher.filename}" if not url and
                not os.environ.get(MIRROR_ENV) else "")
        convert = _from_archive if teacher.member is not None else _from_file
        check = _teacher_members if teacher.member is not None else None  # on the .part, before it gets its name
        downloaded = download_url(source, base / "downloads", sha256=teacher.sha256, filename=teacher.filename,
                                  progress=progress, check=check, hint=hint)
        convert(teacher, downloaded, source, out)
    return out


def _as_url(where: str) -> str:
    """A URL as it is; a local path (no scheme) as a ``file://`` URL."""
    return where if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", where) else Path(where).expanduser().resolve().as_uri()


def _mirrored(filename: str) -> str | None:
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{_as_url(mirror).rstrip('/')}/{filename}" if mirror else None


def _from_file(teacher: PublishedTeacher, path: Path, source: str, out: Path) -> None:
    """torchvision's file (a bare state dict; its prefix was checked) → safetensors; the download is removed."""
    state, _ = read_state_dict(path)  # torch.load(weights_only=True)
    model = model_from_state(state, {}, path, teacher.arch, teacher.num_classes)
    save_model(out, model, arch=teacher.arch, num_classes=teacher.num_classes,
               extra={"published": teacher.spec, "url": source, "sha256": file_digest(path)})
    path.unlink()  # the safetensors file holds the same tensors


def _teacher_members(archive: Path) -> dict[str, tuple[str, memoryview]]:
    """{arch: (member name, bytes)} of every RepDistiller teacher in the archive, read with the safe tar rules; a
    ``ValueError`` when a member is unsafe or a teacher checkpoint is missing."""
    remedy = "delete it and fetch it again (kdlab teacher fetch repdistiller:<arch>)"
    members = read_members(archive, remedy=remedy)
    found, missing = {}, []
    for arch, (folder, _) in _REPDISTILLER.items():
        want = f"{folder}/{_CKPT}"
        names = [n for n in members if n == want or n.endswith("/" + want)]
        if len(names) == 1:
            found[arch] = (names[0], members[names[0]])
        else:
            missing.append(want)
    if missing:
        more = f" (nor {len(missing) - 1} more of the teacher checkpoints)" if len(missing) > 1 else ""
        raise ValueError(f"{archive}: not mdistiller's cifar_teachers.tar: no member {missing[0]}{more}; {remedy}")
    return found


def _from_archive(teacher: PublishedTeacher, archive: Path, source: str, out: Path) -> None:
    """One teacher of ``cifar_teachers.tar`` → safetensors. The archive has no published checksum: its sha256 is
    recorded on first use and must match on every later one."""
    members = _teacher_members(archive)
    digest = file_digest(archive)
    record = archive.with_name(archive.name + ".sha256")
    if record.is_file():
        recorded = (record.read_text(encoding="utf-8").split() or [""])[0]
        if recorded != digest:
            raise CheckpointError(f"{archive} changed since it was first used: sha256 {digest}, recorded {recorded} "
                                  f"in {record}; delete both and fetch again")
    else:
        atomic_write_text(record, f"{digest}  {archive.name}\n")
        print(f"kdlab: {archive.name} has no published checksum; its members were checked and its sha256 {digest} "
              f"recorded in {record}", file=sys.stderr, flush=True)
    name, data = members[teacher.arch]
    where = f"{archive}:{name}"
    state = state_from_bytes(data, where, INERT_GLOBALS)
    model = model_from_state(state, {}, where, teacher.arch, teacher.num_classes)
    save_model(out, model, arch=teacher.arch, num_classes=teacher.num_classes,
               extra={"published": teacher.spec, "url": source, "archive_sha256": digest, "member": name,
                      "member_sha256": hashlib.sha256(data).hexdigest()})
