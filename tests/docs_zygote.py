"""A pre-imported Python that forks one fresh process per docs command (used by tests/test_docs_commands.py).

Importing torch and kdlab takes about 2 s of CPU; the docs hold dozens of commands, most of which then run for well
under a second. ``serve`` imports them once and forks a child for every request: the child gets the client's stdin,
stdout and stderr (passed over a Unix socket), working directory, environment and arguments, runs ``python -m kdlab
ARGS``, a ``python -c`` script or a ``pycon`` session, and reports its exit code. Each command is still its own
process started from a clean interpreter that has run nothing; only the imports are shared.

``client`` is what the ``kdlab`` shim on the docs tests' PATH runs. It imports nothing beyond the standard library,
so it starts in milliseconds.

    python docs_zygote.py serve SOCKET              # prints "ready" once it listens
    python docs_zygote.py client SOCKET kdlab ARGS...
    python docs_zygote.py client SOCKET python FILE  # FILE holds the code (run as ``python -c``)
    python docs_zygote.py client SOCKET pycon FILE   # FILE holds the session text; outputs split by SENTINEL
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import runpy
import signal
import socket
import sys
import threading
import traceback
import types

SENTINEL = "\x1e--docs-test statement--\x1e"


def client(path: str, kind: str, args: list[str]) -> int:
    if kind in ("python", "pycon"):
        with open(args[0], encoding="utf-8") as f:
            args = [f.read()]
    request = json.dumps({"kind": kind, "args": args, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        socket.send_fds(s, [b"r"], [0, 1, 2])
        s.sendall(len(request).to_bytes(8, "big") + request)
        reply = b""
        while chunk := s.recv(16):
            reply += chunk
    # no reply: the child died from a signal before it could answer
    return int(reply) if reply else 137


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("client went away")
        data += chunk
    return data


def _statements(session: str) -> list[str]:
    """The ``>>>`` statements of a pycon session (with their ``...`` continuation lines)."""
    out: list[list[str]] = []
    prompt = False
    for line in session.splitlines():
        if line.startswith(">>>"):
            out.append([line[4:]])
            prompt = True
        elif prompt and (line.startswith("... ") or line == "..."):
            out[-1].append(line[4:])
        else:
            prompt = False
    return ["\n".join(s) + "\n" for s in out]


def _run_pycon(session: str, namespace: dict) -> None:
    """Each statement as the interactive prompt runs it; an exception prints as ``Type: message``, as the docs show."""
    for source in _statements(session):
        sys.stdout.write(SENTINEL + "\n")
        sys.stdout.flush()
        try:
            exec(compile(source, "<stdin>", "single"), namespace)
        except SystemExit:
            raise
        except BaseException as e:  # noqa: BLE001 -- the session shows the error and goes on, as a prompt does
            sys.stdout.flush()
            print(f"{type(e).__name__}: {e}")
        sys.stdout.flush()
        sys.stderr.flush()


def _child(request: dict) -> int:
    import torch  # already imported by serve(); not at the top, for the client's sake

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # read at torch's import, which came before
    kind, args = request["kind"], request["args"]
    try:
        if kind == "kdlab":
            sys.argv = ["kdlab", *args]
            sys.path[0] = os.getcwd()  # what `python -m` puts first
            runpy.run_module("kdlab", run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c"]
            sys.path[0] = ""  # what `python -c` puts first
            main = types.ModuleType("__main__")
            sys.modules["__main__"] = main
            if kind == "python":
                exec(compile(args[0], "<string>", "exec"), main.__dict__)
            else:
                _run_pycon(args[0], main.__dict__)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 -- an uncaught error ends the process as the interpreter would end it
        traceback.print_exc()
        code = 1
    # the rest of an interpreter's shutdown: wait for non-daemon threads, run atexit handlers, flush
    try:
        threading._shutdown()
    except Exception:  # noqa: BLE001
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    return code


def _reap(signum, frame) -> None:
    """Wait for finished children (so that their CPU time counts as this process's children's, as a shell's would)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def serve(path: str) -> None:
    # The expensive imports, done once, here and not at the top: the client must start without them.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import torch

    import kdlab.cli

    # and every command's handler module, which kdlab.cli imports only when its command runs
    commands = next(a for a in kdlab.cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in commands.choices.values():
        kdlab.cli.handler(command.get_default("handler"))
    del matplotlib.pyplot, torch, kdlab  # imported for the children; a child starts from here

    signal.signal(signal.SIGCHLD, _reap)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        try:
            _, fds, _, _ = socket.recv_fds(conn, 1, 3)
            n = int.from_bytes(_read_exact(conn, 8), "big")
            request = json.loads(_read_exact(conn, n))
        except (EOFError, OSError, ValueError):
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            srv.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the child waits for its own subprocesses
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            code = 1
            try:
                code = _child(request)
            finally:
                try:
                    conn.sendall(str(code).encode())
                finally:
                    os._exit(code)
        conn.close()
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(client(sys.argv[2], sys.argv[3], sys.argv[4:]))
