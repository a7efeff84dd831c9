"""The ``kdlab`` command line: ``demo | teacher | train | eval | fidelity | experiment | recipes | config | methods``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _cmd_train(args, role: str) -> int:
    from kdlab.config import load_config
    from kdlab.engine.run import execute

    from kdlab.distributed import launched_by_torchrun

    cfg = load_config(args.config, args.overrides)
    final = execute(cfg, role=role, leave_group=not launched_by_torchrun())
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
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


def _cmd_fidelity(args) -> int:
    """Fidelity of student checkpoints against teacher checkpoints on named sources (kdlab.fidelity.sources)."""
    from kdlab.config import load_config
    from kdlab.data.splits import select_split
    from kdlab.engine.checkpoint import load_model
    from kdlab.engine.run import load_data
    from kdlab.fidelity.sources import evaluate_sources, fidelity_with_control

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    cfg = None
    if args.run:  # a training out_dir: its config (data, distill_data, teacher) and model
        cfg_path = Path(args.run) / "config.yaml"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} not found: --run must be the out_dir of `kdlab train`")
        cfg = load_config(cfg_path, [])
    else:
        overrides = [f"data.name={args.data}"] + ([f"data.root={args.root}"] if args.root else [])
        cfg = load_config(None, overrides)
        if "distill_stream" in sources:
            raise ValueError("the distill_stream source needs --run (the training out_dir with metrics.jsonl)")
    splits = select_split(cfg.distill_data, load_data(cfg), cfg.distill_data.split)
    student_path = args.student or (str(Path(args.run) / "model.safetensors") if args.run else None)
    teacher_paths = args.teacher or (cfg.teacher.checkpoints or ([cfg.teacher.checkpoint] if cfg.teacher.checkpoint
                                                                 else []))
    if not student_path or not teacher_paths:
        raise ValueError("give --student and --teacher (repeat for an ensemble), or --run DIR of a distillation run")
    for path in [student_path, *teacher_paths, *([args.control] if args.control else [])]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint {path} not found")
    n = splits.num_classes
    student = load_model(student_path, num_classes=n)
    members = [load_model(p, num_classes=n) for p in teacher_paths]
    if len(members) > 1:
        from kdlab.teachers import Ensemble

        teacher = Ensemble(members, rule=args.ensemble_rule or cfg.teacher.ensemble_rule,
                           temperature=cfg.teacher.ensemble_temperature)
    else:
        teacher = members[0]
    temperature = args.temperature if args.temperature is not None else (
        cfg.method.args.get("temperature") if args.run else None)
    kwargs = dict(distill_data=cfg.distill_data, run_dir=args.run, temperature=temperature,
                  batch_size=args.batch_size, seed=args.seed, cka=args.cka, augment=cfg.data.augment == "default",
                  policy_batch_size=cfg.optim.batch_size if args.run else None)
    if args.control:
        report = fidelity_with_control(teacher, student, load_model(args.control, num_classes=n), splits, sources,
                                       **kwargs)
    else:
        report = {"student": evaluate_sources(teacher, student, splits, sources, **kwargs)}
    text = json.dumps(report, indent=2)
    if args.json:
        from kdlab._io import atomic_write_text

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.json), text)
    for src, r in report["student"].items():
        line = f"{src:15s} agreement {r['agreement']:6.2f}%  KL {r['kl']:.4f}"
        if "student_acc" in r and "teacher_acc" in r:
            line += (f"  student acc {r['student_acc']:.2f}%  teacher acc {r['teacher_acc']:.2f}%  "
                     f"ECE s/t {100 * r['student_ece']:.2f}/{100 * r['teacher_ece']:.2f}%")
        if src in report.get("control", {}):
            line += f"  | control agreement {report['control'][src]['agreement']:.2f}%"
        print(line)
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _cmd_experiment(args) -> int:
    from kdlab.fidelity.experiments import EXPERIMENTS, run_experiment

    if args.list or not args.name:
        for name, (_, title) in EXPERIMENTS.items():
            print(f"{name:28s} {title}")
        return 0
    out = Path(args.out or f"experiments/{args.name}{'_quick' if args.quick else ''}")
    run_experiment(args.name, out, quick=args.quick, seeds=args.seeds, progress=not args.no_progress,
                   epochs=args.epochs)
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

    f = sub.add_parser("fidelity", help="fidelity report of checkpoints on named sources, with an optional "
                                        "independent-student control")
    f.add_argument("--student", help="student model.safetensors (default: --run DIR/model.safetensors)")
    f.add_argument("--teacher", action="append", help="teacher model.safetensors (repeat for an ensemble)")
    f.add_argument("--control", help="a student distilled the same way from an independent teacher")
    f.add_argument("--run", help="training out_dir: its config.yaml gives data, distill_data, teacher and τ; "
                                 "needed for the distill_stream source")
    f.add_argument("--sources", default="test,train_clean,train_aug",
                   help="comma-separated subset of test,train_clean,train_aug,distill_stream")
    f.add_argument("--data", default="mnist1d", choices=["mnist1d", "cifar100"], help="dataset (without --run)")
    f.add_argument("--root", default=None, help="dataset directory (without --run)")
    f.add_argument("--temperature", type=float, default=None,
                   help="also report KL at this (training) temperature; default: the run's method temperature")
    f.add_argument("--ensemble-rule", choices=["prob", "tempered_prob", "logit"], default=None)
    f.add_argument("--batch-size", type=int, default=512)
    f.add_argument("--seed", type=int, default=0, help="seed of the train_aug pass")
    f.add_argument("--cka", action="store_true", help="add linear CKA of pooled features (test, train_clean)")
    f.add_argument("--json", default=None, help="write the report to this JSON file")
    f.set_defaults(func=_cmd_fidelity)

    x = sub.add_parser("experiment", help="run a fidelity experiment of Stanton et al. on MNIST-1D")
    x.add_argument("name", nargs="?", help="experiment name (see --list)")
    x.add_argument("--list", action="store_true", help="list the experiments")
    x.add_argument("--quick", action="store_true", help="fewer variants, seeds and epochs (about a minute)")
    x.add_argument("--seeds", type=int, default=None, help="seeds per variant (default 3, 2 with --quick; min 2)")
    x.add_argument("--epochs", type=int, default=None, help="student epochs (default 30, 10 with --quick)")
    x.add_argument("--out", default=None, help="output directory (default experiments/NAME[_quick])")
    x.add_argument("--no-progress", action="store_true")
    x.set_defaults(func=_cmd_experiment)

    sub.add_parser("recipes", help="list the shipped configs").set_defaults(func=_cmd_recipes)
    sub.add_parser("methods", help="list the registered methods").set_defaults(func=_cmd_methods)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = _run(args)
    from kdlab.distributed import launched_by_torchrun

    if launched_by_torchrun():
        # Every file is written (atomically, fsynced) by now. Interpreter teardown with a gloo process group can
        # abort in gloo's threads ("terminate called without an active exception"), so end without any teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args) -> int:
    from kdlab.config import ConfigError
    from kdlab.engine.checkpoint import CheckpointError
    from kdlab.engine.loop import NonFiniteLossError

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
