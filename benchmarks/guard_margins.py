"""How close healthy runs come to each rule of the divergence guard (kdlab.engine.guard): every shipped MNIST-1D
recipe at its full length, a slow learning rate and a learning-rate warm-up with a loss spike — none may be stopped.

    python benchmarks/guard_margins.py            # every recipe in src/kdlab/configs/mnist1d/, full length
    python benchmarks/guard_margins.py --quick    # the teacher, kd and dkd, 3 epochs on 512 samples: a smoke run

Run time on 2 CPU cores: full ~15 min, --quick ~15 s.

Each run goes through ``kdlab.builder`` as ``kdlab teacher`` / ``kdlab train`` would run it (seed 0, the recipe's own
teacher: ``mnist1d/teacher`` for the students, ``mnist1d/fidelity_teacher`` for ``fidelity_kd``), with the guard on
(``run.on_divergence=stop``). From each run's ``metrics.jsonl`` the table gives, per rule, the run's closest approach:

(``kdlab.engine.guard.margins``, which ``tests/engine/test_guard.py`` checks on the demo's settings):

* step explosion (fires above ``EXPLODE`` = 10⁴): the largest step loss and step gradient norm over the run's first
  step's, ``step_loss_max / step_loss_first`` and ``grad_norm_max / grad_norm_first``;
* collapse (fires below ``COLLAPSE`` = 0.5): the lowest excess over chance as a fraction of the best so far, after
  the run once reached ``LEARNED``;
* blow-up (fires at ``BLOWUP`` = 10): the highest epoch loss over its running minimum while above its first epoch's;
* no learning (fires at ``STUCK_EPOCHS`` = 5): the longest stretch of epochs at chance;
* the largest ``weight_change`` (weights moved per epoch, as a fraction of their norm) after epoch 1.

The last column says whether the guard fired (``-`` when it did not). A last table gives what the guard adds to a
training step on CPU (the global gradient norm and the step check): ``mnist1d/kd``'s step (student
``mnist1d_cnn_small``, teacher ``mnist1d_cnn``, batch 64) timed with and without it, interleaved rounds, medians. "slow lr": ``mnist1d/ce`` at lr 0.002 on 600
samples (it learns slowly from below chance; it was stopped as "not learning" before). "warm-up spike":
``mnist1d/kd`` at 20× the recipe's lr (1.0) reached by a 3-epoch linear warm-up: its loss rises when the lr peaks
and recovers (at 2.0 the same run collapses to chance, and the guard stops it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from kdlab import builder, methods, models
from kdlab.config import recipe_names
from kdlab.data import load_dataset
from kdlab.engine import guard as g
from kdlab.engine.environment import describe_machine
from kdlab.teachers import FrozenTeacher

EXTRA = {"slow lr": ("mnist1d/ce", ["optim.lr=0.002", "data.num_samples=600", "teacher.checkpoint=null"]),
         "warm-up spike": ("mnist1d/kd", ["optim.lr=1.0", "optim.warmup_epochs=3"])}


def _chance(cfg) -> float:
    y = builder.load_data(cfg).y_train
    return 100.0 * float(torch.bincount(y).max()) / y.numel()


def run(recipe: str, overrides: list[str], out: Path, quick: bool, teacher: bool) -> tuple[dict, str, float]:
    extra = ["data.train_subset=512", "data.test_subset=128", "optim.epochs=3", "optim.milestones=[2]"] if quick else []
    cfg = builder.load_config(recipe, [*overrides, *extra, f"out_dir={out}", "run.progress=false",
                                     "run.tensorboard=false"])
    start = time.perf_counter()
    fired = "-"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the runs' own lines
        warnings.simplefilter("ignore")
        try:
            (builder.train_teacher if teacher else builder.distil)(cfg)
        except Exception as exc:  # noqa: BLE001 - a stopped run is a row of the table
            fired = f"{type(exc).__name__}: {str(exc)[:60]}"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] if (
        out / "metrics.jsonl").exists() else []
    if rows and "divergence" in rows[-1]:
        fired = rows[-1]["divergence"]
    return (g.margins(rows, _chance(cfg)) if rows else {}), fired, time.perf_counter() - start


def step_cost(rounds: int, steps: int = 50) -> tuple[float, float]:
    """Median ms of a ``mnist1d/kd`` training step without and with the guard's per-step work."""
    data = load_dataset("mnist1d")
    loader = data.loader("train", 64, augment=True, shuffle=True, seed=0)
    batches = [b for _, b in zip(range(steps), loader)]
    torch.manual_seed(0)
    teacher = FrozenTeacher(models.create("mnist1d_cnn", 10))
    method = methods.create("kd", models.create("mnist1d_cnn_small", 10), teacher, 10,
                            {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9})
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    guard = g.DivergenceGuard(10.0, 0.01, immediate=True)

    def run(with_guard: bool) -> float:
        t0 = time.perf_counter()
        for i, b in enumerate(batches):
            out = method(b, 1)
            opt.zero_grad(set_to_none=True)
            method.backward(out)
            if with_guard:
                guard.step(out.total, g.grad_norm(params), 1, i)
            opt.step()
        return 1e3 * (time.perf_counter() - t0) / len(batches)

    run(True)  # warm-up
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for with_guard in ((False, True) if r % 2 == 0 else (True, False)):
            times[with_guard].append(run(with_guard))
    return statistics.median(times[False]), statistics.median(times[True])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="kd and dkd, 3 epochs on 512 samples (smoke run)")
    ap.add_argument("--only", nargs="*", help="recipe names (mnist1d/kd ...) or 'slow lr' / 'warm-up spike'")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_dataset("mnist1d")
    recipes = [r for r in recipe_names() if r.startswith("mnist1d/")]
    teachers = ["mnist1d/teacher", "mnist1d/fidelity_teacher"]
    todo = [(r, r, []) for r in teachers + [r for r in recipes if r not in teachers]]
    todo += [(name, recipe, ov) for name, (recipe, ov) in EXTRA.items()]
    if args.quick:
        todo = [t for t in todo if t[0] in ("mnist1d/teacher", "mnist1d/kd", "mnist1d/dkd")]
    if args.only:
        todo = [t for t in todo if t[0] in args.only or t[0] in teachers]
    print(describe_machine())
    print(f"seed 0, {'3 epochs on 512 samples (--quick)' if args.quick else 'full length'}; a rule fires at: "
          f"step loss or gradient norm > {g.EXPLODE:g}x the first step's, collapse ratio < {g.COLLAPSE}, "
          f"blow-up >= {g.BLOWUP:g}, stuck {g.STUCK_EPOCHS} epochs\n")
    print("| run | epochs | step loss / first | step grad norm / first | collapse ratio (min) | blow-up (max) | "
          "stuck epochs | weight change after epoch 1 (max) | guard | s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {t: Path(tmp) / t.replace("/", "_") for t in teachers}
        for name, recipe, overrides in todo:
            out = Path(tmp) / name.replace("/", "_").replace(" ", "_")
            teacher = "mnist1d/fidelity_teacher" if "fidelity" in recipe else "mnist1d/teacher"
            ov = list(overrides)
            if recipe not in teachers and "teacher.checkpoint=null" not in ov:
                ov.append(f"teacher.checkpoint={paths[teacher] / 'model.safetensors'}")
            m, fired, seconds = run(recipe, ov, out, args.quick, recipe in teachers)
            epochs = builder.load_config(recipe, ov).optim.epochs if not args.quick else 3
            if not m:
                print(f"| {name} | {epochs} | – | – | – | – | – | – | {fired} | {seconds:.0f} |")
                continue
            print(f"| {name} | {epochs} | {m['explode_loss']:.2f} | {m['explode_grad']:.1f} | "
                  f"{m['collapse_ratio']:.3f} | {m['blowup']:.2f} | {m['stuck']} | {m['weight_change']:.3f} | {fired} | "
                  f"{seconds:.0f} |", flush=True)
    plain, guarded = step_cost(3 if args.quick else 9)
    print(f"\n| mnist1d/kd step (CPU, batch 64) | ms / step | guard µs / step | guard share |\n|---|---:|---:|---:|\n"
          f"| without / with the guard | {plain:.2f} / {guarded:.2f} | {1e3 * (guarded - plain):.0f} | "
          f"{(guarded - plain) / plain:.1%} |")


if __name__ == "__main__":
    main()
