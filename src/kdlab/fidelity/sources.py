"""The fidelity report on named data sources, with the independent-student control (Stanton et al., NeurIPS 2021).

Sources (docs/reference/fidelity.md):

* ``test`` — the held-out split, no augmentation, both models in eval mode;
* ``train_clean`` — the (distillation) training split, no augmentation, eval mode;
* ``train_aug`` — one pass of the *distillation* data: the loader's augmentation and then the distill_data policy
  (MixUp, noise, extra sources), both models in eval mode on exactly the same inputs; agreement/KL count every
  input, accuracy/NLL/ECE only the labelled ones;
* ``distill_stream`` — the running metric of the last training epoch read from the run's ``metrics.jsonl``
  (train-mode student, includes mixed/synthetic inputs): only ``agreement``, ``kl`` and the stream accuracy.

Every number is a per-example sum over the whole source (:class:`~kdlab.eval.FidelityAccumulator`). The
independent-student control evaluates, against the same teacher, a student distilled identically from an
*independent* teacher: agreement is confounded with accuracy, and the gap to the control is what distillation
transferred.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from kdlab.data.policies import build_policy
from kdlab.eval.fidelity import fidelity_report
from kdlab.eval.metrics import linear_cka
from kdlab._modes import eval_mode
from kdlab.models import forward_features

__all__ = ["SOURCES", "STREAM_LABEL", "evaluate_sources", "fidelity_with_control", "read_distill_stream"]

SOURCES = ("test", "train_clean", "train_aug", "distill_stream")
STREAM_LABEL = ("running metric over the last training epoch: train-mode student, includes mixed/synthetic inputs, "
                "weights changing during the epoch")


def read_distill_stream(run_dir: str | Path) -> dict:
    """``{"agreement", "kl", "student_acc", "epoch", "label"}`` of the last epoch in ``run_dir/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the distill_stream source needs the out_dir of a training run")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [r for r in records if "agreement" in r.get("train", {})]
    if not records:
        raise ValueError(f"{path} has no epoch with a training agreement (was the run distilled from a teacher?)")
    last = records[-1]
    return {"agreement": last["train"]["agreement"], "kl": last["train"]["kl"], "student_acc": last["train"]["acc"],
            "epoch": last["epoch"], "label": STREAM_LABEL}


def _policy_batches(loader, policy):
    """(x, y) pieces of one pass of ``policy`` over ``loader``: labelled rows with labels, the rest with None."""
    for batch in loader:
        if policy is not None:
            batch = policy(batch, 1)
        mask = batch.label_mask
        if mask is None:
            yield batch.x, batch.y
            continue
        if mask.any():
            yield batch.x[mask], batch.y[mask]
        if (~mask).any():
            yield batch.x[~mask], None


@torch.no_grad()
def _cka(teacher: nn.Module, student: nn.Module, x: torch.Tensor, batch_size: int) -> float:
    feats = {"t": [], "s": []}
    for model, key in ((teacher, "t"), (student, "s")):
        with eval_mode(model):
            for start in range(0, x.shape[0], batch_size):
                feats[key].append(forward_features(model, x[start:start + batch_size])[1]["pooled"].float())
    return linear_cka(torch.cat(feats["t"]), torch.cat(feats["s"]))


def evaluate_sources(teacher: nn.Module | list[nn.Module], student: nn.Module, splits, sources=("test",),
                     distill_data=None, run_dir: str | Path | None = None, temperature: float | None = None,
                     batch_size: int = 512, device="cpu", seed: int = 0, cka: bool = False,
                     augment: bool = True, policy_batch_size: int | None = None, bins: int = 0) -> dict[str, dict]:
    """Fidelity report of ``student`` vs ``teacher`` on each named source (see the module docstring).

    ``splits``: the :class:`~kdlab.data.DataSplits` the student was distilled on (after split control);
    ``distill_data``: its DistillDataConfig for ``train_aug`` (None: the loader's augmentation only);
    ``run_dir``: the training out_dir for ``distill_stream``; ``temperature``: also report KL at the training τ
    (key ``kl_T{τ}``); ``cka``: add the linear CKA of the pooled features (``test``/``train_clean``);
    ``augment``: whether the run used the dataset's train augmentation (``data.augment == "default"``);
    ``policy_batch_size``: batch size of the ``train_aug`` pass (default ``batch_size``) — give the training batch
    size, since MixUp draws one λ per batch and extra sources add a share of each batch; ``bins``: also the fidelity
    per teacher-confidence and teacher-entropy bin (key ``bins``, :mod:`kdlab.eval.bins`), in that many bins.
    Returns ``{source: report}``; ``train_aug`` is reproducible from ``seed``.
    """
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise ValueError(f"sources must be a non-empty subset of {SOURCES}, got {list(sources)}")
    device = torch.device(device)
    out: dict[str, dict] = {}
    for source in sources:
        if source == "distill_stream":
            if run_dir is None:
                raise ValueError("the distill_stream source needs run_dir (the training out_dir with metrics.jsonl)")
            out[source] = read_distill_stream(run_dir)
            continue
        if source == "train_aug":
            loader = splits.loader("train", policy_batch_size or batch_size, augment=augment, seed=seed, device=device)
            policy = None
            if distill_data is not None and distill_data.policy != "none":
                gen = torch.Generator(device=device).manual_seed(seed)
                policy = build_policy(distill_data, splits, device, generator=gen)
            data = list(_policy_batches(loader, policy))
        else:
            data = splits.loader("test" if source == "test" else "train", batch_size, seed=seed, device=device)
        report = fidelity_report(teacher, student, data, batch_size=batch_size, device=device,
                                 temperature=temperature, bins=bins)
        if cka and source != "train_aug":
            xs = torch.cat([b.x for b in data])
            t_model = teacher if isinstance(teacher, nn.Module) else None
            if t_model is not None:
                report["cka_pooled"] = _cka(t_model.to(device), student.to(device), xs, batch_size)
        report["source"] = source
        out[source] = report
    return out


def fidelity_with_control(teacher, student, control_student, splits, sources=("test",), **kwargs) -> dict:
    """:func:`evaluate_sources` for ``student`` and for the independent-student ``control_student`` (distilled the
    same way from an independent teacher) against the same ``teacher``, plus per source
    ``agreement_over_control`` = agreement(student) − agreement(control) in percentage points."""
    main = evaluate_sources(teacher, student, splits, sources, **kwargs)
    # the control's training stream was measured against *its own* teacher, so it has no place here
    ctrl_sources = [s for s in sources if s != "distill_stream"]
    kwargs.pop("run_dir", None)
    control = evaluate_sources(teacher, control_student, splits, ctrl_sources, **kwargs) if ctrl_sources else {}
    gap = {s: main[s]["agreement"] - control[s]["agreement"] for s in ctrl_sources}
    return {"student": main, "control": control, "agreement_over_control": gap}
