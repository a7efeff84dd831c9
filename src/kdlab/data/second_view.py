"""A second, augmented view x̂ of a batch (R2KD, Kim et al. 2023/2024): what x̂ is, drawn in one place.

R2KD (``method.args.augment``) and any logit method (``distill_data.second_view``, :mod:`kdlab.methods.second_view`)
draw their second view here, from the batch mixers of :mod:`kdlab.data.mix` and :func:`autoaugment_like`:

* ``cutmix``: one box per batch, λ ~ Beta(α, α) (Yun et al. 2019);
* ``mixup``: x̃ = λ·x + (1−λ)·x[perm], λ ~ Beta(α, α) (Zhang et al. 2018);
* ``cutout``: one ``size``-wide square per sample zeroed (DeVries & Taylor 2017);
* ``autoaugment``: a sub-policy of AutoAugment's CIFAR-10 or ImageNet policy per sample (Cubuk et al. 2019);
* ``cutmixpick``: a pool of ``pick_pool`` independent CutMix batches, of which the caller keeps the samples on
  which the teacher is least certain (:func:`most_uncertain`).

The label of a view (for methods whose distillation term reads the label, e.g. DKD's target class) is the label
of the larger part of the sample: its own where it keeps at least half of itself (λ ≥ ½), else its partner's;
cutout and AutoAugment keep labels. Randomness comes from torch's global RNG (``generator=None``), which the
training loop checkpoints, so a resumed run draws the same views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kdlab.data.autoaugment import AUTOAUGMENT_POLICIES, autoaugment_like
from kdlab.data.mix import cutmix, cutout, mixup

__all__ = ["VIEWS", "ViewSpec", "draw_view", "cutmix_pool", "most_uncertain", "view_input_problem"]

#: the second views, as ``method.args.augment`` (R2KD) and ``distill_data.second_view`` name them
VIEWS = ("cutmix", "mixup", "cutout", "autoaugment", "cutmixpick")


@dataclass(frozen=True)
class ViewSpec:
    """How to draw x̂. Defaults: R2KD's CIFAR-100 values (docs/reference/methods.md §6)."""

    kind: str
    cutmix_alpha: float = 1.0  # CutMix (and CutMixPick's pool): box area ratio ~ Beta(α, α)
    mixup_alpha: float = 0.2  # MixUp: λ ~ Beta(α, α)
    cutout_size: int = 8  # Cutout: side of the erased square, pixels
    pick_pool: int = 2  # CutMixPick: pool of pick_pool·N CutMix samples
    policy: str = "cifar10"  # AutoAugment: "cifar10" or "imagenet"
    mean: Sequence[float] | None = None  # AutoAugment: how the batch was normalised (None: [0, 1] pixels)
    std: Sequence[float] | None = None

    def __post_init__(self):
        if self.kind not in VIEWS:
            raise ValueError(f"second view {self.kind!r} is unknown; choose one of {VIEWS}")
        if self.policy not in AUTOAUGMENT_POLICIES:
            raise ValueError(f"AutoAugment policy {self.policy!r} is unknown; choose one of "
                             f"{tuple(AUTOAUGMENT_POLICIES)}")


def _majority(y: torch.Tensor | None, lam: float, perm: torch.Tensor) -> torch.Tensor | None:
    # a mixed sample's label: its own where it keeps at least half of itself, else its partner's
    return None if y is None else (y if lam >= 0.5 else y[perm])


def draw_view(spec: ViewSpec, x: torch.Tensor, y: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x̂, ŷ)`` for the kinds that need no teacher (``cutmixpick``: :func:`cutmix_pool`). ``y`` None: no labels."""
    if spec.kind == "cutmix":
        x_hat, lam, perm = cutmix(x, None, alpha=spec.cutmix_alpha)
        return x_hat, _majority(y, lam, perm)
    if spec.kind == "mixup":
        x_hat, lam, perm = mixup(x, None, alpha=spec.mixup_alpha)
        return x_hat, _majority(y, lam, perm)
    if spec.kind == "cutout":
        return cutout(x, None, size=spec.cutout_size), y
    if spec.kind == "autoaugment":
        return autoaugment_like(x, None, mean=spec.mean, std=spec.std, policy=spec.policy), y
    raise ValueError("cutmixpick picks from a pool by the teacher's entropy; draw the pool with cutmix_pool")


def cutmix_pool(spec: ViewSpec, x: torch.Tensor, y: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CutMixPick's pool: ``pick_pool`` independent CutMix batches of ``x`` (each its own box and pairing),
    concatenated, ``[pick_pool·N, ...]``, with their labels."""
    drawn = [cutmix(x, None, alpha=spec.cutmix_alpha) for _ in range(spec.pick_pool)]
    pool = torch.cat([d[0] for d in drawn])
    labels = None if y is None else torch.cat([_majority(y, lam, perm) for _, lam, perm in drawn])
    return pool, labels


def most_uncertain(logits: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` rows of ``logits`` whose softmax has the highest entropy H = −Σ q log q (CutMixPick)."""
    log_q = torch.log_softmax(logits.float(), dim=1)
    entropy = -(log_q.exp() * log_q).sum(dim=1)
    return entropy.topk(n).indices


def view_input_problem(kind: str, shape: Sequence[int]) -> str | None:
    """Why inputs of ``shape`` (a batch) cannot take the view ``kind``, or None. CutMix, Cutout and CutMixPick cut
    boxes of signals [N, C, L] or images [N, C, H, W], AutoAugment needs images; tabular inputs [N, D] have neither
    (MixUp works on any input). A shape check, no host sync."""
    if kind == "mixup":
        return None
    need = 4 if kind == "autoaugment" else 3
    if len(shape) < need or len(shape) > 4:
        what = "images [N, C, H, W]" if need == 4 else "images [N, C, H, W] or signals [N, C, L]"
        return f"second view ({kind}) needs {what}, but the inputs have shape {tuple(shape)}"
    return None
