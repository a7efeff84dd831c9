"""The papers' numbers: ``configs/published.yaml`` (shipped beside the recipes), read and looked up by data set,
pair (the recipes' pair directory) and method (the recipe's file name; ``teacher``, and ``ce`` for the student
trained alone). A source listed under ``unverified`` (its numbers could not be checked against a readable copy of it)
marks each of its numbers: :attr:`Published.unverified` holds why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlab.config import RECIPES_DIR, ConfigError, read_yaml

__all__ = ["PUBLISHED_FILE", "Published", "PublishedTable", "load_published"]

PUBLISHED_FILE = RECIPES_DIR / "published.yaml"


@dataclass(frozen=True)
class Published:
    """One published number: top-1 accuracy %, its source (the full citation), an optional note."""

    acc: float
    source: str
    note: str | None = None
    recipe_pending: str | None = None  # why no shipped recipe produces it (yet)
    unverified: str | None = None  # why it could not be checked against a readable source (None: checked)

    def label(self) -> str:
        """The number as tables print it: ``77.70``, or ``77.70 (unverified)``."""
        return f"{self.acc:.2f}" + (" (unverified)" if self.unverified else "")


@dataclass
class PublishedTable:
    sources: dict[str, str]  # key → citation
    pairs: dict[str, dict[str, Any]]  # "<data set>/<pair>" → {"paper": ..., method: [Published, ...], ...}

    def lookup(self, dataset: str, pair: str | None, method: str) -> list[Published]:
        """Every published number for ``method`` on ``dataset/pair``; the first is the one to put beside ours."""
        if pair is None:
            return []
        entry = self.pairs.get(f"{dataset}/{pair}", {})
        value = entry.get(method)
        return value if isinstance(value, list) else []

    def methods(self, key: str) -> dict[str, list[Published]]:
        return {m: v for m, v in self.pairs[key].items() if isinstance(v, list)}


def _entries(raw: Any, sources: dict[str, str], unverified: dict[str, str], where: str) -> list[Published]:
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        if not isinstance(item, dict) or set(item) - {"acc", "source", "note", "recipe_pending"} or "acc" not in item:
            raise ConfigError(f"published numbers: {where}: each entry is {{acc, source, note?, recipe_pending?}}, "
                              f"got {item!r}")
        if item.get("source") not in sources:
            raise ConfigError(f"published numbers: {where}: source {item.get('source')!r} is not among `sources`")
        out.append(Published(float(item["acc"]), sources[item["source"]], item.get("note"),
                             item.get("recipe_pending"), unverified.get(item["source"])))
    return out


def load_published(path: str | Path | None = None) -> PublishedTable:
    """The published table in ``path`` (default: the shipped ``configs/published.yaml``), checked."""
    path = Path(path) if path is not None else PUBLISHED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"published numbers {path} not found")
    data = read_yaml(path)
    # `sources` and `pairs`, and any further blocks `sources_<name>` / `pairs_<name>` (one per group of methods, so
    # that groups are edited apart): merged, a source or a pair's method given twice being an error
    sources: dict[str, str] = {}
    for block in sorted(k for k in data if k == "sources" or k.startswith("sources_")):
        for name, text in (data[block] or {}).items():
            if name in sources:
                raise ConfigError(f"published numbers: source {name!r} is given twice ({block})")
            sources[name] = text
    unverified = data.get("unverified") or {}
    if not isinstance(unverified, dict) or set(unverified) - set(sources):
        raise ConfigError(f"published numbers: `unverified` must map sources to the reason; unknown: "
                          f"{sorted(set(unverified) - set(sources)) if isinstance(unverified, dict) else unverified!r}")
    pairs: dict[str, dict[str, Any]] = {}
    for block in sorted(k for k in data if k == "pairs" or k.startswith("pairs_")):
        for key, entry in (data[block] or {}).items():
            if not isinstance(entry, dict) or key.count("/") != 1:
                raise ConfigError(f"published numbers: pair {key!r} must be '<data set>/<pair>' with a mapping")
            merged = pairs.setdefault(key, {})
            for m, v in entry.items():
                if m in merged and m != "paper":
                    raise ConfigError(f"published numbers: {key}/{m} is given twice ({block})")
                merged[m] = v if m in ("paper", "recipe_pending") else _entries(v, sources, unverified, f"{key}/{m}")
    return PublishedTable(sources, pairs)
