"""Every logit method at its defaults (fitted to the data by ``Method.adapt``) against the CE-only student, on the
small real data sets that ship inside scikit-learn: digits (1797 8×8 scans, 10 classes), wine (178, 13 features,
3 classes), breast cancer (569, 30 features, 2 classes). docs/methods/README.md ("Defaults on small data") quotes it.

    pip install scikit-learn                     # only this script needs it (a test extra of kdlab)
    python benchmarks/small_data.py              # 3 seeds, every logit method, the four data × student settings
    python benchmarks/small_data.py --methods ce wttm --sets digits-mlp
    python benchmarks/small_data.py --quick      # seed 0, 2 epochs, CE, KD, TTM and WTTM: a smoke run

Run time on 2 CPU cores: full ~25 min, --quick ~20 s.

Each data set is split once, stratified, 30 % test (``train_test_split(random_state=0)``), and standardised with
the training part's mean and std (digits: per pixel, then shaped 1×64 for the 1-D CNN). For each setting a teacher is
trained once with CE (seed 0), then CE and every method of ``--methods`` train the same student architecture from
it with ``kdlab.fit``: SGD, lr 0.05, momentum 0.9, weight decay 5e-4, batch 64, cosine schedule, the epochs of
``SETTINGS``, seeds 0, 1, 2; no ``method_args`` are given, so every default the method adapts to the data is adapted
(and listed under the table). Reported: final test accuracy, mean ± std over the seeds, and Δ = mean − CE's mean.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

import kdlab
from kdlab import models

try:
    from step_time import machine_line
except ImportError:  # pragma: no cover
    from benchmarks.step_time import machine_line

#: the logit methods (``kdlab methods``; the feature methods are benchmarked elsewhere), CE first
METHODS = ("ce", "kd", "kd_ls", "dkd", "cakd", "dhkd", "single_head_bkl", "r2kd", "ttm", "wttm", "dist", "cmkd",
           "mlkd", "nkd", "ctkd", "sdd")
QUICK_METHODS = ("ce", "kd", "ttm", "wttm")
SPLIT_SEED, TEST_FRACTION = 0, 0.3


@dataclass(frozen=True)
class Setting:
    data: str  # a scikit-learn loader: digits, wine, breast_cancer
    student: str  # "mlp" or "cnn"
    epochs: int

    @property
    def label(self) -> str:
        return f"{self.data.replace('_', ' ')} {self.student.upper()}"

    def networks(self, features: int, classes: int, seed: int, teacher: bool) -> nn.Module:
        """MLP: kdlab's ``mnist1d_mlp`` zoo MLP at the data's width (teacher 256-256, student 32); CNN: the zoo's
        MNIST-1D CNNs (teacher ``mnist1d_cnn``, student ``mnist1d_cnn_small``, ≈1.1k parameters) on the 8×8 digits
        read as 1×64 signals, row by row (a 2-D ResNet-8 was too slow for 3 seeds × 16 methods on 2 shared cores)."""
        torch.manual_seed(seed)
        if self.student == "cnn":
            return models.create("mnist1d_cnn" if teacher else "mnist1d_cnn_small", num_classes=classes)
        return models.create("mnist1d_mlp", num_classes=classes, hidden=(256, 256) if teacher else (32,),
                             length=features)


SETTINGS = {"digits-mlp": Setting("digits", "mlp", 30), "digits-cnn": Setting("digits", "cnn", 30),
            "wine-mlp": Setting("wine", "mlp", 60), "breast_cancer-mlp": Setting("breast_cancer", "mlp", 40)}


def load(name: str, cnn: bool):
    """(train, test) pairs of float32 tensors, standardised with the training part's statistics."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = getattr(sklearn.datasets, f"load_{name}")(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    shape = (-1, 1, 64) if cnn else (len(x_tr[0]),)

    def pair(a, b):
        t = torch.tensor(scaler.transform(a), dtype=torch.float32)
        return t.reshape(len(t), *shape[1:]) if cnn else t, torch.tensor(b)

    return pair(x_tr, y_tr), pair(x_te, y_te), x.shape[1], int(y.max()) + 1


def run_setting(key: str, setting: Setting, methods: list[str], seeds: list[int], epochs: int | None,
                method_args: dict | None = None):
    train, test, features, classes = load(setting.data, setting.student == "cnn")
    epochs = epochs or setting.epochs
    common = dict(eval=test, epochs=epochs, batch_size=64, lr=0.05, schedule="cosine")
    teacher = kdlab.fit(setting.networks(features, classes, 0, True), None, train, method="ce", seed=0,
                        **common)
    accs: dict[str, list[float]] = {}
    adapted: dict[str, str] = {}
    refused: dict[str, str] = {}
    for method in methods:
        for seed in seeds:
            try:
                result = kdlab.fit(setting.networks(features, classes, 100 + seed, False),
                                   None if method == "ce" else teacher.student, train, method=method, seed=seed,
                                   method_args=None if method == "ce" else method_args, **common)
            except kdlab.TrainingDiverged as exc:  # kdlab's guard stopped it: a result, counted and shown
                print(f"  {key} {method} seed {seed}: {str(exc).split(' To fix')[0]}", file=sys.stderr)
                accs.setdefault(method, []).append(math.nan)
                continue
            except ValueError as exc:  # a method that refuses these data says why in one line (SettingError)
                refused[method] = str(exc).splitlines()[0]
                break
            accs.setdefault(method, []).append(result.report["student_acc"])
            adapted[method] = ", ".join(f"{a['key']} {_shown(a['default'])} → {_shown(a['value'])}"
                                        for a in result.adapted)
        print(f"  {key} {method}: {refused.get(method) or cell(accs[method], None)}", file=sys.stderr, flush=True)
    for method, why in refused.items():
        accs[method] = []
        adapted[method] = f"refused: {why}"
    return teacher.report["student_acc"], len(train[1]), len(test[1]), classes, epochs, accs, adapted


def _shown(value) -> str:
    return str(float(f"{value:.3g}")) if isinstance(value, float) else str(value)


def cell(accs: list[float], ce: list[float] | None) -> str:
    """mean ± std (Δ vs CE) over the finished seeds; runs the divergence guard stopped are counted, not averaged."""
    if not accs:
        return "refused"
    done = [a for a in accs if not math.isnan(a)]
    diverged = f"diverged {len(accs) - len(done)}/{len(accs)}" if len(done) < len(accs) else ""
    if not done:
        return diverged
    mean = statistics.mean(done)
    std = f" ± {statistics.stdev(done):.1f}" if len(done) > 1 else ""
    delta = "" if ce is None else f" ({mean - statistics.mean(ce):+.1f})"
    return f"{mean:.1f}{std}{delta}" + (f", {diverged}" if diverged else "")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="CE is always run first")
    parser.add_argument("--sets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override every setting's epochs")
    parser.add_argument("--args", type=json.loads, default=None, metavar="JSON",
                        help='method_args for every method but CE, e.g. \'{"temperature": 1.0}\' (default: none)')
    parser.add_argument("--quick", action="store_true", help="seed 0, 2 epochs, CE, KD, TTM and WTTM (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = [0], 2
        args.methods = list(QUICK_METHODS) if args.methods == list(METHODS) else args.methods
    methods = ["ce"] + [m for m in args.methods if m != "ce"]
    torch.set_num_threads(1)
    start = time.perf_counter()
    results = {key: run_setting(key, SETTINGS[key], methods, args.seeds, args.epochs, args.args) for key in args.sets}
    print(f"machine: {machine_line(torch.device('cpu'))}; "
          f"{time.perf_counter() - start:.0f} s of wall time")
    print(f"split: stratified, {TEST_FRACTION:.0%} test, train_test_split(random_state={SPLIT_SEED}); features "
          "standardised with the training part's mean and std")
    if args.args:
        print(f"method_args of every method but CE: {json.dumps(args.args)}")
    for key, (t_acc, n_tr, n_te, c, epochs, _, _) in results.items():
        print(f"{SETTINGS[key].label}: {c} classes, {n_tr} train / {n_te} test, {epochs} epochs, teacher "
              f"{t_acc:.1f} %")
    print(f"\n| method (test accuracy %, mean ± std over seeds {args.seeds}, Δ vs CE) | "
          + " | ".join(SETTINGS[k].label for k in results) + " |")
    print("|---|" + "---:|" * len(results))
    for method in methods:
        cells = [cell(r[5][method], None if method == "ce" else r[5]["ce"]) for r in results.values()]
        print(f"| {method} | " + " | ".join(cells) + " |")
    lines = sorted({f"{m}: {r[6][m]}" for r in results.values() for m in methods if r[6].get(m)})
    if lines:
        print("\nadapted defaults and refusals (per data set, the last seed's run):")
        for key, r in results.items():
            for m in methods:
                if r[6].get(m):
                    print(f"- {SETTINGS[key].label}, {m}: {r[6][m]}")


if __name__ == "__main__":
    main()
