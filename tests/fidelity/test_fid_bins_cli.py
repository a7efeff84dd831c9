"""The per-bin fidelity in a run's final.json (the last evaluation's logits, no extra pass) and in `kdlab fidelity`
with its table and plot (resumed exactly: tests/engine/test_resume_after_kill.py)."""

import json

import pytest

from kdlab import builder
from kdlab.cli import main


def _cfg(out, teacher, *extra):
    return builder.load_config("mnist1d/kd", [
        f"teacher.checkpoint={teacher}", "teacher.arch=mnist1d_cnn_small", "data.train_subset=256",
        "data.test_subset=120", "optim.epochs=2", "eval.every=5", f"out_dir={out}", "run.progress=false",
        "run.tensorboard=false", *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory, random_teacher):
    out = tmp_path_factory.mktemp("bins") / "run"
    builder.distil(_cfg(out, random_teacher, "eval.bins=4"))
    return out


def test_final_json_holds_the_bins_of_the_last_evaluation(run, random_teacher, tmp_path):
    final = json.loads((run / "final.json").read_text())
    bins = final["fidelity_bins"]
    assert set(bins) == {"confidence", "entropy"}
    for b in bins.values():
        assert sum(b["count"]) == 120 and len(b["edges"]) == 5
        weighted_kl = sum(c * k for c, k in zip(b["count"], b["kl"]) if c) / 120
        assert weighted_kl == pytest.approx(final["fidelity"]["kl"], rel=1e-6)  # the same logits as the report
    # the same numbers from `kdlab fidelity` on the saved model (its own pass over the test set)
    report = tmp_path / "fid.json"
    assert main(["fidelity", "--run", str(run), "--sources", "test", "--bins", "4", "--json", str(report),
                 "--plot", str(tmp_path / "bins.png")]) == 0
    cli = json.loads(report.read_text())["student"]["test"]["bins"]
    for key in bins:
        assert cli[key]["count"] == bins[key]["count"]
        assert cli[key]["agreement"] == pytest.approx(bins[key]["agreement"])
        assert cli[key]["kl"] == pytest.approx(bins[key]["kl"], rel=1e-4)
    assert (tmp_path / "bins.png").read_bytes()[:4] == b"\x89PNG"
    # off: no bins in final.json
    off = tmp_path / "off"
    builder.distil(_cfg(off, random_teacher, "eval.bins=0"))
    assert "fidelity_bins" not in json.loads((off / "final.json").read_text())


def test_fidelity_cli_prints_the_table_and_refuses_a_plot_without_bins(run, tmp_path, capsys):
    assert main(["fidelity", "--run", str(run), "--sources", "test", "--bins", "3"]) == 0
    out = capsys.readouterr().out
    assert "test by teacher confidence (3 equal-count bins" in out and "test by teacher entropy" in out
    assert main(["fidelity", "--run", str(run), "--sources", "test", "--bins", "0",
                 "--plot", str(tmp_path / "x.png")]) == 2
    assert "--plot draws the per-bin fidelity" in capsys.readouterr().err
