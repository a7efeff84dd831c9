"""Fidelity by the teacher's confidence and by its entropy: the per-bin analysis that motivates CAKD and R2KD.

CAKD (Zhang et al. 2024) and R2KD (Kim et al. 2023/2024) argue that distillation transfers differently on the samples
the teacher is sure of and on those it is not (``docs/reference/methods.md``). This module sorts the samples of an
evaluation set by the teacher's confidence ``max_c p_c`` and, separately, by its entropy ``H(p) = −Σ_c p_c log p_c``
(nats; ``p = softmax(teacher logits)``), and reports per bin: the sample count, the bin's edges and mean key, the
student's and the teacher's accuracy, their top-1 agreement and the mean KL(teacher ‖ student) at T = 1
(:func:`kdlab.eval.metrics.kl_per_example`, kdlab's one report KL).

Binning: ``n_bins`` **equal-count (quantile)** bins. Teachers are confident on most samples, so equal-width bins on
[0, 1] (as ECE's) leave the low-confidence bins nearly empty and their accuracies noise; quantile bins hold N/B
samples each (up to ties), so every bin's numbers rest on as many samples as the set allows. Edge k is the sorted
key's element ``⌊k·(N−1)/B⌋`` (integer arithmetic: an edge is a real sample's key, no interpolation), bins are
``(e_{k−1}, e_k]`` with the first closed on the left. Equal keys always share a bin, so ties (a constant-confidence
teacher, a set smaller than ``n_bins``) leave some bins empty: their count is 0 and their means are None. The default
of 10 bins matches the reliability bins and leaves about 100 samples per bin on the smallest shipped test set
(MNIST-1D's 1,000).

The result depends only on the set of samples: rows are kept per sample (7 numbers each, not logits) and, under
torchrun, gathered from every rank and put in dataset-index order before binning, so 1 and N processes bin the same
rows in the same order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kdlab import distributed as dist
from kdlab._checks import check_int
from kdlab.eval.metrics import _agree_rows, _check_labels, _check_pair, _sum_dtype, kl_per_example

__all__ = ["KEYS", "BinCollector", "bin_rows", "fidelity_bins", "quantile_edges", "summarize_bins"]

#: what the samples are binned by, and the row column holding it
KEYS = ("confidence", "entropy")
# columns of a row: the two keys, then the per-sample values summed per bin
_LABELLED, _T_CORRECT, _S_CORRECT, _AGREE, _KL = range(2, 7)


def bin_rows(*, teacher_logits: Tensor, student_logits: Tensor, labels: Tensor | None = None) -> Tensor:
    """Per-sample rows ``[N, 7]`` in float64 (float32 on Apple MPS, which has no float64): teacher confidence, teacher entropy, labelled (0/1), teacher correct,
    student correct, top-1 agreement, KL(teacher ‖ student) at T = 1. Without labels the three label columns are 0."""
    t, s = _check_pair(teacher_logits, student_logits, "teacher_logits", "student_logits")
    with torch.no_grad():
        t, s = t.detach(), s.detach()
        log_p = torch.log_softmax(t, dim=1)
        p = log_p.exp()
        conf = p.max(dim=1).values
        # 0·log 0 = 0: a class with zero mass (a −inf logit) adds nothing
        entropy = torch.where(p > 0, -p * log_p, torch.zeros_like(p)).sum(dim=1)
        zeros = torch.zeros_like(conf)
        if labels is None:
            labelled = t_correct = s_correct = zeros
        else:
            y = _check_labels(labels, t.shape[0], t.shape[1], "labels").to(t.device)
            labelled = torch.ones_like(conf)
            t_correct, s_correct = (t.argmax(dim=1) == y).to(conf.dtype), (s.argmax(dim=1) == y).to(conf.dtype)
        cols = [conf, entropy, labelled, t_correct, s_correct, _agree_rows(t, s).to(conf.dtype),
                kl_per_example(t, s, 1.0)]
        return torch.stack([c.to(_sum_dtype(t.device)) for c in cols], dim=1)


def quantile_edges(values: Tensor, n_bins: int) -> Tensor:
    """Edges ``[n_bins + 1]`` of equal-count bins of ``values`` [N]: edge k is the sorted values' element
    ``⌊k·(N−1)/n_bins⌋`` (the first edge is the minimum, the last the maximum)."""
    n_bins = check_int(n_bins, "n_bins", 1)
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"values must be a non-empty 1-D tensor, got shape {tuple(values.shape)}")
    ordered = values.sort().values
    pos = torch.arange(n_bins + 1, device=values.device) * (values.numel() - 1) // n_bins
    return ordered[pos]


def _mean(total: Tensor, count: Tensor, scale: float = 1.0) -> list[float | None]:
    return [None if c == 0 else scale * float(v) / float(c) for v, c in zip(total.tolist(), count.tolist())]


def summarize_bins(rows: Tensor, n_bins: int = 10) -> dict[str, dict[str, Any]]:
    """The per-bin report of :func:`bin_rows`' rows: ``{key: {"edges", "count", "mean", "student_acc",
    "teacher_acc", "agreement", "kl"}}`` for each key of :data:`KEYS`; lists of ``n_bins`` (edges: ``n_bins + 1``),
    accuracy and agreement in percent, None for an empty bin (accuracies: a bin without labelled samples)."""
    n_bins = check_int(n_bins, "n_bins", 1)
    if rows.dim() != 2 or rows.shape[1] != 7 or rows.shape[0] == 0:
        raise ValueError(f"rows must be [N, 7] from bin_rows() with N >= 1, got {tuple(rows.shape)}")
    rows = rows.detach().to("cpu", torch.float64)  # N × 7 numbers: binned on the host, in float64 on every backend
    out: dict[str, dict[str, Any]] = {}
    for col, key in enumerate(KEYS):
        value = rows[:, col].contiguous()
        edges = quantile_edges(value, n_bins)
        # (lo, hi]: bucketize over the inner edges puts a key equal to an edge into the lower bin
        index = torch.bucketize(value, edges[1:-1], right=False)
        onehot = (index.unsqueeze(1) == torch.arange(n_bins)).to(torch.float64)  # [N, B]
        sums = rows.T @ onehot  # [7, B]: one deterministic matmul, no loop over samples or bins
        count = onehot.sum(dim=0)
        labelled = sums[_LABELLED]
        out[key] = {
            "edges": edges.tolist(),
            "count": [int(c) for c in count.round().tolist()],
            "mean": _mean(sums[col], count),
            "student_acc": _mean(sums[_S_CORRECT], labelled, 100.0),
            "teacher_acc": _mean(sums[_T_CORRECT], labelled, 100.0),
            "agreement": _mean(sums[_AGREE], count, 100.0),
            "kl": _mean(sums[_KL], count),
        }
    return out


def fidelity_bins(*, teacher_logits: Tensor, student_logits: Tensor, labels: Tensor | None = None,
                  n_bins: int = 10) -> dict[str, dict[str, Any]]:
    """Per-bin fidelity of a student against its teacher on one set of logits ``[N, C]`` (module docstring):
    :func:`summarize_bins` of :func:`bin_rows`."""
    return summarize_bins(bin_rows(teacher_logits=teacher_logits, student_logits=student_logits, labels=labels),
                          n_bins)


class BinCollector:
    """:func:`fidelity_bins` over a stream of batches: keeps each batch's rows (7 numbers per sample), bins at the
    end. ``index`` (the samples' dataset indices) puts the rows in index order, so that the result under torchrun —
    where :meth:`compute` gathers every rank's rows — equals one process's."""

    def __init__(self, n_bins: int = 10):
        self.n_bins = check_int(n_bins, "n_bins", 1)
        self._rows: list[Tensor] = []
        self._index: list[Tensor] = []

    def update(self, *, teacher_logits: Tensor, student_logits: Tensor, labels: Tensor | None = None,
               index: Tensor | None = None) -> None:
        rows = bin_rows(teacher_logits=teacher_logits, student_logits=student_logits, labels=labels)
        if self._rows and (index is None) != (not self._index):
            raise ValueError("BinCollector.update: give index with every batch or with none")
        self._rows.append(rows)
        if index is not None:
            self._index.append(index.reshape(-1).to(rows.device, rows.dtype))

    def compute(self) -> dict[str, dict[str, Any]]:
        if not self._rows:
            raise ValueError("no batches were collected; call update() with at least one batch before compute()")
        rows = torch.cat(self._rows)
        if self._index:
            rows = torch.cat([torch.cat(self._index).unsqueeze(1), rows], dim=1)
            rows, _ = dist.all_gather_rows(rows)  # every rank's rows (one process: its own)
            rows = rows[rows[:, 0].argsort(stable=True), 1:]
        return summarize_bins(rows, self.n_bins)
