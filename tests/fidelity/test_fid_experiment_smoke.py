"""Smoke run of `kdlab experiment` (1 epoch, 2 seeds) and `kdlab fidelity` on its checkpoints."""

import contextlib
import io
import json

import pytest

from kdlab.cli import main
from kdlab.fidelity.experiments import experiment_names, run_experiment


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # as `kdlab experiment --no-progress` runs it
        res = run_experiment("init_interpolation", out, quick=True, seeds=2, progress=False, workers=1, epochs=1,
                             teacher_epochs=1)
    return out, res, printed.getvalue()


@pytest.mark.slow
def test_experiment_writes_json_md_png(tiny):
    out, res, _ = tiny
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["variants"]) == ["lambda=0", "lambda=0.5", "lambda=1"]
    for v in saved["variants"].values():
        s = v["summary"]
        assert s["n_seeds"] == 2
        for key in ("test_agreement", "control_agreement", "student_acc", "test_kl", "student_ece",
                    "train_agreement", "train_aug_agreement", "stream_agreement"):
            assert 0 <= s[f"{key}_mean"] <= (100 if "kl" not in key else 1e9), key
    assert "| lambda=0.5 |" in (out / "results.md").read_text()
    for png in ("agreement_vs_accuracy.png", "train_vs_test_agreement.png", "reliability.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_fidelity_cli_on_a_run_with_control(tiny, tmp_path, capsys):
    out, _, _ = tiny
    run, other = out / "runs" / "lambda=0.5" / "seed0", out / "runs" / "lambda=0.5" / "seed1"
    report_path = tmp_path / "fid.json"
    rc = main(["fidelity", "--run", str(run), "--control", str(other / "model.safetensors"),
               "--sources", "test,train_clean,distill_stream", "--json", str(report_path)])
    assert rc == 0
    rep = json.loads(report_path.read_text())
    assert set(rep["student"]) == {"test", "train_clean", "distill_stream"}
    assert "kl_T4" in rep["student"]["test"]  # the run's training temperature, labelled
    assert set(rep["control"]) == {"test", "train_clean"}
    assert "control agreement" in capsys.readouterr().out


def test_cli_lists_and_rejects(capsys):
    assert main(["experiment", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in experiment_names())
    assert main(["experiment", "nope"]) == 2
    assert main(["fidelity", "--student", "missing.safetensors", "--teacher", "missing.safetensors"]) == 2


@pytest.mark.slow
def test_experiment_without_progress_prints_the_table_and_the_paths(tiny):
    out, _, printed = tiny
    assert (out / "results.md").read_text().strip() in printed
    assert f"wrote {out / 'results.json'}" in printed
