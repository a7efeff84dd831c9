"""``kdlab demo``: every method distils the same MNIST-1D student from the same teacher, for several seeds.

A sweep of the methods' recipes (``kdlab.sweep``): the runs are ``<out>/runs/mnist1d/<method>/seed<k>/`` and
``<out>/runs/sweep.json``; rerunning the demo skips finished runs and resumes interrupted ones. Writes
``results.json``, ``results.md`` (the table printed to the terminal: ``kdlab table <out>/runs``, plus the DHKD
failure case) and ``results.png`` (accuracy vs teacher agreement per method, mean ± std over seeds). The teacher is
trained once and cached under the data directory (``$KDLAB_DATA`` or ``~/.cache/kdlab``), keyed by its config, so
later demos reuse it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from kdlab import builder
from kdlab._io import atomic_write_text
from kdlab.config import read_yaml, resolve_config_path
from kdlab.data import default_root
from kdlab.engine.environment import environment
from kdlab.eval import mean_std
from kdlab.plots import accuracy_vs_agreement
from kdlab.sweep import Cell, InProcess, Local, cells_of, execute, pool_size, run_sweep
from kdlab.sweep.spec import RecipeEntry, SweepSpec
from kdlab.sweep.table import collect, markdown
from kdlab.teachers import StaleCacheError

# every logit-distillation method, each from configs/mnist1d/<name>.yaml; "ce" is the baseline (the feature methods run
# the live teacher and would not fit the demo's 5 minutes: `kdlab demo --features` is their table)
DEMO_METHODS = ("ce", "kd", "kd_ls", "dkd", "cakd", "ttm", "wttm", "dist", "r2kd", "cmkd", "dhkd", "mlkd", "nkd", "ctkd",
                "sdd")
# `kdlab demo --features`: every feature method's MNIST-1D recipe (defaults fitted to the maps, Method.adapt) beside
# CE and KD, whose runs are the default demo's (a demo directory that has them skips them)
FEATURE_METHODS = ("ce", "kd", "fitnet", "at", "nst", "pkt", "rkd", "sp", "vid", "kdsvd", "ofd", "crd", "reviewkd")
# the paper's failure case (CE and BinaryKL on one head), reported beside DHKD, not as a method to beat CE
CHECK_METHODS = ("single_head_bkl",)
QUICK_EPOCHS = 10
QUICK_TEACHER_EPOCHS = 15


def _scaled(cfg_data: dict[str, Any], epochs: int) -> list[str]:
    """Overrides that shrink a recipe to ``epochs``, scaling milestones and warm-up proportionally."""
    full = cfg_data["optim"]["epochs"]
    scale = epochs / full
    milestones = sorted({max(1, round(m * scale)) for m in cfg_data["optim"].get("milestones", [])})
    milestones = [m for m in milestones if m < epochs]
    out = [f"optim.epochs={epochs}", f"optim.milestones={milestones}"]
    if "warmup" in cfg_data["method"].get("args", {}):
        out.append(f"method.args.warmup={max(1, round(cfg_data['method']['args']['warmup'] * scale))}")
    return out


def _recipe(name: str) -> dict[str, Any]:
    return read_yaml(resolve_config_path(f"mnist1d/{name}"))


def teacher_path(quick: bool) -> tuple[Path, list[str]]:
    """Cached teacher weights for the demo: the full recipe's if already trained, else the (quick) one to train."""
    overrides_full: list[str] = []
    overrides_quick = _scaled(_recipe("teacher"), QUICK_TEACHER_EPOCHS)
    root = Path(default_root()) / "teachers"
    paths = {}
    for key, ov in (("full", overrides_full), ("quick", overrides_quick)):
        cfg = builder.load_config("mnist1d/teacher", ov)
        paths[key] = (root / f"mnist1d_cnn-{builder.plan_of(cfg).identity_hash}", ov)
    if (paths["full"][0] / "model.safetensors").is_file() or not quick:
        return paths["full"]
    return paths["quick"]


def _shared_cache(tdir: Path, progress: bool) -> list[str]:
    """Overrides that point every run at one precomputed teacher-logit cache next to the teacher (built here); exact
    (float32, the default): cached training equals live-teacher training."""
    path = tdir / "logit_cache.bin"
    ov = [f"teacher.checkpoint={tdir / 'model.safetensors'}", "teacher.cache.storage=mmap",
          f"teacher.cache.path={path}", "run.progress=false"]
    cfg = builder.load_config("mnist1d/kd", ov)
    try:
        builder.teacher_cache_from_config(cfg, progress=progress)
    except StaleCacheError:  # left by an earlier teacher in this directory: rebuild
        for p in (path, Path(f"{path}.json"), Path(f"{path}.mask")):
            p.unlink(missing_ok=True)
        builder.teacher_cache_from_config(cfg, progress=progress)
    return ov[1:3]


def _checks_table(methods: dict[str, Any], checks: dict[str, Any]) -> list[str]:
    """The DHKD paper's failure case (one head, CE + BinaryKL) beside DHKD, below the table."""
    lines = ["", "Failure case from the DHKD paper (CE and BinaryKL on the same head), beside DHKD:", "",
             "| configuration | accuracy % | agreement % |", "|---|---|---|"]
    for name, r in {**checks, "dhkd": methods.get("dhkd")}.items():
        if r:
            lines.append(f"| {name} | {mean_std(r, 'acc')} | {mean_std(r, 'agreement', std=False)} |")
    return lines


def run_demo(out_dir: Path, quick: bool = False, seeds: int | None = None, progress: bool = True,
             methods: tuple[str, ...] | None = None, workers: int | None = None,
             shared_cache: bool = True, features: bool = False) -> dict[str, Any]:
    """A sweep (``kdlab.sweep``) of the methods' MNIST-1D recipes × seeds in ``<out_dir>/runs``, then its table
    (``kdlab.sweep.table``: what ``kdlab table <out_dir>/runs`` prints) and plot. ``features``: the feature methods'
    table (:data:`FEATURE_METHODS`), written as ``features.{json,md,png}`` beside the default demo's ``results.*``."""
    start = time.perf_counter()
    seeds = seeds if seeds is not None else (1 if quick else 3)
    if seeds < 1:
        raise ValueError("--seeds must be at least 1")
    methods = tuple(methods or (FEATURE_METHODS if features else DEMO_METHODS))
    checks = CHECK_METHODS if methods == DEMO_METHODS else ()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers, threads = pool_size(workers)

    tdir, t_overrides = teacher_path(quick)
    if not (tdir / "model.safetensors").is_file():
        print(f"training the MNIST-1D teacher once (cached in {tdir}) ...", flush=True)
        ov = t_overrides + [f"out_dir={tdir}", f"run.progress={str(progress).lower()}"]
        cell = Cell("mnist1d/teacher", "mnist1d/teacher", tuple(ov), str(tdir), command="teacher", kind="teacher")
        _check(execute([cell], InProcess(os.cpu_count() or 1)), "the demo's teacher")
    teacher_final = json.loads((tdir / "final.json").read_text())

    # one teacher-logit table (4000 signals × 9 shifts) shared by every run: filled once here, then each run opens
    # the complete file read-only instead of running the teacher (methods that cannot use it ignore it)
    cache_ov = _shared_cache(tdir, progress) if shared_cache else []
    recipes = [RecipeEntry(recipe=f"mnist1d/{name}", overrides=_scaled(_recipe(name), QUICK_EPOCHS) if quick else [])
               for name in methods + checks]
    spec = SweepSpec(recipes=recipes, seeds=seeds, teachers="given",
                     overrides=[f"teacher.checkpoint={tdir / 'model.safetensors'}", *cache_ov])
    cells = cells_of(spec, out_dir / "runs")
    with Local(workers, threads, progress=progress) as executor:
        _check(run_sweep(cells, out_dir / "runs", executor, spec=spec.model_dump(mode="json")), "demo")
    table = collect([Path(c.out_dir) for c in cells])
    col = table.columns[0]
    summary = {name: table.cells[(col.key, name)] for name in methods + checks}
    results = {
        "teacher": {"arch": teacher_final["teacher"]["arch"], "acc": teacher_final["teacher"]["last_acc"],
                    "checkpoint": str(tdir / "model.safetensors")},
        "student_arch": col.student_arch,
        "epochs": min(col.epochs),
        "seeds": seeds,
        "quick": quick,
        "methods": {name: summary[name] for name in methods},
        "checks": {name: summary[name] for name in checks},
        "wall_time_s": time.perf_counter() - start,
        "environment": environment("cpu"),
    }
    text = "\n".join([markdown(table)] + (_checks_table(results["methods"], results["checks"]) if checks else []))
    stem = "features" if features else "results"
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(results, indent=2))
    atomic_write_text(out_dir / f"{stem}.md", text + "\n")
    title = (f"MNIST-1D: {results['teacher']['arch']} ({results['teacher']['acc']:.1f}%) → "
             f"{results['student_arch']}, {seeds} seed(s)")
    accuracy_vs_agreement([(title, summary, set(checks))], out_dir / f"{stem}.png")
    print(text)
    print(f"\nwrote {out_dir / f'{stem}.json'}, {out_dir / f'{stem}.md'}, {out_dir / f'{stem}.png'} "
          f"in {results['wall_time_s']:.0f} s")
    return results


def _check(report, what: str) -> None:
    """A demo needs every cell: a failed or changed one ends it (exit 2 in the CLI) with the sweep's summary."""
    if not report.ok:
        raise ValueError(f"{what}: not every run finished:\n{report.summary()}")
