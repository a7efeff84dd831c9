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
from kdlab.teachers.store import PRECISIONS

COMMAND = "teacher cache"


def _cache(args) -> int:
    cfg = builder.load_config(args.config, args.overrides)
    builder.teacher_store_from_config(cfg, precision=args.precision, k=args.k, out=args.out, epochs=args.epochs,
                                    schedule_seed=args.schedule_seed, chunk_size=args.chunk_size,
                                    leave_group=not distributed.launched_by_torchrun())
    if distributed.is_main():
        print(f"student runs use it with teacher.cache.store={args.out or cfg.teacher.cache.store}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(COMMAND, help="store a teacher's outputs on a crop schedule of a streamed data set, once, for "
                                     "every later student (FKD); resumable, shards under torchrun")
    p.add_argument("config", help="the student's run config (its data, teacher, epochs and seed), or a recipe name")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data/imagenet")
    p.add_argument("--precision", required=True, choices=PRECISIONS,
                   help="float32: exact (4 bytes x classes per view); float16: half of that, rounded; topk: FKD's "
                        "top-k log-probabilities and the remaining mass (4k+4 bytes per view), for methods that "
                        "accept it (kd, ce)")
    p.add_argument("--k", type=int, default=10, help="classes kept per view with --precision topk (default 10)")
    p.add_argument("--out", default=None, help="the store's directory (default: teacher.cache.store)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of crops (default: optim.epochs)")
    p.add_argument("--schedule-seed", type=int, default=None,
                   help="seed of the crop schedule (default: the config's seed)")
    p.add_argument("--chunk-size", type=int, default=256, help="crops per teacher forward (default 256)")
    p.set_defaults(func=_cache)
