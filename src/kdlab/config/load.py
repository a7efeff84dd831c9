"""Load a run config from YAML, apply ``key=value`` overrides, validate, and explain errors by key."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ValidationError

from kdlab.config.schema import RunConfig, StudentConfig, TeacherConfig

RECIPES_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the problem."""


def resolve_config_path(name: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped recipe (``mnist1d/kd`` → ``configs/mnist1d/kd.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / name, RECIPES_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"config {str(name)!r} is neither a file nor a shipped recipe; list recipes with `kdlab recipes`"
    )


#: files shipped beside the recipes that are not run configs (``published.yaml``: the papers' numbers)
NOT_RECIPES = frozenset({"published.yaml"})
NOT_RECIPE_DIRS = frozenset({"experiments"})  # configs/experiments/: `kdlab experiment` specs, not run configs


def recipe_names() -> list[str]:
    """The shipped recipes' names (``cifar100/resnet32x4-resnet8x4/kd``), sorted; what ``kdlab recipes`` lists."""
    return sorted(p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES_DIR.rglob("*.yaml")
                  if p.name not in NOT_RECIPES and p.relative_to(RECIPES_DIR).parts[0] not in NOT_RECIPE_DIRS)


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps the last one
    silently, which drops the first entry's settings (or published numbers) without a word."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping; invalid YAML or a key given twice in one mapping: ConfigError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; the value is parsed as YAML (``lr=0.1``, ``milestones=[5,8]``). A number
    steps into a list (``method.add.0.weight=0.5``)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=0.1)")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from None
        node: Any = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = _child(node, part, item)
            if not isinstance(child, (dict, list)):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        if isinstance(node, list):
            node[_index(node, parts[-1], item)] = value
        else:
            node[parts[-1]] = value
    return data


def _format_validation_error(exc: ValidationError, source: str, prefix: str = "", name: Callable[[str], str] = str,
                             method: str | None = None, valid: list[str] | None = None) -> str:
    """One line: ``source: key: problem; key: problem``. ``name`` words each config key for the front end (the CLI
    as written, ``kdlab.fit`` as its arguments); a misspelt method argument lists the method's valid ones."""
    problems = []
    for err in exc.errors():
        loc = err["loc"]
        if "arch" in loc[:-1] and loc[loc.index("arch") + 1] in ("name", "factory"):  # a tag of the Arch union
            i = loc.index("arch") + 1
            loc = loc[:i] + loc[i + 1:]
        path = ".".join(str(p) for p in loc)
        where = name((prefix + path).rstrip(".")) if path or prefix else "(top level)"
        if err["type"] == "extra_forbidden" and valid is not None:
            close = difflib.get_close_matches(path, valid, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            msg = f"not an argument of method {method!r}{hint}; valid: {', '.join(valid)}"
        elif err["type"] == "extra_forbidden" and _other_role(err["loc"]):
            role, key = err["loc"]
            other = _other_role(err["loc"])
            msg = f"not a {role} key: it configures the {other} (set {name(f'{other}.{key}')} instead)"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `kdlab config` prints every valid key)"
        else:
            msg = err["msg"]
        problems.append(f"{where}: {msg}")
    return f"{source}: " + "; ".join(problems)


def _index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {item!r}: {part!r} is not an entry of the list there ({len(node)} entries: "
                          f"0 to {len(node) - 1})")
    return int(part)


def _child(node: dict | list, part: str, item: str) -> Any:
    """The section ``part`` of ``node``: a list's entry by its number, or a mapping's key (created if missing)."""
    if isinstance(node, list):
        return node[_index(node, part, item)]
    return node.setdefault(part, {})


#: the other role of a model section, and its keys (a teacher key given to the student is named as such)
_ROLES = {"student": ("teacher", TeacherConfig), "teacher": ("student", StudentConfig)}


def _other_role(loc: tuple) -> str | None:
    """``"teacher"`` for ``("student", "cache")``: a key of the other model section, given to the wrong one."""
    if len(loc) == 2 and loc[0] in _ROLES and loc[1] in _ROLES[loc[0]][1].model_fields:
        return _ROLES[loc[0]][0]
    return None


#: ``method name -> its hyperparameter model`` (``kdlab.methods.get(name).Params``); the config layer sits below the
#: methods, so whoever validates a whole run (the builder) passes it in.
MethodSchema = Callable[[str], type[BaseModel]]


def validate(data: dict[str, Any], source: str = "config", method_schema: MethodSchema | None = None,
             name: Callable[[str], str] = str) -> RunConfig:
    """Validate ``data`` against :class:`RunConfig`; with ``method_schema`` also ``method.args`` against the method's
    own model (defaults filled in), so a typo there is an error naming ``method.args.<key>`` and listing the valid
    ones. ``name`` words a config key in an error (``kdlab.fit`` passes its argument names). The keys given
    explicitly are kept in ``cfg.method.given`` (the others may be adapted to the data, ``Method.adapt``)."""
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, name=name)) from None
    if method_schema is not None:
        _validate_args(cfg.method, "method.", source, method_schema, name)
        for i, added in enumerate(cfg.method.add):
            _validate_args(added, f"method.add.{i}.", source, method_schema, name)
    return cfg


def _validate_args(section: Any, prefix: str, source: str, method_schema: MethodSchema,
                   name: Callable[[str], str]) -> None:
    """``section.args`` validated against the ``Params`` of ``section.name`` (defaults filled in), and the keys
    given explicitly kept in ``section.given``."""
    given = sorted(section.args or {})
    try:
        params = method_schema(section.name)
    except ValueError as exc:
        raise ConfigError(f"{source}: {name(prefix + 'name')}: {exc}") from None
    try:
        section.args = params.model_validate(section.args or {}).model_dump()
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, f"{prefix}args.", name, section.name,
                                                   list(params.model_fields))) from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {name(prefix + 'args')}: {exc}") from None
    section.given = given


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                method_schema: MethodSchema | None = None) -> RunConfig:
    """Read YAML (or start from defaults), apply overrides, validate (``method.args`` too with ``method_schema``)."""
    data: dict[str, Any] = {}
    source = "overrides"
    if path is not None:
        resolved = resolve_config_path(path)
        data = read_yaml(resolved)
        source = str(resolved)
    return validate(apply_overrides(data, overrides or []), source, method_schema)
