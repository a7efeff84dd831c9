"""``kdlab demo``: every method distils the same MNIST-1D student from the same teacher, for several seeds.

Writes ``results.json``, ``results.md`` (the table printed to the terminal) and ``results.png`` (accuracy vs
teacher agreement per method, mean ± std over seeds). The teacher is trained once and cached under the data
directory (``$KDLAB_DATA`` or ``~/.cache/kdlab``), keyed by its config, so later demos reuse it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from kdlab import build
from kdlab._io import atomic_write_text
from kdlab.config import config_hash, read_yaml, resolve_config_path
from kdlab.data import default_root
from kdlab.engine.environment import environment
from kdlab.eval import mean_std, summarize_seeds
from kdlab.plots import method_comparison
from kdlab.sweep import pool_size, run_cells, train_cell
from kdlab.teachers import StaleCacheError

# every distillation method of the library, each from configs/mnist1d/<name>.yaml; "ce" is the baseline
DEMO_METHODS = ("ce", "kd", "kd_ls", "dkd", "cakd", "ttm", "wttm", "dist", "r2kd", "cmkd", "dhkd")
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
        cfg = build.load_config("mnist1d/teacher", ov)
        paths[key] = (root / f"mnist1d_cnn-{config_hash(cfg)}", ov)
    if (paths["full"][0] / "model.safetensors").is_file() or not quick:
        return paths["full"]
    return paths["quick"]


def _shared_cache(tdir: Path, progress: bool) -> list[str]:
    """Overrides that point every run at one precomputed teacher-logit cache next to the teacher (built here)."""
    path = tdir / "logit_cache_float16.bin"
    ov = [f"teacher.checkpoint={tdir / 'model.safetensors'}", "teacher.cache.storage=mmap",
          f"teacher.cache.path={path}", "teacher.cache.dtype=float16", "run.progress=false"]
    cfg = build.load_config("mnist1d/kd", ov)
    try:
        build.teacher_cache_from_config(cfg, progress=progress)
    except StaleCacheError:  # left by an earlier teacher in this directory: rebuild
        for p in (path, Path(f"{path}.json"), Path(f"{path}.mask")):
            p.unlink(missing_ok=True)
        build.teacher_cache_from_config(cfg, progress=progress)
    return ov[1:4]


def _summary(finals: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds (``n_seeds`` of them; every seed must report every number, never fewer silently)."""
    per_seed = []
    for f in finals:
        row = {"acc": f["student"]["last_acc"], "best_acc": f["student"]["best_acc"], "wall_time_s": f["wall_time_s"]}
        row.update({k: f["fidelity"].get(src) for k, src in (("agreement", "agreement"), ("kl", "kl"),
                                                                ("ece", "student_ece"))})
        per_seed.append(row)
    return summarize_seeds(per_seed)


def _table(results: dict[str, Any]) -> str:
    t = results["teacher"]
    lines = [
        f"Teacher {t['arch']}: {t['acc']:.2f}% test accuracy. Student {results['student_arch']}, "
        f"{results['epochs']} epochs, {results['seeds']} seed(s); mean ± std over seeds (n per row), last-epoch "
        "accuracy.",
        "",
        "| method | n | accuracy % | best-epoch acc % | agreement % | KL(t‖s) | ECE % |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(name, r):
        ece = (f"{100 * r['ece_mean']:.2f}" if "ece_mean" in r else "–")
        return (f"| {name} | {r['n_seeds']} | {mean_std(r, 'acc')} | {mean_std(r, 'best_acc')} | "
                f"{mean_std(r, 'agreement')} | {mean_std(r, 'kl', 3)} | {ece} |")

    for name, r in results["methods"].items():
        lines.append(row(name, r))
    if results.get("checks"):
        lines += ["", "Failure case from the DHKD paper (CE and BinaryKL on the same head), beside DHKD:", "",
                  "| configuration | accuracy % | agreement % |", "|---|---|---|"]
        for name, r in {**results["checks"], "dhkd": results["methods"].get("dhkd")}.items():
            if r:
                lines.append(f"| {name} | {mean_std(r, 'acc')} | {r.get('agreement_mean', float('nan')):.2f} |")
    return "\n".join(lines)


def run_demo(out_dir: Path, quick: bool = False, seeds: int | None = None, progress: bool = True,
             methods: tuple[str, ...] | None = None, workers: int | None = None,
             shared_cache: bool = True) -> dict[str, Any]:
    start = time.perf_counter()
    seeds = seeds if seeds is not None else (1 if quick else 3)
    if seeds < 1:
        raise ValueError("--seeds must be at least 1")
    methods = tuple(methods or DEMO_METHODS)
    checks = CHECK_METHODS if methods == DEMO_METHODS else ()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers, threads = pool_size(workers)

    tdir, t_overrides = teacher_path(quick)
    if not (tdir / "model.safetensors").is_file():
        print(f"training the MNIST-1D teacher once (cached in {tdir}) ...", flush=True)
        ov = t_overrides + [f"out_dir={tdir}", f"run.progress={str(progress).lower()}"]
        train_cell("mnist1d/teacher", ov, True, os.cpu_count() or 1)
    teacher_final = json.loads((tdir / "final.json").read_text())

    # one teacher-logit table (4000 signals × 9 shifts) shared by every run: filled once here, then each run opens
    # the complete file read-only instead of running the teacher (methods that cannot use it ignore it)
    cache_ov = _shared_cache(tdir, progress) if shared_cache else []

    cells = {}
    for name in methods + checks:
        recipe = _recipe(name)
        ov = [f"teacher.checkpoint={tdir / 'model.safetensors'}", "run.progress=false", *cache_ov]
        if quick:
            ov += _scaled(recipe, QUICK_EPOCHS)
        for seed in range(seeds):
            run_ov = ov + [f"seed={seed}", f"out_dir={out_dir / 'runs' / name / f'seed{seed}'}"]
            cells[(name, seed)] = (f"mnist1d/{name}", run_ov, False, threads)
    finals = run_cells(train_cell, cells, workers, progress, "demo runs",
                       postfix=lambda key, f: f"{key[0]} seed {key[1]}: {f['student']['last_acc']:.1f}%")
    by_method = {name: [finals[(name, seed)] for seed in range(seeds)] for name in methods + checks}

    first = by_method[methods[0]][0]
    results = {
        "teacher": {"arch": teacher_final["teacher"]["arch"], "acc": teacher_final["teacher"]["last_acc"],
                    "checkpoint": str(tdir / "model.safetensors")},
        "student_arch": first["student"]["arch"],
        "epochs": first["epochs"],
        "seeds": seeds,
        "quick": quick,
        "methods": {name: _summary(by_method[name]) for name in methods},
        "checks": {name: _summary(by_method[name]) for name in checks},
        "wall_time_s": time.perf_counter() - start,
        "environment": environment("cpu"),
    }
    table = _table(results)
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out_dir / "results.md", table + "\n")
    method_comparison(results, out_dir / "results.png")
    print(table)
    print(f"\nwrote {out_dir / 'results.json'}, {out_dir / 'results.md'}, {out_dir / 'results.png'} "
          f"in {results['wall_time_s']:.0f} s")
    return results
