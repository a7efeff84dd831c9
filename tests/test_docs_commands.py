"""Every shell command and Python snippet in README.md and docs/ runs as written, and the outputs they quote match.

Each fenced block of a page is code (``bash``/``sh``/``shell``, ``console``, ``python``, ``pycon``) or not (``text``,
``yaml``, ...); an unlabelled fence is an error. Code runs unless an HTML comment right above the fence says otherwise,
and quoted output is compared with what the run prints. The annotations (grammar in docs/architecture.md, "Docs are
tested"):

    <!-- docs-test: skip — REASON -->                 not run (a reason is required)
    <!-- docs-test: sub /PATTERN/REPLACEMENT/ — REASON -->   run with re.sub applied to the block (must match)
    <!-- docs-test: continue [NAME] -->               run after the previous run block of the page (or the block
                                                      named NAME), in the same directory
    <!-- docs-test: given NAME -->                    files prepared first by FIXTURES[NAME] (stand-ins for downloads)
    <!-- docs-test: name NAME -->                     a name for ``output of``
    <!-- docs-test: output -->                        this block is the output of the code block above it
    <!-- docs-test: output of NAME -->                ... of the named block (with this block's ``sub``s applied)
    <!-- docs-test: shape [LINES] -->                 numbers on these lines (1-based, "2-4,7"; all without LINES)
                                                      may differ: timings, machine-dependent values
    <!-- docs-test: stdout -->                        compare stdout alone (stderr, e.g. progress lines, dropped)

Quoted output matches line by line after trailing whitespace; ``...`` inside a line matches any text, a line that is
only ``...`` any number of lines. A ``text`` block holding ``$ `` or ``>>> `` lines must be code or an ``output``.

Blocks run in a fresh temporary directory holding copies of ``benchmarks/``, ``configs/`` and ``docs/examples/``
(never the repository itself), with ``kdlab`` on PATH being this checkout's. ``kdlab`` commands and Python blocks run
in processes forked from one pre-imported interpreter per test worker (tests/docs_zygote.py), each still a fresh
process: that saves about 2 s of torch import per command.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from PIL import Image

from kdlab.models import create

REPO = Path(__file__).resolve().parents[1]
ZYGOTE = Path(__file__).resolve().parent / "docs_zygote.py"
_spec = importlib.util.spec_from_file_location("docs_zygote", ZYGOTE)
zygote_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zygote_module)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SHELL = {"bash", "sh", "shell"}
CODE = SHELL | {"console", "python", "pycon"}
KEYWORDS = {"skip", "sub", "continue", "given", "name", "output", "shape", "stdout"}
NEEDS_REASON = {"skip", "sub"}
RUN_ONLY = {"skip", "continue", "given", "name"}  # keywords of code blocks
COPIED = ("benchmarks", "configs", "docs/examples")
TIMEOUT = 300

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`]*)[^`]*$")
ANNOTATION = re.compile(r"^[ \t]*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->[ \t]*$")
REASON = re.compile(r"\s+(?:—|--)\s+")
NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?")
# a block that trains (the kdlab commands that do, torchrun, an optimiser step in Python): its test is marked slow
TRAINS = re.compile(r"\bkdlab (?:teacher|train|sweep|experiment|demo)\b(?! (?:import|cache)\b)|\btorchrun\b"
                    r"|\.step\(\)")


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # (keyword, argument, reason)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def has(self, keyword: str) -> bool:
        return any(k == keyword for k, _, _ in self.notes)

    def arg(self, keyword: str) -> str | None:
        return next((a for k, a, _ in self.notes if k == keyword), None)

    def subs(self) -> list[tuple[str, str]]:
        out = []
        for keyword, arg, _ in self.notes:
            if keyword == "sub":
                try:
                    out.append(_parse_sub(arg))
                except ValueError:
                    pass  # reported by plan()
        return out


def _parse_sub(arg: str) -> tuple[str, str]:
    """``/PATTERN/REPLACEMENT/`` (any delimiter, sed-style) -> (PATTERN, REPLACEMENT)."""
    if len(arg) < 3 or arg[-1] != arg[0] or arg.count(arg[0]) != 3:
        raise ValueError(f"sub needs /PATTERN/REPLACEMENT/ with three delimiters, got {arg!r}")
    pattern, replacement = arg[1:-1].split(arg[0])
    return pattern, replacement


def parse_page(path: Path, root: Path = REPO) -> list[Block]:
    rel = path.relative_to(root).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m["indent"]), m["fence"], m["lang"].lower()
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = [ln[indent:] if ln[:indent].strip() == "" else ln.lstrip() for ln in lines[i + 1:j]]
        notes, k = [], i - 1
        while k >= 0 and (a := ANNOTATION.match(lines[k])):
            keyword, _, rest = a["body"].partition(" ")
            arg, reason = _split_reason(rest)
            notes.insert(0, (keyword.strip(), arg, reason))
            k -= 1
        blocks.append(Block(rel, i + 1, lang, "\n".join(body) + ("\n" if body else ""), notes))
        i = j + 1
    return blocks


def _split_reason(rest: str) -> tuple[str, str]:
    """"ARG — REASON" -> (ARG, REASON); either may be empty ("— REASON" after a bare keyword)."""
    parts = REASON.split(" " + rest.strip(), maxsplit=1)
    return parts[0].strip(), (parts[1].strip() if len(parts) == 2 else "")


# ----------------------------------------------------------------------------------------------------------------
# The plan: which blocks run together, which output belongs to which run, and what is wrong with the annotations.


@dataclass
class Step:
    block: Block
    output: Block | None = None  # the quoted output of this block (python, shell)


@dataclass
class Item:
    id: str
    steps: list[Step]
    subs_from: Block | None = None  # an ``output of`` item: the output block whose subs apply


def plan(pages: list[Path], root: Path = REPO) -> tuple[list[Item], list[str]]:
    items: list[Item] = []
    problems: list[str] = []
    named: dict[str, Block] = {}
    output_of: list[Block] = []
    for path in pages:
        current: Item | None = None  # the chain a ``continue`` block joins
        previous: Block | None = None  # the previous fenced block of the page
        for b in parse_page(path, root):
            problems += _note_problems(b)
            if not b.lang:
                problems.append(f"{b.where}: a fence without a language: say `text` (output, listings) or the code's "
                                f"language (bash, console, python, pycon), which then runs")
            elif b.lang in CODE:
                if b.arg("name"):
                    if b.arg("name") in named:
                        problems.append(f"{b.where}: name {b.arg('name')!r} is taken by {named[b.arg('name')].where}")
                    named[b.arg("name")] = b
                if b.has("skip"):
                    pass
                elif b.has("continue"):
                    after = b.arg("continue")
                    if after:
                        current = next((it for it in items if any(s.block.arg("name") == after for s in it.steps)),
                                       None)
                    if current is None:
                        problems.append(f"{b.where}: `continue {after}`: no block ran before it "
                                        f"{f'named {after!r}' if after else 'on this page'}")
                    else:
                        current.steps.append(Step(b))
                else:
                    current = Item(b.where, [Step(b)])
                    items.append(current)
                problems += _sub_problems(b, b)
            elif b.has("output"):
                of = b.arg("output")
                if of:
                    if not of.startswith("of "):
                        problems.append(f"{b.where}: `output {of}`: write `output` or `output of NAME`")
                    else:
                        output_of.append(b)
                elif previous is None or previous.lang not in CODE:
                    problems.append(f"{b.where}: `output`, but the block before it is not code")
                elif previous.lang in ("console", "pycon"):
                    problems.append(f"{b.where}: `output` after a {previous.lang} block, which holds its own output")
                elif not previous.has("skip"):
                    step = next(s for it in items for s in it.steps if s.block is previous)
                    step.output = b
            elif any(ln.startswith(("$ ", ">>> ")) for ln in b.text.splitlines()):
                problems.append(f"{b.where}: a `{b.lang}` block quotes a session ($ or >>> lines): make it `console` "
                                f"or `pycon` (run, or skipped with a reason) or mark it `output`")
            previous = b
    for b in output_of:
        name = b.arg("output")[3:].strip()
        target = named.get(name)
        if target is None:
            problems.append(f"{b.where}: `output of {name}`: no block is named {name!r}")
        elif target.lang not in ("python", *SHELL):
            problems.append(f"{b.where}: `output of` a {target.lang} block (python or shell only)")
        else:
            items.append(Item(b.where, [Step(target, b)], subs_from=b))
            problems += _sub_problems(b, target)
    # a named block without output of its own runs in the items that quote its output (not once more alone)
    quoted = {it.steps[0].block.where for it in items if it.subs_from is not None}
    items = [it for it in items if not (len(it.steps) == 1 and it.subs_from is None and it.steps[0].output is None
                                        and it.steps[0].block.where in quoted)]
    return items, problems


def _note_problems(b: Block) -> list[str]:
    out = []
    for keyword, arg, reason in b.notes:
        if keyword not in KEYWORDS:
            out.append(f"{b.where}: unknown docs-test keyword {keyword!r} (known: {', '.join(sorted(KEYWORDS))})")
        if keyword in NEEDS_REASON and not reason:
            out.append(f"{b.where}: `{keyword}` needs a reason after ' — '")
        if keyword == "given" and arg not in FIXTURES:
            out.append(f"{b.where}: `given {arg}`: no such fixture (known: {', '.join(sorted(FIXTURES))})")
        if keyword == "shape" and arg and not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", arg):
            out.append(f"{b.where}: `shape {arg}`: give line numbers such as 2-4,7")
        if b.lang not in CODE and (keyword in RUN_ONLY or keyword == "sub" and not (b.arg("output") or "")):
            out.append(f"{b.where}: `{keyword}` on a `{b.lang or 'unlabelled'}` block, which does not run")
        if keyword == "shape" and (b.lang in SHELL or b.lang == "python"):
            out.append(f"{b.where}: `shape` on a {b.lang} block: put it on the output block")
    return out


def _sub_problems(holder: Block, target: Block) -> list[str]:
    out = []
    for keyword, arg, _ in holder.notes:
        if keyword != "sub":
            continue
        try:
            pattern, _ = _parse_sub(arg)
            if not re.search(pattern, target.text):
                out.append(f"{holder.where}: `sub {arg}` matches nothing in {target.where} (stale?)")
        except (ValueError, re.error) as e:
            out.append(f"{holder.where}: `sub {arg}`: {e}")
    return out


def applied(text: str, subs: list[tuple[str, str]]) -> str:
    for pattern, replacement in subs:
        text = re.sub(pattern, replacement, text)
    return text


# ----------------------------------------------------------------------------------------------------------------
# Comparing quoted output with a run's output.


def shape_lines(spec: str | None, n: int) -> set[int]:
    """0-based indices of the lines whose numbers are masked: ``None`` none, ``""`` all, else "2-4,7" (1-based)."""
    if spec is None:
        return set()
    if spec == "":
        return set(range(n))
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out |= set(range(int(lo) - 1, int(hi or lo)))
    return out


def _line_regex(line: str, masked: bool) -> str:
    """``...`` matches any text; on a masked line every number matches any number (and spacing may differ)."""
    pieces = []
    for chunk in line.split("..."):
        if not masked:
            pieces.append(re.escape(chunk))
            continue
        parts = []
        for j, text in enumerate(NUMBER.split(chunk)):
            if j:
                parts.append(NUMBER.pattern)
            parts.append(" +".join(re.escape(w) for w in text.split(" ")) if text else "")
        pieces.append("".join(parts))
    return "[^\n]*".join(pieces)


Quoted = list[tuple[str, bool]]  # (line, numbers masked)


def clean(lines: Quoted) -> Quoted:
    """Trailing whitespace and leading/trailing blank lines dropped."""
    out = [(ln.expandtabs().rstrip(), m) for ln, m in lines]
    while out and not out[0][0]:
        out.pop(0)
    while out and not out[-1][0]:
        out.pop()
    return out


def quoted(text: str, spec: str | None) -> Quoted:
    """The lines of a block with their masks (``spec`` counts the block's lines from 1)."""
    lines = text.splitlines()
    masked = shape_lines(spec, len(lines))
    return [(ln, i in masked) for i, ln in enumerate(lines)]


def printed(text: str) -> list[str]:
    return [ln for ln, _ in clean([(ln, False) for ln in text.splitlines()])]


def output_matches(expected: Quoted, actual: list[str]) -> bool:
    parts = []
    for line, masked in expected:
        parts.append(r"(?:[^\n]*\n)*?" if line.strip() == "..." else _line_regex(line, masked) + "\n")
    return re.fullmatch("".join(parts), "".join(a + "\n" for a in actual)) is not None


def assert_output(where: str, expected: Quoted, actual: list[str]) -> None:
    if not output_matches(expected, actual):
        lines = [ln for ln, _ in expected]
        masked = [i + 1 for i, (_, m) in enumerate(expected) if m]
        diff = "\n".join(difflib.unified_diff(lines, actual, "quoted in " + where, "printed", lineterm=""))
        pytest.fail(f"the output quoted at {where} does not match the run"
                    f"{f' (numbers masked on quoted lines {masked})' if masked else ''}:\n{diff}", pytrace=False)


# ----------------------------------------------------------------------------------------------------------------
# Files that blocks read but that the repository does not ship (`given NAME`).


def _weight_files(work: Path) -> None:
    """Stand-ins for torchvision's resnet34 file and RepDistiller's resnet32x4 checkpoints (docs/models.md): the same
    key names, shapes and containers as the released files, randomly initialised."""
    torch.manual_seed(0)
    (work / "weights").mkdir()
    torch.save(create("resnet34", 1000).state_dict(), work / "weights" / "resnet34.pth")  # torchvision's names
    ckpt = work / "cifar_teachers" / "resnet32x4_vanilla"
    ckpt.mkdir(parents=True)
    theirs = {re.sub(r"^classifier\.", "fc.", k): v for k, v in create("resnet32x4", 100).state_dict().items()}
    torch.save({"epoch": 240, "model": theirs}, ckpt / "ckpt_epoch_240.pth")
    torch.save({"epoch": 240, "model": theirs, "opt": argparse.Namespace(model="resnet32x4", learning_rate=0.05),
                "optimizer": {"state": {}, "param_groups": []}}, ckpt / "resnet32x4_last.pth")


def _image_folder(work: Path) -> None:
    """``DIR``, the README's placeholder for your images: two classes of small PNGs in train/ and val/."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in ("cat", "dog"):
            (work / "DIR" / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (40, 48, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(work / "DIR" / split / c / f"{i}.png")


def _teacher_archive(work: Path) -> None:
    """``copies/cifar_teachers.tar``, a stand-in for mdistiller's release (README, "Use a published teacher"): its
    layout, with a randomly initialised resnet32x4 in RepDistiller's checkpoint format; the other five teachers'
    members are placeholders (their presence is checked; only a fetched teacher's member is read)."""
    torch.manual_seed(0)
    theirs = {re.sub(r"^classifier\.", "fc.", k): v for k, v in create("resnet32x4", 100).state_dict().items()}
    buf = io.BytesIO()
    torch.save({"epoch": 240, "model": theirs}, buf)
    folders = ["resnet56", "resnet110", "resnet32x4", "wrn_40_2", "vgg13", "ResNet50"]
    (work / "copies").mkdir()
    with tarfile.open(work / "copies" / "cifar_teachers.tar", "w") as tar:
        for folder in folders:
            data = buf.getvalue() if folder == "resnet32x4" else b"placeholder"
            info = tarfile.TarInfo(f"cifar_teachers/{folder}_vanilla/ckpt_epoch_240.pth")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _factory_nets(work: Path) -> None:
    """``my_nets.py``, the README's model library of your own ("Use your own model"): the test tree's stand-in for
    timm (tests/models/factory_nets.py)."""
    shutil.copy(REPO / "tests" / "models" / "factory_nets.py", work / "my_nets.py")


def _imagenet_weights(work: Path) -> None:
    """A stand-in for torchvision's ImageNet resnet18 file: its names, shapes and container (a bare state dict, 1000
    classes), randomly initialised."""
    torch.manual_seed(0)
    (work / "weights").mkdir(exist_ok=True)
    torch.save(create("resnet18", 1000).state_dict(), work / "weights" / "resnet18-f37072fd.pth")


FIXTURES = {"weight_files": _weight_files, "image_folder": _image_folder, "teacher_archive": _teacher_archive,
            "factory_nets": _factory_nets, "imagenet_weights": _imagenet_weights}


# ----------------------------------------------------------------------------------------------------------------
# Running.


@pytest.fixture(scope="session")
def zygote(tmp_path_factory):
    """One pre-imported interpreter per test worker, serving forks (tests/docs_zygote.py)."""
    sock = tmp_path_factory.mktemp("zygote") / "s"
    env = {**os.environ, "PYTHONPATH": _pythonpath(), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, str(ZYGOTE), "serve", str(sock)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready", "the docs test's zygote did not start"
    yield sock
    os.killpg(proc.pid, 9)  # the zygote and any child still running
    proc.wait()


def _pythonpath() -> str:
    return os.pathsep.join(p for p in [str(REPO / "src"), os.environ.get("PYTHONPATH", "")] if p)


def _environment(tmp: Path, sock: Path) -> dict[str, str]:
    """PATH with this checkout's ``kdlab`` (served by the zygote) and this interpreter as ``python``."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    shims = {
        "kdlab": f'#!/bin/sh\nexec "{sys.executable}" -I -S "{ZYGOTE}" client "{sock}" kdlab "$@"\n',
        "python": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n',
    }
    for name, text in shims.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONPATH": _pythonpath(), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _run(cmd: list[str], work: Path, env: dict, stdout_only: bool) -> tuple[int, str]:
    proc = subprocess.run(cmd, check=False, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL if stdout_only else subprocess.STDOUT, text=True,
                          timeout=TIMEOUT)
    return proc.returncode, proc.stdout


def _python(kind: str, code: str, work: Path, env: dict, sock: Path, stdout_only: bool) -> tuple[int, str]:
    src = work.parent / f"block.{kind}"  # beside the working directory, not in it
    src.write_text(code, encoding="utf-8")
    return _run([sys.executable, "-I", "-S", str(ZYGOTE), "client", str(sock), kind, str(src)], work, env,
                stdout_only)


def _console_commands(text: str) -> list[tuple[str, int, int]]:
    """(command, first output line, end) for each ``$ `` line of a console block (line indices into ``text``)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            i += 1
            continue
        cmd = lines[i][2:]
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd + "\n" + lines[i]
        i += 1
        start = i
        while i < len(lines) and not lines[i].startswith("$ "):
            i += 1
        out.append((cmd, start, i))
    return out


def _transcript(session: str, out: str) -> list[str]:
    """The session as a prompt shows it: each statement's lines (with prompts) followed by what it printed."""
    prompts, statements = [], []
    for line in session.splitlines():
        if line.startswith(">>>"):
            statements.append([line])
            prompts.append(True)
        elif prompts and prompts[-1] and (line.startswith("... ") or line == "..."):
            statements[-1].append(line)
        else:
            prompts.append(False)
    chunks = out.split(zygote_module.SENTINEL + "\n")
    lines = chunks[0].splitlines()  # anything printed before the first statement (nothing, normally)
    for statement, chunk in zip(statements, chunks[1:]):
        lines += statement + chunk.splitlines()
    return lines


def run_step(step: Step, subs: list[tuple[str, str]], work: Path, env: dict, sock: Path) -> None:
    b = step.block
    code = applied(b.text, subs)
    for name in (a for k, a, _ in b.notes if k == "given"):
        FIXTURES[name](work)
    out_block = step.output
    stdout_only = b.has("stdout") or (out_block is not None and out_block.has("stdout"))
    if b.lang == "console":
        lines = quoted(code, b.arg("shape"))
        for cmd, start, end in _console_commands(code):
            rc, out = _run(["bash", "-c", cmd], work, env, stdout_only)
            where = f"{b.where} (`$ {cmd.splitlines()[0]}`, exit code {rc})"
            assert_output(where, clean(lines[start:end]), printed(out))
        return
    if b.lang == "pycon":
        rc, out = _python("pycon", code, work, env, sock, stdout_only)
        nonblank = [(ln, m) for ln, m in quoted(code, b.arg("shape")) if ln.strip()]
        assert_output(b.where, nonblank, [ln for ln in _transcript(code, out) if ln.strip()])
        return
    if b.lang in SHELL:
        rc, out = _run(["bash", "-e", "-o", "pipefail", "-c", code], work, env, stdout_only)
    else:
        rc, out = _python("python", code, work, env, sock, stdout_only)
    if rc != 0:
        pytest.fail(f"{b.where}: the {b.lang} block exited with code {rc}:\n{out[-4000:]}", pytrace=False)
    if out_block is not None:
        assert_output(out_block.where, clean(quoted(out_block.text, out_block.arg("shape"))), printed(out))


def _is_slow(item: Item) -> bool:
    return any(TRAINS.search(applied(s.block.text, (item.subs_from or s.block).subs())) for s in item.steps)


ITEMS, PROBLEMS = plan(PAGES)


def test_every_block_is_run_or_skipped_with_a_reason():
    assert not PROBLEMS, f"{len(PROBLEMS)} docs block(s) without a valid decision:\n" + "\n".join(PROBLEMS)


@pytest.mark.parametrize("item", [pytest.param(it, marks=[pytest.mark.slow] if _is_slow(it) else [], id=it.id)
                                  for it in ITEMS])
def test_docs_block(item: Item, tmp_path: Path, zygote: Path):
    work = tmp_path / "work"
    work.mkdir()
    for rel in COPIED:
        if (REPO / rel).is_dir():
            shutil.copytree(REPO / rel, work / rel, ignore=shutil.ignore_patterns("__pycache__"))
    env = _environment(tmp_path, zygote)
    for step in item.steps:
        run_step(step, (item.subs_from or step.block).subs(), work, env, zygote)
    shutil.rmtree(work)  # weights and runs: up to a few hundred MB


# --- the harness itself: what it must refuse and what it must accept --------------------------------------------


def _page(tmp_path: Path, text: str) -> tuple[list[Item], list[str]]:
    (tmp_path / "docs").mkdir(exist_ok=True)
    page = tmp_path / "docs" / "page.md"
    page.write_text(text, encoding="utf-8")
    return plan([page], tmp_path)


@pytest.mark.parametrize("text, problem", [
    ("```\nkdlab train mnist1d/kd\n```\n", "without a language"),
    ("<!-- docs-test: skip -->\n```bash\nkdlab train x\n```\n", "needs a reason"),
    ("```text\n$ kdlab recipes\nmnist1d/kd\n```\n", "quotes a session"),
    ("```text\n>>> import kdlab\n```\n", "quotes a session"),
    ("<!-- docs-test: sub /epochs=60/epochs=2/ — shorter -->\n```bash\nkdlab train x\n```\n", "matches nothing"),
    ("Prose.\n\n<!-- docs-test: output -->\n```text\n42\n```\n", "not code"),
    ("<!-- docs-test: skpi — typo -->\n```bash\nls\n```\n", "unknown docs-test keyword"),
    ("<!-- docs-test: given the_internet -->\n```bash\nls\n```\n", "no such fixture"),
    ("<!-- docs-test: output of nothing -->\n```text\n42\n```\n", "no block is named"),
    ("<!-- docs-test: continue -->\n```bash\nls\n```\n", "no block ran before it"),
])
def test_plan_refuses_blocks_without_a_valid_decision(tmp_path: Path, text: str, problem: str):
    _, problems = _page(tmp_path, text)
    assert any(problem in p for p in problems), problems


def test_plan_chains_outputs_and_named_blocks(tmp_path: Path):
    items, problems = _page(tmp_path, (
        "<!-- docs-test: name snippet -->\n```python\nprint(1)\n```\n"
        "<!-- docs-test: output -->\n```text\n1\n```\n"
        "```bash\necho a\n```\n"
        "<!-- docs-test: continue -->\n```console\n$ echo b\nb\n```\n"
        "<!-- docs-test: skip — not here -->\n```bash\nexit 1\n```\n"
        "<!-- docs-test: output of snippet -->\n<!-- docs-test: sub /1/2/ — the other value -->\n```text\n2\n```\n"))
    assert not problems
    assert [[s.block.line for s in it.steps] for it in items] == [[2], [9, 13], [2]]
    assert items[0].steps[0].output.line == 6 and items[2].subs_from.line == 23


@pytest.mark.parametrize("expected, actual, shape, ok", [
    (["a 1", "b"], ["a 1", "b"], None, True),
    (["a 1", "b"], ["a 2", "b"], None, False),
    (["a 1", "b"], ["a 2.5", "b"], "1", True),
    (["a 1", "b 3"], ["a 2", "b 4"], "1", False),
    (["took 9 s", "done"], ["took  12 s", "done"], "", True),  # a wider number may shift the columns
    (["error: .../x.yaml: bad"], ["error: /home/u/x.yaml: bad"], None, True),
    (["head", "...", "tail"], ["head", "1", "2", "tail"], None, True),
    (["head", "...", "tail"], ["head", "tail"], None, True),
    (["head", "tail"], ["head", "extra", "tail"], None, False),
    (["a", "b"], ["a"], None, False),
])
def test_quoted_output_comparison(expected, actual, shape, ok):
    masked = shape_lines(shape, len(expected))
    assert output_matches([(ln, i in masked) for i, ln in enumerate(expected)], actual) is ok
