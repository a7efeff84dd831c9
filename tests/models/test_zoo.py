"""The CIFAR zoo: parameter counts vs docs/reference/methods.md §12, the forward / forward_features contract, the
registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kdlab
from kdlab.data import load_dataset
from kdlab.models import count_parameters, create, forward_features, names, register
from kdlab.models import registry as registry_module

# docs/reference/methods.md §12, parameter counts in millions with C = 100.
PARAMS_M = {
    "resnet8": 0.084, "resnet14": 0.181, "resnet20": 0.278, "resnet32": 0.473, "resnet44": 0.667,
    "resnet56": 0.862, "resnet110": 1.737, "resnet8x4": 1.234, "resnet32x4": 7.434,
    "wrn_16_1": 0.181, "wrn_16_2": 0.703, "wrn_40_1": 0.570, "wrn_40_2": 2.255,
    "vgg8": 3.965, "vgg11": 9.277, "vgg13": 9.462, "vgg16": 14.774, "vgg19": 20.087,
    "cifar_resnet50": 23.705, "MobileNetV2": 0.813, "ShuffleV1": 0.949, "ShuffleV2": 1.356,
}  # fmt: skip
CIFAR = sorted(PARAMS_M)
ONE_D = ["mnist1d_cnn", "mnist1d_cnn_small", "mnist1d_mlp"]

# (stage channels, stage spatial sizes) on a 32x32 input: the documented feature layout of each family.
STAGE_LAYOUT = {
    "resnet8": ([16, 16, 32, 64], [32, 32, 16, 8]),
    "resnet32x4": ([32, 64, 128, 256], [32, 32, 16, 8]),
    "wrn_40_2": ([16, 32, 64, 128], [32, 32, 16, 8]),
    "vgg13": ([64, 128, 256, 512, 512], [32, 16, 8, 4, 4]),
    "cifar_resnet50": ([64, 256, 512, 1024, 2048], [32, 32, 16, 8, 4]),
    "MobileNetV2": ([16, 12, 16, 48, 160, 1280], [16, 16, 8, 4, 2, 2]),
    "ShuffleV1": ([24, 240, 480, 960], [32, 16, 8, 4]),
    "ShuffleV2": ([24, 116, 232, 464, 1024], [32, 16, 8, 4, 4]),
}


@pytest.fixture(scope="module")
def cifar_batch():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_names_lists_every_family_sorted():
    listed = names()
    assert listed == sorted(listed)
    assert set(CIFAR + ONE_D) <= set(listed)
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("name", CIFAR)
def test_parameter_count_matches_table(name):
    model = create(name, num_classes=100)
    assert round(count_parameters(model) / 1e6, 3) == PARAMS_M[name]


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_forward_and_features_agree(name, cifar_batch):
    torch.manual_seed(0)
    model = create(name, num_classes=100).eval()
    with torch.inference_mode():
        logits = model(cifar_batch)
        feat_logits, feats = model.forward_features(cifar_batch)
        generic_logits, generic = forward_features(model, cifar_batch)
        head_logits = model.classifier(feats["pooled"])
    assert logits.shape == (2, 100)
    assert torch.isfinite(logits).all()
    assert torch.equal(feat_logits, logits)
    assert torch.equal(generic_logits, logits)
    assert isinstance(model.classifier, nn.Linear)
    assert model.classifier.out_features == 100
    assert model.classifier.in_features == model.feature_dim
    assert feats["pooled"].shape == (2, model.feature_dim)
    torch.testing.assert_close(head_logits, logits)
    stages = feats["stages"]
    assert len(stages) >= 4 and all(s.dim() == 4 and s.shape[0] == 2 for s in stages)
    # The last stage is the map that is pooled into `pooled`.
    torch.testing.assert_close(stages[-1].mean(dim=(2, 3)), feats["pooled"])
    if name in STAGE_LAYOUT:
        channels, sizes = STAGE_LAYOUT[name]
        assert [s.shape[1] for s in stages] == channels
        assert [s.shape[-1] for s in stages] == sizes


@pytest.mark.parametrize("name", ONE_D)
@pytest.mark.parametrize("shape", [(2, 1, 40), (2, 40)])
def test_one_d_models(name, shape):
    torch.manual_seed(0)
    model = create(name, num_classes=10).eval()
    x = torch.randn(*shape)
    with torch.inference_mode():
        logits = model(x)
        feat_logits, feats = model.forward_features(x)
        ref = model(x.reshape(2, 1, 40))
        head_logits = model.classifier(feats["pooled"])
    assert logits.shape == (2, 10)
    assert torch.equal(feat_logits, logits)
    assert torch.equal(logits, ref)  # [N, 40] is read as [N, 1, 40]
    assert feats["pooled"].shape == (2, model.feature_dim)
    torch.testing.assert_close(head_logits, logits)
    assert feats["stages"] and all(s.dim() == 3 and s.shape[0] == 2 for s in feats["stages"])
    torch.testing.assert_close(feats["stages"][-1].mean(dim=2), feats["pooled"])


def test_one_d_models_are_small():
    counts = {n: count_parameters(create(n, 10)) for n in ONE_D}
    assert counts["mnist1d_cnn"] < 100_000
    assert counts["mnist1d_cnn_small"] < counts["mnist1d_cnn"]
    assert counts["mnist1d_mlp"] < 100_000


@pytest.mark.slow
def test_mnist1d_teacher_reaches_95_percent():
    """The teacher CNN reaches >= 95% test accuracy on the standard MNIST-1D split (4000 / 1000), trained by kdlab's
    own engine (``kdlab.fit``, SGD with the teacher recipe's lr and weight decay, shortened to 20 epochs)."""
    splits = load_dataset("mnist1d")
    torch.manual_seed(0)
    res = kdlab.fit(create("mnist1d_cnn", 10), None, (splits.x_train, splits.y_train),
                    eval=(splits.x_test, splits.y_test), method="ce", epochs=20, batch_size=64, lr=0.05,
                    milestones=(14, 18), augment=splits.train_augment, eval_every=20)
    assert res.report["student_acc"] >= 95.0, f"mnist1d_cnn reached only {res.report['student_acc']:.2f}%"


def test_creation_is_deterministic_and_initialised():
    torch.manual_seed(123)
    a = create("resnet8", 10)
    torch.manual_seed(123)
    b = create("resnet8", 10)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    for m in a.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    # He fan-out init: std of conv weights = sqrt(2 / (k*k*C_out)).
    conv = a.layer3[0].conv2
    expected = (2.0 / (9 * conv.out_channels)) ** 0.5
    assert abs(conv.weight.std().item() - expected) < 0.1 * expected
    # VGG's Linear is N(0, 0.01²) with zero bias, as in the benchmark code.
    vgg = create("vgg8", 100)
    assert torch.all(vgg.classifier.bias == 0) and abs(vgg.classifier.weight.std().item() - 0.01) < 0.001


def test_num_classes_changes_only_the_head():
    for name in ("resnet20", "wrn_16_1", "ShuffleV2"):
        a, b = create(name, 100), create(name, 10)
        assert count_parameters(a) - count_parameters(b) == 90 * (a.feature_dim + 1)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="resnet32x4"):
        create("resnet32x5", 100)
    with pytest.raises(ValueError, match="unknown model name 'no_such_net'"):
        create("no_such_net", 100)


def test_aliases_resolve_and_names_are_exact():
    assert type(create("mobile_half", 100)) is type(create("MobileNetV2", 100))
    assert "mobile_half" not in names()
    # no case-insensitive fallback: "resnet50" (torchvision's) and the benchmark's CIFAR network are different models
    with pytest.raises(ValueError, match="did you mean 'resnet8'"):
        create("ResNet8", 100)
    with pytest.raises(ValueError, match="did you mean 'MobileNetV2'"):
        create("mobilenetv2", 100)


def test_no_two_names_differ_only_by_case():
    keys = names() + list(registry_module._ALIASES)
    assert len({k.lower() for k in keys}) == len(keys)


def test_the_old_cifar_resnet50_name_points_to_the_new_one():
    with pytest.raises(ValueError, match="now called 'cifar_resnet50'"):
        create("ResNet50", 100)
    assert count_parameters(create("cifar_resnet50", 100)) != count_parameters(create("resnet50", 100))


@pytest.mark.parametrize("bad", [1, 0, -3, 2.0, True, "10"])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        create("resnet8", bad)


def test_unknown_kwarg_names_the_accepted_ones():
    with pytest.raises(ValueError, match="drop_rate"):
        create("resnet8", 10, drop_rate=0.1)  # only WRN takes drop_rate; the message lists what resnet8 takes
    with pytest.raises(ValueError, match="does not take"):
        create("wrn_16_1", 10, width=3)


def test_wrn_dropout_option():
    torch.manual_seed(0)
    model = create("wrn_16_1", 10, drop_rate=0.3).train()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(model(x), model(x))  # dropout is active in training mode
    model.eval()
    assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="drop_rate"):
        create("wrn_16_1", 10, drop_rate=1.5)


def test_bad_input_shapes_raise():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        create("resnet8", 10)(torch.randn(2, 32, 32))
    with pytest.raises(ValueError, match="C = 3"):
        create("resnet8", 10)(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[N, C, L\]"):
        create("mnist1d_cnn", 10)(torch.randn(2, 1, 1, 40))
    with pytest.raises(ValueError, match="length 40"):
        create("mnist1d_mlp", 10)(torch.randn(2, 1, 39))


def test_in_channels_option():
    model = create("resnet8", 10, in_channels=1).eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    for name in ("ShuffleV1", "ShuffleV2"):
        model = create(name, 10).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.inference_mode():
            ref = model(x)
            out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_vgg_pools_before_block4_only_for_large_inputs():
    model = create("vgg8", 10).eval()
    with torch.inference_mode():
        _, small = model.forward_features(torch.randn(1, 3, 32, 32))
        _, large = model.forward_features(torch.randn(1, 3, 64, 64))
    assert small["stages"][-1].shape[-1] == 4  # 32 px: block 4 runs at 4x4 (no 4th pool)
    assert large["stages"][-1].shape[-1] == 4  # 64 px: 8x8 pooled to 4x4


def test_register_rejects_duplicates_and_adds_new_names(monkeypatch):
    monkeypatch.setattr(registry_module, "_BUILDERS", dict(registry_module._BUILDERS))
    monkeypatch.setattr(registry_module, "_ALIASES", dict(registry_module._ALIASES))
    with pytest.raises(ValueError, match="registered twice"):
        register("resnet8")(lambda num_classes: nn.Linear(4, num_classes))
    with pytest.raises(ValueError, match="differ only by case"):
        register("ResNet18")(lambda num_classes: nn.Linear(4, num_classes))

    @register("tiny_linear_test_net")
    def tiny(num_classes: int, width: int = 4) -> nn.Module:
        return nn.Linear(width, num_classes)

    assert "tiny_linear_test_net" in names()
    assert create("tiny_linear_test_net", 3, width=5).weight.shape == (3, 5)
