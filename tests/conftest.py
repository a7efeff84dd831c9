import argparse
import http.server
import io
import json
import os
import re
import signal
import subprocess
import tarfile
import threading
import time
import types

import numpy as np
import pytest
import torch

# Tests must not depend on the user's cache directory: every generated dataset goes to one session tmp dir.
@pytest.fixture(scope="session", autouse=True)
def _isolated_data_cache(tmp_path_factory):
    old = os.environ.get("KDLAB_DATA")
    os.environ["KDLAB_DATA"] = str(tmp_path_factory.mktemp("kdlab_data"))
    yield
    if old is None:
        os.environ.pop("KDLAB_DATA", None)
    else:
        os.environ["KDLAB_DATA"] = old


@pytest.fixture(autouse=True)
def _one_thread():
    # two xdist workers on two cores: one thread each avoids oversubscription
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _subprocess_env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _history(out):
    """metrics.jsonl of a run without the wall-clock field (equal for equal runs)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("epoch_time_s")
    return rows


def _killed_after(cmd, out, epochs=2):
    """Start ``cmd`` (a run writing ``out``), SIGKILL it once ``epochs`` epochs are logged, before it finishes."""
    proc = subprocess.Popen(cmd, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= epochs:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final.json").exists(), "the kill came too late to interrupt the run"


@pytest.fixture
def run_tools():
    """Helpers of the kill-and-resume tests: ``env()``, ``history(out)``, ``killed_after(cmd, out, epochs)``."""
    return types.SimpleNamespace(env=_subprocess_env, history=_history, killed_after=_killed_after)


@pytest.fixture(scope="session")
def random_teacher(tmp_path_factory):
    """A randomly initialised (seed 0) mnist1d_cnn_small saved as a kdlab weights file: a teacher for runs that test
    the machinery, not accuracy."""
    from kdlab import models

    path = tmp_path_factory.mktemp("random_teacher") / "model.safetensors"
    torch.manual_seed(0)
    models.save_model(path, models.create("mnist1d_cnn_small", 10), arch="mnist1d_cnn_small", num_classes=10)
    return path


# ----------------------------------------------------------------------------------------------------------------
# a loopback file server that speaks HTTP Range and can cut a transfer short (downloads, published teachers)
# ----------------------------------------------------------------------------------------------------------------
class FileServer:
    """Serves ``root`` on 127.0.0.1. ``cut[name] = n``: the next answer for ``name`` announces the full length but
    closes the connection after ``n`` bytes of its body. ``ignore_range``: answer Range requests with the whole file
    (200), as some servers do. ``requests``: (name, Range header) of every request; ``sent[name]``: body bytes sent."""

    def __init__(self, root):
        self.root = root
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        self.sent: dict[str, int] = {}
        self.base = ""

    def handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                wanted = self.headers.get("Range")
                server.requests.append((name, wanted))
                path = server.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                m = re.fullmatch(r"bytes=(\d+)-", wanted or "")
                start = int(m.group(1)) if m and not server.ignore_range else 0
                if start >= len(data) and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                n = server.cut.pop(name, None)
                sent = body if n is None else body[:n]
                self.wfile.write(sent)
                server.sent[name] = server.sent.get(name, 0) + len(sent)
                self.close_connection = True

        return Handler


@pytest.fixture
def file_server(tmp_path, monkeypatch):
    """A :class:`FileServer` on ``tmp_path/served`` (ephemeral port on 127.0.0.1); proxies unset."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "served"
    root.mkdir()
    state = FileServer(root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------------------------------------------
# RepDistiller's teachers as mdistiller releases them (cifar_teachers.tar), built from zoo models
# ----------------------------------------------------------------------------------------------------------------
# kdlab's key names -> RepDistiller's, per teacher: the inverse of src/kdlab/models/foreign.py
_TO_REPDISTILLER = {
    **{a: [(r"^classifier\.", "fc.")] for a in ("resnet56", "resnet110", "resnet32x4")},
    "wrn_40_2": [(r"^(block\d+)\.(\d+)\.", r"\1.layer.\2."), (r"\.shortcut\.", ".convShortcut."), (r"^bn\.", "bn1."),
                 (r"^classifier\.", "fc.")],
    "vgg13": [],
    "cifar_resnet50": [(r"\.downsample\.", ".shortcut."), (r"^classifier\.", "linear.")],
}
FOLDERS = {"resnet56": "resnet56_vanilla", "resnet110": "resnet110_vanilla", "resnet32x4": "resnet32x4_vanilla",
           "wrn_40_2": "wrn_40_2_vanilla", "vgg13": "vgg13_vanilla", "cifar_resnet50": "ResNet50_vanilla"}


def repdistiller_state(arch, model):
    """``model``'s state dict under RepDistiller's key names."""
    out = {}
    for key, value in model.state_dict().items():
        for pattern, repl in _TO_REPDISTILLER[arch]:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def repdistiller_checkpoint(arch, model) -> bytes:
    """``ckpt_epoch_240.pth`` as RepDistiller's train_teacher.py writes it, plus what other versions hold: the
    options (an argparse.Namespace) and numpy accuracies."""
    buf = io.BytesIO()
    torch.save({"epoch": 240, "model": repdistiller_state(arch, model), "accuracy": np.float64(79.42),
                "best_acc": np.float32(79.5), "opt": argparse.Namespace(model=arch, learning_rate=0.05),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005, "params": [0]}]}}, buf)
    return buf.getvalue()


def write_teachers_tar(path, teachers, extra=None, drop=()):
    """``cifar_teachers.tar`` (plain tar, mdistiller's layout ``cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth``):
    real checkpoints of ``teachers`` ({arch: model}); the other published teachers' members are placeholders (only
    their presence is checked before one of them is converted). ``extra``: more members; ``drop``: archs left out."""
    members = {f"cifar_teachers/{folder}/ckpt_epoch_240.pth":
               repdistiller_checkpoint(arch, teachers[arch]) if arch in teachers else b"placeholder"
               for arch, folder in FOLDERS.items() if arch not in drop}
    members.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def teacher_archives():
    """Builders of published-teacher files: ``write_tar(path, {arch: model}, extra=None, drop=())``,
    ``state(arch, model)`` (RepDistiller's names), ``checkpoint(arch, model)`` (a ckpt_epoch_240.pth's bytes)."""
    return types.SimpleNamespace(write_tar=write_teachers_tar, state=repdistiller_state,
                                 checkpoint=repdistiller_checkpoint, folders=FOLDERS)


def _at_once(fn, n):
    """Run ``fn`` in ``n`` threads at once; (their results, their exceptions)."""
    results, errors = [], []

    def run():
        try:
            results.append(fn())
        except Exception as exc:  # noqa: BLE001 - the test looks at them
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


@pytest.fixture
def at_once():
    """``at_once(fn, n)``: ``fn`` in ``n`` threads at once (processes racing for one file); (results, exceptions)."""
    return _at_once
