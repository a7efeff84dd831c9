"""What float16 / bfloat16 storage of the teacher-logit cache costs: the error of the stored logits against float32.

    python benchmarks/cache_precision.py                       # trains the demo's quick MNIST-1D teacher first
    python benchmarks/cache_precision.py --teacher PATH.safetensors
    python benchmarks/cache_precision.py --quick               # a 2-epoch teacher, 1000 signals (a smoke run)

Run time on 2 CPU cores: full ~25 s, --quick ~10 s.

The table holds every (training signal, shift view) pair of MNIST-1D (4000 × 9) through the teacher, as
``builder.cached_teacher`` fills it for ``kdlab train mnist1d/kd``; float32 is the reference (it is the live teacher's
output). Reported: the largest |logit|, the largest and mean absolute error of the stored logits, the largest error
relative to the logit's magnitude, and how many stored rows change their argmax.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from kdlab import builder
from kdlab.teachers import CachedTeacher, FrozenTeacher

try:
    from step_time import machine_line
except ImportError:  # pragma: no cover
    from benchmarks.step_time import machine_line


def table(teacher_path: Path, data: tuple[str, ...] = ()) -> str:
    """``data``: config overrides of the data (``--quick``: a subset of the training signals)."""
    cfg = builder.load_config("mnist1d/kd", [f"teacher.checkpoint={teacher_path}", "run.progress=false", *data])
    splits = builder.load_data(cfg)
    train, _ = builder.make_loaders(splits, cfg.optim.batch_size, cfg.eval.batch_size, cfg.seed, "cpu")
    teacher = FrozenTeacher(builder.load_teacher_module(cfg.teacher, splits.num_classes))
    tables = {d: CachedTeacher(teacher, train, dtype=d, precompute=True, progress=False).values.float()
              for d in ("float32", "float16", "bfloat16")}
    exact = tables["float32"]
    lines = [machine_line(torch.device("cpu")),
             f"teacher {teacher_path.name}: {exact.shape[0]} signals × {exact.shape[1]} views × {exact.shape[2]} "
             f"classes, max |logit| {exact.abs().max():.2f}", "",
             "| storage | bytes / logit | max abs error | mean abs error | max error / abs(logit) | argmax changed |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, values in tables.items():
        err = (values - exact).abs()
        rel = (err / exact.abs().clamp(min=1e-3)).max()
        flips = int((values.argmax(-1) != exact.argmax(-1)).sum())
        size = torch.finfo(getattr(torch, name)).bits // 8
        lines.append(f"| {name} | {size} | {err.max():.3g} | {err.mean():.3g} | {rel:.3g} | {flips} of "
                     f"{exact.shape[0] * exact.shape[1]} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, default=None, help="a kdlab MNIST-1D teacher (default: train one)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: the first 1000 training signals; a 2-epoch teacher unless --teacher is given")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = ("data.train_subset=1000",) if args.quick else ()
    if args.teacher is not None:
        print(table(args.teacher, data))
        return
    with tempfile.TemporaryDirectory() as tmp:
        from kdlab.demo import QUICK_TEACHER_EPOCHS, _recipe, _scaled

        out = Path(tmp) / "teacher"
        epochs = 2 if args.quick else QUICK_TEACHER_EPOCHS
        ov = _scaled(_recipe("teacher"), epochs) + [f"out_dir={out}", "run.progress=false", *data]
        builder.train_teacher(builder.load_config("mnist1d/teacher", ov))
        print(table(out / "model.safetensors", data))


if __name__ == "__main__":
    main()
