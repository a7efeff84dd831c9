"""``kdlab experiment NAME``: the experiments of Stanton et al. (NeurIPS 2021) at MNIST-1D scale.

Every experiment is self-distillation mnist1d_cnn → mnist1d_cnn with pure KD (``ce_weight = 0``, as in the paper)
from the recipe ``configs/mnist1d/fidelity_kd.yaml``; teachers come from ``configs/mnist1d/fidelity_teacher.yaml``
with seeds 0, 1, 2, … and are trained once and cached under ``$KDLAB_DATA/teachers/fidelity`` (keyed by their
config hash). Seed s of an experiment distils from its own disjoint set of teachers; the independent-student control
for seed s is the student of seed s+1 (mod S) — distilled identically from a disjoint, independent teacher set —
evaluated against seed s's teacher. Runs are spread over 2 worker processes.

Writes ``<out>/results.json`` (per variant: mean ± std over seeds of every metric, and the per-seed reports),
``results.md`` (the table) and PNGs: ``agreement_vs_accuracy.png``, ``train_vs_test_agreement.png`` and
``reliability.png`` (reliability diagram of the teacher and each variant's seed-0 student on the test split).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdlab import builder
from kdlab._io import atomic_write_text
from kdlab.data import default_root, load_dataset
from kdlab.engine.environment import environment
from kdlab.eval import mean_std, summarize_seeds
from kdlab.eval.metrics import reliability_bins
from kdlab.fidelity.sources import evaluate_sources
from kdlab.models import load_model
from kdlab.plots import experiment_figures
from kdlab.sweep import Cell, Local, pool_size, run_sweep

__all__ = ["EXPERIMENTS", "Variant", "experiment_names", "run_experiment"]

STUDENT_RECIPE = "mnist1d/fidelity_kd"
TEACHER_RECIPE = "mnist1d/fidelity_teacher"


@dataclass
class Variant:
    """One row of an experiment: overrides of the student recipe, ensemble size and teacher-pool options."""

    name: str
    overrides: list[str] = field(default_factory=list)
    members: int = 1
    teacher_overrides: list[str] = field(default_factory=list)  # e.g. split control: teachers on half the data


def _epochs(e: int) -> list[str]:
    ms = sorted({max(1, round(e * f)) for f in (2 / 3, 5 / 6)} - {e})
    return [f"optim.epochs={e}", f"optim.milestones={ms}", f"eval.every={e}"]


def _self_distillation_ensemble(quick: bool) -> list[Variant]:
    sizes = (1, 3) if quick else (1, 2, 3, 5)
    return [Variant(f"ensemble M={m}", members=m) for m in sizes]


def _temperature(quick: bool) -> list[Variant]:
    taus = (1.0, 4.0) if quick else (1.0, 2.0, 4.0, 10.0)
    return [Variant(f"tau={t:g}", [f"method.args.temperature={t}"]) for t in taus]


def _augmentation(quick: bool) -> list[Variant]:
    names = ["none", "default"] + ([] if quick else ["reverse", "scale", "stretch"]) + ["combined"]
    out = [Variant(f"augment={n}" + (" (shift, baseline)" if n == "default" else ""), [f"distill_data.augment={n}"])
           for n in names]
    out.append(Variant("mixup a=1", ["distill_data.mixup_alpha=1.0"]))
    if not quick:
        out.append(Variant("noise p=0.2", ["distill_data.noise_prob=0.2"]))
        out.append(Variant("combined + mixup", ["distill_data.augment=combined", "distill_data.mixup_alpha=1.0"]))
    return out


def _extra_data(quick: bool) -> list[Variant]:
    half = ["distill_data.holdout_fraction=0.5"]
    out = [
        Variant("teacher's half", half + ["distill_data.split=teacher"], teacher_overrides=half),
        Variant("held-out half", half + ["distill_data.split=holdout"], teacher_overrides=half),
        Variant("both halves", half + ["distill_data.split=both"], teacher_overrides=half),
    ]
    if not quick:
        out.append(Variant("teacher's half + shuffled OOD",
                           half + ["distill_data.extra=[{name: ood, kind: shuffled, per_batch: 0.5}]"],
                           teacher_overrides=half))
        out.append(Variant("teacher's half + held-out unlabelled",
                           half + ["distill_data.extra=[{name: held, kind: holdout, per_batch: 1.0}]"],
                           teacher_overrides=half))
    return out


def _training_length(quick: bool) -> list[Variant]:
    lengths = (5, 15) if quick else (10, 30, 90)
    return [Variant(f"{e} epochs", _epochs(e)) for e in lengths]


def _init_interpolation(quick: bool) -> list[Variant]:
    lams = (0.0, 0.5, 1.0) if quick else (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
    return [Variant(f"lambda={lam:g}", [f"student.init_from_teacher={lam}"]) for lam in lams]


EXPERIMENTS = {
    "self_distillation_ensemble": (_self_distillation_ensemble,
                                   "self-distillation fidelity vs teacher-ensemble size (probability averaging)"),
    "temperature": (_temperature, "fidelity vs distillation temperature"),
    "augmentation": (_augmentation, "fidelity vs distillation-data augmentation policy"),
    "extra_data": (_extra_data, "distilling on the teacher's data, held-out data, both, or extra unlabelled data"),
    "training_length": (_training_length, "train/test agreement vs training length"),
    "init_interpolation": (_init_interpolation, "fidelity vs initialisation θ = λθ_teacher + (1−λ)θ_random"),
}


def experiment_names() -> list[str]:
    return list(EXPERIMENTS)


# --------------------------------------------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------------------------------------------
def _evaluate_student(overrides: list[str], threads: int) -> dict[str, Any]:
    """Evaluate a distilled student (a finished cell) on every source; returns flat metrics + reliability bins."""
    torch.set_num_threads(threads)
    cfg = builder.load_config(STUDENT_RECIPE, overrides)
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


def _control(teacher_paths: list[str], control_student: str) -> dict[str, float]:
    """The control student (distilled from an independent teacher set) against this seed's teacher, on test."""
    splits = load_dataset("mnist1d")
    teachers = [load_model(p, num_classes=splits.num_classes) for p in teacher_paths]
    student = load_model(control_student, num_classes=splits.num_classes)
    rep = evaluate_sources(teachers if len(teachers) > 1 else teachers[0], student, splits, ("test",))["test"]
    return {"control_agreement": rep["agreement"], "control_kl": rep["kl"], "control_acc": rep["student_acc"]}


# --------------------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------------------
def _teacher_dir(overrides: list[str]) -> tuple[Path, list[str]]:
    cfg = builder.load_config(TEACHER_RECIPE, overrides)
    return (Path(default_root()) / "teachers" / "fidelity" / f"mnist1d_cnn-{builder.plan_of(cfg).identity_hash}",
            overrides)


def _table(results: dict[str, Any]) -> str:
    cols = [("test agreement %", "test_agreement", 2, 1), ("control agreement %", "control_agreement", 2, 1),
            ("student acc %", "student_acc", 2, 1), ("teacher acc %", "teacher_acc", 2, 1),
            ("test KL(t‖s)", "test_kl", 3, 1), ("student ECE %", "student_ece", 2, 100),
            ("train agreement %", "train_agreement", 2, 1), ("train-aug agreement %", "train_aug_agreement", 2, 1)]
    lines = [f"{results['title']} — MNIST-1D, mnist1d_cnn → mnist1d_cnn, KD (ce_weight 0), "
             f"{results['seeds']} seed(s), {results['epochs']} epochs unless the row says otherwise; "
             "mean ± std over seeds.", "",
             "| variant | " + " | ".join(c[0] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in results["variants"].items():
        cells = [mean_std(r["summary"], key, d, scale) for _, key, d, scale in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_experiment(name: str, out_dir: Path | str, quick: bool = False, seeds: int | None = None,
                   progress: bool = True, workers: int | None = None, epochs: int | None = None,
                   teacher_epochs: int | None = None) -> dict[str, Any]:
    """Run experiment ``name`` (see :data:`EXPERIMENTS`) and write results.json/.md and PNGs into ``out_dir``.

    Defaults: 3 seeds, 30 student and 30 teacher epochs; ``quick``: 2 seeds, 10 student and 15 teacher epochs.
    ``seeds`` must be at least 2 (the control of seed s is the student of seed s+1).
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {experiment_names()} (`kdlab experiment --list`)")
    seeds = seeds if seeds is not None else (2 if quick else 3)
    if seeds < 2:
        raise ValueError("--seeds must be at least 2: seed s's independent control is the student of seed s+1")
    epochs = epochs or (10 if quick else 30)
    teacher_epochs = teacher_epochs or (15 if quick else 30)
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers, threads = pool_size(workers)
    make_variants, title = EXPERIMENTS[name]
    variants = make_variants(quick)

    # teacher pools: seed s of a variant with M members uses teachers s·M … s·M+M−1 (disjoint across seeds); each
    # teacher is a cell of the sweep (cached by its config hash), each student runs once its teachers have finished
    teachers: dict[str, Cell] = {}
    plan = []
    for v in variants:
        for s in range(seeds):
            paths = []
            for k in range(s * v.members, (s + 1) * v.members):
                tdir, ov = _teacher_dir(v.teacher_overrides + _epochs(teacher_epochs) + [f"seed={k}"])
                teachers[str(tdir)] = Cell(TEACHER_RECIPE, TEACHER_RECIPE, tuple(ov + [f"out_dir={tdir}",
                                                                                      "run.progress=false"]),
                                           str(tdir), k, "teacher", "teacher", label=f"teacher seed {k}")
                paths.append(str(tdir / "model.safetensors"))
            plan.append((v, s, paths))
    cells = {}
    for v, s, paths in plan:
        teacher = ([f"teacher.checkpoints={json.dumps(paths)}", "teacher.checkpoint=null"] if len(paths) > 1
                   else [f"teacher.checkpoint={paths[0]}"])
        run_dir = out / "runs" / v.name.replace(" ", "_").replace("/", "_") / f"seed{s}"
        ov = _epochs(epochs) + v.overrides + teacher + [f"seed={s}", f"out_dir={run_dir}", "run.progress=false",
                                                        "run.tensorboard=false"]
        cells[(v.name, s)] = Cell(run_dir.parent.name, STUDENT_RECIPE, tuple(ov), str(run_dir), s,
                                  after=tuple(str(Path(p).parent) for p in paths), label=f"{v.name} seed {s}")
    with Local(workers, threads, progress=progress) as executor:
        report = run_sweep(list(teachers.values()) + list(cells.values()), out / "runs", executor)
        if not report.ok:
            raise ValueError(f"experiment {name}: not every run finished:\n{report.summary()}")
        done = executor.pool.map(_evaluate_student, {k: (list(c.overrides), threads) for k, c in cells.items()},
                                 progress, f"{name} reports")
        runs: dict[str, dict[int, dict]] = {}
        for (vname, s), result in done.items():
            runs.setdefault(vname, {})[s] = result
        # independent-student control: seed s's teacher vs the student of seed s+1 (independent teachers)
        controls = executor.pool.map(_control, {(v.name, s): (runs[v.name][s]["teacher_paths"],
                                                             runs[v.name][(s + 1) % seeds]["student_path"])
                                                for v in variants for s in range(seeds)})
    for (vname, s), result in controls.items():
        runs[vname][s]["flat"].update(result)

    results: dict[str, Any] = {"name": name, "title": title, "quick": quick, "seeds": seeds, "epochs": epochs,
                               "teacher_epochs": teacher_epochs, "variants": {}}
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
    print(f"\nwrote {out / 'results.json'}, {out / 'results.md'} and {', '.join(results['pngs'])} "
          f"in {results['wall_time_s']:.0f} s")
    return results
