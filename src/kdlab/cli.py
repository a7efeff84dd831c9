"""The ``kdlab`` command line: ``demo | teacher | train | eval | recipes | config | methods``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_train(args, role: str) -> int:
    from kdlab.config import load_config
    from kdlab.engine.run import execute

    cfg = load_config(args.config, args.overrides)
    final = execute(cfg, role=role)
    s = final["student"]
    if final.get("resumed_from_epoch"):
        print(f"resumed from epoch {final['resumed_from_epoch']}")
    line = f"{role} {s['arch']}: best {s['best_acc']:.2f}% (epoch {s['best_epoch']}), last {s['last_acc']:.2f}%"
    if "teacher" in final:
        fid = final["fidelity"]
        line += (f" | teacher {final['teacher']['acc']:.2f}% | agreement {fid['agreement']:.2f}% "
                 f"| KL {fid['kl']:.4f}")
    print(line)
    print(f"wrote {Path(cfg.out_dir) / 'final.json'}")
    return 0


def _cmd_config(args) -> int:
    import yaml

    from kdlab.config import load_config

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _cmd_recipes(args) -> int:
    from kdlab.config import RECIPES_DIR

    for path in sorted(RECIPES_DIR.rglob("*.yaml")):
        print(path.relative_to(RECIPES_DIR).with_suffix(""))
    return 0


def _cmd_methods(args) -> int:
    from kdlab import methods

    for name in methods.names():
        cls = methods.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name:18s} {doc[0] if doc else ''}")
    return 0


def _cmd_eval(args) -> int:
    from kdlab.engine.checkpoint import load_model
    from kdlab.engine.run import make_loaders
    from kdlab.data import load_dataset
    from kdlab.eval.fidelity import evaluate_accuracy, fidelity_report

    splits = load_dataset(args.data, root=args.root)
    _, test_loader = make_loaders(splits, 256, 512, 0, "cpu", augment=False)
    student = load_model(args.student, num_classes=splits.num_classes)
    if args.teacher:
        teachers = [load_model(p, num_classes=splits.num_classes) for p in args.teacher]
        report = fidelity_report(teachers if len(teachers) > 1 else teachers[0], student, test_loader,
                                 temperature=args.temperature)
    else:
        report = evaluate_accuracy(student, test_loader)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_demo(args) -> int:
    from kdlab.demo import run_demo

    run_demo(out_dir=Path(args.out), quick=args.quick, seeds=args.seeds, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdlab", description="Knowledge distillation for image classifiers.")
    p.add_argument("--version", action="version", version=f"kdlab {__import__('kdlab').__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="compare every method on MNIST-1D (teacher trained or reused from cache)")
    d.add_argument("--quick", action="store_true", help="a smaller, ~1 minute version")
    d.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3, 1 with --quick)")
    d.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_cmd_demo)

    for name, role, text in (("teacher", "teacher", "train a teacher (CE only) from a config"),
                             ("train", "student", "distil a student from a config; resumes in the same out_dir")):
        t = sub.add_parser(name, help=text)
        t.add_argument("config", help="YAML file or shipped recipe name (see `kdlab recipes`)")
        t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.1 seed=1")
        t.set_defaults(func=lambda a, r=role: _cmd_train(a, r))

    c = sub.add_parser("config", help="print a config after overrides and validation")
    c.add_argument("config", nargs="?", default=None)
    c.add_argument("overrides", nargs="*")
    c.set_defaults(func=_cmd_config)

    e = sub.add_parser("eval", help="accuracy and teacher–student fidelity of checkpoints on a test set")
    e.add_argument("--student", required=True, help="student model.safetensors")
    e.add_argument("--teacher", action="append", help="teacher model.safetensors (repeat for an ensemble)")
    e.add_argument("--data", default="mnist1d", choices=["mnist1d", "cifar100"])
    e.add_argument("--root", default=None, help="dataset directory")
    e.add_argument("--temperature", type=float, default=None, help="also report KL at this temperature")
    e.set_defaults(func=_cmd_eval)

    sub.add_parser("recipes", help="list the shipped configs").set_defaults(func=_cmd_recipes)
    sub.add_parser("methods", help="list the registered methods").set_defaults(func=_cmd_methods)
    return p


def main(argv: list[str] | None = None) -> int:
    from kdlab.config import ConfigError
    from kdlab.engine.checkpoint import CheckpointError
    from kdlab.engine.loop import NonFiniteLossError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NonFiniteLossError as exc:
        print(f"kdlab: stopped: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"kdlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdlab: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
