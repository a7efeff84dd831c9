import pytest

from kdlab.builder import load_config
from kdlab.config import ConfigError, apply_overrides, validate


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_and_overrides(tmp_path):
    p = _write(tmp_path, "out_dir: x\nmethod: {name: kd}\noptim: {epochs: 5}\n")
    cfg = load_config(p, ["optim.lr=0.1", "optim.milestones=[2,4]", "method.args.temperature=2"])
    assert cfg.optim.lr == 0.1 and cfg.optim.milestones == [2, 4] and cfg.optim.epochs == 5
    assert cfg.method.args["temperature"] == 2.0
    assert cfg.method.args["ce_weight"] == 0.1  # method defaults are filled in


def test_unknown_key_names_the_key(tmp_path):
    p = _write(tmp_path, "optim: {epocs: 5}\n")
    with pytest.raises(ConfigError, match=r"optim\.epocs: unknown key"):
        load_config(p)


def test_wrong_type_names_the_key(tmp_path):
    p = _write(tmp_path, "optim: {lr: fast}\n")
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_config(p)


def test_unknown_method_arg_names_the_key():
    with pytest.raises(ConfigError, match=r"(?s)method\.args.*temprature"):
        load_config(None, ["method.name=kd", "method.args.temprature=3"])


def test_unknown_method_is_an_error():
    with pytest.raises(ConfigError, match="unknown method 'kdd'"):
        load_config(None, ["method.name=kdd"])


def test_bad_values_rejected():
    with pytest.raises(ConfigError, match="milestones"):
        load_config(None, ["optim.milestones=[5,3]"])
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_config(None, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["optim.lr"])


def test_invalid_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="neither a file nor a shipped recipe"):
        load_config(tmp_path / "missing.yaml")


def test_override_into_non_section():
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_a_misspelt_method_argument_lists_the_valid_ones_on_one_line():
    with pytest.raises(ConfigError) as info:
        load_config("mnist1d/dkd", ["method.args.betta=2"])
    msg = str(info.value)
    assert "method.args.betta: not an argument of method 'dkd' (did you mean beta?); valid: alpha, beta," in msg
    assert "\n" not in msg and "Extra inputs" not in msg


def test_optimiser_and_warmup_settings_are_checked():
    assert validate({"optim": {"optimizer": "adamw", "warmup_epochs": 5}}).optim.optimizer == "adamw"
    with pytest.raises(ConfigError, match="nesterov applies to SGD only"):
        validate({"optim": {"optimizer": "adamw", "nesterov": True}})
    with pytest.raises(ConfigError, match="warmup_epochs=240 must be below epochs=240"):
        validate({"optim": {"warmup_epochs": 240}})


def test_a_key_given_twice_is_refused_not_overwritten(tmp_path):
    """Failed before: PyYAML keeps the last of two equal keys, so a merge that repeated a published pair dropped the
    first entry's numbers without a word."""
    path = tmp_path / "twice.yaml"
    path.write_text("optim:\n  lr: 0.1\n  epochs: 3\n  lr: 0.5\n")
    with pytest.raises(ValueError, match=r"twice\.yaml: .*the key 'lr' is given twice in one mapping"):
        load_config(path)
