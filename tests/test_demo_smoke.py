"""`kdlab demo` end to end at toy size: results.json schema, table, plot."""

import json

from kdlab import demo


def test_demo_writes_results_table_and_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "QUICK_EPOCHS", 2)
    monkeypatch.setattr(demo, "QUICK_TEACHER_EPOCHS", 2)
    results = demo.run_demo(tmp_path / "out", quick=True, seeds=2, progress=False, methods=("ce", "kd"), workers=1)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["methods"].keys() == {"ce", "kd"} == results["methods"].keys()
    for r in saved["methods"].values():
        assert r["seeds"] == 2
        for key in ("acc_mean", "acc_std", "agreement_mean", "kl_mean", "ece_mean"):
            assert key in r
        assert 0 <= r["acc_mean"] <= 100 and r["acc_std"] >= 0
    assert 0 <= saved["teacher"]["acc"] <= 100
    assert (tmp_path / "out" / "results.png").stat().st_size > 10_000
    table = (tmp_path / "out" / "results.md").read_text()
    assert table.strip() in capsys.readouterr().out
    assert "| kd |" in table and "| ce |" in table
