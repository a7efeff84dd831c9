"""Evaluation: fidelity and calibration metrics, streaming accumulators and the fidelity report."""

from kdlab.eval.accumulator import AccuracyAccumulator, FidelityAccumulator, NonFiniteLogits
from kdlab.eval.bins import fidelity_bins
from kdlab.eval.fidelity import evaluate_accuracy, fidelity_report
from kdlab.eval.metrics import (
    accuracy,
    agreement,
    ece,
    linear_cka,
    logit_l2,
    nll,
    predictive_kl,
    reliability_bins,
    topk_agreement,
)
from kdlab.eval.summary import mean_std, summarize_seeds

__all__ = [
    "AccuracyAccumulator",
    "FidelityAccumulator",
    "NonFiniteLogits",
    "accuracy",
    "agreement",
    "ece",
    "evaluate_accuracy",
    "fidelity_bins",
    "fidelity_report",
    "linear_cka",
    "logit_l2",
    "nll",
    "predictive_kl",
    "reliability_bins",
    "mean_std",
    "summarize_seeds",
    "topk_agreement",
]
