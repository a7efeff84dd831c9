"""Networks built by their own library (``arch: {factory: ..., args: {...}}``, kdlab.models.factory): the import
string's spellings, the one-line errors, the ``.logits`` adapter, weight files that record the factory, the config
and the run's identity. The library is tests/models/factory_nets.py (timm cannot be imported with this torch)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from kdlab import builder
from kdlab._checks import SettingError
from kdlab._io import CheckpointError
from kdlab.config import ConfigError, ModelFactory, validate
from kdlab.models import create_arch, forward_features, from_factory, load_model, save_model
from kdlab.models.factory import arch_name, resolve

NETS = Path(__file__).with_name("factory_nets.py")
FACTORY = f"{NETS}:create_model"
X = torch.randn(4, 1, 40)


def tiny(**args):
    return {"factory": FACTORY, "args": {"model_name": "tiny_net", "num_classes": 10, **args}}


def test_a_factory_builds_the_librarys_own_network_with_exactly_its_args():
    torch.manual_seed(0)
    model = create_arch(tiny(width=4), 10)
    assert type(model).__name__ == "TinyNet" and model.head.out_features == 10 and model.stem[0].out_channels == 4
    torch.manual_seed(0)
    again = from_factory(FACTORY, {"model_name": "tiny_net", "num_classes": 10, "width": 4})
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert create_arch("mnist1d_cnn_small", 7).classifier.out_features == 7  # a zoo name as before


def test_the_three_spellings_of_an_import_string(monkeypatch):
    monkeypatch.syspath_prepend(str(NETS.parent))
    by_file = resolve(FACTORY)
    assert resolve("factory_nets:create_model") is resolve("factory_nets.create_model")
    assert resolve("factory_nets:create_model").__name__ == by_file.__name__ == "create_model"
    assert resolve("factory_nets:HFLikeNet.forward").__qualname__ == "HFLikeNet.forward"  # attributes after ':'
    assert resolve("torch.nn.Linear") is torch.nn.Linear  # the longest importable prefix is the module
    assert resolve(FACTORY) is by_file  # a file is imported once per process


@pytest.mark.parametrize("factory, args, message", [
    ("timm.create_model", {}, "student.arch.factory=timm.create_model: no module named 'timm' (install the library "
     "that provides it, e.g. pip install timm, or fix the name)"),
    ("nowhere/nets.py:build", {}, "student.arch.factory=nowhere/nets.py:build: no such file nowhere/nets.py"),
    (f"{NETS}:create_modle", {}, "has no attribute 'create_modle'"),
    ("torch.nn.modules.linear.no_such_thing", {}, "linear has no attribute 'no_such_thing'"),
    ("create_model", {}, "name a module and its function"),
    ("torch.nn.modules.linear.math.pi", {}, "not callable (float)"),
    (FACTORY, {"model_name": "vit_huge"}, "student.arch.factory: "
     f"{FACTORY}(**student.arch.args) failed: RuntimeError: Unknown model (vit_huge)"),
    (FACTORY, {"model_name": "tiny_net", "depth": 3}, "TypeError: TinyNet.__init__() got an unexpected keyword"),
    (f"{NETS}:not_a_module", {}, "returned a dict, not a torch nn.Module"),
])
def test_every_failure_is_one_line_naming_the_key(factory, args, message):
    with pytest.raises(SettingError) as info:
        from_factory(factory, args, key="student.arch")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_hugging_face_style_output_is_adapted_to_its_logits_and_the_module_stays_the_librarys():
    torch.manual_seed(0)
    hf = from_factory(FACTORY, {"model_name": "hf_like_net", "num_classes": 10})
    torch.manual_seed(0)
    plain = from_factory(FACTORY, {"model_name": "tiny_net", "num_classes": 10})
    out = hf(X)
    assert isinstance(out, torch.Tensor) and out.shape == (4, 10)
    torch.testing.assert_close(out, plain(X))
    assert list(hf.state_dict()) == list(plain.state_dict())  # no wrapper: the library's own keys and paths
    logits, feats = forward_features(hf, X, ["blocks.0", "blocks.1"])  # hooks at the library's module paths
    torch.testing.assert_close(logits, out)
    assert [tuple(s.shape) for s in feats["stages"]] == [(4, 16, 20), (4, 32, 10)] and feats["pooled"].shape == (4, 32)
    with pytest.raises(ValueError, match="returned a tuple, neither a logits tensor nor an object with .logits"):
        from_factory(f"{NETS}:tuple_net")(X)


def test_weights_record_the_factory_and_load_model_rebuilds_it(tmp_path):
    torch.manual_seed(0)
    arch = tiny(width=4)
    model = create_arch(arch, 10).eval()
    path = tmp_path / "model.safetensors"
    save_model(path, model, arch=arch, num_classes=10)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["factory"]) == arch and "arch" not in meta
    back = load_model(path, num_classes=10).eval()
    assert type(back).__name__ == "TinyNet"
    torch.testing.assert_close(back(X), model(X))
    assert load_model(path, arch=arch) is not None  # the same factory given again: fine
    with pytest.raises(CheckpointError, match="holds a network of .* but the config says arch .*width\": 8"):
        load_model(path, arch=tiny(width=8))
    with pytest.raises(CheckpointError, match="but the config says arch \"mnist1d_cnn\""):
        load_model(path, arch="mnist1d_cnn")
    with pytest.raises(CheckpointError, match="model has 10 classes but the data has 3"):
        load_model(path, num_classes=3)


def test_a_plain_state_dict_loads_into_a_factory_network_named_by_the_config(tmp_path):
    torch.manual_seed(1)
    model = create_arch(tiny(), 10).eval()
    torch.save(model.state_dict(), tmp_path / "theirs.pth")  # a library's own checkpoint: no metadata
    back = load_model(tmp_path / "theirs.pth", arch=tiny()).eval()
    torch.testing.assert_close(back(X), model(X))
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_model(tmp_path / "theirs.pth", arch=tiny(width=4))


def test_a_file_whose_factory_is_gone_names_the_file(tmp_path):
    arch = {"factory": str(tmp_path / "gone.py") + ":build", "args": {}}
    (tmp_path / "gone.py").write_text("import torch\ndef build():\n    return torch.nn.Linear(40, 3)\n")
    save_model(tmp_path / "m.safetensors", create_arch(arch, 3), arch=arch, num_classes=3)
    (tmp_path / "gone.py").unlink()
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "m.safetensors")
    assert str(info.value).startswith(f"{tmp_path / 'm.safetensors'}: its network is built by a factory, which "
                                      f"failed here: factory={arch['factory']}: no such file")


def test_the_config_takes_a_name_or_a_factory_and_names_the_key_of_a_mistake():
    cfg = validate({"student": {"arch": tiny()}, "teacher": {"arch": "mnist1d_cnn"}}, "run.yaml")
    assert isinstance(cfg.student.arch, ModelFactory) and cfg.teacher.arch == "mnist1d_cnn"
    assert cfg.student.arch.args["model_name"] == "tiny_net"
    for arch, message in [
        ({"factory": FACTORY, "arg": {}}, "run.yaml: student.arch.arg: unknown key"),
        ({"args": {}}, "run.yaml: student.arch.factory: Field required"),
        (3, "run.yaml: student.arch: must be a model name (kdlab.models.names()) or {factory: IMPORT.STRING, "
            "args: {...}}"),
    ]:
        with pytest.raises(ConfigError) as info:
            validate({"student": {"arch": arch}}, "run.yaml")
        assert str(info.value).startswith(message)


def test_the_factory_and_its_args_are_the_runs_identity(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(f"student: {{arch: {{factory: '{FACTORY}', "
                         "args: {model_name: tiny_net, num_classes: 10}}}\n")
    a = builder.load_config(yaml_file)
    b = builder.load_config(yaml_file, ["student.arch.args.width=16"])  # an override steps into the args
    c = builder.load_config(yaml_file, [f"student.arch.factory={NETS.parent}/other.py:create_model"])
    pa, pb, pc = (builder.plan(cfg, 10, (1, 40)) for cfg in (a, b, c))
    assert pa.identity["student.arch.factory"] == FACTORY and pa.identity["student.arch.args.model_name"] == "tiny_net"
    assert pb.identity["student.arch.args.width"] == 16
    assert len({pa.identity_hash, pb.identity_hash, pc.identity_hash}) == 3
    assert pa.record["student"]["arch"] == tiny()  # config.yaml reruns it


def test_names_for_reports():
    assert arch_name("resnet8") == "resnet8" and arch_name(None) is None
    assert arch_name(tiny()) == f"{FACTORY}('tiny_net')"
    assert arch_name({"factory": "torchvision.models.resnet18", "args": {"num_classes": 10}}) == \
        "torchvision.models.resnet18"
