"""``kdlab recipes [--long]``: the shipped configs, by name (only :mod:`kdlab.config`: no torch, so it is instant)."""

from __future__ import annotations

from kdlab.config import recipe_names, resolve_config_path


def _recipes(args) -> int:
    names = recipe_names()
    paths = [resolve_config_path(name) for name in names]
    width = max(map(len, names))
    for name, path in zip(names, paths):
        print(f"{name:{width}s}  {_first_comment(path)}" if args.long else name)
    return 0


def _first_comment(path) -> str:
    """A recipe's opening comment, on one line: what is published and what is a default (every shipped recipe
    starts with it)."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
    return " ".join(lines)
