"""``kdlab teacher | train | config | recipes | methods``: train from a config, and inspect configs and methods."""

from __future__ import annotations

import yaml

from kdlab import build, distributed, methods
from kdlab.config import recipe_names


def _train(args, teacher: bool) -> int:
    cfg = build.load_config(args.config, args.overrides)
    run = build.train_teacher if teacher else build.distil
    final = run(cfg, leave_group=not distributed.launched_by_torchrun())
    if not distributed.is_main():  # under torchrun only rank 0 reports
        return 0
    role = final["role"]
    s = final[role]
    if final.get("already_finished"):
        print(f"{cfg.out_dir} holds a finished run ({final['epochs']} epochs); left as it is. Use a new out_dir to "
              "train again.")
    elif final.get("resumed_from_epoch"):
        print(f"resumed from epoch {final['resumed_from_epoch']}")
    line = f"{role} {s['arch']}: best {s['best_acc']:.2f}% (epoch {s['best_epoch']}), last {s['last_acc']:.2f}%"
    if role == "student" and "teacher" in final:
        fid = final["fidelity"]
        line += (f" | teacher {final['teacher']['acc']:.2f}% | agreement {fid['agreement']:.2f}% "
                 f"| KL {fid['kl']:.4f}")
    print(line)
    print(f"{'final' if final.get('already_finished') else 'wrote'} {cfg.out_dir}/final.json")
    return 0


def _config(args) -> int:
    cfg = build.load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _recipes(args) -> int:
    for name in recipe_names():
        print(name)
    return 0


def _methods(args) -> int:
    for name in methods.names():
        doc = (methods.get(name).__doc__ or "").strip().splitlines()
        print(f"{name:18s} {doc[0] if doc else ''}")
    return 0


def register(sub) -> None:
    for name, teacher, text in (("teacher", True, "train a teacher (CE only) from a config"),
                                ("train", False, "distil a student from a config; resumes in the same out_dir")):
        t = sub.add_parser(name, help=text)
        t.add_argument("config", help="YAML file or shipped recipe name (see `kdlab recipes`)")
        t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.1 seed=1")
        t.set_defaults(func=lambda a, teacher=teacher: _train(a, teacher))

    c = sub.add_parser("config", help="print a config after overrides and validation")
    c.add_argument("config", nargs="?", default=None)
    c.add_argument("overrides", nargs="*")
    c.set_defaults(func=_config)

    sub.add_parser("recipes", help="list the shipped configs").set_defaults(func=_recipes)
    sub.add_parser("methods", help="list the registered methods").set_defaults(func=_methods)
