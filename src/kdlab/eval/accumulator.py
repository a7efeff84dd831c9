"""Streaming fidelity/accuracy metrics as per-example sums that stay on the device.

``docs/reference/fidelity.md``: metrics are accumulated per example over the whole source, never as a mean of batch
means. Each accumulator keeps one flat tensor of running sums (counts, Σ KL, Σ NLL, per-bin ECE sums, ...). ``update``
adds one batch's sums with tensor ops only (no ``.item()``, so no host sync on a GPU); ``compute`` reads the tensor
once. Because everything is a sum, results do not depend on the batch size, two accumulators ``merge`` by addition, and
distributed ranks combine with a single ``all_reduce`` of :meth:`sum_tensor`.

Labels are range-checked lazily: out-of-range labels are counted on the device and reported by ``compute``, as are
rows with NaN or +inf logits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kdlab._checks import check_int, check_positive
from kdlab.eval.metrics import (
    _agree_rows,
    _bin_sums,
    _check_labels,
    _check_logits,
    _check_pair,
    _confidence_correct,
    _ece_from_sums,
    _l2_rows,
    _nll_rows,
    _sum_dtype,
    _topk_rows,
    kl_per_example,
)

__all__ = ["AccuracyAccumulator", "FidelityAccumulator", "NonFiniteLogits"]


class NonFiniteLogits(ValueError):
    """``bad`` of ``n`` examples had NaN or +inf logits (the training loop turns it into a stop of a diverged run)."""

    def __init__(self, bad: int, n: int):
        super().__init__(f"{bad} of {n} examples had NaN or +inf logits, so the metrics would be NaN; check the models "
                         "(diverged weights?) and the inputs")
        self.bad, self.n = bad, n


def _classifier_fields(prefix: str, n_bins: int) -> list[tuple[str, int]]:
    return [(f"{prefix}correct", 1), (f"{prefix}nll", 1), (f"{prefix}bins", 3 * n_bins)]


def _classifier_sums(logits: Tensor, y: Tensor, n_bins: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """Σ correct, Σ −log p(y|x) and the [3, n_bins] ECE bin sums of one batch (labels already clamped)."""
    conf, correct = _confidence_correct(logits, y)
    return {
        "correct": correct.sum(),
        "nll": _nll_rows(logits, y).to(dtype).sum(),
        "bins": _bin_sums(conf, correct, n_bins, dtype),
    }


def _classifier_metrics(v: dict[str, Tensor], prefix: str, n: float) -> tuple[float, float, float]:
    """(accuracy %, mean NLL, ECE) from the sums of :func:`_classifier_sums`; NaN when no labelled example."""
    if n == 0:
        return math.nan, math.nan, math.nan
    bins = v[f"{prefix}bins"].reshape(3, -1)
    return 100.0 * v[f"{prefix}correct"].item() / n, v[f"{prefix}nll"].item() / n, _ece_from_sums(bins, n).item()


class _SumAccumulator:
    """One flat tensor of running sums with named slices; subclasses define the fields, ``update`` and ``compute``."""

    def __init__(self, fields: list[tuple[str, int]], device=None):
        self._device = torch.device(device) if device is not None else None
        self._slices: dict[str, slice] = {}
        offset = 0
        for name, size in fields:
            self._slices[name] = slice(offset, offset + size)
            offset += size
        self._size = offset
        self._sums: Tensor | None = None  # created on the first update's device (or ``device``)

    # -- subclass hooks ------------------------------------------------------------------------------------------
    def config(self) -> dict:
        """Constructor arguments that define the layout; accumulators merge only when these are equal."""
        raise NotImplementedError

    # -- sums ----------------------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Length of :meth:`sum_tensor`."""
        return self._size

    def _add(self, parts: dict[str, Tensor], device: torch.device) -> None:
        dtype = _sum_dtype(device)
        missing = set(self._slices) ^ set(parts)
        assert not missing, f"internal: fields {sorted(missing)} do not match the layout"
        vec = torch.cat([parts[name].to(dtype).reshape(-1) for name in self._slices])
        if self._device is not None:
            vec = vec.to(self._device)
        # Out of place on purpose: the running tensor may have been created under inference_mode, and in-place
        # updates of inference tensors are refused outside it.
        self._sums = vec if self._sums is None else self._sums + vec.to(self._sums.dtype)

    def _values(self) -> dict[str, Tensor]:
        if self._sums is None:
            raise ValueError("no examples were accumulated; call update() with at least one batch before compute()")
        v = self._sums.detach().to("cpu", torch.float64)  # the one host transfer
        return {name: v[sl] if sl.stop - sl.start > 1 else v[sl.start] for name, sl in self._slices.items()}

    def _raise_on_bad_rows(self, v: dict[str, Tensor], num_classes: int) -> None:
        bad_labels, bad_logits, n = int(v["bad_labels"]), int(v["bad_logits"]), int(v["n"])
        if bad_labels:
            raise ValueError(
                f"{bad_labels} of {n} labels were outside [0, {num_classes - 1}] for num_classes={num_classes}; "
                "check the labels or the model's number of classes"
            )
        if bad_logits:
            raise NonFiniteLogits(bad_logits, n)

    def reset(self) -> None:
        """Forget all accumulated examples."""
        self._sums = None

    def sum_tensor(self, device=None) -> Tensor:
        """A copy of the flat sum tensor (zeros before any update), e.g. for ``torch.distributed.all_reduce``."""
        if self._sums is None:
            where = torch.device(device) if device is not None else (self._device or torch.device("cpu"))
            return torch.zeros(self._size, dtype=_sum_dtype(where), device=where)
        out = self._sums.detach().clone()
        return out if device is None else out.to(device)

    def load_sum_tensor(self, sums: Tensor) -> None:
        """Replace the running sums with ``sums`` (a tensor from :meth:`sum_tensor`, possibly all-reduced)."""
        if not isinstance(sums, Tensor) or sums.dim() != 1 or sums.shape[0] != self._size:
            shape = tuple(sums.shape) if isinstance(sums, Tensor) else type(sums).__name__
            raise ValueError(
                f"sums must be a 1-D tensor of length {self._size} from sum_tensor() of an accumulator with the "
                f"same config {self.config()}, got {shape}"
            )
        if not sums.is_floating_point():
            raise ValueError(f"sums must be a floating-point tensor, got dtype {sums.dtype}")
        sums = sums.detach().clone()
        self._sums = sums if self._device is None else sums.to(self._device)

    @classmethod
    def from_sum_tensor(cls, sums: Tensor, **config):
        """Build an accumulator with ``config`` (the constructor arguments) holding ``sums``."""
        acc = cls(**config)
        acc.load_sum_tensor(sums)
        return acc

    def state(self) -> dict:
        """``{"config": constructor arguments, "sums": CPU sum tensor}``; restore with :meth:`from_state`."""
        return {"config": self.config(), "sums": self.sum_tensor().cpu()}

    @classmethod
    def from_state(cls, state: dict):
        """Inverse of :meth:`state`."""
        if not isinstance(state, dict) or set(state) != {"config", "sums"}:
            raise ValueError("state must be a dict with keys 'config' and 'sums', as returned by state()")
        return cls.from_sum_tensor(state["sums"], **state["config"])

    def merge(self, other) -> "_SumAccumulator":
        """Add ``other``'s sums to this accumulator (same class and config) and return ``self``."""
        if type(other) is not type(self):
            raise ValueError(f"can only merge a {type(self).__name__}, got {type(other).__name__}")
        if other.config() != self.config():
            raise ValueError(f"cannot merge accumulators with different configs: {self.config()} vs {other.config()}")
        if other._sums is None:
            return self
        if self._sums is None:
            self._sums = other._sums.detach().clone()
            if self._device is not None:
                self._sums = self._sums.to(self._device)
        else:
            self._sums = self._sums + other._sums.to(self._sums.device, self._sums.dtype)
        return self

    def all_reduce(self, group=None) -> None:
        """Sum the running sums over all ranks of ``group`` (no-op when torch.distributed is not initialised).

        Every rank must call this, including ranks that saw no batch; on NCCL pass ``device`` to the constructor
        so that such a rank's zero tensor lives on its GPU.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        sums = self.sum_tensor()
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
        self._sums = sums


class FidelityAccumulator(_SumAccumulator):
    """Teacher–student fidelity, accuracy and calibration summed per example (Stanton et al., NeurIPS 2021, §3).

    ``compute()`` returns ``n``, ``n_labeled``, ``agreement`` and ``top{k}_agreement`` (percent), ``kl`` =
    mean KL(softmax(t) ‖ softmax(s)) at T=1, ``kl_T{T}`` (same at the training temperature, no T², only when
    ``temperature`` is given), ``logit_l2`` (mean ‖t − s‖₂), and for ``student``/``teacher``: ``_acc`` (percent),
    ``_nll`` (mean −log p(y|x)) and ``_ece`` (fraction, ``n_bins`` equal-width bins (lo, hi]). Label metrics are
    over the ``n_labeled`` examples whose batch had labels (NaN if none).
    """

    def __init__(self, num_classes: int, temperature: float | None = None, topk: int = 5, n_bins: int = 10,
                 device=None):
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.temperature = None if temperature is None else check_positive(temperature, "temperature")
        self.topk = check_int(topk, "topk", 1)
        self.n_bins = check_int(n_bins, "n_bins", 1)
        fields = [("n", 1), ("n_labeled", 1), ("bad_labels", 1), ("bad_logits", 1), ("agree", 1), ("topk", 1),
                  ("kl", 1), ("l2", 1)]
        if self.temperature is not None:
            fields.append(("kl_T", 1))
        fields += _classifier_fields("t_", self.n_bins) + _classifier_fields("s_", self.n_bins)
        super().__init__(fields, device)

    def config(self) -> dict:
        return {"num_classes": self.num_classes, "temperature": self.temperature, "topk": self.topk,
                "n_bins": self.n_bins}

    @property
    def kl_temperature_key(self) -> str | None:
        """Report key of the KL at the training temperature, e.g. ``"kl_T4"`` (None without a temperature)."""
        return None if self.temperature is None else f"kl_T{self.temperature:g}"

    def update(self, *, teacher_logits: Tensor, student_logits: Tensor, labels: Tensor | None = None) -> None:
        """Add one batch: logits ``[B, num_classes]`` for the same inputs, labels ``[B]`` (or None if unlabelled)."""
        t, s = _check_pair(teacher_logits, student_logits, "teacher_logits", "student_logits")
        if t.shape[1] != self.num_classes:
            raise ValueError(
                f"teacher_logits and student_logits have {t.shape[1]} classes but the accumulator was built for "
                f"num_classes={self.num_classes}"
            )
        n, device = t.shape[0], t.device
        dtype = _sum_dtype(device)
        with torch.no_grad():  # the student's logits may come from a training step; never extend its graph
            t, s = t.detach(), s.detach()
            inf = float("inf")
            parts = {
                "n": torch.full((), n, dtype=dtype, device=device),
                "bad_logits": (~((t < inf).all(dim=1) & (s < inf).all(dim=1))).sum(),  # NaN < inf is False
                "agree": _agree_rows(t, s).sum(),
                "topk": _topk_rows(t, s, self.topk).sum(),
                "kl": kl_per_example(t, s, 1.0).to(dtype).sum(),
                "l2": _l2_rows(t, s).to(dtype).sum(),
            }
            if self.temperature is not None:
                parts["kl_T"] = kl_per_example(t, s, self.temperature).to(dtype).sum()
            if labels is None:
                parts["n_labeled"] = torch.zeros((), dtype=dtype, device=device)
                parts["bad_labels"] = torch.zeros((), dtype=dtype, device=device)
                for prefix in ("t_", "s_"):
                    for name, size in _classifier_fields(prefix, self.n_bins):
                        parts[name] = torch.zeros(size, dtype=dtype, device=device)
            else:
                y = _check_labels(labels, n, self.num_classes, "labels", check_range=False).to(device)
                valid = (y >= 0) & (y < self.num_classes)
                # Clamp so gather cannot fail on the device; compute() raises if any label was out of range.
                y = y.clamp(0, self.num_classes - 1)
                parts["n_labeled"] = torch.full((), n, dtype=dtype, device=device)
                parts["bad_labels"] = (~valid).sum()
                for prefix, logits in (("t_", t), ("s_", s)):
                    for name, value in _classifier_sums(logits, y, self.n_bins, dtype).items():
                        parts[prefix + name] = value
            self._add(parts, device)

    def compute(self) -> dict:
        """The metrics over every example seen so far (one host transfer); see the class docstring for keys."""
        v = self._values()
        self._raise_on_bad_rows(v, self.num_classes)
        n, n_lab = v["n"].item(), v["n_labeled"].item()
        if n == 0:
            raise ValueError("no examples were accumulated (only empty batches); compute() needs at least one")
        t_acc, t_nll, t_ece = _classifier_metrics(v, "t_", n_lab)
        s_acc, s_nll, s_ece = _classifier_metrics(v, "s_", n_lab)
        out = {
            "n": int(round(n)),
            "n_labeled": int(round(n_lab)),
            "agreement": 100.0 * v["agree"].item() / n,
            f"top{self.topk}_agreement": 100.0 * v["topk"].item() / n,
            "kl": v["kl"].item() / n,
        }
        if self.temperature is not None:
            out[self.kl_temperature_key] = v["kl_T"].item() / n
        out.update({
            "logit_l2": v["l2"].item() / n,
            "student_acc": s_acc,
            "teacher_acc": t_acc,
            "student_nll": s_nll,
            "teacher_nll": t_nll,
            "student_ece": s_ece,
            "teacher_ece": t_ece,
        })
        return out


class AccuracyAccumulator(_SumAccumulator):
    """Accuracy (percent), mean NLL and ECE (fraction, ``n_bins`` bins (lo, hi]) of one classifier, summed per
    example exactly as the student/teacher columns of :class:`FidelityAccumulator`."""

    def __init__(self, num_classes: int, n_bins: int = 10, device=None):
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.n_bins = check_int(n_bins, "n_bins", 1)
        fields = [("n", 1), ("bad_labels", 1), ("bad_logits", 1)] + _classifier_fields("", self.n_bins)
        super().__init__(fields, device)

    def config(self) -> dict:
        return {"num_classes": self.num_classes, "n_bins": self.n_bins}

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add one batch of logits ``[B, num_classes]`` and labels ``[B]``."""
        logits = _check_logits(logits, "logits")
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits have {logits.shape[1]} classes but the accumulator was built for "
                f"num_classes={self.num_classes}"
            )
        n, device = logits.shape[0], logits.device
        dtype = _sum_dtype(device)
        with torch.no_grad():
            logits = logits.detach()
            y = _check_labels(labels, n, self.num_classes, "labels", check_range=False).to(device)
            valid = (y >= 0) & (y < self.num_classes)
            parts = {
                "n": torch.full((), n, dtype=dtype, device=device),
                "bad_labels": (~valid).sum(),
                "bad_logits": (~(logits < float("inf")).all(dim=1)).sum(),
            }
            parts.update(_classifier_sums(logits, y.clamp(0, self.num_classes - 1), self.n_bins, dtype))
            self._add(parts, device)

    def compute(self) -> dict:
        """``{"n", "acc", "nll", "ece"}`` over every example seen so far."""
        v = self._values()
        self._raise_on_bad_rows(v, self.num_classes)
        n = v["n"].item()
        if n == 0:
            raise ValueError("no examples were accumulated (only empty batches); compute() needs at least one")
        acc, nll_, ece_ = _classifier_metrics(v, "", n)
        return {"n": int(round(n)), "acc": acc, "nll": nll_, "ece": ece_}
