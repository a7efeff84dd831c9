"""Every documentation file that the code, the recipes, the tests, the README or the docs cite exists in the repository.

What counts as a citation of a documentation file:

* a path under ``docs/`` ending in ``.md``, anywhere;
* a Markdown file named by a bare or relative name, when the name is one of the repository's documentation pages or
  one of the project's private specification names (``methods.md``, ``fidelity.md``, ``imagenet.md``,
  ``design.md``); a name followed by ``§N`` must also have a numbered section ``N``;
* the target of a Markdown link in ``docs/`` and ``README.md`` (with its ``#anchor``, which must name a heading);
* anything under a ``specs/`` directory: the specification lives outside the repository, so this always fails.

A citation resolves against the repository root; in a Markdown file it may instead resolve against the file's own
folder (the way a link does). Docs and README must also not contain absolute filesystem paths (``/work/...``,
``/tmp/...``, ``data.root=/data/...``, ``C:\\...``; URLs, ``~/`` and formulas such as ``x/255`` are not paths), nor
``cd`` into one: a path that exists on one machine only does not run anywhere else.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("src", "tests", "docs", "README.md")  # src/ includes the recipes (src/kdlab/configs)
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".rst"}
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache"}
SPEC_NAMES = {"methods.md", "fidelity.md", "imagenet.md", "design.md"}
URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.I)
MD_TOKEN = re.compile(r"(?<![\w./-])([\w./-]*[\w-]\.md)(?![\w/-])(\s*§\s*(\d+))?")
SPECS_DIR = re.compile(r"(?<![\w.-])specs/")
MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# An absolute path: "/" and a name character where a token starts (line start, a space, a quote, a bracket, "=", ","
# or ";"), as in /work/main, `/tmp/x`, data.root=/data/imagenet, or a Windows drive (C:\ or C:/). Not absolute: URLs
# (removed first), "~/..." (the reader's home), fractions and formulas ("/" after a name, digit or ")": x/255,
# (k/B], N·r/W) and closing HTML tags ("</").
ABSOLUTE = re.compile(r"(?:^|(?<=[\s`'\"(\[{=,;]))(?:/\w|[A-Za-z]:[\\/])")
CD_ABSOLUTE = re.compile(r"\b(?:cd|pushd)\s+[\"']?(?:/|[A-Za-z]:[\\/])")
DOCS_TEST = re.compile(r"^\s*<!--\s*docs-test:")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _skipped(path: Path) -> bool:
    return any(part in SKIP_DIRS or part.endswith(".egg-info") for part in path.parts)


def scanned_files(root: Path) -> list[Path]:
    out = []
    for name in SCANNED:
        top = root / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []
        for path in candidates:
            rel = path.relative_to(root)
            if path.is_file() and path.suffix in TEXT_SUFFIXES and not _skipped(rel):
                out.append(path)
    # this file quotes bad citations on purpose (the self-checks below)
    return [p for p in out if p.resolve() != Path(__file__).resolve()]


def doc_names(root: Path) -> set[str]:
    names = {p.name for p in (root / "docs").rglob("*.md")} if (root / "docs").is_dir() else set()
    return names | {"README.md"} | SPEC_NAMES


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading contributes its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(h) for h in HEADING.findall(text)}


def numbered_sections(path: Path) -> set[int]:
    return {int(n) for n in re.findall(r"^#{1,6}\s+(\d+)\.\s", path.read_text(encoding="utf-8"), re.M)}


def _resolve(root: Path, source: Path, target: str) -> Path | None:
    bases = [root] + ([source.parent] if source.suffix == ".md" else [])
    for base in bases:
        candidate = (base / target).resolve()
        if candidate.exists() and (candidate == root.resolve() or root.resolve() in candidate.parents):
            return candidate
    return None


def citation_problems(root: Path, source: Path, text: str) -> list[str]:
    """Problems with the documentation citations in ``text`` (the content of ``source``, a file under ``root``)."""
    problems = []
    names = doc_names(root)
    lines = URL.sub("", text).splitlines()
    for lineno, line in enumerate(lines, 1):
        where = f"{source.relative_to(root)}:{lineno}"
        for m in SPECS_DIR.finditer(line):
            cited = re.match(r"specs/[\w./-]*[\w-]", line[m.start():]).group(0)
            problems.append(f"{where}: cites {cited!r} from the private spec tree; cite a page under docs/ instead")
        for m in MD_TOKEN.finditer(line):
            token, section = m.group(1), m.group(3)
            if "specs/" in token:
                continue  # reported above
            if not (token.startswith(("docs/", "../", "./")) or Path(token).name in names):
                continue  # not a documentation file (e.g. a run's results.md)
            target = _resolve(root, source, token)
            if target is None:
                hint = " (a bare name: give the path from the repository root)" if "/" not in token else ""
                problems.append(f"{where}: cites {token!r}, which is not in the repository{hint}")
            elif section is not None and int(section) not in numbered_sections(target):
                problems.append(f"{where}: cites {token} §{section}, but that file has no section {section}")
    return problems


def link_problems(root: Path, source: Path, text: str) -> list[str]:
    """Broken relative links (and #anchors) in the Markdown ``text`` of ``source``."""
    problems = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for m in MD_LINK.finditer(line):
            target = m.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
                continue  # http(s), mailto, ...
            path_part, _, fragment = target.partition("#")
            where = f"{source.relative_to(root)}:{lineno}"
            resolved = (source.parent / path_part).resolve() if path_part else source
            if not resolved.exists():
                problems.append(f"{where}: link target {target!r} does not exist")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                problems.append(f"{where}: link target {target!r}: no heading with anchor #{fragment}")
    return problems


def machine_path_problems(root: Path, source: Path, text: str) -> list[str]:
    """Absolute filesystem paths in a page: they exist on one machine only (use a path relative to the repository,
    ``~/...``, ``$(mktemp -d)`` or a placeholder such as ``DIR``)."""
    problems = []
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{source.relative_to(root)}:{lineno}"
        line = URL.sub("", line)
        if DOCS_TEST.match(line):
            continue  # a tests/test_docs_commands.py annotation: its `sub /A/B/` is a pattern, not a path
        if CD_ABSOLUTE.search(line):
            problems.append(f"{where}: `cd` into an absolute path (use a path relative to the repository): "
                            f"{line.strip()!r}")
        elif m := ABSOLUTE.search(line):
            problems.append(f"{where}: absolute path {line[m.start():].split()[0]!r}: it exists on one machine only")
    return problems


def all_problems(root: Path) -> list[str]:
    problems = []
    for path in scanned_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        problems += citation_problems(root, path, text)
        rel = path.relative_to(root)
        if path.suffix == ".md" and rel.parts[0] in ("docs", "README.md"):
            problems += link_problems(root, path, text)
            problems += machine_path_problems(root, path, text)
    return problems


def test_every_cited_document_exists_and_docs_have_no_machine_paths():
    problems = all_problems(REPO)
    assert not problems, f"{len(problems)} dangling citation(s) or machine path(s):\n" + "\n".join(problems)


def test_the_reference_pages_are_shipped_with_their_section_numbers():
    ref = REPO / "docs" / "reference"
    assert numbered_sections(ref / "methods.md") == set(range(1, 25))  # §13–§18 feature methods, §19–§24 MLKD … pairs
    assert numbered_sections(ref / "imagenet.md") == set(range(1, 8))  # §7: MLKD, NKD, CTKD, SDD on ImageNet
    assert (ref / "fidelity.md").is_file()


# --- the checker itself fails on what it must catch -------------------------------------------------------------


@pytest.fixture()
def tiny_repo(tmp_path: Path) -> Path:
    (tmp_path / "docs" / "reference").mkdir(parents=True)
    (tmp_path / "docs" / "reference" / "methods.md").write_text("# M\n\n## 1. One\n\n## 2. Two\n", encoding="utf-8")
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Set up\n", encoding="utf-8")
    (tmp_path / "src").mkdir()
    return tmp_path


@pytest.mark.parametrize("text", [
    "Published (methods.md §3): alpha 1",                       # the old recipe text: a bare name
    "contract: specs/methods.md §1",                            # the private spec tree
    "Sources (specs/fidelity.md):",
    'design.md, "Exact teacher-logit cache"',
    "see docs/nowhere.md",                                      # a docs path that does not exist
    "docs/reference/methods.md §9",                             # a section the page does not have
])
def test_checker_flags_dangling_citations(tiny_repo: Path, text: str):
    source = tiny_repo / "src" / "mod.py"
    assert citation_problems(tiny_repo, source, f'"""{text}"""\n')


@pytest.mark.parametrize("text", [
    "Published (docs/reference/methods.md §2): alpha 1",
    "see [the guide](docs/guide.md#set-up) and docs/guide.md",
    "outputs demo_out/results.md and results.json/.md",         # not a documentation file
    "https://example.org/specs/methods.md",                     # URLs are not citations
])
def test_checker_accepts_valid_citations(tiny_repo: Path, text: str):
    source = tiny_repo / "src" / "mod.py"
    assert not citation_problems(tiny_repo, source, text)


def test_checker_flags_broken_links_and_machine_paths(tiny_repo: Path):
    page = tiny_repo / "docs" / "page.md"
    page.write_text("# Page\n", encoding="utf-8")
    assert link_problems(tiny_repo, page, "[a](missing.md)")
    assert link_problems(tiny_repo, page, "[a](guide.md#no-such-heading)")
    assert link_problems(tiny_repo, page, "[a](#no-such-heading)")
    assert not link_problems(tiny_repo, page, "[a](guide.md#set-up) [b](reference/methods.md#2-two) [c](#page)")
    assert machine_path_problems(tiny_repo, page, "cd /work/main && python -m pytest tests/models")
    assert machine_path_problems(tiny_repo, page, "cd /tmp/somewhere")
    assert machine_path_problems(tiny_repo, page, "weights in /home/alice/runs")
    assert not machine_path_problems(tiny_repo, page, "<!-- docs-test: sub /out_dir/epochs=1 out_dir/ — shorter -->")


@pytest.mark.parametrize("line", [
    "cd /work/main && python -m pytest tests/models",
    "cd C:\\Users\\me\\kdlab",
    "weights in /home/alice/runs",
    "Output of this on a fresh machine (`KDLAB_DATA=/tmp/kdlab_doc`):",
    ">>> load_cifar100(\"/tmp/nowhere\")",
    "kdlab train imagenet/resnet34-resnet18/kd data.root=/data/imagenet",
    "--set teacher.checkpoint=/data/teachers/resnet32x4.safetensors",
    "| `/Users/me/x` |",
    "torch.load('/root/.cache/kdlab/model.pth')",
    "/srv/data holds it",
    "data.root=D:/datasets/cifar",
])
def test_checker_flags_absolute_paths(tiny_repo: Path, line: str):
    assert machine_path_problems(tiny_repo, tiny_repo / "docs" / "page.md", line)


@pytest.mark.parametrize("line", [
    "KDLAB_DATA=~/.cache/kdlab python -m pytest",
    "see https://www.cs.toronto.edu/~kriz/cifar.html and file:///tmp/x",
    "`normalize(x, mean, std)`: uint8 → `x/255`, then `(x − mean_c)/std_c`",
    "bins `(k/B, (k+1)/B]`, rank r evaluates [N·r/W, N·(r+1)/W)",
    "runs/mnist1d/teacher/model.safetensors and ./import and ../reference/methods.md",
    "1/2, 1/4 or 1/8 scale; images/s per core; train/val splits; KL / T",
    "<sub>note</sub> and `OUT/<recipe>/seed<k>/`, `$KDLAB_DATA/image-index/`, $(mktemp -d)/runs",
])
def test_checker_accepts_relative_paths_urls_and_formulas(tiny_repo: Path, line: str):
    assert not machine_path_problems(tiny_repo, tiny_repo / "docs" / "page.md", line)
