"""``kdlab teacher | train``: train from a config."""

from __future__ import annotations

from kdlab import builder, distributed


def _run(args, teacher: bool) -> int:
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


def _teacher(args) -> int:
    return _run(args, teacher=True)


def _train(args) -> int:
    return _run(args, teacher=False)
