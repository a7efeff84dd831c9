"""R2KD (Kim et al. 2023/2024, rank and value distillation with a pruned-ensemble teacher; docs/reference/methods.md
§6).

Three additions to a correlation loss: (1) the teacher signal ṽ = λ·v + (1−λ)·v_P mixes the teacher with a copy whose
10% smallest weights per Conv/Linear layer are zeroed (:mod:`kdlab.teachers.pruned`); (2) an uncentred-cosine value
distance on the probabilities plus a Spearman rank distance; (3) a second, augmented view of the batch that adds
distillation terms only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from kdlab._checks import SettingError
from kdlab.data.second_view import ViewSpec, cutmix_pool, draw_view, most_uncertain, view_input_problem
from kdlab.losses import r2kd_value_loss, spearman_loss
from kdlab.methods.base import (CIFAR_CLASSES, Adaptation, Method, Params, StepOutput, defaults_left,
                                scaled_by_classes)
from kdlab.methods.registry import register
from kdlab.teachers.pruned import PrunedEnsembleTeacher


class R2KDParams(Params):
    """CIFAR-100 defaults: λ=0.7, 10% pruning, T=4, value weight 2, rank weight 2 (hard ranks: logged only), CutMix."""

    lam: float = Field(0.7, ge=0, le=1)  # weight of the unpruned teacher in ṽ
    prune_amount: float = Field(0.1, ge=0, lt=1)  # fraction of each Conv/Linear weight zeroed in the pruned copy
    pruned_bn_mode: Literal["eval", "train"] = "eval"  # "train": the reference code's train-mode BN in the copy
    temperature: float = Field(4.0, gt=0)
    value_weight: float = Field(2.0, ge=0)
    rank_weight: float = Field(2.0, ge=0)
    soft_rank: bool = False  # True: differentiable student rank, the rank term joins the loss
    rank_kappa: float = Field(0.01, gt=0)  # sharpness of the soft rank (only with soft_rank)
    # second view: "none" drops it (L = CE + D(x)); "cutmixpick" keeps the highest-entropy samples of a larger pool
    augment: Literal["none", "cutmix", "mixup", "cutout", "autoaugment", "cutmixpick"] = "cutmix"
    cutmix_alpha: float = Field(1.0, gt=0)  # box area ratio ~ Beta(α, α)
    mixup_alpha: float = Field(0.2, gt=0)  # mixing weight ~ Beta(α, α)
    cutout_size: int = Field(8, ge=1)  # side of the erased square, pixels
    pick_pool: int = Field(2, ge=2)  # cutmixpick: pool of pick_pool·N CutMix samples, the N most uncertain kept
    autoaugment_policy: Literal["cifar10", "imagenet"] = "cifar10"  # the sub-policies AutoAugment draws from
    # autoaugment works on pixel levels, so it must undo the loader's normalisation (defaults: CIFAR-100,
    # docs/reference/methods.md §10)
    input_mean: list[float] = Field(default_factory=lambda: [0.5071, 0.4867, 0.4408], min_length=1)
    input_std: list[float] = Field(default_factory=lambda: [0.2675, 0.2565, 0.2761], min_length=1)
    ce_weight: float = Field(1.0, ge=0)
    logit_standardization: bool = False

    @model_validator(mode="after")
    def _stats(self):
        if len(self.input_mean) != len(self.input_std) or any(s <= 0 for s in self.input_std):
            raise ValueError("input_mean and input_std must have one entry per channel, with every std > 0")
        return self


@register("r2kd")
class R2KD(Method):
    """L = w_ce·CE(z, y) + D(x) + D(x̂), with ṽ = λ·v + (1−λ)·v_P and

    D(u) = w_v·T²·(mean_i d(P^s_i, P̃^t_i) + mean_c d(P^s_:c, P̃^t_:c)) [+ w_r·(1 − mean_i ρ_S(P^s_i, P̃^t_i))],
    d(a, b) = 1 − |⟨a,b⟩|/(‖a‖‖b‖ + 1e-8), P = softmax_T. The rank term is in ``losses`` only with ``soft_rank``;
    with hard ranks (the reference) it has no gradient and is reported in ``logs`` (weighted by w_r).
    No CE on the augmented view x̂ and no warm-up.
    """

    summary = "R2KD (Kim et al. 2023/2024): value and rank distances to a pruned-ensemble teacher, on two views"

    Params = R2KDParams

    @classmethod
    def _adaptations(cls, hp, facts, given):
        """The value weight: w_v·C/100 below CIFAR-100's 100 classes. The value distance d(a, b) = 1 − cos(a, b)
        of a student row a near the teacher's b is ½‖δ⊥‖²/‖b‖², δ⊥ the part of a − b across b, so its curvature in
        the probabilities is 1/‖b‖² ≈ C for a softened row spread over C classes; through the tempered softmax's
        Jacobian (≈ 1/(C·T) per direction) and the T² factor that is w_v/C in the logits, the 1/C of a KL
        (:func:`~kdlab.methods.base.scaled_by_classes`; the class-level columns scale alike). And no second view on
        tabular inputs: the default CutMix pastes a box of another sample, which exists in images [C, H, W] and
        signals [C, L] only; a sample of plain features (input shape (d,)) gets augment "none" (L = CE + D(x), the
        value and rank terms on the clean view)."""
        c = facts.num_classes
        changes = scaled_by_classes(hp, facts, given, "value_weight", c, CIFAR_CLASSES,
                                    f"the value distance's weight for CIFAR-100's 100 classes, scaled by C/100 to {c}")
        if "augment" not in defaults_left(hp, given) or hp.augment != "cutmix" or len(facts.input_shape) >= 2:
            return changes
        return changes + [Adaptation("augment", hp.augment, "none", f"CutMix cuts boxes of images or signals; inputs "
                                                                    f"of shape {tuple(facts.input_shape)} are plain "
                                                                    "features")]

    def __init__(self, student, teacher, num_classes, params):
        super().__init__(student, teacher, num_classes, params)
        # The pruned copy is built once, here, before training. ``self.teacher`` stays the unpruned teacher (what
        # fidelity is measured against); ``teacher_signal`` gives ṽ. A plain attribute like the teacher.
        self.teacher_signal = PrunedEnsembleTeacher(
            teacher, lam=params.lam, amount=params.prune_amount, pruned_bn_mode=params.pruned_bn_mode
        )

    @classmethod
    def second_view_refusal(cls, hp: R2KDParams) -> str | None:
        return "r2kd draws its own second view; set method.args.augment instead"

    def to(self, *args, **kwargs):
        self.teacher_signal.pruned.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def distill(self, z: torch.Tensor, v: torch.Tensor, suffix: str = ""):
        """D(u) for student logits ``z`` and teacher signal ``v``: (loss terms, logged terms)."""
        hp = self.hp
        zs, vs = self.standardize(z, v)
        losses = {f"value{suffix}": hp.value_weight * r2kd_value_loss(zs, vs, temperature=hp.temperature)}
        logs = {}
        if hp.soft_rank:
            losses[f"rank{suffix}"] = hp.rank_weight * spearman_loss(
                zs, vs, temperature=hp.temperature, soft=True, kappa=hp.rank_kappa
            )
        else:
            # hard ranks: constant w.r.t. the student, so adding it to the loss would change nothing but the number
            logs[f"rank{suffix}"] = hp.rank_weight * spearman_loss(zs.detach(), vs, temperature=hp.temperature)
        return losses, logs

    @property
    def view_spec(self) -> ViewSpec | None:
        """How x̂ is drawn (:mod:`kdlab.data.second_view`), None without a second view."""
        hp = self.hp
        if hp.augment == "none":
            return None
        return ViewSpec(hp.augment, cutmix_alpha=hp.cutmix_alpha, mixup_alpha=hp.mixup_alpha,
                        cutout_size=hp.cutout_size, pick_pool=hp.pick_pool, policy=hp.autoaugment_policy,
                        mean=hp.input_mean, std=hp.input_std)

    def second_view(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂, ṽ(x̂)). Augmentations draw from torch's global RNG, so a checkpointed RNG state resumes exactly."""
        spec = self.view_spec
        if spec.kind == "cutmixpick":
            # CutMixPick: keep the N samples of the pool on which the teacher signal softmax(ṽ) has the highest
            # entropy, reusing their teacher logits
            pool, _ = cutmix_pool(spec, x)
            v_pool = self.teacher_signal.logits(pool)
            keep = most_uncertain(v_pool, x.shape[0])
            return pool[keep], v_pool[keep]
        x_hat, _ = draw_view(spec, x)
        return x_hat, self.teacher_signal.logits(x_hat)

    def _check_view_input(self, x: torch.Tensor) -> None:
        problem = view_input_problem(self.hp.augment, x.shape)
        if problem is not None:
            raise SettingError(f"r2kd's {problem}; set {{augment}} to none for other inputs (tabular data)",
                               augment="method.args.augment")

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z = self.student(batch.x)
        v, v_pruned = self.teacher_signal.parts_for_batch(batch)
        losses = {"ce": hp.ce_weight * self.masked_ce(z, batch)}
        terms, logs = self.distill(z, self.teacher_signal.combine(v, v_pruned))
        losses.update(terms)
        if hp.augment != "none":
            self._check_view_input(batch.x)
            x_hat, v_hat = self.second_view(batch.x)
            # a separate student forward: the clean batch's BN statistics are not mixed with the augmented ones
            terms, aug_logs = self.distill(self.student(x_hat), v_hat, suffix="_aug")
            losses.update(terms)
            logs.update(aug_logs)
        return StepOutput(z, losses, v, logs)

    def describe(self) -> dict:
        hp = self.hp
        return {"method": "r2kd", "teacher_signal": f"{hp.lam}*v + {1 - hp.lam:.3g}*v_pruned({hp.prune_amount:.0%})",
                "pruned_bn_mode": hp.pruned_bn_mode, "rank": "soft (optimised)" if hp.soft_rank else "hard (logged)",
                "second_view": hp.augment}
