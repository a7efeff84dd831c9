"""The import graph reads bottom-up (docs/architecture.md): every kdlab import points down the stack or stays inside
its own package, the engine imports only data, eval, distributed and the leaves, and kdlab imports sit at the top
of their modules (only the package face imports lazily; the CLI imports a command's handler module by name with
importlib.import_module when the command runs, and such a named import obeys the floors too). Parsed from the
source, so the layering cannot drift."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kdlab"

# floor of each top-level room; an import may only point to a lower floor (or stay inside its own room)
FLOORS = {
    "_version": 0, "_io": 0, "_checks": 0, "_modes": 0, "_bar": 0, "distributed": 0,
    "__init__": 1, "losses": 1, "models": 1, "data": 1, "config": 1, "plots": 1,
    "teachers": 2,
    "methods": 3, "eval": 3,
    "engine": 4,
    "builder": 5, "failures": 5, "api": 6, "sweep": 6,
    "fidelity": 7, "demo": 7,
    "cli": 8, "__main__": 9,
}
ENGINE_MAY_IMPORT = {"data", "eval", "distributed", "_io", "_checks", "_modes", "_version", "_bar"}
# the one up-arrow: the package face's lazy `kdlab.fit` / `kdlab.fidelity_report` / `kdlab.load_model` (inside its
# __getattr__)
FACE_LAZY = {"api", "eval", "models"}
MODULES = sorted(SRC.rglob("*.py"))


def room_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_by_name(call: ast.Call) -> bool:
    """``importlib.import_module("kdlab....")`` (or ``import_module(...)``) with the module's name written out."""
    name = getattr(call.func, "attr", None) or getattr(call.func, "id", None)
    return name == "import_module" and bool(call.args) and isinstance(call.args[0], ast.Constant) and isinstance(
        call.args[0].value, str)


def violations(room: str, text: str, where: str = "module") -> list[str]:
    """Every kdlab import in ``text`` (a module of ``room``) that breaks the layering."""
    tree = ast.parse(text)
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        named = False  # the CLI imports a command's handler module by name (kdlab.cli): the same layering holds
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.Call) and _imported_by_name(node):
            modules, named = [node.args[0].value], True
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from kdlab import builder` names the room in the imported name
            modules = [f"kdlab.{a.name}" for a in node.names] if node.module == "kdlab" else [node.module]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] != "kdlab":
                continue
            target = parts[1] if len(parts) > 1 and parts[1] in FLOORS else "__init__"
            msg = f"{where}:{node.lineno} imports kdlab.{target}"
            if room == "__init__" and id(node) not in top and target in FACE_LAZY:
                continue
            if target != room and FLOORS[target] >= FLOORS[room]:
                out.append(f"{msg}: floor {FLOORS[target]} is not below {room}'s floor {FLOORS[room]}")
            if room == "engine" and target != "engine" and target not in ENGINE_MAY_IMPORT:
                out.append(f"{msg}: the engine imports only {sorted(ENGINE_MAY_IMPORT)}")
            if id(node) not in top and not named:
                out.append(f"{msg} inside a function or block: kdlab imports belong at the module top")
    return out


def test_every_room_has_a_floor():
    rooms = {room_of(p) for p in MODULES}
    assert rooms <= set(FLOORS), f"rooms without a floor (add them to FLOORS): {sorted(rooms - set(FLOORS))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path):
    assert violations(room_of(path), path.read_text(encoding="utf-8"), str(path.relative_to(SRC))) == []


def test_the_checker_finds_each_kind_of_violation():
    assert violations("engine", "from kdlab import builder\n")  # up the stack
    assert violations("engine", "from kdlab.models import create\n")  # down, but not what the engine may use
    assert violations("teachers", "from kdlab.methods import Method\n")
    assert violations("methods", "def f():\n    from kdlab.losses import kd_loss\n")  # lazy import
    assert violations("__init__", "from kdlab.api import fit\n")  # the face's import of fit must stay lazy
    assert not violations("__init__", "def __getattr__(name):\n    from kdlab.api import fit\n")
    assert not violations("methods", "from kdlab.losses import kd_loss\nfrom kdlab import distributed\n")
    assert violations("engine", "def f():\n    importlib.import_module('kdlab.builder')\n")  # by name, still up
    assert not violations("cli", "def f():\n    importlib.import_module('kdlab.failures')\n")
