"""`kdlab table` on hand-made run directories: grouping by pair and method, mean ± std over seeds with n, the published
number beside ours with Δ, the pair layout for one pair and the paper grids for several, CSV and PNG."""

import csv
import io
import json
import statistics

import pytest

from kdlab.cli import main
from kdlab.eval import mean_std
from kdlab.sweep.table import collect, markdown, to_csv

PAIRS = {"resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 79.40),
         "resnet56-resnet20": ("resnet56", "resnet20", 72.00)}


def fake_run(path, teacher, student, best, last, tacc=None, agreement=None, method="kd"):
    path.mkdir(parents=True, exist_ok=True)
    final = {"role": "student", "method": method, "epochs": 240, "wall_time_s": 1.0,
             "student": {"arch": student, "best_acc": best, "best_epoch": 200, "last_acc": last},
             "fidelity": {"student_ece": 0.05},
             "config": {"data": {"name": "cifar100"},
                        "teacher": {"checkpoint": f"runs/{teacher}.safetensors" if teacher else None}}}
    if teacher:
        final["teacher"] = {"arch": teacher, "acc": tacc}
        final["fidelity"].update(agreement=agreement if agreement is not None else last + 1, kl=0.25)
    (path / "final.json").write_text(json.dumps(final))


@pytest.fixture
def grid(tmp_path):
    """kd (3 seeds) and dkd (1 seed) on two CIFAR pairs, and the resnet8x4 student alone, laid out as a sweep."""
    best = {}
    for pair, (t, s, tacc) in PAIRS.items():
        for method, seeds in (("kd", 3), ("dkd", 1)):
            for k in range(seeds):
                b = 70 + k + (2 if method == "dkd" else 0)
                best[(pair, method, k)] = b
                fake_run(tmp_path / "cifar100" / pair / method / f"seed{k}", t, s, b, b - 0.5, tacc, method=method)
    fake_run(tmp_path / "cifar100" / "students" / "resnet8x4" / "ce" / "seed0", None, "resnet8x4", 72.0, 71.5,
             method="ce")
    return tmp_path, best


def test_groups_by_pair_and_method_with_the_published_number_and_delta(grid):
    root, best = grid
    t = collect([root])
    assert [c.pair for c in t.columns] == list(PAIRS)
    kd = t.cells[("cifar100/resnet32x4-resnet8x4", "kd")]
    values = [best[("resnet32x4-resnet8x4", "kd", k)] for k in range(3)]
    assert kd["n_seeds"] == 3 and kd["best_acc_mean"] == pytest.approx(statistics.mean(values))
    assert kd["best_acc_std"] == pytest.approx(statistics.stdev(values))
    text = markdown(t)
    # best-epoch grid: ours (n), published, Δ = ours − published (KD on resnet32x4→resnet8x4: 73.33)
    assert f"| kd | 71.00 ± 1.00 (3) | 73.33 | {71.0 - 73.33:+.2f} |" in text
    # one seed: no "± 0.00"; the teacher row is the pair's teacher with its published accuracy
    assert "| dkd | 72.00 (1) | 76.32 | -4.32 |" in text
    assert "| teacher | 79.40 (1) | 79.42 | -0.02 |" in text
    # the student trained alone is the `ce` row of the pair with that student, beside the paper's student
    assert "| ce | 72.00 (1) | 72.50 | -0.50 | – | 69.06 | – |" in text
    assert "Zhao et al." in text  # the sources of the published numbers are named


def test_one_pair_gives_the_pair_table(grid, tmp_path):
    root, _ = grid
    text = markdown(collect([root / "cifar100" / "resnet32x4-resnet8x4"]))
    assert text.startswith("Teacher resnet32x4: 79.40% test accuracy (published 79.42). Student resnet8x4, 240 "
                           "epochs, 3 seed(s)")
    assert "| method | n | accuracy % | best-epoch acc % | agreement % | KL(t‖s) | ECE % | published % | Δ best |" \
        in text
    assert "| kd | 3 | 70.50 ± 1.00 | 71.00 ± 1.00 | 71.50 ± 1.00 | 0.250 ± 0.000 | 5.00 | 73.33 | -2.33 |" in text


def test_csv_has_every_number_and_the_published_source(grid):
    root, _ = grid
    rows = list(csv.DictReader(io.StringIO(to_csv(collect([root])))))
    kd = next(r for r in rows if r["pair"] == "resnet56-resnet20" and r["method"] == "kd")
    assert kd["n"] == "3" and float(kd["best_acc_mean"]) == 71.0 and float(kd["published"]) == 70.66
    assert float(kd["delta_best"]) == pytest.approx(0.34) and "Decoupled Knowledge Distillation" in kd[
        "published_source"]
    assert {r["method"] for r in rows} == {"teacher", "ce", "kd", "dkd"}


def test_cli_writes_md_csv_png(grid, tmp_path, capsys):
    root, _ = grid
    out = tmp_path / "t" / "table"
    assert main(["table", str(root), "--format", "md,csv,png", "--out", str(out)]) == 0
    assert (out.parent / "table.md").read_text().startswith("cifar100: 2 pairs")
    assert (out.parent / "table.csv").read_text().startswith("dataset,pair,method,n,")
    assert (out.parent / "table.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["table", str(root), "--format", "png"]) == 2  # a PNG needs --out: one line, no traceback
    assert "--out" in capsys.readouterr().err


def test_missing_metric_in_one_seed_is_an_error_not_a_shorter_mean(tmp_path):
    fake_run(tmp_path / "a" / "seed0", "resnet56", "resnet20", 70, 70, 72.0)
    fake_run(tmp_path / "a" / "seed1", "resnet56", "resnet20", 71, 71, 72.0)
    final = json.loads((tmp_path / "a" / "seed1" / "final.json").read_text())
    final["fidelity"]["kl"] = None
    (tmp_path / "a" / "seed1" / "final.json").write_text(json.dumps(final))
    with pytest.raises(ValueError, match="'kl'"):
        collect([tmp_path])


def test_fmt():
    assert mean_std({"n_seeds": 1, "a_mean": 1.234, "a_std": 0.0}, "a") == "1.23"
    assert mean_std({"n_seeds": 2, "a_mean": 1.234, "a_std": 0.5}, "a", 1) == "1.2 ± 0.5"
    assert mean_std({"n_seeds": 2}, "a") == "–"
    assert main(["table", "/nonexistent/runs"]) == 2


def test_unverified_published_numbers_are_marked_in_md_and_csv(tmp_path):
    """R2KD's numbers could not be checked against a readable source: `kdlab table` says so beside them."""
    for k in range(2):
        fake_run(tmp_path / "cifar100" / "resnet32x4-resnet8x4" / "r2kd" / f"seed{k}", "resnet32x4", "resnet8x4",
                 77.0 + k, 76.5, 79.4, method="r2kd")
        fake_run(tmp_path / "cifar100" / "resnet32x4-resnet8x4" / "kd" / f"seed{k}", "resnet32x4", "resnet8x4",
                 73.0 + k, 72.5, 79.4)
    t = collect([tmp_path])
    text = markdown(t)
    assert "| r2kd | 2 | 76.50 ± 0.00 | 77.50 ± 0.71 |" in text and "| 77.70 (unverified) | -0.20 |" in text
    assert "| 73.33 | +0.17 |" in text  # a checked number carries no mark
    assert "(unverified): a published number that could not be checked" in text
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(to_csv(t)))}
    assert "could not be read" in rows["r2kd"]["published_unverified"] and rows["kd"]["published_unverified"] == ""
