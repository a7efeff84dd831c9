"""Exact teacher-logit cache keyed on (sample index, augmentation view). (Being implemented: see issue 6.)"""

from __future__ import annotations


def maybe_cache(teacher, cfg, method, train_loader, out_dir, batch_transform=None):
    """Return ``teacher`` itself (no cache) — placeholder until the cache lands; only ``enabled: true`` errors."""
    if cfg.enabled is True:
        raise NotImplementedError("teacher.cache.enabled=true: the teacher-logit cache is not implemented yet")
    return teacher
