"""Classic knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network")."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses._logspace import kl_rows
from kdlab.losses._validate import check_logits, check_positive, check_reduction, logit_names, reduce


@logit_names
def kd_loss(z: Tensor, v: Tensor, temperature: float = 4.0, reduction: str = "mean") -> Tensor:
    """L_KD = T² · (1/N) Σ_i KL(softmax(v_i/T) ‖ softmax(z_i/T))  (Hinton et al. 2015).

    ``z``: student logits [N, C]; ``v``: teacher logits [N, C] (detached here). The T² keeps gradient magnitudes
    comparable across temperatures. ``reduction``: "mean" (batch-mean), "sum", or "none" (per-sample [N]).
    """
    t = check_positive(temperature, "temperature")
    reduction = check_reduction(reduction)
    z, v = check_logits(z, v)
    per_sample = kl_rows(F.log_softmax(v / t, dim=1), F.log_softmax(z / t, dim=1))
    return reduce((t * t) * per_sample, reduction)
