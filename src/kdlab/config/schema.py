"""Typed run configuration: one pydantic model per YAML section, unknown keys rejected.

A run file looks like::

    out_dir: runs/mnist1d/kd
    seed: 0
    data:    {name: mnist1d}
    teacher: {arch: mnist1d_cnn, checkpoint: runs/mnist1d/teacher/model.safetensors}
    student: {arch: mnist1d_mlp}
    method:  {name: kd, args: {temperature: 4.0, ce_weight: 0.1, kd_weight: 0.9}}
    optim:   {epochs: 40, batch_size: 64, lr: 0.05, milestones: [30, 35]}

Method arguments are validated against the method's own ``Params`` model (see ``kdlab.methods``), so a typo
in ``method.args`` is an error naming the key, like any other.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, field_validator,
                      model_validator)


class _Strict(BaseModel):
    # allow_inf_nan=False: `optim.lr=.inf` or `.nan` is refused naming the key (JSON has no inf: it was written to
    # config.yaml and final.json as null)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(_Strict):
    # tiny_imagenet / imagenet / imagefolder: the data sets on disk (issue "beyond memory"; loaders in kdlab.data)
    name: Literal["mnist1d", "cifar10", "cifar100", "tiny_imagenet", "imagenet", "imagefolder"] = "mnist1d"
    root: str | None = None  # None: $KDLAB_DATA or ~/.cache/kdlab
    download: bool = False
    url: str | None = None  # CIFAR-10/100 mirror (default: the official archive)
    md5: str | None = None  # expected md5 of a download from `url` (default: the official checksum)
    augment: Literal["default", "none"] = "default"
    train_subset: int | None = Field(default=None, ge=1)  # first n training samples (quick runs)
    test_subset: int | None = Field(default=None, ge=1)
    num_samples: int | None = Field(default=None, ge=20)  # MNIST-1D only: total generated samples
    # on-disk data sets (kdlab.data.image_stream / tiny_imagenet): crop side of imagenet / imagefolder samples,
    # decoding processes per training process (None: from the core count), skip unreadable files (listed in the
    # run's skipped_files.txt) instead of stopping at the first
    image_size: int = Field(default=224, ge=8)
    workers: int | None = Field(default=None, ge=0)
    skip_bad: bool = False


class TeacherCacheConfig(_Strict):
    """Exact teacher-logit cache keyed on (sample, augmentation view); see kdlab.teachers.cache."""

    enabled: bool | Literal["auto"] = "auto"  # auto: on when the method uses only teacher logits of the clean view
    storage: Literal["memory", "mmap"] = "memory"
    # float32: exact (cached training equals live-teacher training); float16/bfloat16 halve the memory and round
    # the stored logits (docs/performance.md gives the measured error); a logit they cannot hold is an error
    dtype: Literal["float16", "bfloat16", "float32"] = "float32"
    path: str | None = None  # mmap file (default: <out_dir>/teacher_cache.bin); shared across runs when set
    # auto: fill every (sample, view) up front when the run would draw most views anyway or the file is shared
    # (teacher.cache.path), else on the fly; the estimate (table size, fill time) is printed before work starts
    fill: Literal["auto", "lazy", "precompute"] = "auto"
    # streamed data (imagenet, imagefolder): a teacher-output store built by `kdlab teacher cache` (a directory).
    # enabled=auto replays its crops and outputs when it fits the run, else runs the live teacher (final.json says
    # which and why); enabled=true makes a store that does not fit an error. See kdlab.teachers.stored.
    store: str | None = None


class ExtraSourceConfig(_Strict):
    """One extra, unlabelled input source mixed into every distillation batch (see kdlab.data.policies).

    kind: ``holdout`` (the held-out part of the train split, needs ``holdout_fraction > 0``), ``shuffled`` (train
    inputs with their positions permuted per sample: same values, no shape — out of domain), ``pool`` (inputs from
    the file ``path``: .pt/.npy/.npz of model-ready, normalised inputs ``[N, *input_shape]``), ``generator``
    (``path`` = "module:function", called as ``fn(n, like, generator) -> Tensor[n, *input_shape]``).
    """

    name: str = Field(min_length=1)  # the source's name, used as key of `temperatures`
    kind: Literal["holdout", "shuffled", "pool", "generator"]
    per_batch: float = Field(default=0.25, gt=0, le=4)  # samples added per batch, as a fraction of the batch size
    path: str | None = None

    @model_validator(mode="after")
    def _path_needed(self):
        if self.kind in ("pool", "generator") and not self.path:
            raise ValueError(f"extra source {self.name!r} of kind {self.kind!r} needs `path`")
        if self.kind in ("holdout", "shuffled") and self.path:
            raise ValueError(f"extra source {self.name!r} of kind {self.kind!r} takes no `path`")
        return self


class DistillDataConfig(_Strict):
    """What the student is distilled on (Stanton et al. 2021, §5 policies); see kdlab.data.policies.

    Defaults: the training split with its standard augmentation, nothing added (``policy == "none"``: the policy
    is off and batches reach the method untouched). The teacher always sees exactly the student's input.
    """

    augment: str = "default"  # "default" (the loader's), "none", or a preset of kdlab.data.presets.PRESETS
    mixup_alpha: float | None = Field(default=None, gt=0)  # input-only MixUp, λ ~ Beta(α, α) per batch; None = off
    mixup_fraction: float = Field(default=1.0, gt=0, le=1)  # share of each batch that is mixed
    mixup_hard_labels: bool = False  # also train CE on mixed samples (label of the larger-weight component)
    noise_prob: float = Field(default=0.0, ge=0, lt=1)  # replace each sample by N(0, noise_std²) noise w.p. p
    noise_std: float = Field(default=1.0, gt=0)
    extra: list[ExtraSourceConfig] = Field(default_factory=list)
    # per-source distillation temperature, keys among "data", "mixup", "noise" and the extra sources' names;
    # when given it must cover every active source (the method's own temperature is not used then)
    temperatures: dict[str, float] = Field(default_factory=dict)
    # split control: the last `holdout_fraction` of the train split is never seen by a teacher trained with this
    # config; the student distils on the teacher's part ("teacher"), the held-out part, or both
    holdout_fraction: float = Field(default=0.0, ge=0, lt=1)
    split: Literal["teacher", "holdout", "both"] = "teacher"
    # R2KD's second, augmented view x̂ for any logit method (kdlab.methods.second_view): L = L(x) + w·D(x̂), the
    # method's own loss without CE on (student(x̂), teacher(x̂)); defaults: R2KD's CIFAR-100 values
    second_view: Literal["none", "cutmix", "mixup", "cutout", "autoaugment", "cutmixpick"] = "none"
    second_view_weight: float = Field(default=1.0, gt=0)  # w
    second_view_cutmix_alpha: float = Field(default=1.0, gt=0)  # cutmix, cutmixpick: box area ratio ~ Beta(α, α)
    second_view_mixup_alpha: float = Field(default=0.2, gt=0)  # mixup: λ ~ Beta(α, α)
    second_view_cutout_size: int = Field(default=8, ge=1)  # cutout: side of the erased square, pixels
    second_view_pick_pool: int = Field(default=2, ge=2)  # cutmixpick: pool of k·N CutMix samples, N most uncertain
    second_view_policy: Literal["cifar10", "imagenet"] = "cifar10"  # autoaugment: the AutoAugment policy

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: t for k, t in v.items() if not t > 0}
        if bad:
            raise ValueError(f"temperatures must be > 0, got {bad}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        names = [e.name for e in self.extra]
        if len(set(names)) != len(names) or set(names) & {"data", "mixup", "noise"}:
            raise ValueError(f"extra source names must be unique and not 'data'/'mixup'/'noise', got {names}")
        if self.split != "teacher" and self.holdout_fraction == 0:
            raise ValueError(f"distill_data.split={self.split!r} needs distill_data.holdout_fraction > 0")
        if any(e.kind == "holdout" for e in self.extra) and self.holdout_fraction == 0:
            raise ValueError("an extra source of kind 'holdout' needs distill_data.holdout_fraction > 0")
        if self.mixup_hard_labels and self.mixup_alpha is None:
            raise ValueError("distill_data.mixup_hard_labels is set but MixUp is off (set mixup_alpha)")
        unused = [k for k, kinds in _VIEW_KEYS.items()
                  if self.second_view not in kinds and getattr(self, k) != type(self).model_fields[k].default]
        if unused:
            raise ValueError(f"distill_data.{unused[0]} is set but distill_data.second_view is {self.second_view!r}, "
                             f"which does not use it (it belongs to {' or '.join(_VIEW_KEYS[unused[0]])})")
        if self.second_view != "none" and self.temperatures:
            raise ValueError("distill_data.second_view has no source temperature (x̂ is drawn from every source); "
                             "remove distill_data.temperatures or the second view")
        if self.temperatures:
            missing = [s for s in self.sources() if s not in self.temperatures]
            unknown = [s for s in self.temperatures if s not in self.sources()]
            if missing or unknown:
                raise ValueError(f"distill_data.temperatures must name exactly the active sources {self.sources()}; "
                                 f"missing {missing}, unknown {unknown}")
        return self

    def sources(self) -> list[str]:
        """The active input sources of a distillation batch."""
        out = ["data"]
        if self.mixup_alpha is not None:
            out.append("mixup")
        if self.noise_prob > 0:
            out.append("noise")
        return out + [e.name for e in self.extra]

    @property
    def policy(self) -> str:
        """"none" when every option that rewrites the batches is at its default (batches pass untouched), else
        "custom". The second view does not rewrite them: it adds a term (kdlab.methods.second_view)."""
        views = {k: type(self).model_fields[k].default for k in ("second_view", *_VIEW_KEYS)}
        return "none" if self.model_copy(update=views) == DistillDataConfig() else "custom"


#: the second view's parameters and the views that use them (anything else refuses a non-default value)
_VIEW_KEYS = {
    "second_view_weight": ("cutmix", "mixup", "cutout", "autoaugment", "cutmixpick"),
    "second_view_cutmix_alpha": ("cutmix", "cutmixpick"),
    "second_view_mixup_alpha": ("mixup",),
    "second_view_cutout_size": ("cutout",),
    "second_view_pick_pool": ("cutmixpick",),
    "second_view_policy": ("autoaugment",),
}


class ModelFactory(_Strict):
    """A network built by its own library: ``factory`` (``timm.create_model``, ``torchvision.models.resnet18``,
    ``pkg.module:attr``, ``my_nets.py:build``) called with exactly ``args`` (kdlab.models.factory)."""

    factory: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)


def _arch_kind(value: Any) -> str | None:
    return "factory" if isinstance(value, (dict, ModelFactory)) else "name" if isinstance(value, str) else None


# a zoo name (kdlab.models.names()) or a factory; tagged so that an error names `arch.factory`, not a union member
Arch = Annotated[Union[Annotated[str, Tag("name")], Annotated[ModelFactory, Tag("factory")]],
                 Discriminator(_arch_kind, custom_error_type="arch", custom_error_message=(
                     "must be a model name (kdlab.models.names()) or {factory: IMPORT.STRING, args: {...}}"))]


class TeacherConfig(_Strict):
    """The frozen teacher of a distillation run (and the network ``kdlab teacher`` trains: ``arch``)."""

    arch: Arch | None = None
    # weights: kdlab's .safetensors (arch read from its metadata), or any safetensors / PyTorch (.pth/.pt/.tar,
    # torch.load(weights_only=True)) state dict, torchvision's or RepDistiller's included: then `arch` is required
    checkpoint: str | None = None
    # `kdlab teacher` only: start the network it trains from these weights (a weights file, as `checkpoint`), the
    # classifier replaced when the data has another class count (fine-tuning; kdlab.models.pretrained)
    pretrained: str | None = None
    # an ensemble teacher: several checkpoints, combined by `ensemble_rule`
    checkpoints: list[str] | None = None
    ensemble_rule: Literal["prob", "tempered_prob", "logit"] = "prob"
    ensemble_temperature: float | None = Field(default=None, gt=0)  # only for tempered_prob
    cache: TeacherCacheConfig = Field(default_factory=TeacherCacheConfig)

    @model_validator(mode="after")
    def _one_source(self):
        if self.checkpoint is not None and self.checkpoints is not None:
            raise ValueError("give either `checkpoint` or `checkpoints`, not both")
        return self


class StudentConfig(_Strict):
    """The network a distillation run trains."""

    arch: Arch | None = None
    # a warm start: the student's initial weights from a file (the same formats and key mapping as
    # teacher.checkpoint); None = a random initialisation drawn from the seed
    checkpoint: str | None = None
    # θ = λ·θ_teacher + (1−λ)·θ_random (same architecture as the teacher), None = random init
    init_from_teacher: float | None = Field(default=None, ge=0, le=1)
    # start from pretrained weights with the classifier replaced for the data's classes (as teacher.pretrained)
    pretrained: str | None = None

    @model_validator(mode="after")
    def _one_start(self):
        given = [k for k in ("checkpoint", "init_from_teacher", "pretrained") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one way to start the student, not {' and '.join(given)}")
        return self


class _Given(_Strict):
    # the args written in the config or passed to kdlab.fit (None: unknown, taken as all); not dumped: the others
    # hold defaults that the method may adapt to the data (Method.adapt), recorded in final.json
    _given: list[str] | None = PrivateAttr(default=None)

    @property
    def given(self) -> list[str] | None:
        return self._given

    @given.setter
    def given(self, keys: list[str] | None) -> None:
        self._given = keys


class AddedMethod(_Given):
    """A method whose distillation terms are added to the run's method (``method.add``), as the papers combine
    them (WTTM + CRD, DHKD + ReviewKD, KD + AT). Its own CE term is not counted again."""

    name: str
    weight: float = Field(default=1.0, gt=0)  # multiplies each of its terms
    args: dict[str, Any] = Field(default_factory=dict)


class MethodConfig(_Given):
    name: str = "kd"
    args: dict[str, Any] = Field(default_factory=dict)
    add: list[AddedMethod] = Field(default_factory=list)


class OptimConfig(_Strict):
    epochs: int = Field(default=240, ge=1)
    batch_size: int = Field(default=64, ge=1)
    # adamw: betas (0.9, 0.999), decoupled weight decay; dot: the distillation-oriented trainer (Zhao et al. ICCV
    # 2023), SGD with momentum μ − Δ on the CE gradient and μ + Δ on the distillation gradient (kdlab.engine.dot)
    optimizer: Literal["sgd", "adamw", "dot"] = "sgd"
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)  # SGD and DOT
    dot_delta: float = Field(default=0.075, ge=0, lt=1)  # DOT's Δ (published: 0.075 on CIFAR-100, 0.09 on ImageNet)
    nesterov: bool = False  # SGD only
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Literal["step", "cosine", "constant"] = "step"
    milestones: list[int] = Field(default_factory=lambda: [150, 180, 210])  # step: lr ×gamma after each
    gamma: float = Field(default=0.1, gt=0)
    warmup_epochs: int = Field(default=0, ge=0)  # linear lr warm-up: epoch e <= w runs at lr·e/w
    grad_clip: float | None = Field(default=None, gt=0)  # clip the global gradient norm to this (None: off)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(v, v[1:])) or any(m < 1 for m in v):
            raise ValueError("milestones must be positive and strictly increasing")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.optimizer != "sgd" and self.nesterov:
            raise ValueError(f"nesterov applies to SGD only, not to optimizer {self.optimizer!r}")
        if self.optimizer == "dot" and not 0 <= self.momentum - self.dot_delta <= self.momentum + self.dot_delta < 1:
            raise ValueError(f"optimizer dot uses momenta momentum − dot_delta = {self.momentum - self.dot_delta:g} and "
                             f"momentum + dot_delta = {self.momentum + self.dot_delta:g}; both must lie in [0, 1)")
        if self.optimizer == "dot" and self.grad_clip is not None:
            raise ValueError("grad_clip does not apply to optimizer dot (it keeps two gradients); remove one of them")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be below epochs={self.epochs}")
        return self


class EvalConfig(_Strict):
    every: int = Field(default=1, ge=1)  # evaluate every N epochs (and always after the last)
    batch_size: int = Field(default=512, ge=1)
    # the last evaluation of a distillation run also reports fidelity per bin of the teacher's confidence and of its
    # entropy, in this many equal-count bins (kdlab.eval.bins; final.json "fidelity_bins"); 0: off
    bins: int = Field(default=10, ge=0)


class RunOptions(_Strict):
    device: str = "cpu"
    progress: bool = True
    tensorboard: bool | Literal["auto"] = "auto"
    # draw curves.png at the end of the run (matplotlib: ~0.7 s per process); `kdlab plot RUN` draws it any time
    curves: bool = False
    deterministic: bool = True
    threads: int | None = Field(default=None, ge=1)
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast (CUDA)
    channels_last: bool = False  # CUDA image models
    compile: bool = False  # torch.compile the student's forward
    # torchrun: BatchNorm statistics over the global batch (auto/true: whenever there are several processes and the
    # student or the method's extras have BatchNorm; false: each rank normalises by its own shard, not 1 process)
    sync_bn: bool | Literal["auto"] = "auto"
    # torchrun: seconds a rank waits for the others (joining, collectives) before failing with a clear error
    dist_timeout: float = Field(default=1800.0, gt=0)
    # when the divergence guard (kdlab.engine.guard) finds a collapsed run: stop (exit code 4, the last good
    # checkpoint kept) or warn and train on
    on_divergence: Literal["stop", "warn"] = "stop"
    # every N steps, the cosine between the gradients of each pair of loss terms, per parameter group (classifier,
    # backbone, extras), logged per epoch (kdlab.engine.conflict); 0: off. Measuring never changes the training step
    grad_conflict_every: int = Field(default=0, ge=0)


class RunConfig(_Strict):
    out_dir: str = "runs/default"
    seed: int = Field(default=0, ge=0, le=2**63 - 1)  # what torch.manual_seed takes
    data: DataConfig = Field(default_factory=DataConfig)
    distill_data: DistillDataConfig = Field(default_factory=DistillDataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    run: RunOptions = Field(default_factory=RunOptions)

    @field_validator("out_dir")
    @classmethod
    def _names_a_directory(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a directory (it is empty)")
        return v
