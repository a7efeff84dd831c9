"""``kdlab recipes [--long] | config | methods``: the shipped configs by name, a config as validated, the methods
(only :mod:`kdlab.config`: no torch, so each is instant; the methods' models are the generated
:mod:`kdlab.config.method_params`)."""

from __future__ import annotations

import yaml

from kdlab.config import load_config, recipe_names, resolve_config_path
from kdlab.config.method_params import SUMMARIES, params


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


def _config(args) -> int:
    cfg = load_config(args.config, args.overrides, method_schema=params)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _methods(args) -> int:
    for name, summary in SUMMARIES.items():
        print(f"{name:16s} {summary}")
    return 0
