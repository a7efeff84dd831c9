"""Fidelity and calibration metrics, as pure functions of logits.

Fidelity (does the student reproduce the teacher?) follows Stanton et al., "Does Knowledge Distillation Really
Work?" (NeurIPS 2021, §3): top-1 agreement and the predictive KL(teacher ‖ student). Calibration (ECE) follows
Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017, §2) with the bin convention of
``docs/reference/fidelity.md``. Linear CKA follows Kornblith et al., "Similarity of Neural Network Representations
Revisited" (ICML 2019, §3).

Conventions shared by every function here:

- logits are ``[N, C]``; the teacher comes first (``t``), the student second (``s``);
- float16/bfloat16 inputs are computed in float32, float32/float64 inputs in their own precision;
- sums over examples (bins, CKA) are taken in float64;
- ties in an argmax go to the lowest class index (``torch.argmax``), for teacher and student alike;
- agreement and accuracy are percentages in [0, 100]; ECE is a fraction in [0, 1];
- functions returning a single number return a Python ``float``; ``reduction="none"`` returns a tensor ``[N]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab._checks import check_int, check_positive

__all__ = [
    "accuracy",
    "agreement",
    "ece",
    "linear_cka",
    "logit_l2",
    "nll",
    "predictive_kl",
    "reliability_bins",
    "topk_agreement",
]

_REDUCTIONS = ("mean", "none")


# --------------------------------------------------------------------------------------------------------------
# validation (shared with the accumulator)
# --------------------------------------------------------------------------------------------------------------
def _sum_dtype(device: torch.device) -> torch.dtype:
    """Dtype for sums over examples: float64, except on backends without it (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _check_logits(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of logits [N, C], got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(
            f"{name} must be a 2-D tensor of logits [N, C], got shape {tuple(x.shape)}; "
            "flatten extra dimensions or add the batch dimension"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor of logits, got dtype {x.dtype}; cast it with .float()"
        )
    if x.shape[1] < 1:
        raise ValueError(f"{name} has no classes (shape {tuple(x.shape)}); logits need at least one column")
    # Half precision loses too much in log-softmax/KL: compute in float32 ("float32 or wider",
    # docs/reference/methods.md §1).
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_pair(t: Tensor, s: Tensor, t_name: str = "t_logits", s_name: str = "s_logits") -> tuple[Tensor, Tensor]:
    t = _check_logits(t, t_name)
    s = _check_logits(s, s_name)
    if t.shape != s.shape:
        raise ValueError(
            f"{t_name} and {s_name} must have the same shape [N, C], got {tuple(t.shape)} and {tuple(s.shape)}; "
            "teacher and student must be evaluated on the same examples and predict the same classes"
        )
    if t.device != s.device:
        raise ValueError(f"{t_name} is on {t.device} but {s_name} is on {s.device}; move both to one device")
    dtype = torch.promote_types(t.dtype, s.dtype)
    return t.to(dtype), s.to(dtype)


def _check_labels(y: Tensor, n: int, num_classes: int, name: str = "y", check_range: bool = True) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices [N], got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape [N] = [{n}] (one class index per logit row), got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}; pass y.long()")
    y = y.long()
    if check_range and n > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} must hold class indices in [0, {num_classes - 1}] for {num_classes} classes, "
                f"got values in [{lo}, {hi}]"
            )
    return y


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _mean(values: Tensor, what: str) -> float:
    if values.numel() == 0:
        raise ValueError(f"cannot compute {what} of zero examples; pass at least one row of logits")
    return values.to(_sum_dtype(values.device)).mean().item()


def _reduce(values: Tensor, reduction: str, what: str):
    return values if reduction == "none" else _mean(values, what)


# --------------------------------------------------------------------------------------------------------------
# per-example kernels (no validation; inputs already checked). The accumulator sums exactly these.
# --------------------------------------------------------------------------------------------------------------
def _agree_rows(t: Tensor, s: Tensor) -> Tensor:
    return t.argmax(dim=1) == s.argmax(dim=1)


def _topk_rows(t: Tensor, s: Tensor, k: int) -> Tensor:
    # Rank of the teacher's top-1 class j in the student's logits, with ties broken towards the lower class index
    # (the order a stable descending sort gives). This matches argmax's tie rule, so k=1 equals top-1 agreement,
    # and is O(N·C) without a sort.
    j = t.argmax(dim=1, keepdim=True)
    s_j = s.gather(1, j)
    cls = torch.arange(s.shape[1], device=s.device)
    ahead = (s > s_j) | ((s == s_j) & (cls < j))
    return ahead.sum(dim=1) < k


def kl_per_example(t: Tensor, s: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-example KL(softmax(t/T) ‖ softmax(s/T)), [N], no validation: the report kernel (accumulators, the training
    loop's online KL). Unlike the loss kernel (``kdlab.losses``, finite log-probabilities, kept lean for the hot
    path) it accepts −inf logits (a class the teacher gives zero mass adds 0) and never reports a negative value."""
    log_p = F.log_softmax(t / temperature, dim=1)
    log_q = F.log_softmax(s / temperature, dim=1)
    p = log_p.exp()
    # 0·log 0 = 0: classes the teacher gives zero mass (e.g. a -inf logit) contribute nothing, never NaN.
    kl = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(dim=1)
    # KL >= 0 (Gibbs); identical rows can round to -1e-9, which would read as a bug in a report.
    return kl.clamp_min(0.0)


def _nll_rows(logits: Tensor, y: Tensor) -> Tensor:
    # gather picks column y_i of row i; indexing the transposed matrix would silently mix rows and classes.
    return -F.log_softmax(logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)


def _l2_rows(t: Tensor, s: Tensor) -> Tensor:
    return torch.linalg.vector_norm(t - s, ord=2, dim=1)


def _confidence_correct(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    # The prediction is the argmax of the logits, as in accuracy(): two logits that differ by less than the
    # softmax can resolve would tie in probability space and could pick another class there.
    pred = logits.argmax(dim=1, keepdim=True)
    # softmax (not exp(log_softmax)) so that exactly representable probabilities (1/2, 1/4, ...) stay exact.
    conf = torch.softmax(logits, dim=1).gather(1, pred).squeeze(1)
    return conf, pred.squeeze(1) == y


def _bin_edges(n_bins: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    # edge k is the float nearest to k/n_bins (one correctly rounded division), not an accumulated linspace step.
    return torch.arange(n_bins + 1, dtype=dtype, device=device) / n_bins


def _bin_index(conf: Tensor, n_bins: int) -> Tensor:
    # Bins are (lo, hi]: bucketize(right=False) returns i with e[i-1] < c <= e[i] over the inner edges, so a
    # confidence exactly on an edge goes to the lower bin, confidence 0 to the first bin and 1 to the last.
    inner = _bin_edges(n_bins, conf.dtype, conf.device)[1:-1]
    return torch.bucketize(conf, inner, right=False)


def _bin_sums(conf: Tensor, correct: Tensor, n_bins: int, dtype: torch.dtype) -> Tensor:
    """Per-bin [count, Σ confidence, Σ correct] as a [3, n_bins] tensor in ``dtype``."""
    # Membership matrix by comparison (F.one_hot range-checks its input with a host sync on CPU backends).
    bins = torch.arange(n_bins, device=conf.device)
    onehot = (_bin_index(conf, n_bins).unsqueeze(1) == bins).to(dtype)  # [N, B]
    cols = torch.stack([torch.ones_like(conf, dtype=dtype), conf.to(dtype), correct.to(dtype)], dim=0)  # [3, N]
    # A matmul instead of index_add_: deterministic on every backend and still one vectorised op.
    return cols @ onehot


def _ece_from_sums(bins: Tensor, n) -> Tensor:
    # Σ_k (n_k/N)|acc_k − conf_k| = Σ_k |Σcorrect_k − Σconf_k| / N; empty bins contribute 0.
    return (bins[2] - bins[1]).abs().sum() / n


# --------------------------------------------------------------------------------------------------------------
# public functions. The teacher's and the student's logits are keyword-only everywhere in kdlab.eval: the losses take
# (student, teacher) and reports (teacher, student), so a positional pair would be a silent trap.
# --------------------------------------------------------------------------------------------------------------
def agreement(*, teacher_logits: Tensor, student_logits: Tensor) -> float:
    """Top-1 agreement in percent: ``100 · mean_i [argmax_c t_ic = argmax_c s_ic]`` (Stanton et al. 2021, §3)."""
    t, s = _check_pair(teacher_logits, student_logits)
    return 100.0 * _mean(_agree_rows(t, s), "agreement")


def topk_agreement(*, teacher_logits: Tensor, student_logits: Tensor, k: int = 5) -> float:
    """Top-k agreement in percent: share of examples whose teacher top-1 class is among the student's top k.

    Ties are ranked towards the lower class index (so ``k=1`` equals :func:`agreement`); ``k >= C`` gives 100.
    """
    t, s = _check_pair(teacher_logits, student_logits)
    k = check_int(k, "k", 1)
    return 100.0 * _mean(_topk_rows(t, s, k), "top-k agreement")


def predictive_kl(*, teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0,
                  reduction: str = "mean"):
    """Predictive KL per example: ``KL(softmax(t/T) ‖ softmax(s/T)) = Σ_c p_c (log p_c − log q_c)``.

    The teacher is ``p`` (Stanton et al. 2021, §3). There is **no T² factor**: this measures the distributions, it is
    not the Hinton KD loss (``kd_loss(z, v, T) = T² · predictive_kl(teacher_logits=v, student_logits=z,
    temperature=T)``). ``reduction="mean"`` returns the mean over examples as a float, ``"none"`` the tensor of
    per-example values [N].
    """
    t, s = _check_pair(teacher_logits, student_logits)
    temperature = check_positive(temperature, "temperature")
    return _reduce(kl_per_example(t, s, temperature), _check_reduction(reduction), "predictive KL")


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Accuracy in percent: ``100 · mean_i [argmax_c logits_ic = y_i]``."""
    logits = _check_logits(logits, "logits")
    y = _check_labels(y, logits.shape[0], logits.shape[1])
    return 100.0 * _mean(logits.argmax(dim=1) == y, "accuracy")


def nll(logits: Tensor, y: Tensor, reduction: str = "mean"):
    """Negative log-likelihood per example: ``−log softmax(logits_i)[y_i]`` (log-softmax, then gather).

    ``reduction="mean"`` returns the mean over examples as a float, ``"none"`` the per-example tensor [N].
    """
    logits = _check_logits(logits, "logits")
    y = _check_labels(y, logits.shape[0], logits.shape[1])
    return _reduce(_nll_rows(logits, y), _check_reduction(reduction), "NLL")


def reliability_bins(logits: Tensor, y: Tensor, n_bins: int = 10) -> dict[str, Tensor]:
    """Per-bin statistics of a reliability diagram on the max-softmax confidence (Guo et al. 2017, §2).

    Equal-width bins ``(k/B, (k+1)/B]``; a confidence exactly on an edge goes to the lower bin, 0 to the first.
    Returns float64 tensors on the logits' device: ``edges`` [B+1], ``count`` [B] (int64), ``acc`` and ``conf``
    [B] (mean correctness as a fraction and mean confidence of each bin; NaN for an empty bin, so plots skip it)
    and ``ece`` (0-d, the :func:`ece` of the same bins).
    """
    logits = _check_logits(logits, "logits")
    y = _check_labels(y, logits.shape[0], logits.shape[1])
    n_bins = check_int(n_bins, "n_bins", 1)
    if logits.shape[0] == 0:
        raise ValueError("cannot bin zero examples; pass at least one row of logits")
    dtype = _sum_dtype(logits.device)
    conf, correct = _confidence_correct(logits, y)
    sums = _bin_sums(conf, correct, n_bins, dtype)
    count = sums[0]
    nan = torch.full_like(count, float("nan"))
    return {
        "edges": _bin_edges(n_bins, dtype, logits.device),
        "count": count.round().long(),
        "acc": torch.where(count > 0, sums[2] / count.clamp_min(1), nan),
        "conf": torch.where(count > 0, sums[1] / count.clamp_min(1), nan),
        "ece": _ece_from_sums(sums, logits.shape[0]),
    }


def ece(logits: Tensor, y: Tensor, n_bins: int = 10) -> float:
    """Expected calibration error ``Σ_k (n_k/N)|acc_k − conf_k|`` over equal-width confidence bins (lo, hi].

    Confidence is the max softmax probability (Guo et al. 2017, eq. 3); the result is a fraction in [0, 1].
    """
    return reliability_bins(logits, y, n_bins)["ece"].item()


def logit_l2(*, teacher_logits: Tensor, student_logits: Tensor, reduction: str = "mean"):
    """Euclidean distance between logit vectors per example, ``‖t_i − s_i‖₂`` (not squared), averaged by default."""
    t, s = _check_pair(teacher_logits, student_logits)
    return _reduce(_l2_rows(t, s), _check_reduction(reduction), "logit L2")


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA between two feature sets of the same N examples (Kornblith et al., ICML 2019, §3).

    ``CKA = ‖Yᶜᵀ Xᶜ‖²_F / (‖Xᶜᵀ Xᶜ‖_F · ‖Yᶜᵀ Yᶜ‖_F)`` with features centred over examples (columns of ``Xᶜ`` have
    mean 0). ``x`` is ``[N, ...]`` and ``y`` is ``[N, ...]``; trailing dimensions are flattened. Computed in float64.
    Invariant to orthogonal transforms and isotropic scaling of either input; 1 for ``linear_cka(x, x)``.
    """
    mats = []
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of features [N, ...], got {type(value).__name__}")
        if value.dim() < 2:
            raise ValueError(f"{name} must have shape [N, features...], got {tuple(value.shape)}")
        if value.shape[0] < 2:
            raise ValueError(f"{name} must hold at least 2 examples for CKA (centring needs 2), got {value.shape[0]}")
        mats.append(value.reshape(value.shape[0], -1))
    a, b = mats
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x and y must hold the same examples: got N={a.shape[0]} and N={b.shape[0]}")
    dtype = _sum_dtype(a.device)
    a = a.to(dtype)
    b = b.to(a.device, dtype)
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    n, p, q = a.shape[0], a.shape[1], b.shape[1]
    # ‖Bᵀ A‖²_F = ⟨A Aᵀ, B Bᵀ⟩_F and ‖Aᵀ A‖_F = ‖A Aᵀ‖_F: use whichever Gram side is smaller.
    if n < max(p, q):
        ga, gb = a @ a.T, b @ b.T
        num = (ga * gb).sum()
    else:
        ga, gb = a.T @ a, b.T @ b
        num = (b.T @ a).square().sum()
    na, nb = torch.linalg.matrix_norm(ga), torch.linalg.matrix_norm(gb)
    for name, norm in (("x", na), ("y", nb)):
        if not norm.item() > 0:
            raise ValueError(f"{name} has zero variance across examples (or is not finite); CKA is undefined")
    return (num / (na * nb)).item()
