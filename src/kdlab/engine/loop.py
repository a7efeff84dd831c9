"""The training loop. It knows the method contract (``method.prepare_distributed``, ``forward(batch, epoch) ->
StepOutput``, ``method.backward``, ``method.eval_model``, ``method.report_temperature``) and nothing about which
method runs; the network being trained is the "student" of its reports (also when it is a teacher trained with CE).

Per epoch: set the lr (a pure function of the epoch), iterate the loader (its order and augmentation are a pure
function of (seed, epoch)), step, accumulate per-example sums on the device (no host sync per step on GPUs), then
evaluate, log, and write the checkpoint. A killed run restarted on the same ``out_dir`` resumes from the last
checkpoint and reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from kdlab import distributed as dist
from kdlab._io import save_tensors
from kdlab._modes import eval_mode
from kdlab.data.protocol import Loader
from kdlab.engine.checkpoint import check_same_run, load_training_state, save_training_state
from kdlab.engine.conflict import GradConflict
from kdlab.engine.dot import DOT, dot_backward
from kdlab.engine.guard import DivergenceGuard, NonFiniteLossError, TrainingDiverged, grad_norm, overshot
from kdlab.engine.metrics_log import MetricsLog
from kdlab.engine.precision import DevicePath
from kdlab.engine.progress import Progress
from kdlab.engine.schedule import learning_rate
from kdlab.engine.seeding import rng_state, set_rng_state
from kdlab.engine.sgd import SGD
from kdlab.eval import AccuracyAccumulator, FidelityAccumulator, NonFiniteLogits
from kdlab.eval.bins import BinCollector
from kdlab.eval.metrics import kl_per_example


@dataclass
class LoopSettings:
    epochs: int
    lr: float
    optimizer: str = "sgd"  # or "adamw", or "dot" (engine.dot: SGD with the task's and distillation's momenta)
    momentum: float = 0.9
    dot_delta: float = 0.075  # DOT's Δ: momentum μ − Δ for the CE gradient, μ + Δ for the distillation gradient
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "step"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: int = 0  # linear lr warm-up (engine.schedule)
    eval_every: int = 1
    out_dir: Path | None = None
    progress: bool = True
    tensorboard: bool | str = "auto"
    identity_hash: str = ""  # of `identity`: a checkpoint is resumed only by a run with the same hash
    identity: dict[str, Any] | None = None  # what the hash covers, stored so a refusal can name what differs
    weights_metadata: dict[str, str] = field(default_factory=dict)  # metadata of the saved weights files
    device_path: DevicePath = field(default_factory=DevicePath)  # autocast / channels_last (engine.precision)
    grad_clip: float | None = None  # clip the global gradient norm to this before each step (None: off)
    on_divergence: str = "stop"  # what the divergence guard (engine.guard) does: "stop" (raise) or "warn"
    sync_bn: bool | str = "auto"  # BatchNorm statistics over the global batch under DDP (Method.prepare_distributed)
    fidelity_bins: int = 10  # the last evaluation's per-bin fidelity (kdlab.eval.bins) in this many bins; 0: off
    grad_conflict_every: int = 0  # gradient cosines between the loss terms every N steps (engine.conflict); 0: off


@dataclass
class LoopResult:
    history: list[dict[str, Any]]
    best: dict[str, Any]
    last: dict[str, Any]
    wall_time_s: float
    resumed_from: int | None
    divergence: dict[str, Any] | None = None  # the guard's finding in a run that trained on (on_divergence="warn")


def make_optimizer(method: torch.nn.Module, s: LoopSettings) -> torch.optim.Optimizer | SGD:
    params = [p for p in method.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the method has no trainable parameters")
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "dot":
        if s.nesterov or s.grad_clip is not None:
            raise ValueError("optim.optimizer=dot steps with two momentum buffers of its own: optim.nesterov and "
                             "optim.grad_clip do not apply to it; remove them or use optim.optimizer=sgd")
        return DOT(params, lr=s.lr, momentum=s.momentum, delta=s.dot_delta, weight_decay=s.weight_decay)
    if s.optimizer != "sgd":
        raise ValueError(f"unknown optimizer {s.optimizer!r}; use sgd, adamw or dot")
    # torch.optim.SGD's update without torch.optim.Optimizer, whose first call imports torch._dynamo (engine.sgd)
    return SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=s.nesterov)


@torch.inference_mode()
def collect_logits(model_fn: Callable[[torch.Tensor], torch.Tensor], loader: Loader) -> torch.Tensor:
    """Logits of a fixed (unshuffled) loader, placed by dataset index."""
    parts, index = [], []
    for batch in loader:
        parts.append(model_fn(batch.x).float())
        index.append(batch.index)
    logits, index = torch.cat(parts), torch.cat(index)
    # sized by the largest index: under DDP a rank evaluates only its shard of the set
    out = logits.new_zeros((int(index.max()) + 1, logits.shape[1]))
    out[index] = logits
    return out


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: Loader, num_classes: int, teacher_logits: torch.Tensor | None = None,
             temperature: float | None = None, bins: int = 0) -> dict[str, Any]:
    """Test-set report of ``model`` as the student: ``student_acc/nll/ece`` and, with the teacher's logits on the
    same loader (placed by dataset index, :func:`collect_logits`), the teacher's and the fidelity keys; with ``bins``
    also ``"bins"``, the fidelity per teacher-confidence and teacher-entropy bin (:mod:`kdlab.eval.bins`) of the
    same logits."""
    acc = (FidelityAccumulator(num_classes, temperature=temperature) if teacher_logits is not None
           else AccuracyAccumulator(num_classes))
    binned = BinCollector(bins) if bins and teacher_logits is not None else None
    with eval_mode(model):
        for batch in loader:
            s = model(batch.x).float()
            if teacher_logits is not None:
                t = teacher_logits[batch.index]
                acc.update(teacher_logits=t, student_logits=s, labels=batch.y)
                if binned is not None:
                    binned.update(teacher_logits=t, student_logits=s, labels=batch.y, index=batch.index)
            else:
                acc.update(s, batch.y)
    report = dist.all_reduce_accumulator(acc).compute()
    if teacher_logits is None:
        report = {"n": report["n"], **{f"student_{k}": v for k, v in report.items() if k != "n"}}
    if binned is not None:
        report["bins"] = binned.compute()
    return report


@torch.inference_mode()
def logits_report(logits: torch.Tensor, loader: Loader, num_classes: int) -> dict[str, Any]:
    """``{"n", "acc", "nll", "ece"}`` of fixed logits (placed by dataset index) on ``loader``'s labels."""
    acc = AccuracyAccumulator(num_classes)
    for batch in loader:
        acc.update(logits[batch.index], batch.y)
    return dist.all_reduce_accumulator(acc).compute()


class _EpochSums:
    """Per-example sums of the training stream, kept on the device until the epoch ends."""

    def __init__(self, device):
        self.device = device
        self.terms: dict[str, torch.Tensor] = {}
        self.logs: dict[str, torch.Tensor] = {}
        z = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.n, self.correct, self.agree, self.kl, self.teacher_n, self.labelled = z(), z(), z(), z(), z(), z()

    def add(self, out, y: torch.Tensor) -> None:
        n = y.shape[0]
        self.n += n
        for k, v in out.losses.items():
            self.terms[k] = self.terms.get(k, 0) + v.detach().double() * n
        for k, v in out.logs.items():
            self.logs[k] = self.logs.get(k, 0) + v.detach().double() * n
        logits = out.logits.detach()
        pred = logits.argmax(1)
        self.correct += (pred == y).sum()
        self.labelled += (y >= 0).sum()  # unlabelled samples of a distillation-data policy carry y = -1
        if out.teacher_logits is not None:
            t = out.teacher_logits.detach().float()
            self.teacher_n += n
            self.agree += (t.argmax(1) == pred).sum()
            self.kl += kl_per_example(t, logits.float()).double().sum()

    def summary(self) -> dict[str, float]:
        names = sorted(self.terms)
        log_names = sorted(self.logs)
        flat = torch.stack([self.n, self.correct, self.agree, self.kl, self.teacher_n, self.labelled]
                           + [torch.as_tensor(self.terms[k], device=self.device).double() for k in names]
                           + [torch.as_tensor(self.logs[k], device=self.device).double() for k in log_names])
        flat = dist.all_reduce_sum(flat).tolist()  # the one host sync of the epoch
        n, correct, agree, kl, tn, labelled = flat[:6]
        # over the labelled samples; None when a policy left none (every sample mixed or synthetic)
        out: dict[str, Any] = {"acc": 100.0 * correct / labelled if labelled else None}
        total = 0.0
        for i, k in enumerate(names):
            out[f"loss_{k}"] = flat[6 + i] / max(n, 1)
            total += out[f"loss_{k}"]
        out["loss"] = total
        for i, k in enumerate(log_names):
            out[k] = flat[6 + len(names) + i] / max(n, 1)
        if tn > 0:
            out["agreement"] = 100.0 * agree / tn
            out["kl"] = kl / tn
        return out


def _stopped(message: str, s: LoopSettings, saved_epoch: int, best: dict[str, Any]) -> str:
    if s.out_dir is None:
        kept = "Nothing was saved (no out_dir)"
    else:
        kept = (f"Kept in {s.out_dir}: checkpoint.safetensors (epoch {saved_epoch}, the last good state)"
                if saved_epoch > 0 else f"No epoch of {s.out_dir} was good enough to keep a checkpoint")
        if best["epoch"] > 0:
            kept += f" and best.safetensors (epoch {best['epoch']}, test accuracy {best['acc']:.2f}%)"
    return (f"{message}. {kept}. The run stopped (run.on_divergence=warn, kdlab.fit's on_divergence='warn', trains on "
            "regardless); start again in a new out_dir with the changed settings")


def _check_finite(out, epoch: int, step: int) -> None:
    total = out.total.detach()
    if not torch.isfinite(total):
        terms = {k: float(v.detach()) for k, v in out.losses.items()}
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, step {step}: {terms}. Training stopped; the last good checkpoint "
            "is kept. Lower the learning rate, check the inputs for NaN/inf, or check the teacher checkpoint.", epoch,
            "non-finite")


def _chance(loader: Loader, num_classes: int) -> float:
    """Accuracy (%) of always predicting the most frequent training label (one host sync, once per run)."""
    y = loader.labels
    if y is None or y.numel() == 0:
        return 100.0 / num_classes
    return 100.0 * float(torch.bincount(y.reshape(-1), minlength=num_classes).max()) / y.numel()


def _shard_weight(loader: Loader, step: int, n: int) -> float:
    """Factor on this rank's loss so that DDP's mean over ranks is the global batch's mean when the last global
    batch splits unevenly (m samples, this rank n of them): n·W/m; exactly 1.0 for equal shards."""
    if loader.world_size == 1:
        return 1.0
    return n * loader.world_size / loader.global_batch_len(step)  # the loader knows whether its last batch wraps or splits


def train_loop(method: torch.nn.Module, train_loader: Loader, eval_loader: Loader | None, num_classes: int,
               s: LoopSettings, teacher_eval_logits: torch.Tensor | None = None,
               batch_transform: Callable[[Any, int], Any] | None = None) -> LoopResult:
    """Train ``method`` for ``s.epochs``; resumes from ``s.out_dir/checkpoint.safetensors`` when present.

    ``teacher_eval_logits``: the teacher's logits on ``eval_loader`` (:func:`collect_logits`, computed once per run
    by the caller); with them every evaluation reports agreement and KL. ``batch_transform(batch, epoch) -> batch``:
    a distillation-data policy (kdlab.data.policies) applied to every training batch before the method sees it.

    Once per epoch the training summary goes to the divergence guard (:mod:`kdlab.engine.guard`): on a collapse it
    raises :class:`TrainingDiverged` (``s.on_divergence="stop"``) or warns once (``"warn"``). While a guard rule is
    building up no checkpoint is written (a kill then replays those epochs exactly), so the checkpoint left behind
    is the last good state; ``best.safetensors`` holds the best evaluated weights.
    """
    start = time.perf_counter()
    device = next(method.parameters()).device
    # DDP around the trainable part under torchrun (BatchNorm synchronised per s.sync_bn), else the method itself;
    # before the optimizer is built, so that it holds the parameters that train
    forward = method.prepare_distributed(device, sync_bn=s.sync_bn)
    optimizer = make_optimizer(method, s)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    dot = isinstance(optimizer, DOT)
    # DOT takes its two gradients with autograd.grad and averages them itself: DDP's own sync stays off
    no_sync = forward.no_sync if dot and isinstance(forward, DDP) else nullcontext
    dp = s.device_path
    is_main = dist.is_main()
    log = MetricsLog(s.out_dir, s.tensorboard if is_main else False) if s.out_dir is not None else None
    ckpt_path = s.out_dir / "checkpoint.safetensors" if s.out_dir is not None else None

    history: list[dict[str, Any]] = []
    best = {"acc": -1.0, "epoch": 0}
    first_epoch, resumed_from = 1, None
    check_every_step = device.type == "cpu"  # a host sync per step is free on CPU, costly on GPU
    # the step watch decides at once where a step may stop the run (CPU, one process), else at the epoch's end
    immediate = check_every_step and dist.world_size() == 1 and s.on_divergence == "stop"
    conflict = (GradConflict(method.parameter_groups(), s.grad_conflict_every) if s.grad_conflict_every > 0
                else None)
    guard: DivergenceGuard | None = DivergenceGuard(_chance(train_loader, num_classes), s.lr, s.grad_clip, immediate,
                                                          method.loss_weights(method.hp))
    warned: dict[str, Any] | None = None
    if ckpt_path is not None and ckpt_path.exists():
        rng, info = load_training_state(ckpt_path, method, optimizer)
        check_same_run(info, s.identity_hash, s.identity, s.out_dir)
        set_rng_state(rng)
        first_epoch = resumed_from = info["epoch"] + 1
        best = info["best"]
        # a checkpoint exists only with an out_dir, so the log does too; other ranks read rank 0's log (atomically
        # replaced by truncate) without writing it
        if is_main:
            history = log.truncate(info["epoch"])
        else:
            history = [r for r in log.records() if r.get("epoch", 0) <= info["epoch"]]
        for r in history:  # the guard's state is a function of the epochs trained so far
            if guard is not None:
                guard.update(r["epoch"], r["train"])
                if "divergence" in r and s.on_divergence == "warn":  # it had fired (and warned) before the restart
                    guard, warned = None, {"epoch": r["epoch"], "rule": r["divergence"]}
    saved_epoch = first_epoch - 1

    progress = Progress(s.progress and is_main, s.epochs)  # bars on a terminal, a line per epoch in a log file
    for epoch in progress.over_epochs(first_epoch):
        t0 = time.perf_counter()
        lr = learning_rate(epoch, s.lr, s.epochs, s.schedule, s.milestones, s.gamma, s.warmup_epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        method.train()
        train_loader.set_epoch(epoch)
        sums = _EpochSums(device)
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        if guard is not None:
            guard.epoch_start(params)
        for step, batch in enumerate(progress.over_steps(train_loader, epoch)):
            n_loader = batch.y.shape[0]  # this rank's share of the global batch, before a policy adds samples
            if batch_transform is not None:
                batch = batch_transform(batch, epoch)
            if dp.channels_last:
                batch = replace(batch, x=dp.input(batch.x))
            with no_sync(), dp.autocast():
                out = forward(batch, epoch)
            if check_every_step:
                _check_finite(out, epoch, step)
            else:
                nonfinite |= ~torch.isfinite(out.total.detach())
            optimizer.zero_grad(set_to_none=True)
            w = _shard_weight(train_loader, step, n_loader)
            scaled = out if w == 1.0 else replace(out, losses={k: v * w for k, v in out.losses.items()})
            if conflict is not None and conflict.due(step):
                conflict.measure(scaled.losses)  # before the backward that frees the graph; writes no .grad
            if dot:  # two gradients (CE, distillation), averaged over the processes by dot_backward itself
                dot_backward(scaled.losses, params, optimizer)
            else:
                method.backward(scaled)
            norm = None
            if s.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, s.grad_clip)  # global norm; no host sync
            if guard is not None:
                exploded = guard.step(out.total, grad_norm(params) if norm is None else norm, epoch, step,
                                      batch.y.shape[0])
                if exploded is not None:  # (immediate mode: on_divergence is "stop")
                    raise TrainingDiverged(_stopped(exploded.message, s, saved_epoch, best), epoch, exploded.rule)
            optimizer.step()
            sums.add(out, batch.y)
        if bool(nonfinite):
            raise NonFiniteLossError(f"non-finite loss during epoch {epoch}; the last good checkpoint is kept", epoch,
                                     "non-finite")
        train = sums.summary()
        if guard is not None:
            train.update(guard.epoch_stats(params))  # step maxima, first step, weight_change
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, "train": train}
        measured = conflict.epoch_summary() if conflict is not None else None
        if measured is not None:
            record["grad_conflict"] = measured
        diverged = guard.update(epoch, record["train"]) if guard is not None else None
        if diverged is not None:
            record["divergence"] = diverged.rule
            if s.on_divergence == "stop":
                if is_main and log is not None:
                    log.append(record)
                raise TrainingDiverged(_stopped(diverged.message, s, saved_epoch, best), epoch, diverged.rule)
            warnings.warn(f"{diverged.message} (run.on_divergence=warn: training goes on)", RuntimeWarning,
                          stacklevel=2)
            guard = None
            warned = {"epoch": epoch, "rule": diverged.rule, "message": diverged.message}
        if eval_loader is not None and (epoch % s.eval_every == 0 or epoch == s.epochs):
            try:
                test = evaluate(method.eval_model(), eval_loader, num_classes, teacher_eval_logits,
                                method.report_temperature, bins=s.fidelity_bins if epoch == s.epochs else 0)
            except NonFiniteLogits as exc:  # the weights' or the BatchNorm statistics' overflow shows here
                raise overshot(f"the student's test logits are NaN or inf after epoch {epoch} ({exc.bad} of {exc.n} "
                               "examples), while its training losses were finite", epoch, s.lr) from None
            if "bins" in test:  # beside the test report, whose keys are all numbers
                record["fidelity_bins"] = test.pop("bins")
            record["test"] = test
            if test["student_acc"] > best["acc"]:
                best = {"acc": test["student_acc"], "epoch": epoch}
                if s.out_dir is not None and is_main:
                    save_tensors(s.out_dir / "best.safetensors", method.eval_model().state_dict(),
                                 s.weights_metadata)
        record["epoch_time_s"] = time.perf_counter() - t0
        history.append(record)
        good = guard is None or not guard.building or epoch == s.epochs
        if is_main and log is not None:
            log.append(record)  # log before checkpoint: a kill in between is undone by truncate() on resume
            if good:
                info = {"epoch": epoch, "best": best, "identity_hash": s.identity_hash, "identity": s.identity}
                save_training_state(ckpt_path, method, optimizer, rng_state(), info)
        if good:
            saved_epoch = epoch
        progress.epoch_done(record)
        dist.barrier()
    progress.close()
    ended = guard.finish(s.epochs) if guard is not None and history else None
    if ended is not None:  # a rule was building when the run ended: reported, not stopped (its patience is kept)
        warnings.warn(ended.message, RuntimeWarning, stacklevel=2)
        warned = {"epoch": ended.epoch, "rule": ended.rule, "message": ended.message, "ended": True}
    if log is not None and is_main:
        save_tensors(s.out_dir / "model.safetensors", method.eval_model().state_dict(), s.weights_metadata)
        log.close()
    last_test = next((r["test"] for r in reversed(history) if "test" in r), {})
    return LoopResult(history=history, best=best, last=last_test, wall_time_s=time.perf_counter() - start,
                      resumed_from=resumed_from, divergence=warned)
