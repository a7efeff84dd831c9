"""``kdlab experiment NAME``: every named experiment (``configs/experiments/NAME.yaml``, :mod:`kdlab.fidelity.specs`)
on any recipe, as a sweep.

Specs of kind ``sweep`` (CAKD's, DHKD's, TTM's, R2KD's ablations) run through :mod:`kdlab.fidelity.study`. Specs of
kind ``fidelity`` are Stanton et al.'s (NeurIPS 2021) experiments, run here: self-distillation with pure KD from
the pair's recipe (MNIST-1D: ``configs/mnist1d/fidelity_kd.yaml``; ``--pair resnet56-resnet56`` on CIFAR-100,
``resnet50-resnet50`` on ImageNet, or any ``--recipe``); teachers come from the pair's teacher recipe (MNIST-1D:
``configs/mnist1d/fidelity_teacher.yaml``) with seeds 0, 1, 2, … and are trained once and cached under
``$KDLAB_DATA/teachers/fidelity`` (keyed by their config hash). Seed s of an experiment distils from its own disjoint
set of teachers; the independent-student control for seed s is the student of seed s+1 (mod S) — distilled
identically from a disjoint, independent teacher set — evaluated against seed s's teacher.

Writes ``<out>/results.json`` (per variant: mean ± std over seeds of every metric, and the per-seed reports),
``results.md`` (the table) and PNGs: ``agreement_vs_accuracy.png``, ``train_vs_test_agreement.png`` and
``reliability.png`` (reliability diagram of the teacher and each variant's seed-0 student on the test split).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from kdlab import builder
from kdlab._io import atomic_write_text
from kdlab.config import ConfigError
from kdlab.data import default_root
from kdlab.engine.environment import environment
from kdlab.eval import mean_std, summarize_seeds
from kdlab.eval.metrics import reliability_bins
from kdlab.fidelity.sources import evaluate_sources
from kdlab.fidelity.specs import ExperimentSpec, VariantSpec, experiment_names, load_experiment
from kdlab.fidelity.study import SHARED_PREFIXES, epoch_overrides, plan_study, run_study, slug
from kdlab.models import load_model
from kdlab.plots import experiment_figures
from kdlab.sweep import Cell, Local, WorkerPool, pool_size, run_sweep
from kdlab.sweep.runner import Executor

__all__ = ["Variant", "experiment_names", "run_experiment", "run_named"]

Variant = VariantSpec  # one row of an experiment (kept under its old name)


def run_named(name: str, out_dir: Path | str, executor: Executor | None = None, pair: str | None = None,
              recipe: str | None = None, teacher_recipe: str | None = None, seeds: int | None = None,
              quick: bool = False, overrides: list[str] | None = None, epochs: int | None = None,
              teacher_epochs: int | None = None, procs_per_cell: int = 1, progress: bool = True,
              workers: int | None = None) -> dict[str, Any]:
    """Run the named experiment ``name`` (a shipped spec or a YAML file) with the chosen pair or recipe."""
    spec = load_experiment(name)
    if spec.kind == "fidelity":
        return run_experiment(name, out_dir, quick=quick, seeds=seeds, progress=progress, workers=workers,
                              epochs=epochs, teacher_epochs=teacher_epochs, pair=pair, recipe=recipe,
                              teacher_recipe=teacher_recipe, overrides=overrides, executor=executor)
    study = plan_study(spec, Path(name).stem, out_dir, pair=pair, recipe=recipe, teacher_recipe=teacher_recipe,
                       seeds=seeds, quick=quick, overrides=overrides, epochs=epochs, teacher_epochs=teacher_epochs,
                       procs_per_cell=procs_per_cell)
    if executor is not None:
        return run_study(study, executor, progress)
    with Local(workers or 1, progress=progress) as local:
        return run_study(study, local, progress)


# --------------------------------------------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------------------------------------------
def _evaluate_student(recipe: str, overrides: list[str], threads: int) -> dict[str, Any]:
    """Evaluate a distilled student (a finished cell) on every source; returns flat metrics + reliability bins."""
    torch.set_num_threads(threads)
    cfg = builder.load_config(recipe, overrides)
    final = json.loads((Path(cfg.out_dir) / "final.json").read_text(encoding="utf-8"))
    splits = builder.load_data(cfg)
    teacher = builder.load_teacher_module(cfg.teacher, splits.num_classes).eval()
    student = load_model(Path(cfg.out_dir) / "model.safetensors", num_classes=splits.num_classes).eval()
    tau = cfg.method.args.get("temperature")
    rep = evaluate_sources(teacher, student, splits, ("test", "train_clean", "train_aug", "distill_stream"),
                           distill_data=cfg.distill_data, run_dir=cfg.out_dir, temperature=tau, seed=cfg.seed,
                           augment=cfg.data.augment == "default", policy_batch_size=cfg.optim.batch_size)
    with torch.inference_mode():
        bins = {who: {k: v.tolist() for k, v in reliability_bins(m(splits.x_test), splits.y_test).items()}
                for who, m in (("teacher", teacher), ("student", student))}
    t = rep["test"]
    flat = {
        "test_agreement": t["agreement"], "test_top5_agreement": t["top5_agreement"], "test_kl": t["kl"],
        "student_acc": t["student_acc"], "teacher_acc": t["teacher_acc"], "student_nll": t["student_nll"],
        "student_ece": t["student_ece"], "teacher_ece": t["teacher_ece"], "test_logit_l2": t["logit_l2"],
        "train_agreement": rep["train_clean"]["agreement"], "train_kl": rep["train_clean"]["kl"],
        "train_aug_agreement": rep["train_aug"]["agreement"], "train_aug_kl": rep["train_aug"]["kl"],
        "stream_agreement": rep["distill_stream"]["agreement"],
    }
    if tau is not None:
        flat["test_kl_at_tau"] = t[f"kl_T{tau:g}"]
    return {"flat": flat, "sources": rep, "bins": bins, "wall_time_s": final["wall_time_s"],
            "student_path": str(Path(cfg.out_dir) / "model.safetensors"), "teacher_paths": cfg.teacher.checkpoints
            or [cfg.teacher.checkpoint]}


def _control(recipe: str, overrides: list[str], teacher_paths: list[str], control_student: str) -> dict[str, float]:
    """The control student (distilled from an independent teacher set) against this seed's teacher, on test."""
    splits = builder.load_data(builder.load_config(recipe, overrides))
    teachers = [load_model(p, num_classes=splits.num_classes) for p in teacher_paths]
    student = load_model(control_student, num_classes=splits.num_classes)
    rep = evaluate_sources(teachers if len(teachers) > 1 else teachers[0], student, splits, ("test",))["test"]
    return {"control_agreement": rep["agreement"], "control_kl": rep["kl"], "control_acc": rep["student_acc"]}


# --------------------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------------------
def _teacher_dir(recipe: str, overrides: list[str]) -> Path:
    """Where the fidelity teacher of ``recipe`` + ``overrides`` is cached: named by its arch and config hash."""
    cfg = builder.load_config(recipe, overrides)
    return Path(default_root()) / "teachers" / "fidelity" / f"{cfg.teacher.arch}-{builder.plan_of(cfg).identity_hash}"


def _table(results: dict[str, Any]) -> str:
    cols = [("test agreement %", "test_agreement", 2, 1), ("control agreement %", "control_agreement", 2, 1),
            ("student acc %", "student_acc", 2, 1), ("teacher acc %", "teacher_acc", 2, 1),
            ("test KL(t‖s)", "test_kl", 3, 1), ("student ECE %", "student_ece", 2, 100),
            ("train agreement %", "train_agreement", 2, 1), ("train-aug agreement %", "train_aug_agreement", 2, 1)]
    epochs = f"{results['epochs']} epochs" if results["epochs"] else "the recipe's epochs"
    lines = [f"{results['title']} — {results['setting']}, {results['seeds']} seed(s), {epochs} unless the row says "
             "otherwise; mean ± std over seeds.", "",
             "| variant | " + " | ".join(c[0] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in results["variants"].items():
        cells = [mean_std(r["summary"], key, d, scale) for _, key, d, scale in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _setting(recipe: str, teacher_recipe: str) -> str:
    cfg = builder.load_config(recipe)
    method = cfg.method.name + (f" (ce_weight {cfg.method.args['ce_weight']:g})" if "ce_weight" in cfg.method.args
                                else "")
    return (f"{cfg.data.name}, {cfg.teacher.arch} → {cfg.student.arch}, {method}; recipe {recipe}, teachers "
            f"{teacher_recipe}")


def run_experiment(name: str, out_dir: Path | str, quick: bool = False, seeds: int | None = None,
                   progress: bool = True, workers: int | None = None, epochs: int | None = None,
                   teacher_epochs: int | None = None, pair: str | None = None, recipe: str | None = None,
                   teacher_recipe: str | None = None, overrides: list[str] | None = None,
                   executor: Executor | None = None) -> dict[str, Any] | None:
    """Run the fidelity experiment ``name`` (a spec of kind ``fidelity``) and write results.json/.md and PNGs into
    ``out_dir``.

    On the spec's default pair (MNIST-1D): 3 seeds, 30 student and 30 teacher epochs; ``quick``: 2 seeds, 10 student
    and 15 teacher epochs. On another pair or ``recipe``: the recipes' own epochs unless ``epochs`` /
    ``teacher_epochs`` are given. ``seeds`` must be at least 2 (the control of seed s is the student of seed s+1).
    ``overrides`` reach every student (those of ``data.``/``run.`` the teachers too). ``executor``: where the
    training cells run (default: ``workers`` local processes); the reports are computed here. Returns None when
    cells were submitted (SLURM ``--no-wait``) and are not finished: rerun to collect.
    """
    spec: ExperimentSpec = load_experiment(name)
    if spec.kind != "fidelity":
        raise ValueError(f"experiment {name} is not a fidelity experiment; run it with run_named")
    pair = pair or next(iter(spec.pairs))
    if pair not in spec.pairs:
        raise ConfigError(f"experiment {name}: unknown --pair {pair!r}; choose one of: {', '.join(spec.pairs)}")
    student_recipe = recipe or spec.pairs[pair]
    teacher_recipe = teacher_recipe or spec.teachers.get(pair)
    if teacher_recipe is None:
        raise ConfigError(f"experiment {name}: give --teacher-recipe (the recipe of the teachers to distil from)")
    default = recipe is None and pair == next(iter(spec.pairs))
    seeds = seeds if seeds is not None else (spec.quick_seeds if quick else spec.seeds)
    if seeds < 2:
        raise ValueError("--seeds must be at least 2: seed s's independent control is the student of seed s+1")
    if default:
        epochs = epochs or (spec.quick_epochs if quick else spec.epochs)
        teacher_epochs = teacher_epochs or (spec.quick_teacher_epochs if quick else spec.teacher_epochs)
    user = list(overrides or [])
    shared = [o for o in user if o.startswith(SHARED_PREFIXES)]
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers, threads = pool_size(workers)
    variants = spec.rows(pair, quick)

    # teacher pools: seed s of a variant with M members uses teachers s·M … s·M+M−1 (disjoint across seeds); each
    # teacher is a cell of the sweep (cached by its config hash), each student runs once its teachers have finished
    teachers: dict[str, Cell] = {}
    plan = []
    t_length = epoch_overrides(teacher_recipe, shared, teacher_epochs) if teacher_epochs else []
    for v in variants:
        for s in range(seeds):
            paths = []
            for k in range(s * v.members, (s + 1) * v.members):
                ov = shared + v.teacher_overrides + t_length + [f"seed={k}"]
                tdir = _teacher_dir(teacher_recipe, ov)
                teachers[str(tdir)] = Cell(teacher_recipe, teacher_recipe, tuple(ov + [f"out_dir={tdir}",
                                                                                      "run.progress=false"]),
                                           str(tdir), k, "teacher", "teacher", label=f"teacher seed {k}")
                paths.append(str(tdir / "model.safetensors"))
            plan.append((v, s, paths))
    cells = {}
    for v, s, paths in plan:
        teacher = ([f"teacher.checkpoints={json.dumps(paths)}", "teacher.checkpoint=null"] if len(paths) > 1
                   else [f"teacher.checkpoint={paths[0]}"])
        run_dir = out / "runs" / slug(v.name) / f"seed{s}"
        length = v.epochs or epochs
        ov = v.overrides + user
        ov = (epoch_overrides(student_recipe, ov, length) if length else []) + ov + teacher + [
            f"seed={s}", f"out_dir={run_dir}", "run.progress=false", "run.tensorboard=false"]
        cells[(v.name, s)] = Cell(run_dir.parent.name, student_recipe, tuple(ov), str(run_dir), s,
                                  after=tuple(str(Path(p).parent) for p in paths), label=f"{v.name} seed {s}")
    local = executor if isinstance(executor, Local) else Local(workers, threads, progress=progress)
    try:
        report = run_sweep(list(teachers.values()) + list(cells.values()), out / "runs", executor or local)
        if any(report.status(c) == "submitted" for c in report.cells) and not report.problems():
            print(f"{report.summary()}\nsubmitted; rerun the same command to collect the results")
            return None
        if not report.ok:
            raise ValueError(f"experiment {name}: not every run finished:\n{report.summary()}")
        pool: WorkerPool = local.pool
        done = pool.map(_evaluate_student, {k: (student_recipe, list(c.overrides), local.threads)
                                            for k, c in cells.items()}, progress, f"{name} reports")
        runs: dict[str, dict[int, dict]] = {}
        for (vname, s), result in done.items():
            runs.setdefault(vname, {})[s] = result
        # independent-student control: seed s's teacher vs the student of seed s+1 (independent teachers)
        controls = pool.map(_control, {(v.name, s): (student_recipe, list(cells[(v.name, s)].overrides),
                                                     runs[v.name][s]["teacher_paths"],
                                                     runs[v.name][(s + 1) % seeds]["student_path"])
                                       for v in variants for s in range(seeds)})
    finally:
        if local is not executor:
            local.pool.close()
    for (vname, s), result in controls.items():
        runs[vname][s]["flat"].update(result)

    results: dict[str, Any] = {"name": name, "title": spec.title, "quick": quick, "seeds": seeds, "epochs": epochs,
                               "teacher_epochs": teacher_epochs, "pair": pair, "recipe": student_recipe,
                               "teacher_recipe": teacher_recipe, "setting": _setting(student_recipe, teacher_recipe),
                               "claim": spec.claim, "variants": {}}
    for v in variants:
        per_seed = [runs[v.name][s] for s in range(seeds)]
        results["variants"][v.name] = {
            "overrides": v.overrides, "members": v.members,
            "summary": summarize_seeds([r["flat"] for r in per_seed]),
            "per_seed": [{"flat": r["flat"], "sources": r["sources"]} for r in per_seed],
            "bins": per_seed[0]["bins"],
        }
    results["wall_time_s"] = time.perf_counter() - start
    results["environment"] = environment("cpu")
    table = _table(results)
    results["pngs"] = experiment_figures(results, out)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out / "results.md", table + "\n")
    print(table)  # the result is printed with or without progress bars
    print(f"\n{report.summary()}\nwrote {out / 'results.json'}, {out / 'results.md'} and "
          f"{', '.join(results['pngs'])} in {results['wall_time_s']:.0f} s")
    return results
