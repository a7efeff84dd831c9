"""torchrun / DistributedDataParallel helpers: a leaf that methods, teachers, the engine and the builder may all use.
Every function is a no-op in a single process."""

from __future__ import annotations

import ctypes
import inspect
import os
import signal
import sys
from datetime import timedelta

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel as DDP

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def is_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


class ProcessGroupError(RuntimeError):
    """The processes of a torchrun job could not all join (a rank missing, the rendezvous unreachable)."""


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when its parent (the torchrun agent) dies, even by SIGKILL, so a killed
    launcher leaves no orphan workers (the agent itself stops its workers on SIGTERM/SIGINT)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl in this libc: nothing to arm
        return
    if os.getppid() == 1:  # the parent died before the signal was armed
        os._exit(1)


def init_from_env(device: str, timeout: float = 1800.0) -> torch.device:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); returns this rank's device.

    ``timeout`` (seconds, ``run.dist_timeout``): how long joining and every collective may wait for the other ranks
    before failing with :class:`ProcessGroupError` (joining) or the backend's error (a collective)."""
    if not launched_by_torchrun() or is_initialized():
        return torch.device(device)
    _die_with_parent()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    wait = timedelta(seconds=timeout)
    try:
        store, rank_, world = next(tdist.rendezvous("env://", timeout=wait))
        # each torchrun attempt (--max-restarts) in its own key space of the launcher's store: otherwise a restarted
        # rank may read the address a killed rank published and fail to connect to it (pytorch/pytorch#167288)
        store = tdist.PrefixStore(f"kdlab/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        tdist.init_process_group(backend, store=store, rank=rank_, world_size=world, timeout=wait)
    except RuntimeError as exc:  # DistError (a store or network timeout) or a backend's, e.g. gloo's connect
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProcessGroupError(
            f"rank {os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')} could not join the others at {where} "
            f"within run.dist_timeout={timeout:g} s ({first}). A process did not start or cannot reach that "
            "address: check every node and rank, or raise run.dist_timeout") from None
    return torch.device("cuda", local_rank) if backend == "nccl" else torch.device(device)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_initialized():
        t = t.clone()
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_reduce_accumulator(acc):
    """Sum a FidelityAccumulator's per-example sums across ranks (each rank saw a disjoint shard)."""
    if is_initialized():
        acc.load_sum_tensor(all_reduce_sum(acc.sum_tensor()))
    return acc


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Average same-shaped tensors across ranks in place, through one flat buffer (one collective)."""
    if not is_initialized() or world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (e.g. BatchNorm running stats) to every rank, as DDP(broadcast_buffers=True) does."""
    if not is_initialized() or world_size() == 1:
        return
    for b in module.buffers():
        tdist.broadcast(b, src=0)


def barrier() -> None:
    if is_initialized():
        tdist.barrier()


def destroy() -> None:
    if is_initialized():
        tdist.destroy_process_group()


def wrap_ddp(method: torch.nn.Module, device: torch.device):
    """DDP around the method's trainable part (student + extras); the teacher is not a submodule, so it stays
    unwrapped and replicated. Returns None in a single process."""
    if not is_initialized() or world_size() == 1:
        return None
    device_ids = [device.index] if device.type == "cuda" else None
    # rank 0's buffers (BN running stats) are synced before every forward; the argument was renamed in newer torch
    sync = ({"forward_sync_buffers": True} if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
            else {"broadcast_buffers": True})
    # every trainable parameter takes part in every step (a method's eval-only parts are not trainable), so DDP need
    # not search the graph for unused ones
    return DDP(method, device_ids=device_ids, find_unused_parameters=False, **sync)


# ---------------------------------------------------------------------------------------------------------------
# BatchNorm over the global batch
# ---------------------------------------------------------------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """Σ over ranks, differentiable: the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        tdist.all_reduce(grad, op=tdist.ReduceOp.SUM)
        return grad


class GlooSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on CPU tensors (gloo).

    ``torch.nn.SyncBatchNorm`` synchronises only accelerator tensors, and DDP refuses it on CPU; this layer
    computes ``μ = Σ_ranks Σ x / N`` and ``σ² = Σ_ranks Σ (x − μ)² / N`` (two passes, as one process does,
    accumulated in float64) through differentiable all-reduces, so forward and backward equal one process on the
    global batch. Its parameters and buffers are a BatchNorm's, so state-dict keys do not change.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_initialized() and world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local_n = torch.tensor([x.numel() // max(x.shape[1], 1)], dtype=torch.float64, device=x.device)
        total = _AllReduceSum.apply(torch.cat([x.double().sum(dims), local_n]))
        n = total[-1].detach()
        if float(n) <= 1:
            raise ValueError(f"BatchNorm needs more than 1 value per channel when training (got {int(n)} over "
                             "all ranks)")
        mean = total[:-1] / n
        var = _AllReduceSum.apply(((x.double() - mean.view(shape)) ** 2).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * (var * n / (n - 1)).to(self.running_var.dtype))
        y = (x - mean.to(x.dtype).view(shape)) * torch.rsqrt(var.to(x.dtype) + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in module.modules())


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module``'s children replaced in place by one normalising over the global batch
    (``torch.nn.SyncBatchNorm`` on accelerators, :class:`GlooSyncBatchNorm` on CPU), sharing its parameters and
    buffers: optimizer references and state-dict keys stay valid. Returns ``module`` (converted itself if a
    BatchNorm)."""
    cls = GlooSyncBatchNorm if device.type == "cpu" else nn.SyncBatchNorm
    if isinstance(module, _BatchNorm) and not isinstance(module, (nn.SyncBatchNorm, GlooSyncBatchNorm)):
        new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child, device)
        if converted is not child:
            module.add_module(name, converted)
    return module
