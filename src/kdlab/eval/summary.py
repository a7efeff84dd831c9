"""Mean ± standard deviation of metric dicts across seeds."""

from __future__ import annotations

import math

from kdlab._checks import is_real

__all__ = ["mean_std", "summarize_seeds"]


def summarize_seeds(runs: list[dict]) -> dict:
    """``<key>_mean`` and ``<key>_std`` for every numeric key of per-seed result dicts, plus ``n_seeds``.

    ``std`` is the sample standard deviation ``sqrt(Σ (x_i − mean)² / (S − 1))`` (ddof=1) over S seeds, 0 for a
    single seed. Non-numeric values (strings, nested dicts, bools) are skipped; a key that is numeric in one run must
    be numeric in all of them (else ``ValueError``), so a missing metric is never averaged over fewer seeds silently.
    """
    if isinstance(runs, dict) or not isinstance(runs, (list, tuple)):
        raise ValueError(f"runs must be a list of per-seed result dicts, got {type(runs).__name__}")
    if not runs:
        raise ValueError("runs is empty; pass one result dict per seed")
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise ValueError(f"runs[{i}] must be a dict of metrics, got {type(run).__name__}")
    keys: list = []
    for run in runs:
        keys += [k for k, v in run.items() if is_real(v) and k not in keys]
    out: dict = {"n_seeds": len(runs)}
    for key in keys:
        for i, run in enumerate(runs):
            if not is_real(run.get(key)):
                raise ValueError(
                    f"metric {key!r} is numeric in some runs but is {run.get(key)!r} in runs[{i}]; "
                    "every seed must report the same metrics"
                )
        values = [float(run[key]) for run in runs]
        mean = math.fsum(values) / len(values)
        var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        out[f"{key}_mean"] = mean
        out[f"{key}_std"] = math.sqrt(var)
    return out


def mean_std(summary: dict | None, key: str, digits: int = 2, scale: float = 1.0, std: bool = True) -> str:
    """``"mean ± std"`` of ``key`` in a :func:`summarize_seeds` dict, just ``"mean"`` for one seed (a spread of one
    value is not 0, it is unknown) or with ``std=False``, ``"–"`` when the key (or the summary) is absent."""
    if not summary or f"{key}_mean" not in summary:
        return "–"
    text = f"{scale * summary[key + '_mean']:.{digits}f}"
    if std and summary.get("n_seeds", 1) > 1:
        text += f" ± {scale * summary[key + '_std']:.{digits}f}"
    return text
