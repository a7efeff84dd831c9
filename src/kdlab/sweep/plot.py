"""Student accuracy vs teacher agreement, one marker per method with its spread over seeds (the demo's plot; one
panel per teacher/student pair in ``kdlab table``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["save_accuracy_vs_agreement"]

MARKERS = "osD^vP*Xhp<>"


def _panel(ax, rows: dict[str, dict[str, Any]], hollow: set[str], title: str) -> None:
    for i, (name, r) in enumerate(rows.items()):
        if "agreement_mean" not in r:  # no teacher in that run: accuracy only
            ax.axvline(r["acc_mean"], color="grey", ls="--", lw=1, label=f"{name} (no teacher)")
            continue
        # a legend instead of labels on the points: the methods sit close together
        ax.errorbar(r["acc_mean"], r["agreement_mean"], xerr=r["acc_std"], yerr=r["agreement_std"],
                    fmt=MARKERS[i % len(MARKERS)], capsize=3, label=name, mfc="none" if name in hollow else None)
    ax.legend(fontsize=8, loc="lower right", ncol=2)
    ax.set_xlabel("student test accuracy (%)")
    ax.set_ylabel("teacher–student test agreement (%)")
    ax.set_title(title, fontsize=10 if len(title) > 60 else None)
    ax.grid(alpha=0.3)


def save_accuracy_vs_agreement(panels: list[tuple[str, dict[str, dict[str, Any]], set[str]]], path: str | Path,
                               dpi: int = 120) -> None:
    """One panel per ``(title, {method: summary with acc/agreement _mean/_std}, methods drawn hollow)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(8, 5) if len(panels) == 1 else (6 * cols, 4.5 * rows),
                             squeeze=False)
    for ax, (title, methods, hollow) in zip(axes.flat, panels):
        _panel(ax, methods, hollow, title)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
