"""Every figure kdlab draws: a run's training curves (``curves.png``, drawn on request: ``kdlab plot RUN`` or
``run.curves=true``), accuracy vs agreement of ``kdlab demo`` and ``kdlab table``, the figures of ``kdlab
experiment``, and the per-bin fidelity of ``kdlab fidelity --plot``.

Figures are built with matplotlib's object API (``Figure`` + the Agg canvas), never ``pyplot``: no global backend
is switched and no figure is left open in a user's session. Each PNG is written atomically (``kdlab._io``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from kdlab._io import atomic_write_bytes

__all__ = ["accuracy_vs_agreement", "experiment_bars", "experiment_figures", "fidelity_by_bin", "run_curves",
           "training_curves"]


def _figure(figsize: tuple[float, float], ncols: int = 1, nrows: int = 1, squeeze: bool = True):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib is imported only when drawing
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze)
    return fig, axes


def _save(fig, path: Path, dpi: int) -> None:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------------------
def training_curves(history: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """``curves.png``: per epoch the training loss terms (and their sum), train and test accuracy, and the teacher
    agreement (online on the training batches, and on the test set) — from the records of ``metrics.jsonl``."""
    fig, (loss_ax, acc_ax, agree_ax) = _figure((13, 3.8), ncols=3)
    epochs = [r["epoch"] for r in history]
    terms = sorted({k for r in history for k in r.get("train", {}) if k.startswith("loss_")})
    for key in ["loss"] + terms:
        loss_ax.plot(epochs, [r["train"].get(key, float("nan")) for r in history], "-" if key == "loss" else "--",
                     label="total" if key == "loss" else key[5:])
    loss_ax.set_ylabel("training loss")
    tested = [r for r in history if "test" in r]
    acc_ax.plot(epochs, [r["train"].get("acc", float("nan")) for r in history], "--", label="train (augmented)")
    acc_ax.plot([r["epoch"] for r in tested], [r["test"]["student_acc"] for r in tested], "-o", ms=3, label="test")
    acc_ax.set_ylabel("accuracy (%)")
    online = [r for r in history if "agreement" in r.get("train", {})]
    agreed = [r for r in tested if "agreement" in r["test"]]
    if online or agreed:
        agree_ax.plot([r["epoch"] for r in online], [r["train"]["agreement"] for r in online], "--",
                      label="train batches")
        agree_ax.plot([r["epoch"] for r in agreed], [r["test"]["agreement"] for r in agreed], "-o", ms=3,
                      label="test")
        agree_ax.set_ylabel("teacher–student agreement (%)")
    else:
        agree_ax.text(0.5, 0.5, "no teacher in this run", ha="center", va="center", transform=agree_ax.transAxes)
    for ax in (loss_ax, acc_ax, agree_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, Path(path), dpi=100)


def fidelity_by_bin(bins: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Per-bin fidelity (:mod:`kdlab.eval.bins`), one panel per key (teacher confidence, teacher entropy): student
    and teacher accuracy and agreement (%, left axis) and the mean KL(teacher ‖ student) (right axis) per bin, the
    bins in the key's order (equal-count bins: a teacher is sure of most samples, so the keys crowd near one end and
    the bin number spreads them); an empty bin is skipped."""
    fig, axes = _figure((12, 4.2), ncols=len(bins), squeeze=False)
    labels = {"confidence": "teacher confidence (max softmax) bin, low → high",
              "entropy": "teacher entropy bin, low → high"}
    for ax, (key, b) in zip(axes.flat, bins.items()):
        x = [i + 1 for i, c in enumerate(b["count"]) if c]
        for name, style, label in (("student_acc", "-o", "student accuracy"), ("teacher_acc", "k--s", "teacher "
                                   "accuracy"), ("agreement", "-^", "top-1 agreement")):
            y = [v for v, c in zip(b[name], b["count"]) if c]
            if any(v is not None for v in y):
                ax.plot(x, [float("nan") if v is None else v for v in y], style, ms=4, label=label)
        ax.set_xlabel(labels.get(key, key))
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        kl_ax = ax.twinx()
        kl_ax.plot(x, [v for v, c in zip(b["kl"], b["count"]) if c], ":D", color="C3", ms=4, label="KL(t‖s)")
        kl_ax.set_ylabel("mean KL(teacher ‖ student)")
        handles = ax.get_legend_handles_labels()
        extra = kl_ax.get_legend_handles_labels()
        ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="best")
        ax.set_xticks(range(1, len(b["count"]) + 1))
        ax.set_title(f"{sum(b['count'])} samples in {len(b['count'])} equal-count bins", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, Path(path), dpi=110)


def run_curves(run_dir: str | Path) -> Path:
    """Draw ``RUN/curves.png`` from the run directory's ``metrics.jsonl`` (one record per epoch) and ``final.json``
    (the title) and return its path; ``FileNotFoundError`` naming the file when the directory holds no run."""
    run_dir = Path(run_dir)
    files = {name: run_dir / name for name in ("metrics.jsonl", "final.json")}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: `kdlab plot` draws the curves of a run directory "
                                    "(out_dir of `kdlab train` or `kdlab teacher`)")
    history = []
    for line in files["metrics.jsonl"].read_text(encoding="utf-8").splitlines():
        try:
            history.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill (kdlab.engine.metrics_log): the epochs before it are the run's
    final = json.loads(files["final.json"].read_text(encoding="utf-8"))
    role = final.get("role", "student")
    net = (final.get(role) or {}).get("arch")
    title = ", ".join(str(part) for part in (f"{role} {net}" if net else role, final.get("method"), run_dir.name))
    training_curves(history, run_dir / "curves.png", title=title)
    return run_dir / "curves.png"


# ---------------------------------------------------------------------------------------------------------------
# kdlab demo
# ---------------------------------------------------------------------------------------------------------------
# matplotlib's "tab20" palette (pairs of a dark and a light shade): more methods than tab10's ten colours
_TAB20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
          "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5")


def accuracy_vs_agreement(panels: list[tuple[str, dict[str, dict[str, Any]], set[str]]], path: str | Path,
                          dpi: int = 120) -> None:
    """Student test accuracy vs teacher agreement, one marker per method with its spread over seeds: one panel per
    ``(title, {method: summarize_seeds dict with acc/agreement _mean/_std}, methods drawn hollow)`` (the demo's
    figure; one panel per teacher/student pair in ``kdlab table``)."""
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = _figure((8, 5) if len(panels) == 1 else (6 * cols, 4.5 * rows), cols, rows, squeeze=False)
    markers = "osD^vP*Xhp<>"
    for ax, (title, methods, hollow) in zip(axes.flat, panels):
        for i, (name, r) in enumerate(methods.items()):
            if "agreement_mean" not in r:  # no teacher in that run: accuracy only
                ax.axvline(r["acc_mean"], color="grey", ls="--", lw=1, label=f"{name} (no teacher)")
                continue
            # a legend instead of labels on the points: the methods sit close together
            ax.errorbar(r["acc_mean"], r["agreement_mean"], xerr=r["acc_std"], yerr=r["agreement_std"],
                        fmt=markers[i % len(markers)], capsize=3, label=name, mfc="none" if name in hollow else None,
                        color=_TAB20[(2 * i) % 20 + (2 * i) // 20 % 2])  # 20 distinct colours: dark shades first
        ax.legend(fontsize=8, loc="lower right", ncol=2)
        ax.set_xlabel("student test accuracy (%)")
        ax.set_ylabel("teacher–student test agreement (%)")
        ax.set_title(title, fontsize=10 if len(title) > 60 else None)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    _save(fig, Path(path), dpi=dpi)


# ---------------------------------------------------------------------------------------------------------------
# kdlab experiment
# ---------------------------------------------------------------------------------------------------------------
def experiment_bars(rows: dict[str, tuple[dict[str, Any], float | None]], path: str | Path, title: str,
                    dpi: int = 110) -> None:
    """Best-epoch test accuracy of each row of an experiment (mean, error bar: std over seeds); a published number,
    where there is one, as a red cross: ``rows`` = ``{row: (summarize_seeds dict, published or None)}``."""
    fig, ax = _figure((7, 0.45 * len(rows) + 1.5))
    names = list(rows)
    for i, name in enumerate(names):
        s, pub = rows[name]
        ax.errorbar(s["best_acc_mean"], i, xerr=s["best_acc_std"], fmt="o", color="C0", capsize=3,
                    label="ours (mean ± std)" if i == 0 else None)
        if pub is not None:
            ax.plot(pub, i, "x", color="C3", ms=8, label="published" if "published" not in
                    ax.get_legend_handles_labels()[1] else None)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("best-epoch test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, Path(path), dpi=dpi)


def experiment_figures(results: dict[str, Any], out: str | Path) -> list[str]:
    """The figures of a fidelity experiment in ``out``: agreement vs accuracy (with the independent control), train
    vs test agreement, and the reliability diagram; returns their file names."""
    out = Path(out)
    paths = []
    variants = results["variants"]

    def finish(fig, ax, file: str, xlabel: str, ylabel: str, title: str, legend_size: int) -> None:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{results['name']}: {title}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
        _save(fig, out / file, dpi=110)
        paths.append(file)

    # agreement vs accuracy (with the control)
    fig, ax = _figure((7, 5))
    for i, (name, r) in enumerate(variants.items()):
        s, c = r["summary"], f"C{i % 10}"
        ax.errorbar(s["student_acc_mean"], s["test_agreement_mean"], xerr=s["student_acc_std"],
                    yerr=s["test_agreement_std"], fmt="o", color=c, capsize=3, label=name)
        if "control_agreement_mean" in s:
            ax.errorbar(s["control_acc_mean"], s["control_agreement_mean"], fmt="o", mfc="none", color=c, capsize=3)
    finish(fig, ax, "agreement_vs_accuracy.png", "student test accuracy (%)", "teacher–student test agreement (%)",
           "agreement vs accuracy (hollow: independent control)", 7)
    # train vs test agreement
    fig, ax = _figure((7, 5))
    for i, (name, r) in enumerate(variants.items()):
        s = r["summary"]
        for key, marker in (("train_agreement", "o"), ("train_aug_agreement", "s")):
            ax.errorbar(s[f"{key}_mean"], s["test_agreement_mean"], xerr=s[f"{key}_std"],
                        yerr=s["test_agreement_std"], fmt=marker, color=f"C{i % 10}", capsize=3,
                        label=f"{name} ({'clean' if marker == 'o' else 'distill data'})")
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    ax.plot([lo, 100], [lo, 100], color="grey", lw=0.8, ls="--")
    finish(fig, ax, "train_vs_test_agreement.png",
           "train agreement (%)  ● clean train split  ■ one pass of the distillation data", "test agreement (%)",
           "train vs test agreement", 6)
    # reliability diagram
    fig, ax = _figure((6, 6))
    first = next(iter(variants.values()))["bins"]["teacher"]
    ax.plot(first["conf"], first["acc"], "k-o", label=f"teacher (ECE {100 * first['ece']:.1f}%)")
    for i, (name, r) in enumerate(variants.items()):
        b = r["bins"]["student"]
        ax.plot(b["conf"], b["acc"], "-o", ms=3, color=f"C{i % 10}", label=f"{name} (ECE {100 * b['ece']:.1f}%)")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
    finish(fig, ax, "reliability.png", "confidence (max softmax), bin mean", "accuracy in bin",
           "reliability (test, seed 0)", 7)
    return paths
