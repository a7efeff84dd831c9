"""Distillation-data policies: what the student is distilled on (Stanton et al., NeurIPS 2021, §5).

:func:`build_policy` turns a ``DistillDataConfig`` (``kdlab.config.schema``) into ``policy(batch, epoch) -> batch``,
applied by the training loop to every batch *before* the method runs, so the teacher is evaluated online on exactly
the student's input (consistency, Beyer et al., CVPR 2022). Steps, in order:

1. augmentation preset (:data:`~kdlab.data.presets.PRESETS`), re-drawn from the clean stored samples
   ``splits.x_train[batch.index]``; ``"default"`` keeps the loader's own augmentation, ``"none"`` uses the clean
   inputs;
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
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from kdlab.data._ops import beta, rand, randint, rng_device
from kdlab.data.batch import Batch
from kdlab.data.normalization import Normalization
from kdlab.data.presets import PRESETS, augment_preset
from kdlab.data.splits import DataSplits

__all__ = ["DistillPolicy", "build_policy"]


def _load_pool(path: str, shape: tuple[int, ...]) -> torch.Tensor:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"distill_data.extra pool file {p} not found; give a .pt/.npy/.npz of inputs")
    if p.suffix == ".pt":
        t = torch.load(p, map_location="cpu", weights_only=True)
    elif p.suffix in (".npy", ".npz"):
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


class DistillPolicy:
    """``policy(batch, epoch) -> batch`` built by :func:`build_policy`; see the module docstring."""

    def __init__(self, cfg: Any, splits: DataSplits, device: torch.device | str,
                 generator: torch.Generator | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.generator = generator
        shape = tuple(splits.x_train.shape[1:])
        self.shape = shape
        if cfg.augment not in PRESETS:
            raise ValueError(f"distill_data.augment={cfg.augment!r} is unknown; choose one of {PRESETS}")
        if cfg.augment not in ("default", "none"):
            augment_preset(splits.x_train[:1], cfg.augment)  # fails now, naming the presets, if it does not fit
        # the loader's normalisation: presets and extra sources produce raw-scale inputs, the model wants these
        self.norm = Normalization(splits.mean, splits.std, splits.x_train.shape[1], splits.x_train.ndim, self.device)
        self.x_raw = splits.x_train.to(self.device)
        self.sources = cfg.sources()
        self.temperatures = (torch.tensor([cfg.temperatures[s] for s in self.sources], device=self.device)
                             if cfg.temperatures else None)
        self.extra: list[tuple[int, object, float]] = []  # (source id, pool tensor or callable, per_batch)
        for e in cfg.extra:
            sid = self.sources.index(e.name)
            if e.kind == "holdout":
                if splits.holdout_x is None:
                    raise ValueError(f"extra source {e.name!r} (kind holdout) needs the held-out split; set "
                                     "distill_data.holdout_fraction > 0")
                src = self.norm(splits.holdout_x.to(self.device))
            elif e.kind == "shuffled":
                src = "shuffled"
            elif e.kind == "pool":
                src = _load_pool(e.path, shape).to(self.device)
            else:
                src = _resolve_callable(e.path)
            self.extra.append((sid, src, e.per_batch))
        self.active = (cfg.augment != "default" or cfg.mixup_alpha is not None or cfg.noise_prob > 0
                       or bool(cfg.extra) or bool(cfg.temperatures))

    def _rand(self, n: int) -> torch.Tensor:
        return rand((n,), self.generator, self.device)

    def _randint(self, high: int, n: int) -> torch.Tensor:
        return randint(high, (n,), self.generator, self.device)

    def _extra_inputs(self, src, k: int, like: torch.Tensor) -> torch.Tensor:
        if isinstance(src, torch.Tensor):
            return src[self._randint(src.shape[0], k)]
        if src == "shuffled":
            # out-of-domain: real samples with positions permuted independently per sample (values kept, shape lost)
            x = self.x_raw[self._randint(self.x_raw.shape[0], k)]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            flat = x.flatten(2)
            dev = rng_device(self.generator, self.device)
            order = torch.rand(flat.shape[0], flat.shape[2], generator=self.generator, device=dev).argsort(1)
            flat = torch.gather(flat, 2, order.to(self.device)[:, None, :].expand_as(flat))
            return self.norm(flat.view_as(x))
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
            x = self.norm(augment_preset(self.x_raw[index], cfg.augment, self.generator))
        if cfg.mixup_alpha is not None:
            lam = beta(cfg.mixup_alpha, self.generator, x.device)
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
                x.shape, generator=self.generator, device=rng_device(self.generator, x.device)
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


def build_policy(cfg: Any, splits: DataSplits, device: torch.device | str,
                 generator: torch.Generator | None = None) -> DistillPolicy:
    """The distillation-data policy of ``cfg`` (a DistillDataConfig) for the train split of ``splits``."""
    return DistillPolicy(cfg, splits, device, generator)
