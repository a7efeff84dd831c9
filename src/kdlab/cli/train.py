"""``kdlab teacher | train | config | recipes | methods``: train from a config, and inspect configs and methods."""

from __future__ import annotations

import yaml

from kdlab import builder, distributed, methods
from kdlab.config import recipe_names, resolve_config_path


def _train(args, teacher: bool) -> int:
    cfg = builder.load_config(args.config, args.overrides)
    run = builder.train_teacher if teacher else builder.distil
    final = run(cfg, leave_group=not distributed.launched_by_torchrun())
    if not distributed.is_main():  # under torchrun only rank 0 reports
        return 0
    role = final["role"]
    s = final[role]
    if final.get("already_finished"):
        print(f"{cfg.out_dir} holds a finished run ({final['epochs']} epochs); left as it is. Use a new out_dir to "
              "train again, or rerun with a larger optim.epochs alone to extend it (step or constant schedule).")
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
    cfg = builder.load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _recipes(args) -> int:
    names = recipe_names()
    paths = [resolve_config_path(name) for name in names]
    width = max(map(len, names))
    for name, path in zip(names, paths):
        print(f"{name:{width}s}  {_first_comment(path)}" if args.long else name)
    return 0


def _first_comment(path) -> str:
    """A recipe's opening comment, on one line: what is published and what is a default (every shipped recipe
    starts with it)."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def _methods(args) -> int:
    for name in methods.names():
        print(f"{name:16s} {methods.get(name).summary}")
    return 0


def register(sub) -> None:
    for name, teacher, text in (("teacher", True, "train a teacher (CE only) from a config"),
                                ("train", False, "distil a student from a config; resumes in the same out_dir")):
        t = sub.add_parser(name, help=text, epilog="kdlab teacher import FILE --arch NAME --out OUT.safetensors "
                           "converts published weights instead" if teacher else None)
        t.add_argument("config", help="YAML file or shipped recipe name (see `kdlab recipes`)")
        t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.1 seed=1")
        t.set_defaults(func=lambda a, teacher=teacher: _train(a, teacher))

    c = sub.add_parser("config", help="print a config after overrides and validation")
    c.add_argument("config", nargs="?", default=None,
                   help="YAML file or shipped recipe name (default: the built-in defaults)")
    c.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.1 seed=1")
    c.set_defaults(func=_config)

    r = sub.add_parser("recipes", help="list the shipped configs")
    r.add_argument("--long", action="store_true",
                   help="also show each recipe's opening comment (what is published, what is a default)")
    r.set_defaults(func=_recipes)
    sub.add_parser("methods", help="list the registered methods, one line each").set_defaults(func=_methods)
