"""`kdlab experiment NAME`: every named spec (configs/experiments/) plans on every pair it lists, runs at toy size on
MNIST-1D subsets, resumes (a rerun trains only the missing cells), and a bad NAME or --pair is one line listing the
valid ones.

``r2kd_augment`` uses ``distill_data.second_view`` (the `views` branch's key): it is planned only where the config
knows the key; its run test comes with that key.
"""

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from kdlab import builder
from kdlab.cli import main
from kdlab.config import ConfigError, recipe_names
from kdlab.fidelity.experiments import run_experiment, run_named
from kdlab.fidelity.specs import experiment_names, load_experiment
from kdlab.fidelity.study import collect_study, epoch_overrides, markdown, plan_study
from kdlab.sweep import InProcess

SWEEPS = [n for n in experiment_names() if load_experiment(n).kind == "sweep"]
FIDELITY = [n for n in experiment_names() if load_experiment(n).kind == "fidelity"]
TOY = ["data.train_subset=120"]


def test_the_issue_table_has_its_specs():
    assert {"cakd_weights", "cakd_levels", "cakd_strong", "dhkd_single_head", "ttm_gamma", "ttm_imagenet_teachers",
            "r2kd_augment", "self_distillation_ensemble", "temperature", "augmentation", "extra_data",
            "training_length", "init_interpolation"} <= set(experiment_names())
    assert not [r for r in recipe_names() if r.startswith("experiments/")], "specs are not run recipes"


@pytest.mark.parametrize("name", experiment_names())
def test_every_spec_plans_on_every_pair(name, tmp_path):
    """Every row's recipe and overrides validate on every pair, quick and full (no training)."""
    spec = load_experiment(name)
    assert Path(f"src/kdlab/configs/experiments/{name}.yaml").read_text(encoding="utf-8").startswith("# ")
    for pair in list(spec.pairs)[:3] + list(spec.pairs)[-1:]:  # all data sets; every pair: test_methods_recipes
        for quick in (False, True):
            rows = spec.rows(pair, quick)
            assert rows, (pair, quick)
            if spec.kind == "sweep":
                study = plan_study(spec, name, tmp_path / pair, pair=pair, quick=quick)
                assert {c.name for c in study.cells if c.kind == "student"} == {v.name for v in rows}
                assert len(study.students[rows[0].name]) == (spec.quick_seeds if quick else spec.seeds)
            else:
                for v in rows:
                    builder.load_config(spec.pairs[pair], v.overrides)
                    builder.load_config(spec.teachers[pair], v.teacher_overrides)


def test_epoch_overrides_scale_the_schedule():
    assert epoch_overrides("mnist1d/fidelity_kd", [], 10) == ["optim.epochs=10", "optim.milestones=[7, 8]",
                                                              "eval.every=10"]
    assert epoch_overrides("mnist1d/fidelity_kd", [], 1) == ["optim.epochs=1", "optim.milestones=[]", "eval.every=1"]
    assert epoch_overrides("imagenet/resnet50-resnet50/fidelity_kd", [], 9)[-1] == "optim.warmup_epochs=0"


def test_bad_name_or_pair_is_one_line_listing_the_valid_ones(capsys):
    assert main(["experiment", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cakd_weights" in err and "dhkd_single_head" in err
    assert main(["experiment", "dhkd_single_head", "--pair", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "resnet32x4-resnet8x4" in err and "mnist1d" in err
    assert main(["experiment", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(n in listed for n in experiment_names())
    with pytest.raises(ConfigError, match="choose one of: mnist1d"):
        plan_study(load_experiment("ttm_gamma"), "ttm_gamma", "x", pair="nope")


def _toy(name: str, out: Path, **kw) -> dict:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        return run_named(name, out, executor=InProcess(1), quick=True, seeds=1, overrides=TOY, epochs=1,
                         teacher_epochs=1, progress=False, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEEPS)
def test_each_sweep_spec_runs_at_toy_size(name, tmp_path):
    res = _toy(name, tmp_path)
    spec = load_experiment(name)
    rows = spec.rows("mnist1d", True)
    assert list(res["rows"]) == [v.name for v in rows] and not res["problems"]
    saved = json.loads((tmp_path / "results.json").read_text())
    for r in saved["rows"].values():
        assert r["summary"]["n_seeds"] == 1 and 0 <= r["summary"]["best_acc_mean"] <= 100
        assert r["summary"]["acc_mean"] <= r["summary"]["best_acc_mean"] + 1e-9
    table = (tmp_path / "results.md").read_text()
    assert all(f"| {v.name} | 1 |" in table for v in rows)
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    for v in rows:  # each row's cell is an ordinary run of its recipe with its overrides
        cfg = json.loads((tmp_path / "runs" / v.name.replace(" ", "_").replace("/", "_") / "seed0" / "final.json")
                         .read_text())["config"]
        assert cfg["optim"]["epochs"] == 1 and cfg["data"]["train_subset"] == 120


@pytest.mark.slow
def test_rerun_trains_only_the_missing_cells(tmp_path):
    first = _toy("dhkd_single_head", tmp_path)
    assert first["cells"]["trained"] == len(first["rows"]) + 1  # and the teacher
    gone = tmp_path / "runs" / "single_head_lr=0.01" / "seed0"
    shutil.rmtree(gone)
    again = _toy("dhkd_single_head", tmp_path)
    assert again["cells"]["trained"] == 1 and again["cells"]["finished"] == len(first["rows"])
    assert (gone / "final.json").is_file()
    assert again["rows"]["single head lr=0.1"]["per_seed"] == first["rows"]["single head lr=0.1"]["per_seed"]


def test_the_published_numbers_are_beside_ours(tmp_path):
    """The spec's own (DHKD's single head, unverified) and configs/published.yaml's for an unchanged recipe (KD)."""
    study = plan_study(load_experiment("dhkd_single_head"), "dhkd_single_head", tmp_path, pair="resnet32x4-resnet8x4")
    assert study.recipes["single head lr=0.05"] == "cifar100/resnet32x4-resnet8x4/single_head_bkl"
    assert study.recipes["CE alone"] == "cifar100/students/resnet8x4/ce"
    rows = collect_study(study)
    pub = rows["single head lr=0.05"]["published"]
    assert pub["acc"] == 39.56 and pub["unverified"] and rows["single head lr=0.1"]["published"] is None
    assert rows["single head lr=0.05"]["missing_seeds"] == [0, 1, 2]  # nothing ran: n = 0, stated
    table = markdown({"name": "dhkd_single_head", "title": "t", "paper": "dhkd", "claim": "c",
                      "pair": study.pair, "recipe_note": "r", "columns": ["best_acc"], "rows": rows})
    assert "| single head lr=0.05 | 0 (3 missing) | – | 39.56 (unverified) |" in table
    kd = collect_study(plan_study(load_experiment("cakd_weights"), "cakd_weights", tmp_path / "k",
                                  pair="resnet32x4-resnet8x4"))["KD (reference)"]["published"]
    assert kd["acc"] == 73.33 and "Decoupled" in kd["source"]
    mnist = collect_study(plan_study(load_experiment("dhkd_single_head"), "dhkd_single_head", tmp_path / "m"))
    assert all(r["published"] is None for r in mnist.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", FIDELITY)
def test_each_fidelity_spec_runs_at_toy_size(name, tmp_path):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        res = run_experiment(name, tmp_path, quick=True, seeds=2, progress=False, workers=1, epochs=1,
                             teacher_epochs=1, overrides=TOY, executor=InProcess(1))
    assert list(res["variants"]) == [v.name for v in load_experiment(name).rows("mnist1d", True)]
    for v in res["variants"].values():
        assert v["summary"]["n_seeds"] == 2 and 0 <= v["summary"]["test_agreement_mean"] <= 100
    assert (tmp_path / "results.md").read_text().strip() in printed.getvalue()
