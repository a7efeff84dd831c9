"""State dicts of torchvision, mdistiller and RepDistiller load into the zoo and give their code's logits.

Neither torchvision nor RepDistiller is imported (they are not dependencies). Their key names and shapes are written
here as facts, generated from the architectures as those codes define them (torchvision ``models/resnet.py`` and
``models/mobilenetv2.py``; mdistiller ``mdistiller/models/imagenet/mobilenetv1.py``; RepDistiller ``models/*.py``),
and pinned by (count, sha256 of the sorted "key shape" lines) recorded once from the real code bases (torchvision 0.29.1
and RepDistiller at github HEAD; ResNet-101/152 from torchvision 0.28.0; in a scratch environment). Their forward passes are restated functionally on the
state dict with their names, so an equal logit proves the same function, not only the same names.
"""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from kdlab.models import create, load_model, recompute_bn_stats
from kdlab.models.foreign import to_kdlab_names

# (number of state-dict entries, sha256 of the sorted "key shape" lines) read off the real code: torchvision 0.29.1
# (1000 classes), mdistiller's MobileNetV1 (1000 classes), RepDistiller's models (num_classes=100).
PINNED = {
    "resnet18": (122, "5191d63ec398959223d67ef37376f9061e6965b859fc2d4e40e23d037147a0d7"),
    "resnet34": (218, "f8de2a1812ef85e46b3f60c61589921afee0c2a6d4165e27508ad215f101671b"),
    "resnet50": (320, "a87e91cd6bd1f939e0b723852e567a7205d33b0ac984ac02dd1a5f225d37c036"),
    # read off torchvision 0.28.0 (torchvision.models.resnet101/152(), 1000 classes), the same way
    "resnet101": (626, "dbc3ca74fffafc728641ec2b524ccedcbae337de9d3e3cf1f0552330d07303ea"),
    "resnet152": (932, "7d486dbdc941506eeed76c4b06e6a00c943ff5aa11c0ced1b2e1b12faebd4729"),
    "mobilenet_v2": (314, "e3eb10f890f74c6ee65e79c53b1a3c9ee5dd5c8d8eb4ec3185d92cbea9d47b89"),
    "mobilenet_v1": (164, "b4dbf81690c459ee3eecc7c13c5d40b302f3f143434dce7c6ae9088e31d2b6eb"),
    "resnet8": (56, "99cb0c0b2ea3c613d6d2e7797b2f837d51f5311b4e19daf15b38941e7818867a"),
    "resnet14": (92, "629933907d5744ff15f6ea146eefe7f4f00785703e8591681e5f8238f396f4ef"),
    "resnet20": (128, "0386434ca6f34c26737182da2a47866def11dfa6adc91bb34df6f84903256efc"),
    "resnet32": (200, "9e5592f61f0020a8766ad2ad7faf1319c665f07add28b67cbcf372c27eabce93"),
    "resnet44": (272, "df3dce284c7a26b4f1e5708035043cbfb17bd088532145d45fafd455887f68b5"),
    "resnet56": (344, "fa692cabb2e3a217ff14a29101b821a230db519d3f16b7fb0733c3bd9f009eb1"),
    "resnet110": (668, "9ca5a9542fb3a343c9b6f59b72ab0662ae3626c131259427a5050887c71687f2"),
    "resnet8x4": (62, "b2ead61a142ef3af656aca3d0ed663e02ee8b612edd3b057c33665a5918ddb16"),
    "resnet32x4": (206, "99154b2aea1aeb59f2f969b5f8174eec7058658452c2d35d03a7b92ff58d8503"),
    "ResNet50": (320, "d5367c1bcc2c22ea7bb4420c218bf350e202dd2270aafb58ba57a69b9c3e411e"),
    "wrn_16_1": (82, "b4de1d786e12f08a6abfdb1a709440d156185341ececd3484c1b3a94a2ad8883"),
    "wrn_16_2": (83, "2266f04469bf5dd9bb048d688c75f56ae34cae6b62a82d4db6d400ab93c9e41f"),
    "wrn_40_1": (226, "01abc5646d8c075cefd627861ca06e4fc07f27a55c9ccf4832ef3375bef38efa"),
    "wrn_40_2": (227, "595ec0db20d1ca1c8154cee948d04fca0617425352ce8ea71fe697c11e13bd2d"),
    "vgg8": (37, "7f85b8479109415fc27d1f5660fe49bc1f698ddc1384a4c6c0336e29acf75001"),
    "vgg11": (58, "6053995f63325762987496b4288e3c5b1ea0c042631a595a34693ab9ad0f498b"),
    "vgg13": (72, "5778ceb5832ef6a7d185fe9be82a128de08ba81f71f61aee6cfbb1171fe45ea6"),
    "vgg16": (93, "0729229b18559f5310d3e99b4beb468359464d376499f183ffee5173a048c37b"),
    "vgg19": (114, "e27ccb5da4f3ad9e388a6b0d87f31eebe6abe002349a4682374b65beac4576cb"),
    "MobileNetV2": (320, "54501c9a7e31763131186b73ab76f122e2dc247086f52af058941534d1096a94"),
    "ShuffleV1": (296, "1282e767b3e9c6cdc0ea0c8e0d61470de91ef908267c0e0f75f4d9bf8cb39739"),
    "ShuffleV2": (338, "9b7750ae03289b133c918bad8562e50680001d4671683b5f7d748f029fc4a649"),
}
# RepDistiller's model_dict name -> kdlab's (only ResNet50 was renamed: "resnet50" is torchvision's)
KDLAB_NAME = {"ResNet50": "cifar_resnet50"}

Keys = dict  # key -> shape, in the foreign code's names


def bn(p: str, c: int) -> Keys:
    return {f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,), f"{p}.running_var": (c,),
            f"{p}.num_batches_tracked": ()}


def linear(p: str, c_out: int, c_in: int) -> Keys:
    return {f"{p}.weight": (c_out, c_in), f"{p}.bias": (c_out,)}


# ---------------------------------------------------------------------------------------------------------------
# key lists, as the foreign codes define their networks
# ---------------------------------------------------------------------------------------------------------------
def resnet_keys(blocks, bottleneck: bool, classes: int = 1000, stem: int = 7, short: str = "downsample",
                head: str = "fc") -> Keys:
    """torchvision's ResNets; with stem=3, short="shortcut", head="linear": RepDistiller's ResNet50 (resnetv2.py)."""
    k = {"conv1.weight": (64, 3, stem, stem), **bn("bn1", 64)}
    width = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        out = planes * 4 if bottleneck else planes
        for b in range(n):
            p = f"layer{i + 1}.{b}"
            if bottleneck:
                k |= {f"{p}.conv1.weight": (planes, width, 1, 1), **bn(f"{p}.bn1", planes),
                      f"{p}.conv2.weight": (planes, planes, 3, 3), **bn(f"{p}.bn2", planes),
                      f"{p}.conv3.weight": (out, planes, 1, 1), **bn(f"{p}.bn3", out)}
            else:
                k |= {f"{p}.conv1.weight": (planes, width, 3, 3), **bn(f"{p}.bn1", planes),
                      f"{p}.conv2.weight": (planes, planes, 3, 3), **bn(f"{p}.bn2", planes)}
            if b == 0 and (i > 0 or width != out):
                k |= {f"{p}.{short}.0.weight": (out, width, 1, 1), **bn(f"{p}.{short}.1", out)}
            width = out
    return k | linear(head, classes, width)


TV_MV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def tv_mobilenet_v2(classes: int = 1000) -> Keys:
    k = {"features.0.0.weight": (32, 3, 3, 3), **bn("features.0.1", 32)}
    width, i = 32, 1
    for t, c, n, _ in TV_MV2:
        for _ in range(n):
            hidden, p, j = width * t, f"features.{i}.conv", 0
            if t != 1:
                k |= {f"{p}.0.0.weight": (hidden, width, 1, 1), **bn(f"{p}.0.1", hidden)}
                j = 1
            k |= {f"{p}.{j}.0.weight": (hidden, 1, 3, 3), **bn(f"{p}.{j}.1", hidden),
                  f"{p}.{j + 1}.weight": (c, hidden, 1, 1), **bn(f"{p}.{j + 2}", c)}
            width, i = c, i + 1
    return k | {f"features.{i}.0.weight": (1280, width, 1, 1), **bn(f"features.{i}.1", 1280),
                **linear("classifier.1", classes, 1280)}


MD_MV1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
          (1024, 2), (1024, 1)]


def md_mobilenet_v1(classes: int = 1000) -> Keys:
    k = {"model.0.0.weight": (32, 3, 3, 3), **bn("model.0.1", 32)}
    width = 32
    for i, (out, _) in enumerate(MD_MV1, 1):
        k |= {f"model.{i}.0.weight": (width, 1, 3, 3), **bn(f"model.{i}.1", width),
              f"model.{i}.3.weight": (out, width, 1, 1), **bn(f"model.{i}.4", out)}
        width = out
    return k | linear("fc", classes, 1024)


def rd_resnet(depth: int, widths, classes: int = 100) -> Keys:
    n = (depth - 2) // 6
    k = {"conv1.weight": (widths[0], 3, 3, 3), **bn("bn1", widths[0])}
    width = widths[0]
    for i, planes in enumerate(widths[1:]):
        for b in range(n):
            p = f"layer{i + 1}.{b}"
            k |= {f"{p}.conv1.weight": (planes, width, 3, 3), **bn(f"{p}.bn1", planes),
                  f"{p}.conv2.weight": (planes, planes, 3, 3), **bn(f"{p}.bn2", planes)}
            if b == 0 and (i > 0 or width != planes):
                k |= {f"{p}.downsample.0.weight": (planes, width, 1, 1), **bn(f"{p}.downsample.1", planes)}
            width = planes
    return k | linear("fc", classes, width)


def rd_wrn(depth: int, widen: int, classes: int = 100) -> Keys:
    n = (depth - 4) // 6
    widths = (16, 16 * widen, 32 * widen, 64 * widen)
    k = {"conv1.weight": (16, 3, 3, 3)}
    for g in range(3):
        for b in range(n):
            c_in, c_out, p = widths[g] if b == 0 else widths[g + 1], widths[g + 1], f"block{g + 1}.layer.{b}"
            k |= {**bn(f"{p}.bn1", c_in), f"{p}.conv1.weight": (c_out, c_in, 3, 3), **bn(f"{p}.bn2", c_out),
                  f"{p}.conv2.weight": (c_out, c_out, 3, 3)}
            if c_in != c_out:
                k[f"{p}.convShortcut.weight"] = (c_out, c_in, 1, 1)
    return k | bn("bn1", widths[3]) | linear("fc", classes, widths[3])


RD_VGG = {8: [[64], [128], [256], [512], [512]], 11: [[64], [128], [256, 256], [512, 512], [512, 512]],
          13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
          16: [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
          19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4]}


def rd_vgg(depth: int, classes: int = 100) -> Keys:
    k, c_in = {}, 3
    for i, widths in enumerate(RD_VGG[depth]):
        for j, w in enumerate(widths):
            k |= {f"block{i}.{3 * j}.weight": (w, c_in, 3, 3), f"block{i}.{3 * j}.bias": (w,),
                  **bn(f"block{i}.{3 * j + 1}", w)}
            c_in = w
    return k | linear("classifier", classes, 512)


RD_MV2 = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def rd_mobilenetv2(classes: int = 100) -> Keys:  # "mobile_half": width 0.5, expansion 6
    k = {"conv1.0.weight": (16, 3, 3, 3), **bn("conv1.1", 16)}
    width = 16
    for i, (t, c, n, _) in enumerate(RD_MV2):
        for b in range(n):
            hidden, out, p = width * t, c // 2, f"blocks.{i}.{b}.conv"
            k |= {f"{p}.0.weight": (hidden, width, 1, 1), **bn(f"{p}.1", hidden), f"{p}.3.weight": (hidden, 1, 3, 3),
                  **bn(f"{p}.4", hidden), f"{p}.6.weight": (out, hidden, 1, 1), **bn(f"{p}.7", out)}
            width = out
    return k | {"conv2.0.weight": (1280, width, 1, 1), **bn("conv2.1", 1280), **linear("classifier.0", classes, 1280)}


def rd_shufflev1(classes: int = 100) -> Keys:
    k, width = {"conv1.weight": (24, 3, 1, 1), **bn("bn1", 24)}, 24
    for s, (planes, n) in enumerate(zip((240, 480, 960), (4, 8, 4))):
        for b in range(n):
            out = planes - width if b == 0 else planes
            mid, g1, p = out // 4, 1 if width == 24 else 3, f"layer{s + 1}.{b}"
            k |= {f"{p}.conv1.weight": (mid, width // g1, 1, 1), **bn(f"{p}.bn1", mid),
                  f"{p}.conv2.weight": (mid, 1, 3, 3), **bn(f"{p}.bn2", mid),
                  f"{p}.conv3.weight": (out, mid // 3, 1, 1), **bn(f"{p}.bn3", out)}
            width = planes
    return k | linear("linear", classes, 960)


def rd_shufflev2(classes: int = 100) -> Keys:
    k, width = {"conv1.weight": (24, 3, 1, 1), **bn("bn1", 24)}, 24
    for s, (c, n) in enumerate(zip((116, 232, 464), (3, 7, 3))):
        p, mid = f"layer{s + 1}.0", c // 2
        k |= {f"{p}.conv1.weight": (width, 1, 3, 3), **bn(f"{p}.bn1", width),
              f"{p}.conv2.weight": (mid, width, 1, 1), **bn(f"{p}.bn2", mid),
              f"{p}.conv3.weight": (mid, width, 1, 1), **bn(f"{p}.bn3", mid),
              f"{p}.conv4.weight": (mid, 1, 3, 3), **bn(f"{p}.bn4", mid),
              f"{p}.conv5.weight": (mid, mid, 1, 1), **bn(f"{p}.bn5", mid)}
        for b in range(1, n + 1):
            p = f"layer{s + 1}.{b}"
            k |= {f"{p}.conv1.weight": (mid, mid, 1, 1), **bn(f"{p}.bn1", mid),
                  f"{p}.conv2.weight": (mid, 1, 3, 3), **bn(f"{p}.bn2", mid),
                  f"{p}.conv3.weight": (mid, mid, 1, 1), **bn(f"{p}.bn3", mid)}
        width = c
    return k | {"conv2.weight": (1024, 464, 1, 1), **bn("bn2", 1024), **linear("linear", classes, 1024)}


KEYS = {
    "resnet18": lambda: resnet_keys((2, 2, 2, 2), False), "resnet34": lambda: resnet_keys((3, 4, 6, 3), False),
    "resnet50": lambda: resnet_keys((3, 4, 6, 3), True), "resnet101": lambda: resnet_keys((3, 4, 23, 3), True),
    "resnet152": lambda: resnet_keys((3, 8, 36, 3), True), "mobilenet_v2": tv_mobilenet_v2,
    "mobilenet_v1": md_mobilenet_v1, "MobileNetV2": rd_mobilenetv2,
    "ResNet50": lambda: resnet_keys((3, 4, 6, 3), True, 100, stem=3, short="shortcut", head="linear"),
    "ShuffleV1": rd_shufflev1, "ShuffleV2": rd_shufflev2,
    **{f"resnet{d}": (lambda d=d: rd_resnet(d, (16, 16, 32, 64))) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": lambda: rd_resnet(8, (32, 64, 128, 256)), "resnet32x4": lambda: rd_resnet(32, (32, 64, 128, 256)),
    **{f"wrn_{d}_{w}": (lambda d=d, w=w: rd_wrn(d, w)) for d, w in ((16, 1), (16, 2), (40, 1), (40, 2))},
    **{f"vgg{d}": (lambda d=d: rd_vgg(d)) for d in RD_VGG},
}
IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2", "mobilenet_v1"]
REPDISTILLER = [n for n in PINNED if n not in IMAGENET]


def digest(keys: Keys) -> str:
    return hashlib.sha256("\n".join(sorted(f"{k} {tuple(s)}" for k, s in keys.items())).encode()).hexdigest()


def random_state(keys: Keys, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights (He-scaled convs, BN affine around 1 and 0) and random BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in keys.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(240)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean") or key.endswith(".bias"):
            out[key] = 0.2 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # BN weight
            out[key] = 0.5 + torch.rand(shape, generator=g)
        else:
            out[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
    return out


def calibrated_state(name: str, size: int) -> dict[str, torch.Tensor]:
    """:func:`random_state` with BatchNorm statistics measured on one batch of N(0, 1) inputs, so that every layer
    passes on activations of unit scale (with arbitrary statistics a deep network's logits hardly depend on its
    input, and a wrong layer could go unnoticed). The statistics come from the zoo model; both sides then use them."""
    arch, state = KDLAB_NAME.get(name, name), random_state(KEYS[name]())
    ours_to_theirs = dict(zip(to_kdlab_names(arch, state), state))
    model = create(arch, 1000 if name in IMAGENET else 100)
    model.load_state_dict(to_kdlab_names(arch, state), strict=True)
    recompute_bn_stats(model, [torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(3))])
    return {ours_to_theirs[k]: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# their forward passes, restated on their state dicts (eval mode)
# ---------------------------------------------------------------------------------------------------------------
def conv(s, p: str, x, stride: int = 1):
    w = s[f"{p}.weight"]
    return F.conv2d(x, w, s.get(f"{p}.bias"), stride, w.shape[-1] // 2, 1, x.shape[1] // w.shape[1])


def norm(s, p: str, x):
    return F.batch_norm(x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
                        False, 0.0, 1e-5)


def cbr(s, conv_key: str, bn_key: str, x, stride: int = 1, act=F.relu):
    return act(norm(s, bn_key, conv(s, conv_key, x, stride)))


def fc(s, p: str, x):
    return F.linear(x, s[f"{p}.weight"], s[f"{p}.bias"])


def shuffle(x, g: int):  # RepDistiller's ShuffleBlock
    n, c, h, w = x.shape
    return x.view(n, g, c // g, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


def resnet_forward(s, x, blocks, bottleneck: bool, cifar: bool = False, short: str = "downsample", head: str = "fc"):
    """torchvision's ResNets; with cifar=True (3x3 stride-1 stem, no max-pool) RepDistiller's ResNet50."""
    x = cbr(s, "conv1", "bn1", x) if cifar else F.max_pool2d(cbr(s, "conv1", "bn1", x, 2), 3, 2, 1)
    for i, n in enumerate(blocks):
        for b in range(n):
            p, stride = f"layer{i + 1}.{b}", 2 if b == 0 and i > 0 else 1
            if bottleneck:  # torchvision's v1.5: the stride sits on the 3x3 conv
                out = cbr(s, f"{p}.conv1", f"{p}.bn1", x)
                out = norm(s, f"{p}.bn3", conv(s, f"{p}.conv3", cbr(s, f"{p}.conv2", f"{p}.bn2", out, stride)))
            else:
                out = norm(s, f"{p}.bn2", conv(s, f"{p}.conv2", cbr(s, f"{p}.conv1", f"{p}.bn1", x, stride)))
            res = norm(s, f"{p}.{short}.1", conv(s, f"{p}.{short}.0", x, stride)) if f"{p}.{short}.0.weight" in s else x
            x = F.relu(out + res)
    return fc(s, head, F.adaptive_avg_pool2d(x, 1).flatten(1))


def tv_mobilenet_v2_forward(s, x):
    x = cbr(s, "features.0.0", "features.0.1", x, 2, F.relu6)
    width, i = 32, 1
    for t, c, n, st in TV_MV2:
        for r in range(n):
            p, j, h = f"features.{i}.conv", 0, x
            if t != 1:
                h, j = cbr(s, f"{p}.0.0", f"{p}.0.1", h, 1, F.relu6), 1
            h = cbr(s, f"{p}.{j}.0", f"{p}.{j}.1", h, st if r == 0 else 1, F.relu6)
            h = norm(s, f"{p}.{j + 2}", conv(s, f"{p}.{j + 1}", h))
            x = x + h if (st if r == 0 else 1) == 1 and width == c else h
            width, i = c, i + 1
    x = cbr(s, f"features.{i}.0", f"features.{i}.1", x, 1, F.relu6)
    return fc(s, "classifier.1", F.adaptive_avg_pool2d(x, 1).flatten(1))


def md_mobilenet_v1_forward(s, x):
    x = cbr(s, "model.0.0", "model.0.1", x, 2)
    for i, (_, stride) in enumerate(MD_MV1, 1):
        x = cbr(s, f"model.{i}.3", f"model.{i}.4", cbr(s, f"model.{i}.0", f"model.{i}.1", x, stride))
    return fc(s, "fc", F.avg_pool2d(x, 7).reshape(-1, 1024))  # mdistiller: AvgPool2d(7), reshape(-1, 1024)


def rd_resnet_forward(s, x):
    x = cbr(s, "conv1", "bn1", x)
    for i in range(3):
        b = 0
        while f"layer{i + 1}.{b}.conv1.weight" in s:
            p, stride = f"layer{i + 1}.{b}", 2 if b == 0 and i > 0 else 1
            out = norm(s, f"{p}.bn2", conv(s, f"{p}.conv2", cbr(s, f"{p}.conv1", f"{p}.bn1", x, stride)))
            res = norm(s, f"{p}.downsample.1", conv(s, f"{p}.downsample.0", x, stride)) \
                if f"{p}.downsample.0.weight" in s else x
            x, b = F.relu(out + res), b + 1
    return fc(s, "fc", F.avg_pool2d(x, 8).flatten(1))  # AvgPool2d(8)


def rd_wrn_forward(s, x):
    x = conv(s, "conv1", x)
    for g in range(3):
        b = 0
        while f"block{g + 1}.layer.{b}.conv1.weight" in s:
            p, stride = f"block{g + 1}.layer.{b}", 2 if b == 0 and g > 0 else 1
            equal = f"{p}.convShortcut.weight" not in s
            if not equal:  # the activated input feeds both the branch and the 1x1 shortcut
                x = F.relu(norm(s, f"{p}.bn1", x))
                out = x
            else:
                out = F.relu(norm(s, f"{p}.bn1", x))
            out = conv(s, f"{p}.conv2", cbr(s, f"{p}.conv1", f"{p}.bn2", out, stride))
            x, b = (x if equal else conv(s, f"{p}.convShortcut", x, stride)) + out, b + 1
    x = F.relu(norm(s, "bn1", x))
    return fc(s, "fc", F.avg_pool2d(x, 8).flatten(1))


def rd_vgg_forward(s, x):
    h = x.shape[2]
    for i in range(5):
        if i > 0 and (i < 4 or h == 64):  # pool0..pool2 always, pool3 only for 64-pixel inputs
            x = F.max_pool2d(x, 2, 2)
        j = 0
        while f"block{i}.{3 * j}.weight" in s:
            x, j = cbr(s, f"block{i}.{3 * j}", f"block{i}.{3 * j + 1}", x), j + 1
    return fc(s, "classifier", F.adaptive_avg_pool2d(x, 1).flatten(1))


def rd_mobilenetv2_forward(s, x):
    size = x.shape[2]
    x = cbr(s, "conv1.0", "conv1.1", x, 2)
    width = 16
    for i, (_, c, n, st) in enumerate(RD_MV2):
        for b in range(n):
            p, stride = f"blocks.{i}.{b}.conv", st if b == 0 else 1
            h = cbr(s, f"{p}.3", f"{p}.4", cbr(s, f"{p}.0", f"{p}.1", x), stride)
            h = norm(s, f"{p}.7", conv(s, f"{p}.6", h))
            x, width = (x + h if stride == 1 and width == c // 2 else h), c // 2
    x = cbr(s, "conv2.0", "conv2.1", x)
    x = F.avg_pool2d(x, size // 16, ceil_mode=True)  # AvgPool2d(input_size // 16, ceil_mode=True)
    return fc(s, "classifier.0", x.flatten(1))


def rd_shufflev1_forward(s, x):
    x = cbr(s, "conv1", "bn1", x)
    for li, n in enumerate((4, 8, 4)):
        for b in range(n):
            p, stride = f"layer{li + 1}.{b}", 2 if b == 0 else 1
            g1 = 1 if x.shape[1] == 24 else 3
            out = shuffle(cbr(s, f"{p}.conv1", f"{p}.bn1", x), g1)
            out = norm(s, f"{p}.bn3", conv(s, f"{p}.conv3", cbr(s, f"{p}.conv2", f"{p}.bn2", out, stride)))
            res = F.avg_pool2d(x, 3, 2, 1) if stride == 2 else x
            x = F.relu(torch.cat([out, res], 1) if stride == 2 else out + res)
    return fc(s, "linear", F.avg_pool2d(x, 4).flatten(1))


def rd_shufflev2_forward(s, x):
    x = cbr(s, "conv1", "bn1", x)
    for li, n in enumerate((3, 7, 3)):
        p = f"layer{li + 1}.0"
        left = cbr(s, f"{p}.conv2", f"{p}.bn2", norm(s, f"{p}.bn1", conv(s, f"{p}.conv1", x, 2)))
        right = norm(s, f"{p}.bn4", conv(s, f"{p}.conv4", cbr(s, f"{p}.conv3", f"{p}.bn3", x), 2))
        x = shuffle(torch.cat([left, cbr(s, f"{p}.conv5", f"{p}.bn5", right)], 1), 2)
        for b in range(1, n + 1):
            p, c = f"layer{li + 1}.{b}", int(x.shape[1] * 0.5)
            x1, x2 = x[:, :c], x[:, c:]
            out = norm(s, f"{p}.bn2", conv(s, f"{p}.conv2", cbr(s, f"{p}.conv1", f"{p}.bn1", x2)))
            x = shuffle(torch.cat([x1, cbr(s, f"{p}.conv3", f"{p}.bn3", out)], 1), 2)
    x = cbr(s, "conv2", "bn2", x)
    return fc(s, "linear", F.avg_pool2d(x, 4).flatten(1))


FORWARD = {
    "resnet18": lambda s, x: resnet_forward(s, x, (2, 2, 2, 2), False),
    "resnet34": lambda s, x: resnet_forward(s, x, (3, 4, 6, 3), False),
    "resnet50": lambda s, x: resnet_forward(s, x, (3, 4, 6, 3), True),
    "resnet101": lambda s, x: resnet_forward(s, x, (3, 4, 23, 3), True),
    "resnet152": lambda s, x: resnet_forward(s, x, (3, 8, 36, 3), True),
    "ResNet50": lambda s, x: resnet_forward(s, x, (3, 4, 6, 3), True, cifar=True, short="shortcut", head="linear"),
    "mobilenet_v2": tv_mobilenet_v2_forward, "mobilenet_v1": md_mobilenet_v1_forward,
    "MobileNetV2": rd_mobilenetv2_forward, "ShuffleV1": rd_shufflev1_forward,
    "ShuffleV2": rd_shufflev2_forward,
    **{n: rd_resnet_forward for n in REPDISTILLER if n.startswith("resnet")},
    **{n: rd_wrn_forward for n in REPDISTILLER if n.startswith("wrn")},
    **{n: rd_vgg_forward for n in REPDISTILLER if n.startswith("vgg")},
}
# input side: 224 where the foreign code pools with a fixed 7x7 window (mdistiller's MobileNetV1), 64 for the other
# ImageNet networks (adaptive pooling), 32 for the CIFAR networks (their fixed pools span the 32-pixel map)
INPUT = {"mobilenet_v1": 224, **{n: 64 for n in IMAGENET if n != "mobilenet_v1"}}
# larger inputs than the calibration's for MobileNetV2, so that its ReLU6 clips (a ReLU would pass unnoticed otherwise)
SCALE = {"mobilenet_v2": 5.0}


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PINNED))
def test_key_lists_are_those_of_the_real_code(name):
    keys = KEYS[name]()
    assert (len(keys), digest(keys)) == PINNED[name]


def test_a_few_facts_spelled_out():
    """Readable samples of the pinned lists (torchvision 0.29.1, mdistiller, RepDistiller)."""
    r18, mv2, mv1 = KEYS["resnet18"](), KEYS["mobilenet_v2"](), KEYS["mobilenet_v1"]()
    assert r18["layer2.0.downsample.0.weight"] == (128, 64, 1, 1) and r18["fc.weight"] == (1000, 512)
    assert "layer1.0.downsample.0.weight" not in r18
    assert KEYS["resnet50"]()["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert mv2["features.1.conv.0.0.weight"] == (32, 1, 3, 3) and mv2["features.18.0.weight"] == (1280, 320, 1, 1)
    assert mv2["classifier.1.weight"] == (1000, 1280)
    assert mv1["model.13.3.weight"] == (1024, 1024, 1, 1) and mv1["fc.weight"] == (1000, 1024)
    wrn = KEYS["wrn_40_2"]()
    assert wrn["block1.layer.0.convShortcut.weight"] == (32, 16, 1, 1) and wrn["bn1.weight"] == (128,)
    assert KEYS["MobileNetV2"]()["classifier.0.weight"] == (100, 1280)


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_state_dicts_load_as_they_are(name):
    keys = KEYS[name]()
    model = create(name, 1000)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == keys  # the same names and shapes, no renaming at all
    model.load_state_dict(random_state(keys), strict=True)


@pytest.mark.parametrize("name", REPDISTILLER)
def test_repdistiller_state_dicts_map_to_the_zoo(name):
    keys = KEYS[name]()
    ours = {k: tuple(v.shape) for k, v in create(KDLAB_NAME.get(name, name), 100).state_dict().items()}
    mapped = to_kdlab_names(KDLAB_NAME.get(name, name), {k: torch.empty(0) for k in keys})
    assert len(mapped) == len(keys)  # the renaming is one to one
    assert {k: keys[old] for k, old in zip(mapped, keys)} == ours


@pytest.mark.parametrize("name", list(PINNED))
def test_same_logits_as_their_forward(name, tmp_path):
    """Their checkpoint format (RepDistiller: {'epoch', 'model', 'accuracy', 'optimizer'}; torchvision: the bare state
    dict) through load_model, and the same logits as their forward restated on their state dict."""
    size = INPUT.get(name, 32)
    state = calibrated_state(name, size)
    arch = KDLAB_NAME.get(name, name)
    path = tmp_path / f"{name}.pth"
    if name in IMAGENET:
        torch.save(state, path)
    else:
        torch.save({"epoch": 240, "model": state, "accuracy": torch.tensor(79.42),
                    "optimizer": {"state": {}, "param_groups": [{"lr": 0.0, "params": [0]}]}}, path)
    model = load_model(path, arch=arch).eval()
    x = SCALE.get(name, 1.0) * torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = FORWARD[name](state, x)
        ours = model(x)
    assert ours.shape == theirs.shape == (x.shape[0], 1000 if name in IMAGENET else 100)
    assert (theirs[0] - theirs[-1]).abs().max() > 0.1 * theirs.abs().max()  # the logits depend on the input
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())


@pytest.mark.parametrize("name", ["vgg13", "MobileNetV2"])
def test_same_logits_at_64_pixels(name):
    """Tiny-ImageNet size: VGG's 4th max-pool and MobileNetV2's 4x4 pooling window follow the input size there too."""
    state = calibrated_state(name, 64)
    model = create(name, 100).eval()
    model.load_state_dict(to_kdlab_names(name, state), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), FORWARD[name](state, x), rtol=1e-4, atol=1e-5)
