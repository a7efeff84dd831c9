"""CRD (Tian, Krishnan & Isola, ICLR 2020, "Contrastive Representation Distillation"; docs/reference/methods.md
§15), as its released code (RepDistiller ``crd/``, which mdistiller copies) optimises it.

Both networks' pooled features are embedded (linear + L2 normalisation, a trainable embedding each). A memory bank
holds one embedding per training sample and network (momentum-updated with the batch's embeddings after each step).
Each sample's student embedding is scored against the teacher bank's rows of its positive (itself) and of K
negatives — training samples of other classes — and vice versa; the NCE loss (:func:`kdlab.losses.crd_loss`) of
both directions is the CRD term.

What kdlab adds: the negatives are drawn per step from a generator seeded by (a seed drawn at set-up, the step
count), and the bank, its normalising constants, the step count and that seed are buffers of the method, so a
checkpoint holds all of it and a resumed run continues bit for bit. Under DDP every rank draws the negatives of the
whole global batch and keeps its own rows, and the bank is updated with every rank's embeddings (all-gathered), so
W processes train as one does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdlab import distributed as dist
from kdlab._checks import SettingError
from kdlab.data.loader import derive_seed
from kdlab.losses import crd_loss
from kdlab.methods.base import Params, StepOutput
from kdlab.methods.feature import FeatureMethod
from kdlab.methods.registry import register

#: at most this many random keys are drawn at once when sampling negatives without replacement (memory bound)
_KEYS_PER_CHUNK = 1 << 24


class CRDParams(Params):
    """mdistiller's (= RepDistiller's) CIFAR-100 defaults, ``engine/cfg.py``: CE 1, CRD weight 0.8, 128-d
    embeddings, K = 16384 negatives, τ = 0.07, bank momentum 0.5."""

    ce_weight: float = Field(1.0, ge=0)
    crd_weight: float = Field(0.8, ge=0)
    embed_dim: int = Field(128, ge=1)
    num_negatives: int = Field(16384, ge=1)  # K
    temperature: float = Field(0.07, gt=0)  # τ
    momentum: float = Field(0.5, ge=0, lt=1)  # of the memory bank
    # False: K distinct negatives per sample while K ≤ the other classes' samples (the released CIFAR loader's
    # np.random.choice(replace=False)); True: drawn with replacement (its ImageNet loader's, and needed beyond)
    negatives_with_replacement: bool = False


class Embed(nn.Module):
    """x ↦ normalise(W·x + b): the released code's linear embedding with L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


class MemoryBank(nn.Module):
    """One embedding per training sample and network, the normalising constants Z (−1: not yet set), the step
    count and the seed of the negatives: everything a resumed run needs, in the checkpoint."""

    def __init__(self, num_data: int, dim: int, seed: int):
        super().__init__()
        std = 1.0 / math.sqrt(dim / 3)  # the released code's uniform initialisation
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("student", torch.rand(num_data, dim, generator=gen) * (2 * std) - std)
        self.register_buffer("teacher", torch.rand(num_data, dim, generator=gen) * (2 * std) - std)
        self.register_buffer("z", torch.full((2,), -1.0))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))


def _reread_bank(method: "CRD", _incompatible) -> None:
    method._step, method._seed, method._z_ready = None, None, False


@register("crd")
class CRD(FeatureMethod):
    """L = w_ce·CE(z, y) + w_crd·[NCE(f_s vs teacher bank) + NCE(f_t vs student bank)].

    f_s, f_t: the embedded pooled features; each NCE term (:func:`kdlab.losses.crd_loss`) scores the anchor against
    its own row (the positive) and K rows of samples of other classes, logits = f·m/τ, Z fixed on the first batch as
    mean(exp(logits))·N.
    """

    summary = "CRD (Tian et al. ICLR 2020): contrastive NCE between embeddings and a memory bank of every sample"

    Params = CRDParams

    _labels: Tensor | None = None
    _step: int | None = None  # the bank's step count and seed, read from its buffers once (no host sync per step)
    _seed: int | None = None
    _z_ready: bool = False

    def setup_data(self, train) -> None:
        """The training set's size and labels: the bank's rows and the classes the negatives are drawn from."""
        offset = getattr(train, "index_offset", 0)
        if offset:
            raise SettingError(f"crd: the training loader adds index_offset={offset} to its batch indices, so they are "
                               "not the data set's sample indices that CRD's memory bank is keyed by; give the loader "
                               "index_offset=0 (or use another {method})", method="method.name")
        labels = train.labels
        if labels is None:
            raise SettingError("crd: the training data does not give every label up front (its loader's labels are "
                               "unknown), and CRD draws each sample's negatives among the samples of other classes; "
                               "use data whose labels are known before training, or another {method}",
                               method="method.name")
        self._labels = torch.as_tensor(labels).long().reshape(-1).cpu()
        self._num_data = int(self._labels.numel())
        super().setup_data(train)

    def build_extras(self, student: dict, teacher: dict) -> dict[str, nn.Module]:
        if self._labels is None:
            raise RuntimeError("crd: call method.setup_data(train_loader) before setup (kdlab.methods.create(..., "
                               "data=loader, probe=x) does both)")
        d = self.hp.embed_dim
        seed = int(torch.randint(0, 2**62, ()))  # from the run's seeded generator: the same on every rank
        return {"embed_s": Embed(student["pooled"].shape[1], d), "embed_t": Embed(teacher["pooled"].shape[1], d),
                "bank": MemoryBank(self._num_data, d, seed)}

    def setup(self, probe: Tensor) -> None:
        super().setup(probe)
        self.register_load_state_dict_post_hook(_reread_bank)  # a resumed bank: read its step, seed and Z again
        self.bank.float()  # the bank stays float32 whatever the student's dtype
        device = self.bank.student.device
        labels = self._labels.to(device)
        counts = torch.bincount(labels)
        self._sampling = {
            "labels": labels,
            "order": torch.argsort(labels, stable=True),  # sample indices grouped by class
            "start": torch.cumsum(counts, 0) - counts,
            "count": counts,
            "replace": self.hp.negatives_with_replacement
                       or self.hp.num_negatives > self._num_data - int(counts.max()),
        }

    def prepare_distributed(self, device, sync_bn="auto"):
        """Every rank keeps the same bank by updating it with the global batch (no per-step copy from rank 0): rank
        0's bank is broadcast once, and DDP leaves the bank out of its buffer broadcast."""
        dist.broadcast_buffers(self.bank)
        dist.exclude_from_ddp_sync(self, [f"bank.{name}" for name, _ in self.bank.named_buffers()])
        return super().prepare_distributed(device, sync_bn)

    def __call__(self, batch, *args, **kwargs):
        if batch.label_mask is not None:
            raise SettingError("crd: {distill_data} adds inputs that are not training samples of the data set "
                               "(mixed, noise or extra-source inputs), but CRD's memory bank holds one row per "
                               "training sample; remove distill_data or use another method",
                               distill_data="distill_data")
        return super().__call__(batch, *args, **kwargs)

    # ----------------------------------------------------------------------------------------------------------
    def negatives(self, index: Tensor, step: int) -> Tensor:
        """K indices of samples of other classes for each sample ``index`` [G] of the global batch, drawn from a
        generator seeded by (the bank's seed, ``step``): [G, K]."""
        sm, k, n = self._sampling, self.hp.num_negatives, self._num_data
        if self._seed is None:
            self._seed = int(self.bank.seed)
        gen = torch.Generator(device=index.device).manual_seed(derive_seed(self._seed, step))
        y = sm["labels"][index]
        if sm["replace"]:
            # uniform over the N − n_y samples of other classes: skip the block of class y in the class-sorted order
            pos = (torch.rand(index.shape[0], k, generator=gen, device=index.device, dtype=torch.float64)
                   * (n - sm["count"][y]).unsqueeze(1)).long()
            pos = pos + (pos >= sm["start"][y].unsqueeze(1)) * sm["count"][y].unsqueeze(1)
            return sm["order"][pos]
        rows = []  # K distinct: the K largest of uniform keys, own class excluded (chunks bound the memory)
        step_rows = max(1, _KEYS_PER_CHUNK // n)
        for i in range(0, index.shape[0], step_rows):
            yy = y[i:i + step_rows]
            keys = torch.rand(yy.shape[0], n, generator=gen, device=index.device)
            keys.masked_fill_(sm["labels"].unsqueeze(0) == yy.unsqueeze(1), -1.0)
            rows.append(keys.topk(k, dim=1).indices)
        return torch.cat(rows)

    @property
    def dense(self) -> bool:
        """Whether the scores are one product with the whole bank (:meth:`scores`)."""
        return self._num_data <= 8 * (self.hp.num_negatives + 1)

    def scores(self, anchor: Tensor, memory: Tensor, rows: Tensor) -> Tensor:
        """anchor_b · memory[rows_bj] / τ, [B, 1 + K]. When the bank has at most 8 rows per scored one (N ≤ 8(K+1),
        e.g. CIFAR-100's 50000 and 16385) one matrix product with the whole bank is cheaper than gathering B·(K+1)
        rows of it (the released code's way, kept for larger data sets such as ImageNet)."""
        if self.dense:
            return (anchor @ memory.t()).gather(1, rows) / self.hp.temperature
        return torch.bmm(memory[rows], anchor.unsqueeze(2)).squeeze(2) / self.hp.temperature

    def contrast(self, f_s: Tensor, f_t: Tensor, index: Tensor) -> Tensor:
        """Σ of both directions' NCE losses for this rank's samples, then the bank update with the global batch."""
        hp, bank, n = self.hp, self.bank, self._num_data
        f_s, f_t = f_s.float(), f_t.float()
        if self._step is None:  # first step of this process (a fresh run, or a resumed one: the buffers are loaded)
            self._step = int(bank.step)
        step = self._step
        with torch.no_grad():
            # one collective for the global batch's indices and embeddings (float32 holds indices up to 2^24 exactly)
            everyone, offset = dist.all_gather_rows(torch.cat([index.unsqueeze(1).to(f_s.dtype),
                                                               f_s.detach(), f_t.detach()], dim=1))
            all_index = everyone[:, 0].long()
            neg = self.negatives(all_index, step)[offset:offset + index.shape[0]]
            rows = torch.cat([index.unsqueeze(1), neg], dim=1)  # [B, 1 + K]: the positive is the sample itself
        logit_s = self.scores(f_s, bank.teacher, rows)  # student anchor, teacher bank
        logit_t = self.scores(f_t, bank.student, rows)  # teacher anchor, student bank
        if not self._z_ready:  # the first step fixes Z = mean(exp(logits))·N over the global batch
            self._z_ready = bool(bank.z[0] > 0)
        if not self._z_ready:
            with torch.no_grad():
                sums = torch.stack([logit_s.exp().sum(), logit_t.exp().sum(),
                                    torch.tensor(float(logit_s.numel()), device=logit_s.device)]).double()
                sums = dist.all_reduce_sum(sums)
                bank.z.copy_((sums[:2] / sums[2] * n).to(bank.z.dtype))
            self._z_ready = True
        log_z = bank.z.log()
        loss = (crd_loss(logit_s[:, 0], logit_s[:, 1:], n, log_z[0])
                + crd_loss(logit_t[:, 0], logit_t[:, 1:], n, log_z[1]))
        with torch.no_grad():  # momentum update of every sample of the global batch, in global order
            d = f_s.shape[1]
            for name, new in (("student", everyone[:, 1:1 + d]), ("teacher", everyone[:, 1 + d:])):
                memory = getattr(bank, name)
                row = F.normalize(memory[all_index] * hp.momentum + new * (1 - hp.momentum), dim=1)
                if self.dense:  # the scores' backward still reads the whole bank: update a copy
                    setattr(bank, name, memory.index_copy(0, all_index, row))
                else:
                    memory.index_copy_(0, all_index, row)
            bank.step.add_(1)
        self._step += 1
        return loss

    def forward(self, batch, epoch: int) -> StepOutput:
        hp = self.hp
        z, s_feats = self.student_features(batch.x)
        v, t_feats = self.teacher_features(batch.x)
        f_s, f_t = self.embed_s(s_feats["pooled"]), self.embed_t(t_feats["pooled"])
        with torch.autocast(z.device.type, enabled=False):  # exp(f·m/τ) with τ = 0.07 needs float32
            crd = self.contrast(f_s, f_t, batch.index)
        losses = {"ce": hp.ce_weight * self.masked_ce(z, batch), "crd": hp.crd_weight * crd}
        return StepOutput(z, losses, v)
