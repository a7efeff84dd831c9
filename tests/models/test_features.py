"""Generic feature extraction through forward hooks, and classifier_of."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlab.models import classifier_of, count_parameters, create, forward_features


def user_net() -> nn.Sequential:
    """A plain user model: no forward_features, no `classifier` attribute."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 5),
    )


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hook_path_on_plain_sequential():
    model = user_net().eval()
    x = torch.randn(4, 3, 8, 8)
    logits, feats = forward_features(model, x, stage_paths=["1", "2.0", "4"])
    with torch.no_grad():
        ref = model(x)
        stage1 = model[1](model[0](x))
        stage2 = model[2][0](stage1)
        hidden = model[6](model[5](model[4](model[3](model[2][1](stage2)))))
    torch.testing.assert_close(logits, ref)
    assert [tuple(s.shape) for s in feats["stages"]] == [(4, 8, 8, 8), (4, 16, 4, 4), (4, 64)]
    torch.testing.assert_close(feats["stages"][0], stage1)
    torch.testing.assert_close(feats["stages"][1], stage2)
    # pooled = the input of the last nn.Linear, i.e. the 32-d hidden layer, not the 64-d flatten output.
    assert feats["pooled"].shape == (4, 32)
    torch.testing.assert_close(feats["pooled"], hidden)
    torch.testing.assert_close(model[-1](feats["pooled"]), logits)
    assert hook_count(model) == 0


def test_hook_path_without_stage_paths_and_gradients_flow():
    model = user_net().train()
    x = torch.randn(4, 3, 8, 8)
    logits, feats = forward_features(model, x)
    assert feats["stages"] == []
    assert feats["pooled"].requires_grad
    # An auxiliary head on the pooled feature (DHKD) back-propagates into the backbone.
    aux = nn.Linear(32, 5)
    aux(feats["pooled"]).sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    assert model[-1].weight.grad is None  # the real classifier is not on the aux path
    assert hook_count(model) == 0


def test_pooled_input_of_higher_rank_is_flattened():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Linear(6, 2))  # Linear applied to the last dim of [N, 4, 6, 6]
    logits, feats = forward_features(model, torch.randn(3, 3, 6, 6))
    assert logits.shape == (3, 4, 6, 2)
    assert feats["pooled"].shape == (3, 4 * 6 * 6)


def test_hooks_removed_after_an_exception():
    model = user_net()
    with pytest.raises(RuntimeError):
        forward_features(model, torch.randn(2, 5, 8, 8), stage_paths=["1"])  # wrong channel count fails inside
    assert hook_count(model) == 0


def test_unknown_stage_path_raises_naming_it():
    model = user_net()
    with pytest.raises(ValueError, match="'2.7'"):
        forward_features(model, torch.randn(2, 3, 8, 8), stage_paths=["2.7"])
    with pytest.raises(ValueError, match="'layer9'"):
        forward_features(create("resnet8", 10), torch.randn(2, 3, 32, 32), stage_paths=["layer9"])
    with pytest.raises(ValueError, match="list of module paths"):
        forward_features(model, torch.randn(2, 3, 8, 8), stage_paths="1")
    assert hook_count(model) == 0


def test_stage_module_not_run_raises():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = nn.ReLU()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    model = Skips()
    with pytest.raises(ValueError, match="'unused' was not called"):
        forward_features(model, torch.randn(2, 4), stage_paths=["unused"])
    assert hook_count(model) == 0


def test_model_without_linear_raises():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="no nn.Linear"):
        forward_features(model, torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="no nn.Linear"):
        classifier_of(model)


def test_hook_path_on_zoo_model_matches_its_own_features():
    model = create("resnet8", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        own_logits, own = model.forward_features(x)
        logits, feats = forward_features(model, x, stage_paths=["layer1", "layer2", "layer3"])
    torch.testing.assert_close(logits, own_logits)
    torch.testing.assert_close(feats["pooled"], own["pooled"])
    for a, b in zip(feats["stages"], own["stages"][1:]):
        torch.testing.assert_close(a, b)
    assert hook_count(model) == 0


def test_foreign_forward_features_convention_is_rejected():
    class TimmLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 4, 1)
            self.head = nn.Linear(4, 3)

        def forward_features(self, x):  # returns only a feature map, like timm
            return self.body(x)

        def forward(self, x):
            return self.head(self.forward_features(x).mean((2, 3)))

    model = TimmLike()
    x = torch.randn(2, 3, 5, 5)
    with pytest.raises(ValueError, match="stage_paths=\\[\\]"):
        forward_features(model, x)
    logits, feats = forward_features(model, x, stage_paths=[])
    torch.testing.assert_close(model.head(feats["pooled"]), logits)
    assert feats["pooled"].shape == (2, 4)


def test_classifier_of_prefers_the_classifier_attribute():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = nn.Linear(4, 3)
            self.aux = nn.Linear(4, 3)  # registered after the real head

        def forward(self, x):
            return self.classifier(x)

    model = TwoHeads()
    assert classifier_of(model) is model.classifier
    net = user_net()
    assert classifier_of(net) is net[-1]
    for name in ("resnet8", "MobileNetV2", "mnist1d_mlp"):
        zoo = create(name, 10)
        assert classifier_of(zoo) is zoo.classifier
        assert [m for m in zoo.modules() if isinstance(m, nn.Linear)][-1] is zoo.classifier
    with pytest.raises(ValueError, match="nn.Module"):
        classifier_of("resnet8")


def test_count_parameters_trainable_only():
    model = user_net()
    total = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters())
    model[0].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - model[0].weight.numel() - model[0].bias.numel()


def test_output_modified_in_place_is_detected():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            out = self.bn(x)
            out += x  # changes the hooked BN output after the hook has run
            return self.fc(out)

    model = InPlace()
    with pytest.raises(ValueError, match="modified in place"):
        forward_features(model, torch.randn(3, 4), stage_paths=["bn"])
    assert hook_count(model) == 0
