"""Distillation-data policies: what the student is distilled on (Stanton et al., NeurIPS 2021, §5; specs/fidelity.md).

:func:`build_policy` turns a :class:`~kdlab.config.schema.DistillDataConfig` into ``policy(batch, epoch) -> batch``,
applied by the training loop to every batch *before* the method runs, so the teacher is evaluated online on exactly
the student's input (consistency, Beyer et al., CVPR 2022). Steps, in order:

1. augmentation preset (:data:`PRESETS`), re-drawn from the clean stored samples ``splits.x_train[batch.index]``;
   ``"default"`` keeps the loader's own augmentation, ``"none"`` uses the clean inputs;
2. input-only MixUp: one λ ~ Beta(α, α) per batch, partners from a batch permutation, ``round(fraction·B)`` samples
   mixed; the teacher labels the mixed input; hard labels of mixed samples are used only with ``mixup_hard_labels``;
3. noise replacement: each sample independently replaced, with probability ``noise_prob``, by N(0, noise_std²)
   noise in the normalised input space;
4. extra unlabelled sources appended to the batch (held-out split, shuffled/out-of-domain inputs, a file pool, a
   generator callable).

Every changed batch gets ``view=None`` (a teacher-logit cache keyed on discrete views must not serve it),
``label_mask`` (False for mixed/synthetic samples: the CE term skips them) and, with ``temperatures``, a per-sample
``temperature`` from each sample's source. Unlabelled samples carry ``y = -1`` and ``index = -1``.

Randomness comes from ``generator`` or, by default, torch's global RNG — which the training loop checkpoints, so a
resumed run replays the same policy draws.

Augmentation presets (``x`` is the stored sample before normalisation):

* 1-D signals ``[N, C, L]`` (MNIST-1D):
  ``shift`` — zero-fill shift by s ∈ [−4, 4] (MNIST-1D's standard augmentation, the analogue of crop);
  ``reverse`` — time reversal with p = 0.5 (the analogue of a flip; it does *not* preserve MNIST-1D's classes, like
  a vertical flip for images);
  ``scale`` — amplitude × U[0.8, 1.2] per sample (the analogue of colour jitter 0.2);
  ``stretch`` — linear time-warp about the centre by a factor U[0.8, 1.2] (the analogue of a 20° rotation);
  ``combined`` — shift, reverse, scale and stretch together.
* images ``[N, C, H, W]`` (CIFAR): ``crop_flip`` (pad-4 crop + horizontal flip, the baseline), ``rotate``
  (U[−20°, 20°], bilinear, zero fill), ``vflip`` (p = 0.5), ``color_jitter`` (brightness, contrast, saturation
  factors U[0.8, 1.2]), ``combined`` (all of them).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from kdlab.data.augment import CropFlip, _beta
from kdlab.data.batch import Batch
from kdlab.data.loader import _normalize, _stats_tensor

__all__ = ["PRESETS_1D", "PRESETS_IMAGE", "PRESETS", "augment_preset", "build_policy", "select_split",
           "holdout_slices"]

PRESETS_1D = ("shift", "reverse", "scale", "stretch", "combined")
PRESETS_IMAGE = ("crop_flip", "rotate", "vflip", "color_jitter", "combined")
PRESETS = ("default", "none") + tuple(dict.fromkeys(PRESETS_1D + PRESETS_IMAGE))


# --------------------------------------------------------------------------------------------------------------
# split control
# --------------------------------------------------------------------------------------------------------------
def holdout_slices(n: int, fraction: float) -> tuple[slice, slice]:
    """(teacher part, held-out part) of a train split of ``n`` samples: the held-out part is the last
    ``ceil(fraction·n)`` samples (MNIST-1D and CIFAR train orders carry no class order, so a tail split is fair)."""
    k = math.ceil(fraction * n)
    if fraction > 0 and not 0 < k < n:
        raise ValueError(f"distill_data.holdout_fraction={fraction} leaves an empty part of the {n} training "
                         "samples; choose a fraction strictly between 0 and 1 with at least one sample each side")
    return slice(0, n - k), slice(n - k, n)


def select_split(cfg, splits, role: str):
    """The training data of a run under split control: a teacher trains on its part only; a student distils on
    ``cfg.split`` ∈ {teacher, holdout, both}. The held-out inputs stay reachable as ``splits.holdout_x`` (for an
    extra source of kind ``holdout``). No-op when ``cfg.holdout_fraction == 0``."""
    import dataclasses

    if cfg.holdout_fraction == 0:
        return splits
    t_part, h_part = holdout_slices(splits.num_train, cfg.holdout_fraction)
    part = {"teacher": t_part, "holdout": h_part, "both": slice(0, splits.num_train)}[
        "teacher" if role == "teacher" else cfg.split]
    out = dataclasses.replace(splits, x_train=splits.x_train[part], y_train=splits.y_train[part])
    out.holdout_x = splits.x_train[h_part]
    return out


# --------------------------------------------------------------------------------------------------------------
# augmentation presets (vectorised over the batch; x in pixel/raw scale, float)
# --------------------------------------------------------------------------------------------------------------
def _u(n: int, lo: float, hi: float, gen, device) -> torch.Tensor:
    dev = gen.device if gen is not None else device
    return (lo + (hi - lo) * torch.rand(n, generator=gen, device=dev)).to(device)


def _coin(n: int, p: float, gen, device) -> torch.Tensor:
    return _u(n, 0.0, 1.0, gen, device) < p


def _shift1d(x, gen, max_shift: int = 4):
    n, c, length = x.shape
    s = torch.round(_u(n, -max_shift - 0.5, max_shift + 0.5, gen, x.device)).clamp(-max_shift, max_shift).long()
    padded = F.pad(x, (max_shift, max_shift))
    idx = (max_shift - s)[:, None] + torch.arange(length, device=x.device)  # out[i] = x[i − s]
    return torch.gather(padded, 2, idx[:, None, :].expand(n, c, length))


def _reverse1d(x, gen):
    return torch.where(_coin(x.shape[0], 0.5, gen, x.device)[:, None, None], x.flip(-1), x)


def _scale(x, gen):
    return x * _u(x.shape[0], 0.8, 1.2, gen, x.device).view(-1, *([1] * (x.ndim - 1)))


def _stretch1d(x, gen):
    # out(t) = x(c + (t − c)/f): f > 1 stretches; linear interpolation, zero outside the signal
    n, c, length = x.shape
    f = _u(n, 0.8, 1.2, gen, x.device)[:, None]
    centre = (length - 1) / 2.0
    src = centre + (torch.arange(length, device=x.device, dtype=x.dtype) - centre) / f  # [n, L]
    lo = src.floor().long()
    w = (src - lo).unsqueeze(1)
    padded = F.pad(x, (1, 2))  # index j of x is j + 1 here; out-of-range reads hit zeros
    gather = lambda i: torch.gather(padded, 2, (i.clamp(-1, length) + 1)[:, None, :].expand(n, c, length))  # noqa
    return (1 - w) * gather(lo) + w * gather(lo + 1)


def _rotate(x, gen, degrees: float = 20.0):
    n = x.shape[0]
    a = torch.deg2rad(_u(n, -degrees, degrees, gen, x.device))
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _vflip(x, gen):
    return torch.where(_coin(x.shape[0], 0.5, gen, x.device)[:, None, None, None], x.flip(-2), x)


def _color_jitter(x, gen, s: float = 0.2):
    n = x.shape[0]
    view = lambda t: t.view(n, 1, 1, 1)  # noqa: E731
    x = (x * view(_u(n, 1 - s, 1 + s, gen, x.device))).clamp(0, 1)  # brightness
    gray = x.mean(1, keepdim=True) if x.shape[1] != 3 else (
        0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    m = gray.mean(dim=(1, 2, 3), keepdim=True)
    x = (m + view(_u(n, 1 - s, 1 + s, gen, x.device)) * (x - m)).clamp(0, 1)  # contrast
    return (gray + view(_u(n, 1 - s, 1 + s, gen, x.device)) * (x - gray)).clamp(0, 1)  # saturation


def _crop_flip(x, gen):
    aug = CropFlip()
    views = aug.sample(x.shape[0], gen).to(x.device)
    return aug.apply(x, views)


_OPS_1D = {"shift": [_shift1d], "reverse": [_reverse1d], "scale": [_scale], "stretch": [_stretch1d],
           "combined": [_stretch1d, _shift1d, _reverse1d, _scale]}
_OPS_IMAGE = {"crop_flip": [_crop_flip], "rotate": [_rotate], "vflip": [_vflip], "color_jitter": [_color_jitter],
              "combined": [_crop_flip, _rotate, _vflip, _color_jitter]}


def augment_preset(x: torch.Tensor, preset: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply augmentation ``preset`` to raw samples ``x`` (1-D ``[N, C, L]`` float or images ``[N, C, H, W]``,
    uint8 pixels or float in [0, 1]); returns float in the raw scale (uint8 → [0, 1]). ``"none"`` is the identity."""
    if x.ndim not in (3, 4):
        raise ValueError(f"augment_preset needs [N, C, L] signals or [N, C, H, W] images, got {tuple(x.shape)}")
    p = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if preset == "none":
        return p
    table, kind, names = (_OPS_1D, "1-D signals", PRESETS_1D) if x.ndim == 3 else (_OPS_IMAGE, "images",
                                                                                    PRESETS_IMAGE)
    if preset not in table:
        raise ValueError(f"distill_data.augment={preset!r} is not a preset for {kind}; choose one of "
                         f"{('default', 'none') + names}")
    for op in table[preset]:
        p = op(p, generator)
    return p


# --------------------------------------------------------------------------------------------------------------
# extra sources
# --------------------------------------------------------------------------------------------------------------
def _load_pool(path: str, shape: tuple[int, ...]) -> torch.Tensor:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"distill_data.extra pool file {p} not found; give a .pt/.npy/.npz of inputs")
    if p.suffix == ".pt":
        t = torch.load(p, map_location="cpu", weights_only=True)
    elif p.suffix in (".npy", ".npz"):
        import numpy as np

        arr = np.load(p, allow_pickle=False)
        if p.suffix == ".npz":
            if len(arr.files) != 1:
                raise ValueError(f"{p}: an .npz pool must hold exactly one array, found {arr.files}")
            arr = arr[arr.files[0]]
        t = torch.from_numpy(np.asarray(arr))
    else:
        raise ValueError(f"{p}: pool files must be .pt, .npy or .npz, got {p.suffix!r}")
    if not isinstance(t, torch.Tensor) or tuple(t.shape[1:]) != shape or t.shape[0] == 0:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{p}: pool must be a non-empty tensor [N, {', '.join(map(str, shape))}] of normalised "
                         f"model inputs, got {got}")
    return t.float()


def _resolve_callable(spec: str) -> Callable:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"distill_data.extra generator path must be 'module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"distill_data.extra generator {spec!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise ValueError(f"distill_data.extra generator {spec!r} is not callable")
    return fn


# --------------------------------------------------------------------------------------------------------------
# the policy
# --------------------------------------------------------------------------------------------------------------
class DistillPolicy:
    """``policy(batch, epoch) -> batch`` built by :func:`build_policy`; see the module docstring."""

    def __init__(self, cfg, splits, device, generator: torch.Generator | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.generator = generator
        shape = tuple(splits.x_train.shape[1:])
        self.shape = shape
        if cfg.augment not in PRESETS:
            raise ValueError(f"distill_data.augment={cfg.augment!r} is unknown; choose one of {PRESETS}")
        if cfg.augment not in ("default", "none"):
            augment_preset(splits.x_train[:1], cfg.augment)  # fails now, naming the presets, if it does not fit
        channels, ndim = splits.x_train.shape[1], splits.x_train.ndim
        self._mean = _stats_tensor(splits.mean, "mean", channels, ndim, self.device)
        self._std = _stats_tensor(splits.std, "std", channels, ndim, self.device)
        self.x_raw = splits.x_train.to(self.device)
        self.sources = cfg.sources()
        self.temperatures = (torch.tensor([cfg.temperatures[s] for s in self.sources], device=self.device)
                             if cfg.temperatures else None)
        self.extra: list[tuple[int, object, float]] = []  # (source id, pool tensor or callable, per_batch)
        for e in cfg.extra:
            sid = self.sources.index(e.name)
            if e.kind == "holdout":
                held = getattr(splits, "holdout_x", None)
                if held is None:
                    raise ValueError(f"extra source {e.name!r} (kind holdout) needs the held-out split; set "
                                     "distill_data.holdout_fraction > 0")
                src = self._norm(held.to(self.device).float() / (255.0 if held.dtype == torch.uint8 else 1.0))
            elif e.kind == "shuffled":
                src = "shuffled"
            elif e.kind == "pool":
                src = _load_pool(e.path, shape).to(self.device)
            else:
                src = _resolve_callable(e.path)
            self.extra.append((sid, src, e.per_batch))
        self.active = (cfg.augment != "default" or cfg.mixup_alpha is not None or cfg.noise_prob > 0
                       or bool(cfg.extra) or bool(cfg.temperatures))

    def _norm(self, p: torch.Tensor) -> torch.Tensor:
        return _normalize(p, self._mean, self._std)  # p is float in the raw scale: only (p − mean)/std applies

    def _rand(self, n: int) -> torch.Tensor:
        dev = self.generator.device if self.generator is not None else self.device
        return torch.rand(n, generator=self.generator, device=dev).to(self.device)

    def _randint(self, high: int, n: int) -> torch.Tensor:
        dev = self.generator.device if self.generator is not None else self.device
        return torch.randint(0, high, (n,), generator=self.generator, device=dev).to(self.device)

    def _extra_inputs(self, src, k: int, like: torch.Tensor) -> torch.Tensor:
        if isinstance(src, torch.Tensor):
            return src[self._randint(src.shape[0], k)]
        if src == "shuffled":
            # out-of-domain: real samples with positions permuted independently per sample (values kept, shape lost)
            x = self.x_raw[self._randint(self.x_raw.shape[0], k)]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            flat = x.flatten(2)
            dev = self.generator.device if self.generator is not None else self.device
            order = torch.rand(flat.shape[0], flat.shape[2], generator=self.generator, device=dev).argsort(1)
            flat = torch.gather(flat, 2, order.to(self.device)[:, None, :].expand_as(flat))
            return self._norm(flat.view_as(x))
        out = src(k, like=like, generator=self.generator)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (k,) + self.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the distill_data.extra generator must return a tensor of shape {(k,) + self.shape}, "
                             f"got {got}")
        return out.to(self.device, like.dtype)

    def __call__(self, batch: Batch, epoch: int) -> Batch:
        if not self.active:
            return batch
        cfg, n = self.cfg, batch.x.shape[0]
        x, y, index = batch.x, batch.y, batch.index
        source = torch.zeros(n, dtype=torch.long, device=x.device)  # "data"
        labelled = torch.ones(n, dtype=torch.bool, device=x.device)
        if cfg.augment != "default":
            x = self._norm(augment_preset(self.x_raw[index], cfg.augment, self.generator))
        if cfg.mixup_alpha is not None:
            lam = _beta(cfg.mixup_alpha, self.generator, x.device)
            perm = self._rand(n).argsort()  # a uniform random permutation pairs each sample with a partner
            k = max(1, round(cfg.mixup_fraction * n))
            mixed = torch.zeros(n, dtype=torch.bool, device=x.device)
            mixed[self._rand(n).argsort()[:k]] = True  # a uniformly random subset of exactly k samples
            x = torch.where(mixed.view(-1, *([1] * (x.ndim - 1))), lam * x + (1 - lam) * x[perm], x)
            source = torch.where(mixed, self.sources.index("mixup"), source)
            if cfg.mixup_hard_labels:  # explicit opt-in: CE on the label of the larger-weight component
                y = torch.where(mixed, y if lam >= 0.5 else y[perm], y)
            else:
                labelled &= ~mixed
        if cfg.noise_prob > 0:
            noisy = self._rand(n) < cfg.noise_prob
            noise = cfg.noise_std * torch.randn(
                x.shape, generator=self.generator, device=self.generator.device if self.generator else x.device
            ).to(x.device)
            x = torch.where(noisy.view(-1, *([1] * (x.ndim - 1))), noise, x)
            source = torch.where(noisy, self.sources.index("noise"), source)
            labelled &= ~noisy
        xs, ys, idx, srcs, labs = [x], [y], [index], [source], [labelled]
        for sid, src, per_batch in self.extra:
            k = max(1, round(per_batch * n))
            xs.append(self._extra_inputs(src, k, x))
            ys.append(torch.full((k,), -1, dtype=y.dtype, device=x.device))
            idx.append(torch.full((k,), -1, dtype=index.dtype, device=x.device))
            srcs.append(torch.full((k,), sid, dtype=torch.long, device=x.device))
            labs.append(torch.zeros(k, dtype=torch.bool, device=x.device))
        y, labelled = torch.cat(ys), torch.cat(labs)
        y = torch.where(labelled, y, torch.full_like(y, -1))  # unlabelled samples never carry a real label
        unlabelled_possible = ((cfg.mixup_alpha is not None and not cfg.mixup_hard_labels) or cfg.noise_prob > 0
                               or bool(self.extra))
        return Batch(
            x=torch.cat(xs), y=y, index=torch.cat(idx), view=None,
            label_mask=labelled if unlabelled_possible else None,
            temperature=None if self.temperatures is None else self.temperatures[torch.cat(srcs)],
        )


def build_policy(cfg, splits, device, generator: torch.Generator | None = None) -> DistillPolicy:
    """The distillation-data policy of ``cfg`` (a DistillDataConfig) for the train split of ``splits``."""
    return DistillPolicy(cfg, splits, device, generator)
