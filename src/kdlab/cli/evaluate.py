"""``kdlab eval | fidelity``: accuracy and teacher–student fidelity of saved checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from kdlab import builder
from kdlab._checks import SettingError
from kdlab._io import CheckpointError, atomic_write_text
from kdlab.config import TeacherConfig
from kdlab.data import load_dataset
from kdlab.data.image_index import STREAMED
from kdlab.engine.device import resolve_device
from kdlab.eval.fidelity import evaluate_accuracy, fidelity_report
from kdlab.fidelity.sources import evaluate_sources, fidelity_with_control
from kdlab.models import load_model
from kdlab.models.card import read_card
from kdlab.models.weights import ArchMismatchError
from kdlab.plots import fidelity_by_bin


_FLAGS = {"student.arch": "--arch", "student.checkpoint": "--student", "teacher.arch": "--teacher-arch",
          "teacher.checkpoint": "--teacher", "teacher.checkpoints": "--teacher"}


def _run_config(args):
    """The run ``kdlab eval`` evaluates: RUN, or the run directory a ``--student`` file lies in (its config.yaml),
    unless ``--data`` names the data set; None for bare weight files."""
    if args.run:
        run = Path(args.run)
        if not (run / "config.yaml").is_file():
            raise FileNotFoundError(f"{run / 'config.yaml'} not found: RUN must be a run directory of `kdlab train` "
                                    "or `kdlab teacher` (or give --student FILE with --data)")
        return run
    beside = Path(args.student).parent
    return beside if args.data is None and (beside / "config.yaml").is_file() else None


def _eval(args) -> int:
    try:
        device = resolve_device(args.device)
    except SettingError as exc:
        raise exc.renamed(lambda key: "--device") from None
    if not args.run and not args.student:
        raise ValueError("give a run directory (kdlab eval RUN) or a weights file (kdlab eval --student FILE "
                         "--data NAME)")
    run = _run_config(args)
    if run is not None:
        cfg = builder.load_config(run / "config.yaml", ["run.progress=false"])
        splits = builder.load_data(cfg)
        data = f"{cfg.data.name} test set (the run's config: {run / 'config.yaml'})"
        card = read_card(run) or {}
        role = card.get("role")
        student_path = args.student or str(run / "model.safetensors")
        arch = args.arch or card.get("arch")
        teacher = _teacher_config(args.teacher, arch=args.teacher_arch) if args.teacher else (
            cfg.teacher.model_copy(update={"arch": args.teacher_arch or cfg.teacher.arch})
            if card.get("role") == "student" and (cfg.teacher.checkpoint or cfg.teacher.checkpoints) else None)
    else:
        name = args.data or "mnist1d"
        streamed = {"image_size": args.image_size} if name in STREAMED else {}  # the size the model was trained at
        splits = load_dataset(name, root=args.root, **streamed)
        data = f"{name} test set (--data {name}{'' if args.data else ', the default'})"
        student_path, arch, role = args.student, args.arch, None
        teacher = _teacher_config(args.teacher, arch=args.teacher_arch) if args.teacher else None
    _, test_loader = builder.make_loaders(splits, 256, 512, 0, device, augment=False)
    try:
        student = load_model(student_path, arch=arch, num_classes=splits.num_classes)
        if teacher is not None:
            teacher_module = builder.load_teacher_module(teacher, splits.num_classes)
    except SettingError as exc:
        raise exc.renamed(lambda key: _FLAGS.get(key, key)) from None
    except ArchMismatchError as exc:
        raise ValueError(f"{exc.path} holds a {exc.file_arch!r} model but --arch is {exc.arch!r}: set --arch "
                         f"{exc.file_arch} or leave it out (the file records its architecture)") from None
    except CheckpointError as exc:
        if "classes but the data has" not in str(exc):
            raise
        raise ValueError(f"{exc}: kdlab eval read the {data}; give the run directory (kdlab eval RUN) or --data "
                         "and --root of the data the weights were trained on") from None
    if teacher is not None:
        report = fidelity_report(teacher_module, student, test_loader, temperature=args.temperature, device=device)
    else:
        acc = evaluate_accuracy(student, test_loader, device=device)
        report = {"n": acc["n"], **{f"student_{k}": v for k, v in acc.items() if k != "n"}}
    if args.json == "-":
        print(json.dumps(report, indent=2))
        return 0
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2))
    print(f"{data}, {report['n']} samples")
    for who in ("student", "teacher"):
        if f"{who}_acc" in report:
            label = "teacher" if who == "student" and role == "teacher" and "teacher_acc" not in report else who
            print(f"{label:8s} accuracy {report[who + '_acc']:6.2f}%  NLL {report[who + '_nll']:.4f}  "
                  f"ECE {100 * report[who + '_ece']:.2f}%")
    if "agreement" in report:
        kl_t = "".join(f"  {k} {v:.4f}" for k, v in report.items() if k.startswith("kl_T"))
        print(f"agreement {report['agreement']:.2f}%  KL(teacher‖student) {report['kl']:.4f}{kl_t}")
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _teacher_config(paths: list[str], rule: str = "prob", temperature: float | None = None,
                    arch: str | None = None) -> TeacherConfig:
    if len(paths) == 1:
        return TeacherConfig(checkpoint=paths[0], arch=arch)
    return TeacherConfig(checkpoints=paths, ensemble_rule=rule, ensemble_temperature=temperature, arch=arch)


def _fidelity(args) -> int:
    """Fidelity of student checkpoints against teacher checkpoints on named sources (kdlab.fidelity.sources)."""
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if args.run:  # a training out_dir: its config (data, distill_data, teacher) and model
        cfg_path = Path(args.run) / "config.yaml"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} not found: --run must be the out_dir of `kdlab train`")
        cfg = builder.load_config(cfg_path, [])
    else:
        cfg = builder.load_config(None, [f"data.name={args.data}", f"data.image_size={args.image_size}"]
                                + ([f"data.root={args.root}"] if args.root else []))
        if "distill_stream" in sources:
            raise ValueError("the distill_stream source needs --run (the training out_dir with metrics.jsonl)")
    splits = builder.load_data(cfg)
    student_path = args.student or (str(Path(args.run) / "model.safetensors") if args.run else None)
    teacher_paths = args.teacher or (cfg.teacher.checkpoints or ([cfg.teacher.checkpoint] if cfg.teacher.checkpoint
                                                                 else []))
    if not student_path or not teacher_paths:
        raise ValueError("give --student and --teacher (repeat for an ensemble), or --run DIR of a distillation run")
    for path in [student_path, *([args.control] if args.control else [])]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint {path} not found")
    n = splits.num_classes
    student = load_model(student_path, num_classes=n)
    teacher = builder.load_teacher_module(_teacher_config(teacher_paths, args.ensemble_rule or cfg.teacher.ensemble_rule,
                                                        cfg.teacher.ensemble_temperature), n)
    temperature = args.temperature if args.temperature is not None else (
        cfg.method.args.get("temperature") if args.run else None)
    kwargs = dict(distill_data=cfg.distill_data, run_dir=args.run, temperature=temperature,
                  batch_size=args.batch_size, seed=args.seed, cka=args.cka, augment=cfg.data.augment == "default",
                  policy_batch_size=cfg.optim.batch_size if args.run else None, bins=args.bins)
    if args.control:
        report = fidelity_with_control(teacher, student, load_model(args.control, num_classes=n), splits, sources,
                                       **kwargs)
    else:
        report = {"student": evaluate_sources(teacher, student, splits, sources, **kwargs)}
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2))
    for src, r in report["student"].items():
        line = f"{src:15s} agreement {r['agreement']:6.2f}%  KL {r['kl']:.4f}"
        if "student_acc" in r and "teacher_acc" in r:
            line += (f"  student acc {r['student_acc']:.2f}%  teacher acc {r['teacher_acc']:.2f}%  "
                     f"ECE s/t {100 * r['student_ece']:.2f}/{100 * r['teacher_ece']:.2f}%")
        if src in report.get("control", {}):
            line += f"  | control agreement {report['control'][src]['agreement']:.2f}%"
        print(line)
    binned = next(((src, r["bins"]) for src, r in report["student"].items() if "bins" in r), None)
    if binned is not None:
        _print_bins(*binned)
        if args.plot:
            fidelity_by_bin(binned[1], Path(args.plot), title=f"{binned[0]}: fidelity by the teacher's confidence "
                                                             "and entropy")
            print(f"wrote {args.plot}")
    elif args.plot:
        raise ValueError("--plot draws the per-bin fidelity: give --bins N (N >= 1) and a source other than "
                         "distill_stream")
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _print_bins(source: str, bins: dict) -> None:
    """The per-bin table of one source: one row per bin, for each key (kdlab.eval.bins)."""
    pct = lambda v: "     -" if v is None else f"{v:6.2f}"  # noqa: E731
    for key, b in bins.items():
        print(f"{source} by teacher {key} ({len(b['count'])} equal-count bins; accuracy, agreement in %):")
        print("  bin  range                   n  student  teacher   agree       KL")
        for i, n in enumerate(b["count"]):
            kl = "       -" if b["kl"][i] is None else f"{b['kl'][i]:8.4f}"
            print(f"  {i + 1:3d}  {b['edges'][i]:.5f}–{b['edges'][i + 1]:.5f}  {n:6d}   {pct(b['student_acc'][i])}"
                  f"   {pct(b['teacher_acc'][i])}  {pct(b['agreement'][i])} {kl}")
