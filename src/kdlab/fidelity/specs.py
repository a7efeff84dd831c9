"""Named experiment specs: ``configs/experiments/NAME.yaml``, one per ablation or claim of the five core papers.

A spec names the paper, the claim it tests, the student recipe per pair (``--pair``; the first is the default), the
rows (variants: overrides of the recipe, or a recipe of their own), the columns of its table and the published
numbers to put beside ours::

    # <what is published, what is chosen>           (first line, like every shipped YAML)
    title: DHKD's single-head failure
    paper: dhkd                                     # a source of configs/published.yaml
    claim: CE and BinaryKL on one head collapse; lowering lr does not cure it
    kind: sweep                                     # sweep (accuracy table) | fidelity (Stanton et al.'s reports)
    pairs: {mnist1d: mnist1d/single_head_bkl, resnet32x4-resnet8x4: cifar100/resnet32x4-resnet8x4/single_head_bkl}
    teachers: {}                                    # pair → teacher recipe (default: the one that writes the
                                                    # recipe's teacher.checkpoint, or none when it exists)
    overrides: []                                   # every student cell
    variants:
      - {name: lr=0.1, overrides: [optim.lr=0.1]}
      - {name: dhkd (two heads), recipe: "{dir}/dhkd", quick: false}
    published: [{variant: lr=0.05, pair: resnet32x4-resnet8x4, acc: 39.56, source: dhkd}]

A variant's ``recipe`` is a recipe of its own: ``{dir}`` stands for the directory of the pair's recipe
(``mnist1d``, ``cifar100/resnet32x4-resnet8x4``), or a mapping ``{pair: recipe}``; ``pairs_only`` limits a variant
to some pairs. ``quick: false`` leaves a row out of ``--quick``, ``full: false`` out of the full run.
Fidelity specs (kind ``fidelity``) also give per variant ``members`` (teacher-ensemble size), ``teacher_overrides``
(the teacher pool's) and ``epochs`` (the row's training length).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdlab.config import RECIPES_DIR, ConfigError, read_yaml
from kdlab.sweep.published import load_published

__all__ = ["COLUMNS", "EXPERIMENTS_DIR", "ExperimentSpec", "PublishedRow", "VariantSpec", "experiment_names",
           "load_experiment"]

EXPERIMENTS_DIR = RECIPES_DIR / "experiments"

# the numbers a sweep experiment can tabulate: key in kdlab.sweep.table.per_seed → (header, decimals)
COLUMNS = {"best_acc": ("best acc %", 2), "acc": ("last acc %", 2), "agreement": ("agreement %", 2),
           "kl": ("KL(t‖s)", 3), "ece": ("ECE", 3), "wall_time_s": ("time s", 0),
           "teacher_acc": ("teacher acc %", 2)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantSpec(_Strict):
    """One row: a name, overrides of the pair's recipe (or a recipe of its own), and the fidelity options."""

    name: str = Field(min_length=1)
    overrides: list[str] = Field(default_factory=list)
    recipe: str | dict[str, str] | None = None  # "{dir}/dhkd", or {pair: recipe}; None: the pair's recipe
    pairs_only: list[str] | None = None  # only for these pairs
    quick: bool = True  # part of --quick
    full: bool = True  # part of the full run (False: a --quick row only)
    teacher_overrides: list[str] = Field(default_factory=list)  # its own teacher (e.g. a weaker one)
    members: int = Field(default=1, ge=1)  # fidelity: teacher-ensemble size
    epochs: int | None = Field(default=None, ge=1)  # this row's training length

    @field_validator("name")
    @classmethod
    def _path_safe(cls, v: str) -> str:
        if v.strip() != v or v in (".", "..") or "\n" in v:
            raise ValueError(f"variant name {v!r} must not start/end with spaces or be . or ..")
        return v


class PublishedRow(_Strict):
    """A published number for one row on one pair."""

    variant: str
    pair: str
    acc: float
    source: str  # a key of configs/published.yaml `sources`
    note: str | None = None


class ExperimentSpec(_Strict):
    title: str
    paper: str  # a key of configs/published.yaml `sources`
    claim: str
    kind: Literal["sweep", "fidelity"] = "sweep"
    pairs: dict[str, str] = Field(min_length=1)  # pair → student recipe; the first is the default
    teachers: dict[str, str] = Field(default_factory=dict)  # pair → teacher recipe
    overrides: list[str] = Field(default_factory=list)
    variants: list[VariantSpec] = Field(min_length=1)
    columns: list[str] = Field(default_factory=lambda: ["best_acc", "acc", "agreement", "kl"])
    published: list[PublishedRow] = Field(default_factory=list)
    seeds: int = Field(default=3, ge=1)
    quick_seeds: int = Field(default=2, ge=1)
    epochs: int | None = Field(default=None, ge=1)  # default student epochs (None: the recipe's)
    quick_epochs: int | None = Field(default=None, ge=1)
    teacher_epochs: int | None = Field(default=None, ge=1)
    quick_teacher_epochs: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self):
        names = [v.name for v in self.variants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two variants are named {dup[0]!r}")
        bad = [c for c in self.columns if c not in COLUMNS]
        if bad:
            raise ValueError(f"unknown column {bad[0]!r}; choose from {', '.join(COLUMNS)}")
        for row in self.published:
            if row.variant not in names or row.pair not in self.pairs:
                raise ValueError(f"published row {row.variant!r} on {row.pair!r}: no such variant or pair")
        for v in self.variants:
            if v.pairs_only and set(v.pairs_only) - set(self.pairs):
                raise ValueError(f"variant {v.name!r}: pairs_only names unknown pairs {v.pairs_only}")
        return self

    def rows(self, pair: str, quick: bool) -> list[VariantSpec]:
        """The variants run on ``pair`` (``--quick``: those marked quick)."""
        return [v for v in self.variants if (v.quick if quick else v.full) and (v.pairs_only is None or pair in
                                                                                v.pairs_only)]

    def recipe_of(self, variant: VariantSpec, pair: str, recipe: str | None = None) -> str:
        """The student recipe of ``variant`` on ``pair`` (``recipe``: the user's --recipe instead of the pair's)."""
        base = recipe or self.pairs[pair]
        own = variant.recipe.get(pair) if isinstance(variant.recipe, dict) else variant.recipe
        return base if own is None else own.format(dir=PurePosixPath(base).parent.as_posix())


def experiment_names() -> list[str]:
    """The shipped experiment specs' names, sorted."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def load_experiment(name: str) -> ExperimentSpec:
    """The spec ``configs/experiments/NAME.yaml`` (or a YAML file), validated; its sources checked."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else EXPERIMENTS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown experiment {name!r}; choose one of: {', '.join(experiment_names())}")
    try:
        spec = ExperimentSpec.model_validate(read_yaml(path))
    except ValidationError as exc:
        lines = [f"{path}: invalid experiment spec"]
        lines += [f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
                  f"{'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    sources = load_published().sources
    for key in [spec.paper] + [r.source for r in spec.published]:
        if key not in sources:
            raise ConfigError(f"{path}: source {key!r} is not among configs/published.yaml's sources")
    return spec
