"""``kdlab table``: runs → mean ± std over seeds per method (rows) and teacher/student pair (columns), beside the
published numbers.

Each run's ``final.json`` gives its numbers: last- and best-epoch test accuracy, agreement with the teacher, KL and
the student's ECE on the test set (``kdlab.eval.summarize_seeds`` refuses to average over a seed that lacks one).
Which method and pair a run belongs to comes from its name in the sweep that made it (``<sweep>/<recipe>/seed<k>``:
``cifar100/resnet32x4-resnet8x4/kd`` → data set, pair, method), else from a shipped recipe at the end of its path,
else from its config (``method.name``, ``teacher.arch-student.arch``). A student trained alone (no teacher, e.g.
``cifar100/students/resnet8x4/ce``) is the ``ce`` row of every pair with that student. The ``teacher`` row is the
teacher the pair's students were distilled from (n = distinct teacher checkpoints).

One pair: the demo's table (one row per method, the numbers as columns). Several pairs: the paper's tables, one per
number (rows = methods, columns = pairs), best-epoch accuracy with the published number and Δ = ours − published.

A run whose result is not to be trusted (:func:`kdlab.sweep.trust.distrust`: the divergence guard fired and it
trained on, a non-finite number) is never averaged into a row: the row's n says how many of its runs were left out
("2 + 1 failed") and a list below the table names each with the reason. A ``final.json`` that is truncated or lacks
the numbers is one line naming the file (:func:`kdlab.sweep.trust.read_final`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab._io import atomic_write_text
from kdlab.builder import STOPPED
from kdlab.config import recipe_names
from kdlab.eval import mean_std, summarize_seeds
from kdlab.plots import accuracy_vs_agreement
from kdlab.sweep.published import Published, PublishedTable, load_published
from kdlab.sweep.runner import SWEEP_FILE
from kdlab.sweep.trust import distrust, read_final, read_stopped

__all__ = ["FORMATS", "Column", "Run", "Table", "collect", "markdown", "to_csv", "write_outputs"]

FORMATS = ("md", "csv", "png")
_SEED_DIR = re.compile(r"seed(\d+)$")


@dataclass
class Run:
    path: Path
    final: dict[str, Any]
    name: str | None  # recipe or variant name, when known
    kind: str  # "student" or "teacher"

    @property
    def cfg(self) -> dict[str, Any]:
        return self.final.get("config", {})

    @property
    def dataset(self) -> str:
        return (self.cfg.get("data") or {}).get("name", "?")

    @property
    def has_teacher(self) -> bool:
        return "teacher" in self.final and self.kind == "student"

    @property
    def student_arch(self) -> str | None:
        return self.final.get("student", {}).get("arch")

    @property
    def teacher_arch(self) -> str | None:
        return self.final["teacher"]["arch"] if self.has_teacher else None

    def placement(self) -> tuple[str | None, str]:
        """``(pair, method)``; pair ``None`` for a student trained alone."""
        parts = self.name.split("/") if self.name else []
        method = parts[-1] if parts else self.final.get("method", "?")
        if len(parts) >= 3 and parts[1] == "students":
            return None, method
        if len(parts) >= 3:
            return parts[1], method
        return (f"{self.teacher_arch}-{self.student_arch}" if self.has_teacher else None), method


def per_seed(final: dict[str, Any]) -> dict[str, Any]:
    """The numbers a run contributes to its row (the demo's: last/best accuracy, wall time, agreement, KL, ECE)."""
    fid = final.get("fidelity") or {}
    return {"acc": final["student"]["last_acc"], "best_acc": final["student"]["best_acc"],
            "wall_time_s": final["wall_time_s"], "agreement": fid.get("agreement"), "kl": fid.get("kl"),
            "ece": fid.get("student_ece")}


# ---------------------------------------------------------------------------------------------------------------
# finding runs
# ---------------------------------------------------------------------------------------------------------------
def _sweep_names(root: Path) -> dict[Path, tuple[str, str]]:
    doc = json.loads((root / SWEEP_FILE).read_text(encoding="utf-8"))
    return {Path(c["out_dir"]).resolve(): (c["name"], c.get("kind", "student")) for c in doc.get("cells", [])}


def _name_from_path(run_dir: Path, recipes: set[str]) -> str | None:
    """A shipped recipe's name at the end of the run's path (``.../cifar100/vgg13-vgg8/kd[/seed0]``)."""
    base = run_dir.parent if _SEED_DIR.match(run_dir.name) else run_dir
    parts = base.parts
    for n in (3, 2):
        name = "/".join(parts[-n:])
        if name in recipes:
            return name
    return None


def _sweep_roots(path: Path) -> list[Path]:
    """The sweep directory that holds ``path`` (if any) and every sweep directory under it."""
    above = next((p for p in [path, *path.parents] if (p / SWEEP_FILE).is_file()), None)
    return ([above] if above else []) + sorted(p.parent for p in path.rglob(SWEEP_FILE) if p.parent != above)


def missing_cells(paths: list[Path]) -> list[tuple[str, Path]]:
    """``(name, out_dir)`` of every cell of the sweeps in or above ``paths`` that has no ``final.json`` (not run
    yet, interrupted or failed) nor ``stopped.json`` (the table counts those as failed): what a table of those
    sweeps leaves out."""
    out: dict[Path, str] = {}
    for path in (Path(p).resolve() for p in paths):
        if not path.exists():
            continue
        for root in _sweep_roots(path):
            for d, (name, _) in _sweep_names(root).items():
                if (d == path or path in d.parents) and not (d / "final.json").is_file() \
                        and not (d / STOPPED).is_file():  # (a stopped cell is in the table, as failed)
                    out.setdefault(d, name)
    return [(name, d) for d, name in out.items()]


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run (a directory with ``final.json``, or ``stopped.json`` where the divergence guard stopped it) in or
    under ``paths``, in sweep order where a sweep made them."""
    recipes = set(recipe_names())
    sweeps: dict[Path, dict[Path, tuple[str, str]]] = {}  # each sweep.json read once
    runs: dict[Path, Run] = {}
    for path in (Path(p).resolve() for p in paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: give run directories or directories holding runs")
        finals = [path / "final.json"] if (path / "final.json").is_file() else sorted(path.rglob("final.json"))
        dirs = {f.parent: None for f in finals}
        # runs the divergence guard stopped: counted as failed (their stopped.json says why), not left out unsaid
        stops = [path / STOPPED] if (path / STOPPED).is_file() else sorted(path.rglob(STOPPED))
        dirs.update({f.parent: None for f in stops if not (f.parent / "final.json").is_file()})
        named: dict[Path, tuple[str, str]] = {}
        for root in _sweep_roots(path):
            named.update(sweeps.setdefault(root, _sweep_names(root)))
        # the sweep's order first (the order of its spec), then the rest by path
        for d in [d for d in named if d in dirs] + [d for d in dirs if d not in named]:
            if d in runs:
                continue
            final = read_final(d / "final.json") if (d / "final.json").is_file() else read_stopped(d / STOPPED)
            name, kind = named.get(d, (_name_from_path(d, recipes), None))
            if kind is None:
                teacher = final.get("role") == "teacher" or (name is not None and "/teachers/" in f"/{name}/")
                kind = "teacher" if teacher else "student"
            runs[d] = Run(d, final, name, kind)
    if not runs:
        raise FileNotFoundError(f"no runs (final.json) in {', '.join(str(p) for p in paths)}")
    return list(runs.values())


# ---------------------------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Column:
    """One teacher/student pair of one data set, and what we know of its teacher."""

    dataset: str
    pair: str
    student_arch: str | None = None
    teacher_arch: str | None = None
    teachers: dict[str, float] = field(default_factory=dict)  # teacher checkpoint → its test accuracy
    epochs: set[int] = field(default_factory=set)

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.pair}"

    def teacher_summary(self) -> dict[str, Any] | None:
        if not self.teachers:
            return None
        return summarize_seeds([{"best_acc": a, "acc": a} for a in self.teachers.values()])


@dataclass
class Table:
    columns: list[Column]
    methods: list[str]  # row order
    cells: dict[tuple[str, str], dict[str, Any]]  # (column key, method) → summarize_seeds of its trusted runs
    published: PublishedTable
    runs: list[Run]
    failed: dict[tuple[str, str], list[tuple[Path, str]]] = field(default_factory=dict)  # runs left out, and why

    def count(self, col: Column, method: str) -> str:
        """``n`` of a row: its trusted runs, and those left out (``"2 + 1 failed"``)."""
        s = self.summary(col, method)
        left_out = len(self.failed.get((col.key, method), ()))
        return f"{s['n_seeds'] if s else 0}" + (f" + {left_out} failed" if left_out else "")

    def paper(self, col: Column, method: str) -> Published | None:
        found = self.published.lookup(col.dataset, col.pair, method)
        return found[0] if found else None

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(c.dataset for c in self.columns))

    def summary(self, col: Column, method: str) -> dict[str, Any] | None:
        if method == "teacher":
            return col.teacher_summary()
        return self.cells.get((col.key, method))


def collect(paths: list[Path], published: str | Path | None = None) -> Table:
    """The table of every student run in or under ``paths``."""
    runs = find_runs(paths)
    columns: dict[str, Column] = {}
    groups: dict[tuple[str, str], list[dict]] = {}
    failed: dict[tuple[str, str], list[tuple[Path, str]]] = {}
    alone: list[tuple[Run, str]] = []
    methods: list[str] = []

    def add(key: tuple[str, str], run: Run) -> None:
        reason = distrust(run.final)
        if reason:
            failed.setdefault(key, []).append((run.path, reason))
        groups.setdefault(key, []).extend([] if reason else [per_seed(run.final)])

    for run in runs:
        if run.kind != "student":
            continue
        pair, method = run.placement()
        if pair is None:
            alone.append((run, method))
            continue
        col = columns.setdefault(f"{run.dataset}/{pair}", Column(run.dataset, pair))
        col.student_arch, col.teacher_arch = run.student_arch, run.teacher_arch or col.teacher_arch
        col.epochs.add(run.final.get("epochs"))
        if run.has_teacher and not distrust(run.final):
            t = run.cfg.get("teacher") or {}
            col.teachers[t.get("checkpoint") or ",".join(t.get("checkpoints") or []) or str(run.path)] = \
                run.final["teacher"]["acc"]
        add((col.key, method), run)
        methods += [method] if method not in methods else []
    for run, method in alone:  # the student trained alone: beside every pair with that student
        targets = [c for c in columns.values() if c.dataset == run.dataset and c.student_arch == run.student_arch]
        if not targets:
            col = columns.setdefault(f"{run.dataset}/{run.student_arch}", Column(run.dataset, run.student_arch,
                                                                                 run.student_arch))
            col.epochs.add(run.final.get("epochs"))
            targets = [col]
        for col in targets:
            add((col.key, method), run)
        methods = ([method] if method not in methods else []) + methods
    cells = {key: summarize_seeds(rows) if rows else {"n_seeds": 0} for key, rows in groups.items()}
    return Table(list(columns.values()), methods, cells, load_published(published), runs, failed)


# ---------------------------------------------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------------------------------------------
def _delta(ours: dict[str, Any] | None, paper: Published | None) -> str:
    if not ours or paper is None or "best_acc_mean" not in ours:
        return "–"
    return f"{ours['best_acc_mean'] - paper.acc:+.2f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _epochs(cols: list[Column]) -> str:
    e = sorted(x for c in cols for x in c.epochs if x is not None)
    return str(e[0]) if e and e[0] == e[-1] else (f"{e[0]}–{e[-1]}" if e else "?")


def _pair_table(t: Table, col: Column) -> list[str]:
    """One pair: a row per method, the numbers as columns (the demo's table)."""
    rows = [m for m in t.methods if (col.key, m) in t.cells]
    n = max(t.cells[(col.key, m)]["n_seeds"] for m in rows)
    teacher = col.teacher_summary()
    head = (f"Teacher {col.teacher_arch}: {teacher['acc_mean']:.2f}% test accuracy" if teacher
            else f"{col.dataset}, no teacher")
    tp = t.paper(col, "teacher")
    head += f" (published {tp.acc:.2f})" if tp and teacher else ""
    head += (f". Student {col.student_arch}, {_epochs([col])} epochs, {n} seed(s); mean ± std over seeds "
             "(n per row), last-epoch accuracy.")
    papers = {m: t.paper(col, m) for m in rows}
    with_paper = any(papers.values())
    cols = ["method", "n", "accuracy %", "best-epoch acc %", "agreement %", "KL(t‖s)", "ECE %"]
    cols += ["published %", "Δ best"] if with_paper else []
    lines = [head, "", _row(cols), "|" + "---|" * len(cols)]
    for m in rows:
        s = t.cells[(col.key, m)]
        cells = [m, t.count(col, m), mean_std(s, "acc"), mean_std(s, "best_acc"), mean_std(s, "agreement"),
                 mean_std(s, "kl", 3), mean_std(s, "ece", 2, 100, std=False)]
        if with_paper:
            p = papers[m]
            cells += [p.label() if p else "–", _delta(s, p)]
        lines.append(_row(cells))
    return lines


_GRIDS = (("best-epoch test accuracy %", "best_acc", 2, 1.0), ("last-epoch test accuracy %", "acc", 2, 1.0),
          ("teacher–student test agreement %", "agreement", 2, 1.0), ("KL(teacher ‖ student) on test", "kl", 3, 1.0),
          ("student ECE % on test", "ece", 2, 100.0))


def _grids(t: Table, cols: list[Column]) -> list[str]:
    """Several pairs: a table per number, rows = methods, columns = pairs (the published number and Δ beside the
    best-epoch accuracy)."""
    rows = ["teacher"] + [m for m in t.methods if any((c.key, m) in t.cells for c in cols)]
    with_paper = any(t.paper(c, m) for c in cols for m in rows)
    lines = [f"{cols[0].dataset}: {len(cols)} pairs, {_epochs(cols)} epochs; ours = mean ± std over seeds (n), "
             "teacher = the teacher the pair's students were distilled from."]
    for title, key, digits, scale in _GRIDS:
        published_here = with_paper and key == "best_acc"
        head = ["method"]
        for c in cols:
            head += [c.pair] + (["published", "Δ"] if published_here else [])
        lines += ["", f"**{title}**" + (" — published: the paper's number; Δ = ours − published" if published_here
                                        else ""), "", _row(head), "|" + "---|" * len(head)]
        for m in rows:
            if key not in ("best_acc", "acc") and m == "teacher":
                continue
            cells = [m]
            for c in cols:
                s = t.summary(c, m)
                shown = bool(s) and f"{key}_mean" in s or (c.key, m) in t.failed
                ours = mean_std(s, key, digits, scale) + (f" ({t.count(c, m)})" if shown else "")
                cells.append(ours)
                if published_here:
                    p = t.paper(c, m)
                    cells += [p.label() if p else "–", _delta(s, p)]
            lines.append(_row(cells))
    return lines


def markdown(t: Table) -> str:
    """One section per data set: the pair table for a single pair, the paper-style grids for several."""
    out: list[str] = []
    for ds in t.datasets():
        cols = [c for c in t.columns if c.dataset == ds]
        if out:
            out.append("")
        out += _pair_table(t, cols[0]) if len(cols) == 1 else _grids(t, cols)
    shown = [p for c in t.columns for m in ["teacher", *t.methods] if (p := t.paper(c, m))]
    if shown:
        out += ["", "Published numbers (configs/published.yaml): " + "; ".join(sorted({p.source for p in shown})) + "."]
    if any(p.unverified for p in shown):
        out += ["", "(unverified): a published number that could not be checked against a readable copy of its source "
                    "(configs/published.yaml `unverified`)."]
    left_out = {path: reason for runs in t.failed.values() for path, reason in runs}
    if left_out:
        out += ["", f"Not averaged ({len(left_out)} run(s) whose result is not to be trusted):"]
        out += [f"- {path}: {_shorter(reason)}" for path, reason in left_out.items()]
    return "\n".join(out)


def _shorter(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def to_csv(t: Table) -> str:
    """One line per (pair, method): n, mean and std of every number, the published number, its source, Δ."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = ("best_acc", "acc", "agreement", "kl", "ece")
    w.writerow(["dataset", "pair", "method", "n", *[f"{k}_{s}" for k in keys for s in ("mean", "std")],
                "published", "published_source", "published_note", "published_unverified", "delta_best",
                "failed"])
    for c in t.columns:
        for m in ["teacher", *t.methods]:
            s = t.summary(c, m)
            if not s:
                continue
            p = t.paper(c, m)
            w.writerow([c.dataset, c.pair, m, s["n_seeds"],
                        *[s.get(f"{k}_{x}", "") for k in keys for x in ("mean", "std")],
                        p.acc if p else "", p.source if p else "", (p.note or "") if p else "",
                        (p.unverified or "") if p else "",
                        f"{s['best_acc_mean'] - p.acc:.4f}" if p and "best_acc_mean" in s else "",
                        len(t.failed.get((c.key, m), ()))])
    return buf.getvalue().rstrip("\n")


def panels(t: Table, hollow: set[str] = frozenset(), title=None) -> list[tuple[str, dict, set[str]]]:
    out = []
    for c in t.columns:
        rows = {m: t.cells[(c.key, m)] for m in t.methods if t.cells.get((c.key, m), {}).get("n_seeds")}
        ts = c.teacher_summary()
        default = (f"{c.dataset}: {c.teacher_arch} ({ts['acc_mean']:.1f}%) → {c.student_arch}" if ts
                   else f"{c.dataset}: {c.pair}")
        out.append((title(c) if title else default, rows, set(hollow)))
    return out


def write_outputs(t: Table, out: str | Path | None, formats: tuple[str, ...] = ("md",)) -> str:
    """Write ``out.md`` / ``out.csv`` / ``out.png`` for ``formats``; without ``out``, return the text ones to print."""
    formats = formats or ("md",)
    texts = {"md": markdown, "csv": to_csv}
    printed = []
    for f in formats:
        if f == "png":
            if out is None:
                raise ValueError("--format png writes a file: give --out PATH (writes PATH.png)")
            accuracy_vs_agreement(panels(t), Path(f"{out}.png"))
        elif out is None:
            printed.append(texts[f](t))
        else:
            atomic_write_text(f"{out}.{f}", texts[f](t) + "\n")
    return "\n\n".join(printed)
