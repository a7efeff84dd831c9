"""Pre-activation features of the zoo (OFD and ReviewKD read them): the same stages from one pass, each BatchNorm run
once (so training statistics are those of a plain forward), the BatchNorm before each stage's ReLU named; any other
model is refused with one line saying what is missing."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models import create, forward_features, names

IMAGENET = {"resnet18", "resnet34", "resnet50", "mobilenet_v1", "mobilenet_v2"}
# stages whose output is linear (an inverted residual block ends without a ReLU): their own pre-activation
LINEAR = {"MobileNetV2": {1, 2, 3, 4}, "mobilenet_v2": {1, 2, 3, 4}}


def _input(name, n=3):
    g = torch.Generator().manual_seed(0)
    if name.startswith("mnist1d"):
        return torch.randn(n, 1, 40, generator=g)
    return torch.randn(n, 3, 64 if name in IMAGENET else 32, 64 if name in IMAGENET else 32, generator=g)


@pytest.mark.parametrize("name", names())
def test_preact_pass_gives_the_same_stages_and_their_pre_activations(name):
    torch.manual_seed(0)
    model = create(name, 10).eval()
    x = _input(name)
    with torch.no_grad():
        z, plain = model.forward_features(x)
        z2, feats = forward_features(model, x, preact=True)
    assert torch.equal(z, z2) and torch.equal(plain["pooled"], feats["pooled"])
    assert len(feats["preact"]) == len(feats["stages"]) == len(plain["stages"]) == len(model.stage_norms())
    for i, (a, b, p) in enumerate(zip(plain["stages"], feats["stages"], feats["preact"])):
        assert torch.equal(a, b), f"stage {i}"
        assert p.shape == b.shape
        if i in LINEAR.get(name, set()):
            assert torch.equal(p, b)
        elif not name.startswith("wrn"):  # a WRN stage is read by the next group's BN-ReLU (tested below)
            assert torch.equal(F.relu(p), b), f"stage {i}: its ReLU of the pre-activation"
            assert (p < 0).any(), f"stage {i}: a pre-activation has negative values"


@pytest.mark.parametrize("name", ["resnet8x4", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2",
                                  "mobilenet_v1", "mnist1d_cnn_small"])
def test_a_training_preact_pass_updates_every_batchnorm_once(name):
    torch.manual_seed(0)
    a, b = create(name, 10).train(), create(name, 10).train()
    b.load_state_dict(a.state_dict())
    x = _input(name, 4)
    a.forward_features(x)
    b.forward_features(x, preact=True)
    for (k, u), (_, v) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(u, v), k


def test_stage_norms_are_the_batchnorms_before_the_relus():
    torch.manual_seed(0)
    res = create("resnet8x4", 10).eval()
    assert res.stage_norms() == [res.bn1, res.layer1[-1].bn2, res.layer2[-1].bn2, res.layer3[-1].bn2]
    wrn = create("wrn_16_2", 10).eval()
    x = _input("wrn_16_2")
    with torch.no_grad():
        _, f = wrn.forward_features(x, preact=True)
        # as the OFD reference defines it: a group's output through the next group's first BN, the last through bn
        torch.testing.assert_close(f["preact"][1], wrn.block2[0].bn1(f["stages"][1]))
        torch.testing.assert_close(f["preact"][3], wrn.bn(wrn.block3(f["stages"][2])))
    assert wrn.stage_norms()[1:] == [wrn.block2[0].bn1, wrn.block3[0].bn1, wrn.bn]
    assert create("ShuffleV1", 10).stage_norms()[1:] == [None, None, None]  # sums and concatenations, not one BN
    assert create("MobileNetV2", 10).head_stages == create("ShuffleV2", 10).head_stages == 1
    assert create("resnet8", 10).head_stages == 0


def test_models_without_pre_activations_are_refused_by_name():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="Sequential gives no pre-activation features.*kdlab zoo architecture"):
        forward_features(net, torch.randn(1, 3, 8, 8), preact=True)
    with pytest.raises(ValueError, match="CifarResNet gives no pre-activation features"):
        forward_features(create("resnet8", 10), torch.randn(1, 3, 32, 32), ["layer1"], preact=True)
