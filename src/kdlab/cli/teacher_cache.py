"""``kdlab teacher cache CONFIG [overrides] --precision P``: a teacher's outputs on a stored crop schedule, once.

For streamed data sets (ImageNet, image folders): the crop boxes and flips of ``--epochs`` epochs are drawn from the
schedule seed and stored, the config's teacher is run once on every crop, and its outputs are stored beside them
(``kdlab.teachers.store``). Student runs with ``teacher.cache.store`` set to the same directory then replay those
crops with those outputs instead of running the teacher (``teacher.cache.enabled: auto``). Prints the size and the
time it will take before it starts; an interrupted build continues where it stopped when the command is run again;
``torchrun --nproc_per_node=N -m kdlab teacher cache ...`` shares the work between N processes (GPUs).
"""

from __future__ import annotations

from kdlab import builder, distributed


def _cache(args) -> int:
    cfg = builder.load_config(args.config, args.overrides)
    builder.teacher_store_from_config(cfg, precision=args.precision, k=args.k, out=args.out, epochs=args.epochs,
                                    schedule_seed=args.schedule_seed, chunk_size=args.chunk_size,
                                    leave_group=not distributed.launched_by_torchrun())
    if distributed.is_main():
        print(f"student runs use it with teacher.cache.store={args.out or cfg.teacher.cache.store}")
    return 0
