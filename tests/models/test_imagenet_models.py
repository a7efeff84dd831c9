"""The ImageNet models: parameter counts vs docs/reference/imagenet.md §3, the forward / forward_features contract,
torchvision's head names and initialisation. (State-dict compatibility: tests/models/test_foreign_weights.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlab.models import classifier_of, count_parameters, create, forward_features

# docs/reference/imagenet.md §3: parameters in millions with 1000 classes
PARAMS_M = {"resnet18": 11.69, "resnet34": 21.80, "resnet50": 25.56, "resnet101": 44.55, "resnet152": 60.19,
            "mobilenet_v1": 4.23, "mobilenet_v2": 3.50}
# (stage channels, stage strides): stem then each resolution's last output; the last is the pooled map
LAYOUT = {
    "resnet18": ([64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    "resnet34": ([64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    "resnet50": ([64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
    "resnet101": ([64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
    "resnet152": ([64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
    "mobilenet_v1": ([32, 128, 256, 512, 1024], [2, 4, 8, 16, 32]),
    "mobilenet_v2": ([32, 24, 32, 96, 320, 1280], [2, 4, 8, 16, 32, 32]),
}
HEAD = {"resnet18": "fc", "resnet34": "fc", "resnet50": "fc", "resnet101": "fc", "resnet152": "fc", "mobilenet_v1": "fc",
        "mobilenet_v2": "classifier.1"}
# exact counts at 1000 classes: torchvision's num_params of its ResNet*_Weights (also what torchvision 0.28.0's own
# resnet101() / resnet152() count)
PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
          "resnet152": 60_192_808}


@pytest.mark.parametrize("name", list(PARAMS_M))
def test_parameter_count_matches_the_spec(name):
    assert round(count_parameters(create(name, 1000)) / 1e6, 2) == PARAMS_M[name]


@pytest.mark.parametrize("name", list(PARAMS))
def test_exact_parameter_count_is_torchvisions(name):
    assert count_parameters(create(name, 1000)) == PARAMS[name]


@pytest.mark.parametrize("name", list(PARAMS_M))
def test_forward_features_contract_at_64_pixels(name):
    torch.manual_seed(0)
    model = create(name, 10).eval()
    x = torch.randn(2, 3, 64, 64)
    head = classifier_of(model)
    with torch.inference_mode():
        logits = model(x)
        own, feats = model.forward_features(x)
        hooked, generic = forward_features(model, x, stage_paths=[])
        from_pooled = head(feats["pooled"])
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert torch.equal(own, logits) and torch.equal(hooked, logits)
    assert head is model.get_submodule(HEAD[name]) and head.in_features == model.feature_dim
    torch.testing.assert_close(from_pooled, logits)
    torch.testing.assert_close(generic["pooled"], feats["pooled"])
    torch.testing.assert_close(feats["stages"][-1].mean(dim=(2, 3)), feats["pooled"])
    channels, strides = LAYOUT[name]
    assert [s.shape[1] for s in feats["stages"]] == channels
    assert [64 // s.shape[-1] for s in feats["stages"]] == strides


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v1"])
def test_head_keeps_the_foreign_name(name):
    """torchvision / mdistiller call the head ``fc``; ``classifier`` is only a view of it (no second key)."""
    model = create(name, 10)
    keys = model.state_dict().keys()
    assert {"fc.weight", "fc.bias"} <= keys and not any(k.startswith("classifier") for k in keys)
    assert model.classifier is model.fc


def test_mobilenet_v2_dropout_is_torchvisions():
    model = create("mobilenet_v2", 10)
    assert isinstance(model.classifier[0], nn.Dropout) and model.classifier[0].p == 0.2
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(0)
    assert not torch.equal(model.train()(x), model(x))  # dropout active in training
    with torch.no_grad():
        assert torch.equal(model.eval()(x), model(x))


def test_initialisation_is_torchvisions():
    torch.manual_seed(0)
    r18, mv2 = create("resnet18", 1000), create("mobilenet_v2", 1000)
    for m in list(r18.modules()) + list(mv2.modules()):
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    conv = r18.layer4[1].conv2  # He fan-out: std = sqrt(2 / (k·k·C_out))
    expected = (2.0 / (9 * conv.out_channels)) ** 0.5
    assert abs(conv.weight.std().item() - expected) < 0.05 * expected
    head = mv2.classifier[1]  # MobileNetV2's Linear: N(0, 0.01²), bias 0
    assert torch.all(head.bias == 0) and abs(head.weight.std().item() - 0.01) < 0.001


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_in_channels_option(name):
    model = create(name, 10, in_channels=1).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 10)
    with pytest.raises(ValueError, match="C = 1"):
        model(torch.randn(1, 3, 64, 64))
