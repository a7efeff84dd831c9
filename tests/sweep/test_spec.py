"""Sweep specs → cells (no training): patterns, seeds, overrides, teacher cells and their students, errors up front;
a cell directory's state; the exit codes a failing cell records are the CLI's."""

import json
from pathlib import Path

import pytest
import yaml

from kdlab import builder, cli
from kdlab.config import ConfigError
from kdlab.sweep import cell_state, cells_of, exit_code, load_spec
from kdlab.sweep.cell import Cell

CIFAR_PAIR = "cifar100/resnet32x4-resnet8x4"


def test_pattern_seeds_and_a_teacher_cell_per_pair(tmp_path):
    spec = load_spec(recipes=[f"{CIFAR_PAIR}/*"], seeds=2, teachers="train", overrides=["optim.epochs=2"])
    cells = cells_of(spec, tmp_path)
    teachers = [c for c in cells if c.kind == "teacher"]
    students = [c for c in cells if c.kind == "student"]
    assert [t.name for t in teachers] == ["cifar100/teachers/resnet32x4"]  # one teacher for the whole pair
    assert teachers[0].out_dir == str(tmp_path / "cifar100/teachers/resnet32x4/seed0")
    assert teachers[0].command == "train"  # the CIFAR teacher recipes train student.arch with CE
    assert len(students) == 27 * 2  # 26 methods + single_head_bkl (DHKD's failing case)
    assert {c.name.split("/")[-1] for c in students} >= {"kd", "dkd", "r2kd", "mlkd", "sdd", "at", "crd"}
    kd1 = next(c for c in students if c.name == f"{CIFAR_PAIR}/kd" and c.seed == 1)
    assert kd1.out_dir == str(tmp_path / CIFAR_PAIR / "kd" / "seed1") and kd1.after == (teachers[0].key,)
    cfg = kd1.config()
    assert cfg.seed == 1 and cfg.optim.epochs == 2 and cfg.out_dir == kd1.out_dir
    assert cfg.teacher.checkpoint == str(Path(teachers[0].out_dir) / "model.safetensors")
    assert teachers[0].config().optim.epochs == 2  # shared overrides reach the teacher cells too


def test_a_published_teacher_is_fetched_by_the_cells_unless_train_replaces_it(tmp_path):
    """The CIFAR recipes name RepDistiller's released teacher: auto and given use it (each cell fetches it once, see
    tests/teachers/test_published.py); train trains the data set's teacher recipe of that arch instead (above)."""
    for teachers in ("auto", "given"):
        cells = cells_of(load_spec(recipes=[f"{CIFAR_PAIR}/kd"], teachers=teachers), tmp_path)
        assert [c.kind for c in cells] == ["student"] and cells[0].after == ()
        assert cells[0].config().teacher.checkpoint == "repdistiller:resnet32x4"
    with pytest.raises(ConfigError, match=r"mnist1d/kd: repdistiller:resnet8: no such published teacher"):
        cells_of(load_spec(recipes=["mnist1d/kd"], overrides=["teacher.checkpoint=repdistiller:resnet8"]), tmp_path)
    with pytest.raises(ConfigError, match=r"no teacher recipe trains resnet32x4 on mnist1d \(in place of "
                                          r"repdistiller:resnet32x4\)"):
        cells_of(load_spec(recipes=["mnist1d/kd"], teachers="train", overrides=[
            "teacher.checkpoint=repdistiller:resnet32x4", "teacher.arch=resnet32x4"]), tmp_path)


def test_auto_uses_an_existing_teacher_and_given_needs_one(tmp_path):
    weights = tmp_path / "t.safetensors"
    spec = dict(recipes=["mnist1d/kd"], overrides=[f"teacher.checkpoint={weights}"])
    with pytest.raises(ConfigError, match="cannot find these teachers"):
        cells_of(load_spec(**spec), tmp_path)  # auto: the file is missing and no recipe writes there
    weights.write_bytes(b"")
    cells = cells_of(load_spec(**spec), tmp_path)
    assert [c.kind for c in cells] == ["student"] and cells[0].config().teacher.checkpoint == str(weights)
    with pytest.raises(ConfigError, match="teacher checkpoint .*nope"):
        cells_of(load_spec(recipes=["mnist1d/kd"], teachers="given", overrides=["teacher.checkpoint=nope"]), tmp_path)


def test_yaml_spec_with_variants_equals_the_same_arguments(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"recipes": ["mnist1d/kd", {"name": "kd_t2", "recipe": "mnist1d/kd",
                                                               "overrides": ["method.args.temperature=2"]}],
                                    "seeds": [3, 5], "teachers": "train", "out": str(tmp_path / "o")}))
    from_file = cells_of(load_spec(path), tmp_path / "o")
    variant = next(c for c in from_file if c.name == "kd_t2" and c.seed == 5)
    assert variant.config().method.args["temperature"] == 2 and variant.out_dir.endswith("kd_t2/seed5")
    assert [c.seed for c in from_file if c.name == "mnist1d/kd"] == [3, 5]
    assert from_file[0].name == "mnist1d/teacher" and from_file[0].command == "teacher"


@pytest.mark.parametrize("spec, message", [
    (dict(recipes=["cifar100/*/nope"]), "matches no shipped recipe"),
    (dict(recipes=["mnist1d/nope"]), "neither a file nor a shipped recipe"),
    (dict(recipes=["mnist1d/kd"], overrides=["optim.lr=-1"], teachers="train"), "optim.lr"),
    (dict(recipes=["mnist1d/kd", "mnist1d/kd"], teachers="train"), "share the name"),
    (dict(recipes=["mnist1d/kd"], seeds=0), "seeds"),
    (dict(recipes=[]), "recipes"),
])
def test_bad_specs_are_refused_before_anything_runs(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message):
        cells_of(load_spec(**spec), tmp_path)
    assert not any(tmp_path.iterdir())


def test_cli_bad_spec_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["sweep", "--recipes", "mnist1d/nope", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdlab: error:") and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------------
# a cell's directory
# ----------------------------------------------------------------------------------------------------------------
def _cell(tmp_path, *extra):
    return Cell("mnist1d/ce", "mnist1d/ce", ("teacher.checkpoint=null", f"out_dir={tmp_path / 'c'}", *extra),
                str(tmp_path / "c"))


def test_cell_state_new_interrupted_finished_changed(tmp_path):
    cell = _cell(tmp_path)
    assert cell_state(cell).state == "new"
    out = Path(cell.out_dir)
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(cell.config().model_dump(mode="json")))
    assert cell_state(cell).state == "changed"  # a run directory without plan.json: an older kdlab's, left alone
    builder.plan(cell.config(), 10, (1, 40)).write(out)  # what a run writes when it starts
    assert cell_state(cell).state == "interrupted"
    (out / "final.json").write_text(json.dumps({"role": "student"}))
    assert cell_state(cell).state == "finished"
    # display options and the directory itself are not part of the run: still the same cell
    assert cell_state(_cell(tmp_path, "run.progress=true")).state == "finished"
    changed = cell_state(_cell(tmp_path, "optim.lr=0.1"))
    assert changed.state == "changed" and "optim.lr: 0.05 there, 0.1 now" in changed.reason


# ----------------------------------------------------------------------------------------------------------------
# exit codes
# ----------------------------------------------------------------------------------------------------------------
def _raising(exc):
    def command(args):
        raise exc
    return command


def test_a_failing_cell_records_the_exit_code_kdlab_train_gives(capsys):
    """One mapping (kdlab.failures) serves the CLI and the sweep's cells."""
    from kdlab import failures
    from kdlab.config import ConfigError
    from kdlab.engine.loop import NonFiniteLossError

    assert exit_code is failures.exit_code
    for exc, code in ((ConfigError("bad key"), 2), (FileNotFoundError("no file"), 2), (ValueError("bad value"), 2),
                      (NonFiniteLossError("nan"), 3)):
        assert cli._run(_raising(exc), None) == exit_code(exc) == code
        assert capsys.readouterr().err.count("\n") == 1  # one line
    assert exit_code(RuntimeError("a bug")) == 1
    with pytest.raises(RuntimeError):  # an unexpected error keeps its traceback
        cli._run(_raising(RuntimeError("a bug")), None)
