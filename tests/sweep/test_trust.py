"""A sweep cell whose run finished but cannot be trusted is `failed` with the reason, and `kdlab table` never averages
such a run into a row without saying so; a final.json that is truncated or lacks a number is one line naming it."""

import csv
import io
import json
import math

import pytest

from kdlab.cli import main
from kdlab.sweep.cell import Cell
from kdlab.sweep.runner import InProcess, execute
from kdlab.sweep.table import collect, markdown, to_csv
from kdlab.sweep.trust import distrust

from .test_table import fake_run


def _cell(tmp_path, name, teacher, *overrides):
    tiny = ["data.train_subset=512", "data.test_subset=100", "optim.epochs=2", "run.progress=false",
            "teacher.arch=mnist1d_cnn_small", f"teacher.checkpoint={teacher}", f"out_dir={tmp_path / name}"]
    return Cell(name, "mnist1d/kd", (*tiny, *overrides), str(tmp_path / name), seed=0)


def test_an_exploding_or_warned_cell_is_failed_with_its_reason(tmp_path, random_teacher):
    cells = [_cell(tmp_path, "ok", random_teacher),
             _cell(tmp_path, "lr50", random_teacher, "optim.lr=50"),
             _cell(tmp_path, "lr50_warn", random_teacher, "optim.lr=50", "run.on_divergence=warn")]
    with pytest.warns(RuntimeWarning, match="training exploded"):
        report = execute(cells, InProcess(threads=1))
    rec = {c.name: report.records[c.key] for c in cells}
    assert rec["ok"]["status"] == "trained"
    # stopped in its first epoch by the step watch (it trained to a loss of 1e23 at chance before)
    assert rec["lr50"]["status"] == "failed" and rec["lr50"]["exit_code"] == 4
    assert "training exploded at step" in rec["lr50"]["reason"]
    # trained on under on_divergence=warn: a final.json, but not a result
    assert rec["lr50_warn"]["status"] == "failed" and rec["lr50_warn"]["exit_code"] is None
    assert "the divergence guard found 'explosion' at epoch 1 and the run trained on" in rec["lr50_warn"]["reason"]
    final = json.loads((tmp_path / "lr50_warn" / "final.json").read_text())
    assert final["divergence"]["rule"] == "explosion" and not report.ok
    # a rerun finds it finished, and still not a result
    again = execute(cells, InProcess(threads=1))
    assert again.records[cells[2].key]["status"] == "failed" and "move" in again.records[cells[2].key]["reason"]
    assert again.records[cells[0].key]["status"] == "finished"


def _grid(tmp_path):
    for k, best in enumerate((70.0, 72.0)):
        fake_run(tmp_path / "cifar100" / "resnet56-resnet20" / "kd" / f"seed{k}", "resnet56", "resnet20", best,
                 best - 0.5, 72.3)
    bad = tmp_path / "cifar100" / "resnet56-resnet20" / "kd" / "seed2"
    fake_run(bad, "resnet56", "resnet20", 10.0, 10.0, 72.3)
    return bad


def test_the_table_never_averages_a_run_it_cannot_trust(tmp_path):
    bad = _grid(tmp_path)
    final = json.loads((bad / "final.json").read_text())
    final["fidelity"]["kl"] = math.inf  # the KL 3.5e10 became inf; a NaN is the same
    (bad / "final.json").write_text(json.dumps(final))
    assert distrust(final) == "a reported number is not finite: fidelity.kl is inf"
    t = collect([tmp_path / "cifar100" / "resnet56-resnet20"])
    kd = t.cells[("cifar100/resnet56-resnet20", "kd")]
    assert kd["n_seeds"] == 2 and kd["best_acc_mean"] == 71.0  # the two good seeds only
    text = markdown(t)
    assert "| kd | 2 + 1 failed | 70.50 ± 1.41 | 71.00 ± 1.41 |" in text
    assert f"- {bad}: a reported number is not finite: fidelity.kl is inf" in text
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(to_csv(t)))}
    assert rows["kd"]["n"] == "2" and rows["kd"]["failed"] == "1" and rows["teacher"]["failed"] == "0"

    # a run the guard warned about (on_divergence=warn): left out the same way, in the paper grids too
    final["fidelity"]["kl"] = 0.3
    final["divergence"] = {"epoch": 3, "rule": "collapse", "message": "training collapsed at epoch 3"}
    (bad / "final.json").write_text(json.dumps(final))
    fake_run(tmp_path / "cifar100" / "resnet32x4-resnet8x4" / "kd" / "seed0", "resnet32x4", "resnet8x4", 73.0, 72.5,
             79.4)
    text = markdown(collect([tmp_path]))
    assert "| 71.00 ± 1.41 (2 + 1 failed) | 70.66 |" in text  # beside the published number
    assert "the divergence guard found 'collapse' at epoch 3 and the run trained on" in text


def test_a_final_json_without_a_key_or_truncated_is_one_line_naming_it(tmp_path, capsys):
    bad = _grid(tmp_path)
    final = json.loads((bad / "final.json").read_text())
    del final["student"]["last_acc"]
    (bad / "final.json").write_text(json.dumps(final))
    assert main(["table", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{bad / 'final.json'}: no 'student.last_acc'" in err
    (bad / "final.json").write_text(json.dumps(final)[:120])  # cut mid-write
    assert main(["table", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad / 'final.json'}: not a readable final.json (truncated" in err


def test_a_run_the_guard_stopped_is_counted_as_failed_not_left_out(tmp_path):
    bad = _grid(tmp_path)
    (bad / "final.json").unlink()  # seed 2 stopped: no final.json, its stopped.json says why (kdlab.builder.run)
    (bad / "stopped.json").write_text(json.dumps({
        "role": "student", "method": "kd", "student": {"arch": "resnet20"}, "teacher": {"arch": "resnet56"},
        "stopped": {"epoch": 5, "rule": "no learning", "message": "training is not learning: ..."}, "epochs": 240,
        "config": {"data": {"name": "cifar100"}}}))
    text = markdown(collect([tmp_path]))
    assert "| kd | 2 + 1 failed |" in text
    assert f"{bad}: the divergence guard stopped it at epoch 5 ('no learning'): training is not learning" in text
    (bad / "stopped.json").write_text("{")  # truncated: one line naming it
    with pytest.raises(ValueError, match=r"seed2/stopped.json: not a readable stopped.json"):
        collect([tmp_path])
