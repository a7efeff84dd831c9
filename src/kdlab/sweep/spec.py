"""A sweep spec (YAML or command-line arguments) and its cells.

::

    recipes: [cifar100/*/kd, cifar100/*/dkd]   # shipped names, glob patterns, YAML files, or {name, recipe, overrides}
    seeds: 5                                   # 5 → seeds 0..4; or a list [0, 3]
    overrides: [run.device=cuda]               # every cell, teachers too
    student_overrides: []                      # the recipes' cells only
    teachers: auto                             # auto | train | given
    teacher_overrides: []                      # teacher cells only
    out: runs/sweeps/dkd                       # cells in <out>/<recipe>/seed<k>/

**Teachers.** A student recipe names its teacher by ``teacher.checkpoint``: a file, which the shipped teacher recipes
write (``cifar100/teachers/resnet32x4`` → ``runs/cifar100/teachers/resnet32x4/model.safetensors``), or a published
teacher (``repdistiller:resnet32x4``, :mod:`kdlab.teachers.published`), which each cell fetches once. ``train``: the
sweep trains the teacher recipe that writes that file (for a published teacher: the first teacher recipe of the same
data set and arch) once, as a cell of its own (``<out>/<teacher recipe>/seed<s>``, ``teacher_seed`` or the recipe's
seed), and its students run after it, pointed at its weights; if it fails, they are not run. ``given``: the
checkpoints the recipes and overrides name are used as they are and must exist (or be published names). ``auto``
(default): ``given`` where that file exists or the teacher is published, ``train`` where the file does not exist.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kdlab import builder
from kdlab.config import (
    ConfigError,
    RunConfig,
    read_yaml,
    recipe_names,
    resolve_config_path,
)
from kdlab.sweep.cell import Cell, Command
from kdlab.teachers import published

__all__ = ["RecipeEntry", "SlurmOptions", "SweepSpec", "cells_of", "command_for", "load_spec", "teacher_recipes"]

_GLOB = set("*?[")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecipeEntry(_Strict):
    """One recipe under a name of its own, with overrides of its own (a variant: ``{name: tau4, recipe: mnist1d/kd,
    overrides: [method.args.temperature=4]}``)."""

    recipe: str
    name: str | None = None
    overrides: list[str] = Field(default_factory=list)


class SlurmOptions(_Strict):
    """How ``--executor slurm`` asks for each cell (one array job per stage: teachers, then students)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_cell: int | None = Field(default=None, ge=0)  # default: procs_per_cell
    cpus_per_cell: int = Field(default=8, ge=1)
    mem_gb: float | None = Field(default=None, gt=0)
    time_min: int = Field(default=24 * 60, ge=1)  # per job; a cell that needs longer is requeued and resumes
    array_parallelism: int = Field(default=64, ge=1)  # cells running at once
    setup: list[str] = Field(default_factory=list)  # shell lines before each job (module load ..., source venv)
    additional: dict[str, str] = Field(default_factory=dict)  # more sbatch options, e.g. {mail-type: END}


class SweepSpec(_Strict):
    recipes: list[str | RecipeEntry] = Field(min_length=1)
    seeds: int | list[int] = Field(default=1, validate_default=True)  # a count n means seeds 0..n-1
    overrides: list[str] = Field(default_factory=list)
    student_overrides: list[str] = Field(default_factory=list)
    teachers: Literal["auto", "train", "given"] = "auto"
    teacher_overrides: list[str] = Field(default_factory=list)
    teacher_seed: int | None = None
    teacher_recipes: list[str] = Field(default_factory=list)  # YAML files of teachers besides the shipped ones
    out: str | None = None
    procs_per_cell: int = Field(default=1, ge=1)  # processes (GPUs) per cell; > 1 runs it under torchrun
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if isinstance(v, int):
            if v < 1:
                raise ValueError("seeds must be a count >= 1 or a list of seeds")
            return list(range(v))
        if not v or len(set(v)) != len(v):
            raise ValueError(f"seeds must be a non-empty list of distinct seeds, got {v}")
        return v

    def seed_list(self) -> list[int]:
        return list(self.seeds)  # a list after validation


def load_spec(path: str | Path | None = None, **changes) -> SweepSpec:
    """The spec in the YAML file ``path`` (or an empty one), with ``changes`` (command-line values) on top."""
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"sweep spec {path} not found")
    data = read_yaml(Path(path)) if path is not None else {}
    data.update({k: v for k, v in changes.items() if v is not None})
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path or 'sweep arguments'}: invalid sweep spec"]
        lines += [f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
                  f"{'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def command_for(cfg: RunConfig) -> Command:
    """``teacher`` for a config that trains ``teacher.arch`` with CE alone (``kdlab teacher``), else ``train``."""
    return "teacher" if cfg.method.name == "ce" and cfg.teacher.arch and not cfg.student.arch else "train"


def _expand(entry: str | RecipeEntry) -> list[tuple[str, str, list[str]]]:
    """``(name, recipe, overrides)`` of each recipe an entry names."""
    if isinstance(entry, RecipeEntry):
        resolve_config_path(entry.recipe)
        return [(entry.name or _name(entry.recipe), entry.recipe, list(entry.overrides))]
    if Path(entry).is_file():
        return [(_name(entry), entry, [])]
    if _GLOB & set(entry):
        if entry.endswith((".yaml", ".yml")):
            files = sorted(str(p) for p in Path().glob(entry))
            if not files:
                raise ConfigError(f"recipe pattern {entry!r} matches no file")
            return [(_name(f), f, []) for f in files]
        names = fnmatch.filter(recipe_names(), entry)
        if not names:
            raise ConfigError(f"recipe pattern {entry!r} matches no shipped recipe; list them with `kdlab recipes`")
        return [(n, n, []) for n in names]
    resolve_config_path(entry)  # a ConfigError names it
    return [(_name(entry), entry, [])]


def _name(recipe: str) -> str:
    """A shipped recipe is named by itself; a file by its stem."""
    return Path(recipe).with_suffix("").as_posix() if not Path(recipe).is_file() else Path(recipe).stem


def _norm(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def _trains(data_name: str, arch: str) -> str:
    return f"{data_name}:{arch}"  # not an absolute path, so it cannot collide with the paths of the index


def teacher_recipes(extra: list[str] = ()) -> dict[str, str]:
    """``{where its weights land: recipe}`` for every recipe that trains with CE alone, shipped or in ``extra``, and
    ``{"<data.name>:<teacher.arch>": recipe}`` (the first such recipe) for the published teachers it can replace."""
    out = {}
    for name in recipe_names() + list(extra):
        data = read_yaml(resolve_config_path(name))
        if data.get("method", {}).get("name") == "ce" and data.get("out_dir"):
            out[_norm(Path(data["out_dir"]) / "model.safetensors")] = name
            arch = (data.get("teacher") or {}).get("arch")
            if arch:
                out.setdefault(_trains((data.get("data") or {}).get("name", "mnist1d"), arch), name)
    return out


def cells_of(spec: SweepSpec, out: str | Path) -> list[Cell]:
    """Every cell of ``spec`` under ``out``: teacher cells first, then recipe by recipe, seed by seed. Configs are
    validated here, so a bad recipe or override is an error before anything runs."""
    out = Path(out)
    entries = [e for entry in spec.recipes for e in _expand(entry)]
    names = [n for n, _, _ in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"two recipes of the sweep share the name {dup[0]!r}; give them names "
                          "({name: ..., recipe: ...})")
    quiet = ["run.progress=false"]  # one progress bar: the sweep's
    teachers: dict[str, Cell] = {}
    index: dict[str, str] | None = None
    missing: list[str] = []
    students: list[Cell] = []
    for name, recipe, own in entries:
        base = [*quiet, *spec.overrides, *spec.student_overrides, *own]
        cfg = builder.load_config(recipe, base)
        extra: list[str] = []
        after: tuple[str, ...] = ()
        ckpt = cfg.teacher.checkpoint
        try:
            named = published.lookup(ckpt) if ckpt else None
        except ValueError as exc:
            missing.append(f"{name}: {exc}")
            continue
        given = named is not None or (ckpt is not None and Path(ckpt).is_file())  # a published one is fetched
        if ckpt and (spec.teachers == "train" or (spec.teachers == "auto" and not given)):
            index = index if index is not None else teacher_recipes(spec.teacher_recipes)
            tname = index.get(_norm(ckpt) if named is None else _trains(cfg.data.name, named.arch))
            if tname is None:
                missing.append(f"{name}: no teacher at {ckpt} and no teacher recipe writes there" if named is None
                               else f"{name}: no teacher recipe trains {named.arch} on {cfg.data.name} (in place of "
                                    f"{ckpt})")
                continue
            if tname not in teachers:
                teachers[tname] = _teacher_cell(spec, tname, out, quiet)
            tcell = teachers[tname]
            extra = [f"teacher.checkpoint={Path(tcell.out_dir) / 'model.safetensors'}"]
            after = (tcell.key,)
        elif spec.teachers == "given" or ckpt:
            for path in ([ckpt] if ckpt else []) + list(cfg.teacher.checkpoints or []):
                if not Path(path).is_file() and published.lookup(path) is None:
                    missing.append(f"{name}: teacher checkpoint {path} not found")
        command = command_for(cfg)
        for seed in spec.seed_list():
            run_dir = out / name / f"seed{seed}"
            cell = Cell(name, recipe, tuple(base + extra + [f"seed={seed}", f"out_dir={run_dir}"]), str(run_dir),
                        seed, command, "student", spec.procs_per_cell, after)
            cell.config()  # validate now
            students.append(cell)
    if missing:
        raise ConfigError("the sweep cannot find these teachers (train them, or set teacher.checkpoint, or "
                          "teachers: train with a teacher recipe):\n  " + "\n  ".join(missing))
    return list(teachers.values()) + students


def _teacher_cell(spec: SweepSpec, recipe: str, out: Path, quiet: list[str]) -> Cell:
    seed = spec.teacher_seed if spec.teacher_seed is not None else read_yaml(resolve_config_path(recipe)).get("seed", 0)
    run_dir = out / _name(recipe) / f"seed{seed}"
    ov = (*quiet, *spec.overrides, *spec.teacher_overrides, f"seed={seed}", f"out_dir={run_dir}")
    cfg = builder.load_config(recipe, list(ov))
    return Cell(_name(recipe), recipe, ov, str(run_dir), seed, command_for(cfg), "teacher", spec.procs_per_cell)
