"""Assembling and running: a plan and the parts gathered for it (:class:`RunParts`) → the method → the engine's
loop → ``final.json``. One place for every entry point (:mod:`kdlab.builder.entry`): the run directory's identity check
(:func:`finished`), its writer lock, the method built once and set up on a real batch, ``plan.json`` and
``config.yaml``, the teacher's test logits computed once, the loop, the report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from kdlab import distributed as dist
from kdlab._io import atomic_write_text
from kdlab.builder.plan import RunPlan
from kdlab.builder.teacher import eval_logits, serve
from kdlab.data import Loader
from kdlab.engine.checkpoint import check_same_run, read_training_info
from kdlab.engine.environment import environment, process_age
from kdlab.engine.guard import TrainingDiverged
from kdlab.engine.loop import LoopResult, LoopSettings, logits_report, train_loop
from kdlab.engine.precision import DevicePath
from kdlab.engine.run_dir import RunDirLock
from kdlab.data.preprocess import eval_preprocessing
from kdlab.methods import Method
from kdlab.models.factory import Arch, arch_name, is_factory
from kdlab.models.card import model_card, write_card
from kdlab.models.weights import weights_metadata
from kdlab.plots import run_curves
from kdlab.teachers.stored import StoreChoice

__all__ = ["STOPPED", "Outcome", "RunParts", "Started", "card_of", "finished", "train_and_report"]

STOPPED = "stopped.json"  # written instead of final.json when the divergence guard stops a run


@dataclass(frozen=True)
class Started:
    """When an entry point began: the start of ``overhead`` in ``final.json`` (created first thing by the entry)."""

    at: float = field(default_factory=time.perf_counter)
    startup_s: float | None = field(default_factory=process_age)  # interpreter and imports, before the entry


@dataclass
class RunParts:
    """Everything a run is assembled from, whoever gathered it (a config or ``kdlab.fit``)."""

    plan: RunPlan
    out_dir: Path | None
    device: torch.device
    device_path: DevicePath
    train: Loader
    test: Loader | None
    probe: torch.Tensor  # a few real inputs: Method.setup sizes trainable extras from them
    student: nn.Module  # on the device, initialised
    arch: Arch | None  # recorded in the saved weights: a zoo name or {"factory": ..., "args": ...}
    teacher_module: nn.Module | None  # on the device
    batch_transform: Callable | None = None  # a distillation-data policy
    reuse_teacher_logits: bool = False  # store/reuse the teacher's test logits across runs (config runs only)
    store: StoreChoice | None = None  # streamed data: the teacher-output store replayed, or why the teacher runs live
    card: dict[str, Any] | None = None  # the trained network described (kdlab.models.card): model.json, final.json
    started: Started | None = None  # the entry point's start (final.json's overhead); None: not recorded


@dataclass
class Outcome:
    method: Method
    result: LoopResult
    teacher: dict[str, Any] | None  # acc/nll/ece of the teacher on the test set (from its logits, computed once)
    teacher_s: float = 0.0  # serving the teacher's outputs: the cache (its estimate or fill), the test-set logits
    loop_started: float = 0.0  # time.perf_counter() when the engine's loop began


def card_of(splits, arch: str | None, role: str, data: str, teacher_arch: str | None = None,
            method: str | None = None) -> dict[str, Any]:
    """The card (``model.json``) of a network trained on ``splits``: classes, input shape, eval preprocessing."""
    return model_card(arch=arch, num_classes=splits.num_classes, classes=getattr(splits, "class_names", None),
                      input_shape=splits.input_shape, preprocessing=eval_preprocessing(splits), role=role, data=data,
                      teacher_arch=teacher_arch, method=method)


def finished(out_dir: Path | None, plan: RunPlan) -> dict | None:
    """Refuse a checkpoint of another run before anything is written; the stored final.json of a finished one."""
    if out_dir is None or not (out_dir / "checkpoint.safetensors").is_file():
        return None
    info = read_training_info(out_dir / "checkpoint.safetensors")
    check_same_run(info, plan.identity_hash, plan.identity, out_dir)
    final = out_dir / "final.json"
    if info.get("epoch", 0) >= plan.cfg.optim.epochs and final.is_file():
        return json.loads(final.read_text(encoding="utf-8"))
    return None


def _train(parts: RunParts) -> Outcome:
    plan, out_dir, dp = parts.plan, parts.out_dir, parts.device_path
    cfg, nc = plan.cfg, plan.facts.num_classes
    t0 = time.perf_counter()
    teacher = serve(plan, parts.teacher_module, parts.store, parts.train, out_dir, dp,
                    policy=parts.batch_transform is not None)
    teacher_s = time.perf_counter() - t0
    method = plan.build_method(parts.student, teacher, nc).to(parts.device)
    method.setup_data(parts.train)  # the training set's size and labels (CRD's memory bank)
    method.setup(parts.probe)  # before the optimizer: trainable extras sized from real features
    dp.model(method)
    if dp.compile:
        method.compile()  # in place: the state-dict keys (and so the checkpoints) stay those of the model
    if out_dir is not None and dist.is_main():
        plan.write(out_dir)
        if parts.card is not None:
            write_card(out_dir, parts.card)
    teacher_logits, reused = None, False
    if teacher is not None and parts.test is not None:
        digest = plan.digests.get("teacher.weights_sha256") if parts.reuse_teacher_logits else None
        t0 = time.perf_counter()
        teacher_logits, reused = eval_logits(teacher, parts.test, digest)
        teacher_s += time.perf_counter() - t0
    o = cfg.optim
    settings = LoopSettings(
        epochs=o.epochs, lr=o.lr, optimizer=o.optimizer, momentum=o.momentum, dot_delta=o.dot_delta,
        weight_decay=o.weight_decay,
        nesterov=o.nesterov, schedule=o.schedule, milestones=list(o.milestones), gamma=o.gamma,
        warmup_epochs=o.warmup_epochs, eval_every=cfg.eval.every,
        out_dir=out_dir, progress=cfg.run.progress, tensorboard=cfg.run.tensorboard, identity_hash=plan.identity_hash,
        identity=plan.identity, weights_metadata=weights_metadata(parts.arch, nc, card=parts.card), device_path=dp,
        grad_clip=o.grad_clip, on_divergence=cfg.run.on_divergence, sync_bn=cfg.run.sync_bn,
        fidelity_bins=cfg.eval.bins, grad_conflict_every=cfg.run.grad_conflict_every,
    )
    loop_started = time.perf_counter()
    result = train_loop(method, parts.train, parts.test, nc, settings, teacher_logits, parts.batch_transform)
    report = None
    if teacher_logits is not None:
        report = {**logits_report(teacher_logits, parts.test, nc), "eval_logits": "reused" if reused else "computed"}
    return Outcome(method, result, report, teacher_s, loop_started)


def _overhead(parts: RunParts, outcome: Outcome) -> dict[str, float | None] | None:
    """Where this process's time went, in wall seconds, up to final.json (curves.png, if asked for, after it):
    ``startup_s`` (interpreter and imports), ``data_s`` (the entry point up to the loop: data, loaders, networks,
    the method, less the teacher's part), ``teacher_s`` (the teacher's outputs: the logit cache and its estimate
    or fill, the test-set logits), ``epochs_s`` (the epochs trained here, their evaluations included),
    ``loop_other_s`` (the loop outside its epochs: the optimizer, metrics log and checkpoints, the saved model),
    ``report_s`` (the teacher's report and the environment record)."""
    if parts.started is None:
        return None
    r = outcome.result
    epochs = sum(h["epoch_time_s"] for h in r.history if r.resumed_from is None or h["epoch"] >= r.resumed_from)
    return {"startup_s": parts.started.startup_s,
            "data_s": outcome.loop_started - parts.started.at - outcome.teacher_s,
            "teacher_s": outcome.teacher_s, "epochs_s": epochs, "loop_other_s": r.wall_time_s - epochs,
            "report_s": time.perf_counter() - outcome.loop_started - r.wall_time_s}


def _final(parts: RunParts, outcome: Outcome, role: str, teacher_arch: Arch | None = None) -> dict[str, Any]:
    """``final.json``: the trained network under ``role`` ("teacher" or "student"), its last test report ("test" for
    a teacher, "fidelity" for a student), the teacher's numbers, config, environment. A run that was already
    finished when it was started again keeps the file it has."""
    plan, r = parts.plan, outcome.result
    final: dict[str, Any] = {
        "role": role,
        "method": plan.name,
        role: {**_arch_record(parts.arch), "best_acc": r.best["acc"], "best_epoch": r.best["epoch"],
               "last_acc": r.last.get("student_acc")},
        "test" if role == "teacher" else "fidelity": r.last,
        "epochs": plan.cfg.optim.epochs,
        "resumed_from_epoch": r.resumed_from,
        "divergence": r.divergence,  # the guard fired and the run trained on (run.on_divergence=warn): not trusted
        "adapted_defaults": plan.adapted_defaults(),
        "wall_time_s": r.wall_time_s,
        "config": plan.record,
        "environment": environment(parts.device, plan.cfg.seed),
    }
    if parts.card is not None:
        final["model"] = parts.card
    bins = next((h["fidelity_bins"] for h in reversed(r.history) if "fidelity_bins" in h), None)
    if bins is not None:  # the last evaluation's fidelity per teacher-confidence and -entropy bin (kdlab.eval.bins)
        final["fidelity_bins"] = bins
    conflicts = [{"epoch": h["epoch"], **h["grad_conflict"]} for h in r.history if "grad_conflict" in h]
    if conflicts:  # run.grad_conflict_every: per epoch, the mean gradient cosine of each pair of terms per group
        final["grad_conflict"] = {"every": plan.cfg.run.grad_conflict_every, "epochs": conflicts}
    if outcome.teacher is not None:
        t = outcome.teacher
        final["teacher"] = {**_arch_record(teacher_arch or type(parts.teacher_module).__name__), "acc": t["acc"],
                            "nll": t["nll"], "ece": t["ece"], "eval_logits": t["eval_logits"]}
    if parts.store is not None:
        final["teacher_outputs"] = parts.store.record
    overhead = _overhead(parts, outcome)
    if overhead is not None:
        final["overhead"] = {k: None if v is None else round(v, 4) for k, v in overhead.items()}
    finished_before = r.resumed_from is not None and r.resumed_from > plan.cfg.optim.epochs
    if parts.out_dir is not None and dist.is_main() and not finished_before:
        (parts.out_dir / STOPPED).unlink(missing_ok=True)  # an earlier stop of this run, resumed and now finished
        atomic_write_text(parts.out_dir / "final.json", json.dumps(final, indent=2))
        if plan.cfg.run.curves:  # on request: the matplotlib import and the drawing cost more than a short run
            run_curves(parts.out_dir)
    return final


def _arch_record(arch: Arch | None) -> dict[str, Any]:
    """``{"arch": name}``, and for a network built by a factory also ``"factory": {"factory": ..., "args": ...}``."""
    return {"arch": arch_name(arch), **({"factory": arch} if is_factory(arch) else {})}


def train_and_report(parts: RunParts, role: str, teacher_arch: Arch | None = None) -> tuple[Outcome, dict[str, Any]]:
    """Train and write ``final.json`` holding the run directory's writer lock (one writer per out_dir)."""
    with RunDirLock(parts.out_dir):
        try:
            outcome = _train(parts)
        except TrainingDiverged as exc:
            _write_stopped(parts, exc, role, teacher_arch)
            raise
        return outcome, _final(parts, outcome, role, teacher_arch)


def _write_stopped(parts: RunParts, exc: TrainingDiverged, role: str, teacher_arch: Arch | None) -> None:
    """``stopped.json`` in place of ``final.json`` when the divergence guard stopped the run: what ran and why it
    stopped, so that ``kdlab table`` counts the run as failed instead of leaving its seed out without a word."""
    if parts.out_dir is None or not dist.is_main():
        return
    plan = parts.plan
    doc: dict[str, Any] = {"role": role, "method": plan.name, role: _arch_record(parts.arch),
                           "stopped": {"epoch": exc.epoch, "rule": exc.rule, "message": str(exc)},
                           "epochs": plan.cfg.optim.epochs, "config": plan.record}
    if teacher_arch is not None or parts.teacher_module is not None:
        doc["teacher"] = _arch_record(teacher_arch or type(parts.teacher_module).__name__)
    atomic_write_text(parts.out_dir / STOPPED, json.dumps(doc, indent=2))
