"""The run plan: one resolution of "what is this run?" that resume, sweeps and the demo all compare."""

import json

import pytest
import yaml

from kdlab import builder
from kdlab.cli import main
from kdlab.config import ConfigError, validate
from kdlab.engine.checkpoint import read_training_info
from kdlab.sweep import cell_state
from kdlab.sweep.cell import Cell

RUN = ["data.train_subset=256", "data.test_subset=64", "optim.milestones=[]", "run.progress=false",
       "run.tensorboard=false", "student.arch=mnist1d_mlp", "teacher.arch=mnist1d_cnn_small"]


def test_the_identity_leaves_out_display_options_and_the_directory():
    a = builder.plan(builder.load_config(None, ["out_dir=a", "run.progress=true"]), 10, (1, 40))
    b = builder.plan(builder.load_config(None, ["out_dir=b", "run.progress=false", "data.workers=3"]), 10, (1, 40))
    c = builder.plan(builder.load_config(None, ["out_dir=a", "seed=1"]), 10, (1, 40))
    assert a.identity_hash == b.identity_hash != c.identity_hash


def test_the_plan_adapts_without_changing_the_config():
    cfg = builder.load_config(None, ["method.name=dkd", "optim.epochs=2"])
    before = cfg.model_dump()
    p = builder.plan(cfg, 10, (1, 40))
    assert cfg.model_dump() == before, "the config is never mutated"
    assert p.params.warmup == 1 and [a.key for a in p.adaptations] == ["warmup", "beta"]  # 2 of 240 epochs, 10 classes
    assert p.identity["method.args.warmup"] == 1 and p.record["method"]["args"]["warmup"] == 1
    assert cfg.method.args["warmup"] == 20  # what the config says is still what it said
    # the record reruns the same run: every argument is given there, so nothing is adapted and the identity holds
    again = builder.plan(validate(p.record, method_schema=lambda n: type(p.params)), 10, (1, 40))
    assert again.adaptations == () and again.identity_hash == p.identity_hash


def test_digests_enter_the_identity():
    p = builder.plan(builder.load_config(None, []), 10, (1, 40))
    q = p.with_digests(**{"teacher.weights_sha256": "ab" * 32})
    assert q.identity_hash != p.identity_hash and q.identity["teacher.weights_sha256"] == "ab" * 32
    assert p.with_digests(**{"teacher.weights_sha256": None}).identity_hash == p.identity_hash


def test_a_user_recipe_relying_on_adapted_defaults_is_finished_for_the_sweep_too(tmp_path, random_teacher):
    """Failed before the run plan: the sweep compared the unadapted cell config with the adapted config.yaml and
    called a finished run "changed", while `kdlab train` with the same command found it finished."""
    recipe = tmp_path / "my_dkd.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"name": "mnist1d", "train_subset": 256, "test_subset": 64},
                                      "teacher": {"arch": "mnist1d_cnn_small", "checkpoint": str(random_teacher)},
                                      "student": {"arch": "mnist1d_mlp"}, "method": {"name": "dkd"},
                                      "optim": {"epochs": 2, "milestones": []},
                                      "run": {"progress": False, "tensorboard": False}}))
    out = tmp_path / "run"
    assert main(["train", str(recipe), f"out_dir={out}"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["method"]["args"]["warmup"] == 1  # adapted 20 → 1
    cell = Cell("my_dkd", str(recipe), (f"out_dir={out}",), str(out))
    state = cell_state(cell)
    assert state.state == "finished", state.reason
    assert builder.distil(builder.load_config(recipe, [f"out_dir={out}"]))["already_finished"]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["identity_hash"] == read_training_info(out / "checkpoint.safetensors")["identity_hash"]
    assert plan["adaptations"][0]["key"] == "warmup" and plan["facts"] == {"num_classes": 10, "input_shape": [1, 40]}
    # a changed setting is still seen, by the key, with the adapted values compared
    changed = cell_state(Cell("my_dkd", str(recipe), (f"out_dir={out}", "method.args.beta=2.0"), str(out)))
    assert changed.state == "changed" and "method.args.beta: 0.7272727272727273 there, 2.0 now" in changed.reason


@pytest.mark.parametrize("override, hint", [
    ("student.cache.fill=precompute", "student.cache: not a student key: it configures the teacher (set teacher.cache"),
    ("student.checkpoints=[a]", "student.checkpoints: not a student key: it configures the teacher"),
    ("student.ensemble_rule=logit", "student.ensemble_rule: not a student key: it configures the teacher"),
    ("teacher.init_from_teacher=0.5", "teacher.init_from_teacher: not a teacher key: it configures the student"),
])
def test_a_key_that_means_nothing_for_the_role_is_refused_by_name(override, hint):
    """Failed before: one ModelConfig served both roles, so these validated and did nothing."""
    with pytest.raises(ConfigError) as info:
        builder.load_config("mnist1d/kd", [override])
    assert hint in str(info.value) and "\n" not in str(info.value)


def test_warm_start_and_init_from_teacher_are_exclusive():
    with pytest.raises(ConfigError, match="one way to start the student, not checkpoint and init_from_teacher"):
        builder.load_config("mnist1d/kd", ["student.checkpoint=w.safetensors", "student.init_from_teacher=0.5"])
    with pytest.raises(ConfigError, match="not checkpoint and pretrained"):
        builder.load_config("mnist1d/kd", ["student.checkpoint=w.safetensors", "student.pretrained=p.pth"])
