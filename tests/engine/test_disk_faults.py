"""Filesystem faults end with one line naming the path and the cause (exit 2: choose another out_dir; exit 5: free
space and rerun), and lose nothing: the last good checkpoint stays loadable and the rerun resumes.

Real faults where the machine allows them without root: a file-size limit (RLIMIT_FSIZE: writes past it fail with
EFBIG) in a subprocess, and small or read-only tmpfs mounts inside an unprivileged user namespace (`unshare -rm`;
those tests are skipped where user namespaces are off). A full disk during a checkpoint is also simulated in-process
(fsync raising ENOSPC) to compare the resumed run with an uninterrupted one.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdlab import _io, models
from kdlab.cli import main
from kdlab.data import load_dataset
from kdlab.engine import loop
from kdlab.models import save_model

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux file-system behaviour")


def _user_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


needs_unshare = pytest.mark.skipif(not _user_namespaces(), reason="unprivileged user namespaces are off here")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    load_dataset("mnist1d")  # the data cache exists before any limit applies
    path = tmp_path_factory.mktemp("disk") / "teacher.safetensors"
    torch.manual_seed(1)
    save_model(path, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    return path


def _args(out, teacher, *extra, epochs=3, n=512):
    return ["train", "mnist1d/kd", f"out_dir={out}", f"teacher.checkpoint={teacher}", "teacher.arch=mnist1d_cnn_small",
            "student.arch=mnist1d_mlp", f"data.train_subset={n}", "data.test_subset=100", f"optim.epochs={epochs}",
            "run.progress=false", "run.threads=1", "run.tensorboard=false", *extra]


def _kdlab(args, *, fsize=None, timeout=300):
    """``python -m kdlab ARGS`` in a subprocess, optionally under a file-size limit of ``fsize`` bytes."""
    code = "import sys; from kdlab.cli import main; sys.exit(main(sys.argv[1:]))"
    if fsize is not None:
        code = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize})); " + code
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _in_namespace(mount_opts: str, mnt, command: str):
    """``command`` (sh) with a fresh tmpfs (``mount_opts``) on ``mnt``, in a user + mount namespace."""
    mnt.mkdir()
    script = f"mount -t tmpfs -o {mount_opts} tmpfs {mnt} && {command}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("kdlab: error:") and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------------------------
# out_dir that cannot be used
# ---------------------------------------------------------------------------------------------------------------
def test_an_out_dir_that_is_a_file_is_one_line_exit_2(tmp_path, teacher, capsys):
    (tmp_path / "taken").write_text("not a directory")
    assert main(_args(tmp_path / "taken", teacher)) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"out_dir {tmp_path / 'taken'} is a file" in line
    assert main(_args(tmp_path / "taken" / "below", teacher)) == 2
    assert "is a file" in _one_line(capsys.readouterr().err)


@needs_unshare
def test_a_read_only_out_dir_is_refused_before_any_work(tmp_path, teacher):
    mnt = tmp_path / "ro"
    proc = _in_namespace("ro,size=1m", mnt, f"{sys.executable} -m kdlab " + " ".join(_args(mnt / "run", teacher)))
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert f"out_dir {mnt / 'run'} cannot be written: {mnt} is read-only" in line


@needs_unshare
def test_a_read_only_data_directory_trains_and_warns_once(tmp_path, teacher):
    # $KDLAB_DATA holds the data cache but is mounted read-only: the teacher's test logits cannot be stored there,
    # which stopped the run before (exit 2); they are computed in memory with one warning
    data = tmp_path / "data"
    data.mkdir()
    for cache in Path(os.environ["KDLAB_DATA"]).glob("mnist1d-*.npz"):
        shutil.copy(cache, data)
    out = tmp_path / "run"
    cmd = " ".join([sys.executable, "-m", "kdlab", *_args(out, teacher, epochs=1)])
    script = f"mount --bind {data} {data} && mount -o remount,bind,ro {data} && {cmd}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDLAB_DATA": str(data), "PYTHONWARNINGS": "default"}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = [line for line in proc.stderr.splitlines() if "Warning:" in line]
    assert len(warned) == 1 and "the teacher's test logits were computed but cannot be stored" in warned[0], warned
    assert "Read-only file system" in warned[0]
    assert json.loads((out / "final.json").read_text())["teacher"]["eval_logits"] == "computed"
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in data.glob("mnist1d-*.npz"))


# ---------------------------------------------------------------------------------------------------------------
# a full disk or a file-size limit while checkpointing
# ---------------------------------------------------------------------------------------------------------------
def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_the_rerun_resumes_exactly(tmp_path, teacher, capsys,
                                                                                     monkeypatch):
    assert main(_args(tmp_path / "full", teacher, epochs=4)) == 0  # uninterrupted reference

    real_save, real_fsync = loop.save_training_state, os.fsync

    def enospc(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save_on_a_full_disk(path, method, optimizer, rng, info):
        if info["epoch"] == 3:  # the disk fills up while the epoch-3 checkpoint is written
            monkeypatch.setattr(_io.os, "fsync", enospc)
        try:
            real_save(path, method, optimizer, rng, info)
        finally:
            monkeypatch.setattr(_io.os, "fsync", real_fsync)

    monkeypatch.setattr(loop, "save_training_state", save_on_a_full_disk)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(_args(out, teacher, epochs=4)) == 5
    line = _one_line(capsys.readouterr().err)
    assert f"cannot write {out / 'checkpoint.safetensors'}: No space left on device" in line
    assert "previous version is kept" in line and "rerun the same command" in line
    assert _leftovers(out) == []
    info = json.loads(_io.load_tensors(out / "checkpoint.safetensors")[1]["info"])
    assert info["epoch"] == 2  # the last good checkpoint, loadable

    monkeypatch.setattr(loop, "save_training_state", real_save)
    assert main(_args(out, teacher, epochs=4)) == 0
    assert "resumed from epoch 3" in capsys.readouterr().out
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_file_size_limit_at_the_checkpoint_is_exit_5_and_the_rerun_trains(tmp_path, teacher):
    out = tmp_path / "run"
    # 150 kB: config, metrics and best.safetensors (the MLP, 92 kB) fit; the checkpoint (+ momentum) does not
    proc = _kdlab(_args(out, teacher, epochs=2), fsize=150_000)
    assert proc.returncode == 5, proc.stderr[-3000:]
    line = _one_line(proc.stderr)
    assert f"cannot write {out / 'checkpoint.safetensors'}: File too large" in line
    assert _leftovers(out) == [] and not (out / "checkpoint.safetensors").exists()
    proc = _kdlab(_args(out, teacher, epochs=2))  # limit lifted: the same command trains
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "final.json").is_file()


@needs_unshare
def test_a_full_tmpfs_at_the_checkpoint_is_exit_5(tmp_path, teacher):
    mnt = tmp_path / "small"
    cmd = (f"{sys.executable} -m kdlab " + " ".join(_args(mnt / "run", teacher, epochs=2))
           + f"; echo rc=$?; ls -a {mnt}/run")
    proc = _in_namespace("size=150k", mnt, cmd)
    assert "rc=5" in proc.stdout, proc.stderr[-3000:]
    line = _one_line(proc.stderr)
    assert f"cannot write {mnt / 'run' / 'checkpoint.safetensors'}: No space left on device" in line
    assert ".tmp" not in proc.stdout  # no half-written temp file left behind


# ---------------------------------------------------------------------------------------------------------------
# the memory-mapped teacher cache
# ---------------------------------------------------------------------------------------------------------------
def _cache_args(out, teacher, cache):
    # 3000 signals × 9 shifts × 10 classes × 4 bytes = 1.08 MB, precomputed up front
    return _args(out, teacher, "teacher.cache.storage=mmap", f"teacher.cache.path={cache}",
                 "teacher.cache.fill=precompute", "teacher.cache.dtype=float32", epochs=1, n=3000)


@needs_unshare
def test_a_memory_mapped_cache_on_a_full_disk_is_an_error_not_sigbus(tmp_path, teacher):
    mnt = tmp_path / "small"
    cache = mnt / "cache.bin"
    cmd = (f"{sys.executable} -m kdlab " + " ".join(_cache_args(tmp_path / "run", teacher, cache))
           + f"; echo rc=$?; ls -a {mnt}")
    proc = _in_namespace("size=1m", mnt, cmd)
    assert "rc=5" in proc.stdout, (proc.stdout, proc.stderr[-3000:])  # (a SIGBUS would be rc=135)
    line = _one_line(proc.stderr)
    assert f"cannot reserve 1.0 MiB for {cache}: No space left on device" in line and "teacher.cache" in line
    assert "cache.bin" not in proc.stdout  # no half-made cache for the rerun to trip over


def test_a_cache_file_that_cannot_be_extended_is_exit_5(tmp_path, teacher):
    cache = tmp_path / "cache" / "cache.bin"
    proc = _kdlab(_cache_args(tmp_path / "run", teacher, cache), fsize=1_000_000)
    assert proc.returncode == 5, proc.stderr[-3000:]
    line = _one_line(proc.stderr)
    assert f"cannot reserve 1.0 MiB for {cache}: File too large" in line
    assert not cache.exists() and not cache.with_name("cache.bin.mask").exists()
