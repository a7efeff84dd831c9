"""`kdlab demo --quick` end to end (teacher, CE and KD students): results.json, table, plot, KD beating CE, and
`kdlab table` on the demo's runs printing the demo's table."""

import json

import pytest

from kdlab import demo
from kdlab.cli import main

# measured at these settings (teacher 98.5%, 2 seeds): CE 75.80 ± 0.85%, KD 85.75 ± 1.06%
MARGIN = 5.0


@pytest.mark.slow
def test_demo_writes_results_table_and_plot_and_kd_beats_ce(tmp_path, capsys):
    results = demo.run_demo(tmp_path / "out", quick=True, seeds=2, progress=False, methods=("ce", "kd"), workers=1)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["methods"].keys() == {"ce", "kd"} == results["methods"].keys()
    for r in saved["methods"].values():
        assert r["n_seeds"] == 2
        for key in ("acc_mean", "acc_std", "agreement_mean", "kl_mean", "ece_mean"):
            assert key in r
    ce, kd = saved["methods"]["ce"], saved["methods"]["kd"]
    # a distillation regression (a broken KD loss, teacher, cache or loop) shows up here first
    assert saved["teacher"]["acc"] > 90
    assert kd["acc_mean"] > ce["acc_mean"] + MARGIN, (kd["acc_mean"], ce["acc_mean"])
    assert kd["agreement_mean"] > ce["agreement_mean"]
    assert (tmp_path / "out" / "results.png").stat().st_size > 10_000
    table = (tmp_path / "out" / "results.md").read_text()
    assert table.strip() in capsys.readouterr().out
    assert "| kd | 2 |" in table and "| ce | 2 |" in table
    # the demo is a sweep: its runs are ordinary cells, and `kdlab table` on them prints the demo's table
    assert sorted(p.relative_to(tmp_path / "out" / "runs").as_posix() for p in
                  (tmp_path / "out" / "runs").rglob("final.json")) == [
        f"mnist1d/{m}/seed{k}/final.json" for m in ("ce", "kd") for k in (0, 1)]
    assert main(["table", str(tmp_path / "out" / "runs")]) == 0
    assert capsys.readouterr().out == table


def test_one_seed_tables_print_no_spread():
    """With one seed the spread is unknown, not 0: no `± 0.00` (the main table: tests/sweep/test_table.py)."""
    one = {"n_seeds": 1, "acc_mean": 91.5, "acc_std": 0.0, "agreement_mean": 90.0, "agreement_std": 0.0}
    lines = demo._checks_table({"dhkd": one}, {"single_head_bkl": one})
    assert "| single_head_bkl | 91.50 | 90.00 |" in lines and "| dhkd | 91.50 | 90.00 |" in lines
    assert "±" not in "\n".join(lines)


def test_the_features_table_has_every_feature_method_beside_ce_and_kd():
    """`kdlab demo --features`: every registered feature method not already in the default demo (CAKD is), once."""
    from kdlab import methods
    from kdlab.cli import build_parser
    from kdlab.methods import FeatureMethod

    feature = {n for n in methods.names() if issubclass(methods.get(n), FeatureMethod)} - set(demo.DEMO_METHODS)
    assert set(demo.FEATURE_METHODS) == feature | {"ce", "kd"} and len(set(demo.FEATURE_METHODS)) == 13
    assert demo.FEATURE_METHODS[:2] == ("ce", "kd") == demo.DEMO_METHODS[:2]  # the same cells as the default demo
    assert build_parser().parse_args(["demo", "--features"]).features is True
    assert build_parser().parse_args(["demo"]).features is False


@pytest.mark.slow
def test_demo_features_writes_its_own_table_with_the_adapted_weights(tmp_path, capsys):
    out = tmp_path / "out"
    results = demo.run_demo(out, quick=True, seeds=1, progress=False, methods=("ce", "at"), workers=1,
                            features=True)
    assert results["methods"].keys() == {"ce", "at"}
    assert json.loads((out / "features.json").read_text())["methods"].keys() == {"ce", "at"}
    assert (out / "features.md").read_text().strip() in capsys.readouterr().out
    assert not (out / "results.json").exists()  # the default demo's table is left alone
    final = json.loads((out / "runs" / "mnist1d" / "at" / "seed0" / "final.json").read_text())
    assert [(a["key"], a["default"], a["value"]) for a in final["adapted_defaults"]] == [("feat_weight", 1000.0, 13.8)]
