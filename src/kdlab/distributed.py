"""torchrun / DistributedDataParallel helpers: a leaf that methods, teachers, the engine and the builder may all use.
Every function is a no-op in a single process."""

from __future__ import annotations

import inspect
import os

import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel as DDP


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


def init_from_env(device: str) -> torch.device:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); returns this rank's device."""
    if not launched_by_torchrun() or is_initialized():
        return torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        tdist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    tdist.init_process_group("gloo")
    return torch.device(device)


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
