"""A named experiment of kind ``sweep`` (``kdlab experiment NAME``): its rows × seeds as the cells of one sweep, and
its table.

Every row of the spec (:mod:`kdlab.fidelity.specs`) on the chosen pair (or ``--recipe``) is trained for each seed as
an ordinary run (``<out>/runs/<row>/seed<k>``) through :func:`kdlab.sweep.run_sweep`: locally (``--jobs``) or on
SLURM, and resumable — rerunning the same command skips the finished cells and trains only what is missing. The
teacher is the one the recipe names when that file exists or is published; otherwise (or with ``--teacher-recipe``,
or for a row with ``teacher_overrides``) it is trained as a cell of the same sweep (``<out>/teachers/...``).

Writes ``<out>/results.json`` (per row: mean ± std over seeds of best- and last-epoch test accuracy, agreement, KL,
ECE, n, the per-seed numbers and the published number), ``results.md`` (the table) and ``accuracy.png`` (best-epoch
accuracy per row with its spread, published numbers marked) and ``accuracy_vs_agreement.png``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab import builder
from kdlab._io import atomic_write_text
from kdlab.config import ConfigError, read_yaml, resolve_config_path
from kdlab.eval import mean_std, summarize_seeds
from kdlab.fidelity.specs import COLUMNS, ExperimentSpec, VariantSpec
from kdlab.plots import accuracy_vs_agreement, experiment_bars
from kdlab.sweep import Cell, run_sweep
from kdlab.sweep.runner import Executor
from kdlab.sweep.spec import command_for, teacher_recipes
from kdlab.sweep.table import per_seed
from kdlab.sweep.published import PUBLISHED_FILE, load_published
from kdlab.sweep.trust import distrust, read_final
from kdlab.teachers import published

__all__ = ["Study", "collect_study", "epoch_overrides", "finished", "markdown", "plan_study", "run_study", "slug"]

QUIET = ["run.progress=false", "run.tensorboard=false"]  # one progress bar: the sweep's
SHARED_PREFIXES = ("data.", "run.")  # user overrides that reach the teachers too: the same data and device


def slug(name: str) -> str:
    """A row's directory name: its name with spaces and slashes made safe."""
    return name.replace(" ", "_").replace("/", "_")


def epoch_overrides(recipe: str, overrides: list[str], epochs: int) -> list[str]:
    """Overrides that train ``recipe`` for ``epochs`` epochs, its lr milestones (and lr warm-up) scaled alike and the
    test evaluated at least at the end."""
    o = builder.load_config(recipe, overrides).optim
    milestones = sorted({round(m * epochs / o.epochs) for m in o.milestones} & set(range(1, epochs)))
    out = [f"optim.epochs={epochs}", f"optim.milestones={milestones}", f"eval.every={epochs}"]
    if o.warmup_epochs:
        out.append(f"optim.warmup_epochs={min(epochs - 1, round(o.warmup_epochs * epochs / o.epochs))}")
    return out


@dataclass
class Study:
    """The cells of one experiment on one pair: teachers first, then every row's students (seed order)."""

    spec: ExperimentSpec
    name: str
    pair: str
    recipe: str | None  # the user's --recipe (None: the pair's)
    out: Path
    seeds: list[int]
    rows: list[VariantSpec]
    teachers: dict[str, Cell] = field(default_factory=dict)
    students: dict[str, list[Cell]] = field(default_factory=dict)  # row name → its cells
    recipes: dict[str, str] = field(default_factory=dict)  # row name → its student recipe

    @property
    def cells(self) -> list[Cell]:
        return list(self.teachers.values()) + [c for cells in self.students.values() for c in cells]


def _teacher_recipe_for(cfg, variant: VariantSpec, given: str | None) -> str | None:
    """The teacher recipe to train for ``cfg`` (None: use the checkpoint the config names)."""
    if given is not None:
        return given
    ckpt = cfg.teacher.checkpoint
    if ckpt is None or published.lookup(ckpt) is not None or (Path(ckpt).is_file() and not variant.teacher_overrides):
        if variant.teacher_overrides:
            raise ConfigError(f"row {variant.name!r} changes its teacher (teacher_overrides) but no teacher recipe is "
                              "known: give --teacher-recipe")
        return None
    found = teacher_recipes().get(os.path.normpath(os.path.abspath(ckpt)))
    if found is None:
        raise ConfigError(f"no teacher at {ckpt} and no shipped recipe writes there: give --teacher-recipe")
    return found


def plan_study(spec: ExperimentSpec, name: str, out: str | Path, pair: str | None = None, recipe: str | None = None,
               teacher_recipe: str | None = None, seeds: int | None = None, quick: bool = False,
               overrides: list[str] | None = None, epochs: int | None = None, teacher_epochs: int | None = None,
               procs_per_cell: int = 1) -> Study:
    """The cells of experiment ``spec`` (validated now, so a bad row or override fails before anything runs)."""
    pair = pair or next(iter(spec.pairs))
    if pair not in spec.pairs:
        raise ConfigError(f"experiment {name}: unknown --pair {pair!r}; choose one of: {', '.join(spec.pairs)}")
    if recipe is not None:
        resolve_config_path(recipe)
    default = recipe is None and pair == next(iter(spec.pairs))
    if default:  # the spec's epoch counts are for its default pair; another recipe keeps its own
        epochs = epochs or (spec.quick_epochs if quick else spec.epochs)
        teacher_epochs = teacher_epochs or (spec.quick_teacher_epochs if quick else spec.teacher_epochs)
    seeds = seeds or (spec.quick_seeds if quick else spec.seeds)
    user = list(overrides or [])
    shared = [o for o in user if o.startswith(SHARED_PREFIXES)]
    out = Path(out)
    rows = spec.rows(pair, quick)
    study = Study(spec, name, pair, recipe, out, list(range(seeds)), rows)
    for v in rows:
        srecipe = spec.recipe_of(v, pair, recipe)
        base = QUIET + spec.overrides + v.overrides + user
        cfg = builder.load_config(srecipe, base)
        trecipe = _teacher_recipe_for(cfg, v, teacher_recipe or spec.teachers.get(pair))
        extra, after = [], ()
        if trecipe is not None:
            tov = QUIET + shared + v.teacher_overrides
            tov += epoch_overrides(trecipe, tov, teacher_epochs) if teacher_epochs else []
            tseed = read_yaml(resolve_config_path(trecipe)).get("seed", 0)
            # named by what makes it differ, so rows that share a teacher share its cell
            tname = "_".join([slug(Path(trecipe).stem)] + [slug(o) for o in v.teacher_overrides])
            tdir = out / "teachers" / tname / f"seed{tseed}"
            tov += [f"seed={tseed}", f"out_dir={tdir}"]
            tcell = study.teachers.setdefault(str(tdir), Cell(
                tdir.parent.name, trecipe, tuple(tov), str(tdir), tseed,
                command_for(builder.load_config(trecipe, tov)), "teacher", procs_per_cell,
                label=f"teacher {tdir.parent.name}"))
            if tcell.overrides != tuple(tov):
                raise ConfigError(f"two rows train different teachers in {tdir}; give them different names")
            extra = [f"teacher.checkpoint={tdir / 'model.safetensors'}", "teacher.checkpoints=null"]
            after = (tcell.key,)
        length = epoch_overrides(srecipe, base, v.epochs or epochs) if (v.epochs or epochs) else []
        cells = []
        for s in study.seeds:
            run_dir = out / "runs" / slug(v.name) / f"seed{s}"
            cell = Cell(v.name, srecipe, tuple(base + length + extra + [f"seed={s}", f"out_dir={run_dir}"]),
                        str(run_dir), s, command_for(cfg), "student", procs_per_cell, after, label=f"{v.name} seed {s}")
            cells.append(cell)
        cells[0].config()  # validate now (the seeds differ only in seed= and out_dir=)
        study.students[v.name] = cells
        study.recipes[v.name] = srecipe
    return study


def _published(study: Study, v: VariantSpec) -> dict[str, Any] | None:
    """The published number of a row on this pair: the spec's own, else configs/published.yaml's for an unchanged
    shipped recipe ``<data set>/<pair>/<method>`` (None when the user's --recipe replaces the pair's)."""
    if study.recipe is not None:
        return None
    table = load_published()
    for row in study.spec.published:
        if row.variant == v.name and row.pair == study.pair:
            return {"acc": row.acc, "source": table.sources[row.source], "note": row.note,
                    "unverified": (read_yaml(PUBLISHED_FILE).get("unverified") or {}).get(row.source)}
    parts = study.recipes[v.name].split("/")
    if len(parts) == 3 and not v.overrides:
        found = table.lookup(parts[0], parts[1], parts[2])
        if found:
            return {"acc": found[0].acc, "source": found[0].source, "note": found[0].note,
                    "unverified": found[0].unverified}
    return None


def collect_study(study: Study) -> dict[str, Any]:
    """Per row: the trusted finished seeds, their mean ± std, those left out and why, the published number."""
    rows: dict[str, Any] = {}
    for v in study.rows:
        seeds, left_out, missing = [], [], []
        for cell in study.students[v.name]:
            path = Path(cell.out_dir) / "final.json"
            if not path.is_file():
                missing.append(cell.seed)
                continue
            final = read_final(path)
            reason = distrust(final)
            if reason:
                left_out.append({"seed": cell.seed, "reason": reason})
                continue
            seeds.append({"seed": cell.seed, **per_seed(final),
                          "teacher_acc": (final.get("teacher") or {}).get("acc")})
        rows[v.name] = {"recipe": study.recipes[v.name], "overrides": v.overrides,
                        "summary": summarize_seeds([{k: x for k, x in s.items() if k != "seed"} for s in seeds])
                        if seeds else None, "per_seed": seeds, "left_out": left_out, "missing_seeds": missing,
                        "published": _published(study, v)}
    return rows


def markdown(results: dict[str, Any]) -> str:
    spec_cols = list(results["columns"])
    any_pub = any(r["published"] for r in results["rows"].values())
    done = [r["summary"] for r in results["rows"].values() if r["summary"]]
    teachers = {round(s["teacher_acc_mean"], 6) for s in done if "teacher_acc_mean" in s}
    if len(teachers) > 1:  # the rows' teachers differ: a column of its own
        spec_cols.append("teacher_acc")
    head = ["variant", "n"] + [COLUMNS[c][0] for c in spec_cols] + (["published %"] if any_pub else [])
    teacher = f"; teacher {mean_std(done[0], 'teacher_acc', 2)}%" if len(teachers) == 1 else ""
    lines = [f"{results['title']} — `kdlab experiment {results['name']}` on {results['pair']} "
             f"({results['recipe_note']}); mean ± std over seeds (n per row){teacher}.",
             f"Claim ({results['paper']}): {results['claim']}", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, r in results["rows"].items():
        s = r["summary"]
        n = f"{s['n_seeds'] if s else 0}" + (f" + {len(r['left_out'])} failed" if r["left_out"] else "") + (
            f" ({len(r['missing_seeds'])} missing)" if r["missing_seeds"] else "")
        cells = [mean_std(s, c, COLUMNS[c][1]) for c in spec_cols]
        pub = r["published"]
        if any_pub:
            cells.append("–" if not pub else f"{pub['acc']:.2f}" + (" (unverified)" if pub.get("unverified") else ""))
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    sources = sorted({r["published"]["source"] for r in results["rows"].values() if r["published"]})
    lines += [""] + [f"Published: {s}" for s in sources] if sources else []
    for name, r in results["rows"].items():
        for lo in r["left_out"]:
            lines.append(f"- left out: {name} seed {lo['seed']}: {lo['reason']}")
    return "\n".join(lines)


def run_study(study: Study, executor: Executor, progress: bool = True) -> dict[str, Any]:
    """Run (or finish) ``study``'s cells through ``executor``, then write results.json/.md and the PNGs from every
    finished cell. Returns the results, with ``"problems"``: cells that failed, were blocked or are still pending."""
    start = time.perf_counter()
    out = study.out
    out.mkdir(parents=True, exist_ok=True)
    report = run_sweep(study.cells, out, executor, spec={"experiment": study.name, "pair": study.pair})
    rows = collect_study(study)
    results: dict[str, Any] = {
        "name": study.name, "title": study.spec.title, "paper": study.spec.paper, "claim": study.spec.claim,
        "pair": study.pair, "recipe_note": study.recipe or study.spec.pairs[study.pair],
        "seeds": len(study.seeds), "columns": study.spec.columns, "rows": rows,
        "cells": {s: sum(report.status(c) == s for c in study.cells) for s in
                  ("trained", "resumed", "finished", "failed", "changed", "blocked", "submitted")},
        "problems": [f"{rec['status']} {c.describe()}: {rec.get('reason')}" for c, rec in report.problems()],
    }
    table = markdown(results)
    pngs = []
    done = {k: r["summary"] for k, r in rows.items() if r["summary"]}
    if done:
        experiment_bars({k: (s, (rows[k]["published"] or {}).get("acc")) for k, s in done.items()},
                        out / "accuracy.png", f"{study.name} on {study.pair}")
        pngs.append("accuracy.png")
        if any("agreement_mean" in s for s in done.values()):
            accuracy_vs_agreement([(f"{study.name} on {study.pair}", done, set())], out / "accuracy_vs_agreement.png")
            pngs.append("accuracy_vs_agreement.png")
    results["pngs"] = pngs
    results["wall_time_s"] = time.perf_counter() - start
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out / "results.md", table + "\n")
    print(table)
    print(f"\n{report.summary()}\nwrote {out / 'results.json'}, {out / 'results.md'}"
          + (f" and {', '.join(pngs)}" if pngs else "") + f" in {results['wall_time_s']:.0f} s")
    return results


def finished(results: dict[str, Any]) -> bool:
    return not results["problems"] and all(r["summary"] and not r["missing_seeds"] for r in results["rows"].values())

