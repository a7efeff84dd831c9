"""MLKD (Jin, Wang & Lin, CVPR 2023, multi-level logit distillation; docs/reference/methods.md §19).

Each batch is seen twice: the loader's (weak) view and a strong view made here (the released code's
``RandAugment(2, 10)`` with Cutout). Student and teacher run on both; CE on both views, instance-level KD at five
temperatures on both, class- and batch-level alignment on the weak view, confidence masks from the teacher's weak
predictions (``kdlab.losses.mlkd_parts``). The batch-level statistics (masks, Gram matrices) are those of the global
batch under torchrun: the four logit matrices are gathered from every process, so N processes train as one does.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from kdlab import distributed as dist
from kdlab._checks import SettingError
from kdlab.data import randaugment_like, random_cutout
from kdlab.losses import MLKD_TEMPERATURES, mlkd_parts
from kdlab.methods.base import (CIFAR_CLASSES, Adaptation, Method, Params, StepOutput, defaults_left,
                                scaled_by_classes)
from kdlab.methods.registry import register


class MLKDParams(Params):
    """Class defaults: the released CIFAR-100 code (T = 4 then 3, 5, 2, 6; CE 0.1, KD 0.9; RandAugment(2, 10) strong
    view, CIFAR-100 normalisation); ImageNet: T = 1 first, CE 0.5, KD 0.5 (shipped recipes)."""

    temperatures: list[float] = Field(default_factory=lambda: list(MLKD_TEMPERATURES), min_length=1)
    strong_terms: int = Field(3, ge=0)  # the first k temperatures use the strong view (the released code: 3 of 5)
    ce_weight: float = Field(0.1, ge=0)  # on each view
    kd_weight: float = Field(0.9, ge=0)  # on the instance term, and on the class and batch terms unless given
    class_weight: float | None = Field(None, ge=0)  # the class-level term's weight (None: kd_weight, as released)
    batch_weight: float | None = Field(None, ge=0)  # the batch-level term's weight (None: kd_weight, as released)
    # strong view: the released RandAugment + Cutout (images); Cutout alone (any spatial input); none (= weak view)
    strong_augment: Literal["randaugment", "cutout", "none"] = "randaugment"
    n_ops: int = Field(2, ge=0)  # RandAugment: operations per image
    cutout: float = Field(0.5, ge=0, le=1)  # largest Cutout side, a fraction of the image side
    # randaugment works on pixel levels, so it must undo the loader's normalisation (defaults: CIFAR-100,
    # docs/reference/methods.md §10)
    input_mean: list[float] = Field(default_factory=lambda: [0.5071, 0.4867, 0.4408], min_length=1)
    input_std: list[float] = Field(default_factory=lambda: [0.2675, 0.2565, 0.2761], min_length=1)
    logit_standardization: bool = False

    @model_validator(mode="after")
    def _check(self):
        if any(t <= 0 for t in self.temperatures):
            raise ValueError(f"temperatures must all be > 0; got {self.temperatures}")
        if self.strong_terms > len(self.temperatures):
            raise ValueError(f"strong_terms ({self.strong_terms}) cannot exceed the number of temperatures "
                             f"({len(self.temperatures)})")
        if len(self.input_mean) != len(self.input_std) or any(s <= 0 for s in self.input_std):
            raise ValueError("input_mean and input_std must have one entry per channel, with every std > 0")
        return self


@register("mlkd")
class MLKD(Method):
    """L = w_ce·(CE(z_w, y) + CE(z_s, y)) + w_kd·instance + w_class·class + w_batch·batch, the terms of
    :func:`kdlab.losses.mlkd_parts` on the weak view x and the strong view x̂ = strong(x); w_class = w_batch = w_kd
    unless given (the released code)."""

    summary = "MLKD (Jin et al. CVPR 2023): instance, class and batch alignment at 5 temperatures, on weak+strong views"

    Params = MLKDParams

    @classmethod
    def _adaptations(cls, hp, facts, given):
        """The strong view and the three weights, fitted to the data (:meth:`_strong_view_adaptation`,
        :meth:`_weight_adaptations`)."""
        return cls._strong_view_adaptation(hp, facts, given) + cls._weight_adaptations(hp, facts, given)

    @classmethod
    def _strong_view_adaptation(cls, hp, facts, given):
        """RandAugment works on pixel levels of images [C, H, W] whose normalisation it undoes with
        ``input_mean``/``input_std`` (CIFAR-100's 3 channels by default), so other images and signals [C, L] get
        Cutout (it needs no pixel levels) and plain features (d,) get none."""
        shape = tuple(facts.input_shape)
        if "strong_augment" not in defaults_left(hp, given) or hp.strong_augment != "randaugment" or \
                (len(shape) == 3 and shape[0] == len(hp.input_mean)):
            return []
        if len(shape) >= 2:
            return [Adaptation("strong_augment", hp.strong_augment, "cutout",
                               f"RandAugment needs images with {len(hp.input_mean)} channels of known normalisation "
                               f"(input_mean, input_std); inputs of shape {shape} get Cutout")]
        return [Adaptation("strong_augment", hp.strong_augment, "none",
                           f"RandAugment and Cutout need images or signals; inputs of shape {shape} are plain features")]

    @classmethod
    def _weight_adaptations(cls, hp, facts, given):
        """Below CIFAR-100's 100 classes, r = C/100. The instance term is a sum of KLs between full softmaxes, whose
        curvature in the logits is about 1/C: ``kd_weight``·r keeps the recipe's stiffness
        (:func:`~kdlab.methods.base.scaled_by_classes`; at 0.9 the sum of its 7.5 KLs is about as stiff as DKD's β = 8).
        For probabilities off by a relative ε, the class-level gap ‖PᵗᵀPᵗ − PˢᵀPˢ‖²/C grows as N²ε²/C³ and the
        batch-level gap ‖PᵗPᵗᵀ − PˢPˢᵀ‖²/N as Nε²/C², against ε² for the KLs: on 3 classes they are 37 000× and
        1 100× larger beside the instance term than on CIFAR-100 (the released code gives all three one weight, and
        wine diverged at once). Their weights, left unset, get the instance weight times r³ and r²."""
        c, left = facts.num_classes, defaults_left(hp, given)
        if c >= CIFAR_CLASSES:
            return []  # the released ImageNet recipe keeps one weight for all three (its terms are just smaller)
        r = c / CIFAR_CLASSES
        changes = scaled_by_classes(hp, facts, given, "kd_weight", c, CIFAR_CLASSES,
                                    f"the instance KLs' weight for CIFAR-100's 100 classes, scaled by C/100 to {c}")
        kd = changes[0].value if changes else hp.kd_weight
        for key, power, term in (("class_weight", 3, "class-level gap (∝ 1/C³)"),
                                 ("batch_weight", 2, "batch-level gap (∝ 1/C²)")):
            if key in left and getattr(hp, key) is None:
                changes.append(Adaptation(key, None, kd * r ** power,
                                          f"the {term} weighed like the instance term on CIFAR-100: "
                                          f"kd_weight·(C/100)^{power}"))
        return changes

    labels_only_in_ce = True

    @classmethod
    def second_view_refusal(cls, hp: MLKDParams) -> str | None:
        return "mlkd has its own strong view of each batch; set method.args.strong_augment instead"

    @property
    def report_temperature(self) -> float | None:
        return self.hp.temperatures[0]

    def _check_view_input(self, x: torch.Tensor) -> None:
        aug = self.hp.strong_augment
        if aug == "none":
            return
        need = 4 if aug == "randaugment" else 3
        if x.dim() < need or x.dim() > 4:
            what = "images [N, C, H, W]" if need == 4 else "images [N, C, H, W] or signals [N, C, L]"
            raise SettingError(f"mlkd's strong view ({aug}) needs {what}, but the inputs have shape "
                               f"{tuple(x.shape)}; set {{augment}} to cutout (signals) or none",
                               augment="method.args.strong_augment")
        if aug == "randaugment" and x.shape[1] != len(self.hp.input_mean):
            raise SettingError(f"mlkd's strong view needs the loader's normalisation, one {{mean}} and {{std}} entry "
                               f"per channel; the inputs have {x.shape[1]} channels but {len(self.hp.input_mean)} "
                               "are given", mean="method.args.input_mean", std="method.args.input_std")

    def strong_view(self, x: torch.Tensor, rows: tuple[int, int]) -> torch.Tensor:
        """x̂: drawn from torch's global RNG (checkpointed, so a resumed run replays it) for the whole global batch
        (``rows``: this process's offset in it, and its size), this process's rows applied."""
        hp = self.hp
        self._check_view_input(x)
        if hp.strong_augment == "none":
            return x
        if hp.strong_augment == "cutout":
            return random_cutout(x, cutout=hp.cutout, rows=rows)
        return randaugment_like(x, n_ops=hp.n_ops, cutout=hp.cutout, mean=hp.input_mean, std=hp.input_std,
                                rows=rows)

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        rows = dist.batch_rows(batch.x.shape[0], batch.x.device)
        x_strong = self.strong_view(batch.x, rows)
        z_w = self.student(batch.x)
        z_s = self.student(x_strong)  # a second forward: each view's own BatchNorm statistics, as released
        v_w = self.teacher.logits_for_batch(batch)
        v_s = self.teacher.logits(x_strong)
        zw, zs, vw, vs = self.standardize(z_w, z_s, v_w, v_s)
        # the global batch's logits on every process (differentiable, one collective); one process: unchanged
        zw, zs, vw, vs = dist.gather_batch(torch.cat([zw, zs, vw, vs], 1)).split(zw.shape[1], 1)
        instance, class_level, batch_level = mlkd_parts(zw, vw, zs, vs, hp.temperatures, hp.strong_terms)
        losses = {
            "ce": hp.ce_weight * (self.masked_ce(z_w, batch) + self.masked_ce(z_s, batch)),
            "kd": hp.kd_weight * instance,
            "cc": (hp.kd_weight if hp.class_weight is None else hp.class_weight) * class_level,
            "bc": (hp.kd_weight if hp.batch_weight is None else hp.batch_weight) * batch_level,
        }
        return StepOutput(z_w, losses, v_w)

    def describe(self) -> dict:
        hp = self.hp
        return {"method": "mlkd", "temperatures": hp.temperatures,
                "strong_view": f"{hp.strong_augment} (first {hp.strong_terms} temperatures)"}
