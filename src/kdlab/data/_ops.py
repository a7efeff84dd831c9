"""Random draws and batch checks shared by the augmentations (views, mixers, AutoAugment) and the data policies.

Random numbers are drawn on the generator's device (a CPU generator cannot fill a CUDA tensor) and then moved to the
batch's device, so a result is a pure function of the generator's state wherever the batch lives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kdlab._checks import check_real


def check_generator(generator: Any) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator (or None for torch's global RNG); got {type(generator).__name__}"
        )


def check_batch(x: Any, name: str, min_ndim: int, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {what}; got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must be a batch {what}; got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one sample")


def rng_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=rng_device(generator, device)).to(device)


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=generator, device=rng_device(generator, device)).to(device)


def randperm(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator, device=rng_device(generator, device)).to(device)


def beta(alpha: float, generator: torch.Generator | None, device: torch.device) -> float:
    """One draw of Beta(alpha, alpha), reproducible from ``generator``.

    torch's Beta/Gamma samplers take no generator, so a 62-bit seed is drawn from ``generator`` and fed to a numpy
    Generator: the value is still a pure function of the torch generator's state.
    """
    check_real(alpha, "alpha", above=0, note=" (the Beta(alpha, alpha) parameter)")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=rng_device(generator, device)).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))
