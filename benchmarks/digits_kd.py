"""A real-image showcase: scikit-learn's digits (1797 real 8×8 scans of handwritten digits, shipped inside the
scikit-learn package, no download) written as an image folder, then teacher → student KD vs CE through kdlab's
image-folder path (`kdlab teacher` / `kdlab train` with ``data.name=imagefolder``). docs/images.md shows the output.

    pip install scikit-learn                                  # only this script needs it
    python benchmarks/digits_kd.py write DIR                  # DIR/train/<digit>/*.png, DIR/val/<digit>/*.png
    python benchmarks/digits_kd.py run DIR --out runs/digits  # teacher, then CE and KD students over 3 seeds
    python benchmarks/digits_kd.py run DIR --out runs/digits --student-subset 240   # students see 240 images
    python benchmarks/digits_kd.py run DIR --out runs/digits_features --student-subset 240 \
        --methods ce kd fitnet at nst pkt rkd sp vid kdsvd ofd crd reviewkd   # every feature method (docs/images.md)
    python benchmarks/digits_kd.py --quick                    # write + run in a temporary folder: a smoke run

Run time on 2 CPU cores: full ~10 min, --quick ~25 s.

``write``: every third scan (in the package's order) goes to ``val/`` (599 images), the rest to ``train/`` (1198);
the 0–16 grey levels are scaled to 0–255 and saved as 8-bit greyscale PNG (kdlab decodes them as RGB).
``run``: the kdlab commands below, printed before they run, then the table (mean ± std of the students' final test
accuracy over the seeds). Settings: benchmarks/digits.yaml; student and method on the command line.
``--quick``: a smoke run of both steps in a temporary folder: seed 0, every kdlab command for 1 epoch and evaluated on
the first 128 validation images, the students trained on the first 128 training images (the accuracies mean nothing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIG = Path(__file__).with_name("digits.yaml")


def write(root: Path) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        split = "val" if i % 3 == 2 else "train"
        path = root / split / str(label) / f"digit_{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img * 255.0 / 16.0).astype(np.uint8), mode="L").save(path)
    print(f"wrote {len(digits.images)} images to {root}/train and {root}/val")


STOPPED_EXITS = (3, 4)  # kdlab's exits when its guard stops a run (non-finite, diverged; out_dir holds stopped.json)


def _kdlab(*args: str, may_stop: bool = False) -> bool:
    """Run one kdlab command; ``False`` where the divergence guard stopped it and ``may_stop`` (the sweep goes on,
    and the summary counts it), any other failure raises."""
    cmd = [sys.executable, "-m", "kdlab", *args]
    print("$ kdlab " + " ".join(args), flush=True)
    code = subprocess.run(cmd, check=False).returncode
    if code in STOPPED_EXITS and may_stop:
        return False
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)
    return True


def run(root: Path, out: Path, seeds: list[int], student: str, methods: list[str], subset: int | None,
        extra: tuple[str, ...] = ()) -> None:
    """``extra``: overrides appended to every kdlab command (``--quick``: the epoch count)."""
    teacher = out / "teacher"
    _kdlab("teacher", str(CONFIG), f"data.root={root}", f"out_dir={teacher}", *extra)
    rows, stopped = {}, {}
    for method in methods:
        accs = []
        for seed in seeds:
            run_dir = out / (f"{method}-seed{seed}" + (f"-n{subset}" if subset else ""))
            if not _kdlab("train", str(CONFIG), f"data.root={root}", f"out_dir={run_dir}", f"seed={seed}",
                          f"student.arch={student}", f"method.name={method}",
                          f"teacher.checkpoint={teacher / 'model.safetensors'}",
                          *([f"data.train_subset={subset}"] if subset else []), *extra, may_stop=True):
                stopped[method] = stopped.get(method, 0) + 1
                continue
            final = json.loads((run_dir / "final.json").read_text())
            accs.append(final["fidelity"]["student_acc"])
            rows.setdefault("agreement " + method, []).append(final["fidelity"]["agreement"])
        rows[method] = accs
    t = json.loads((teacher / "final.json").read_text())["teacher"]
    print(f"\nteacher {t['arch']}: {t['last_acc']:.2f}% on val")
    seen = f"first {subset} training images" if subset else "all training images"
    print(f"\n| student {student} ({seen}) | val accuracy % (mean ± std over seeds {seeds}) | per seed | "
          "agreement with the teacher % |")
    print("|---|---|---|---|")
    for method in methods:
        accs, agree = rows[method], rows.get("agreement " + method, [])
        failed = f" ({stopped[method]} stopped by the divergence guard)" if method in stopped else ""
        if not accs:
            print(f"| {method} | —{failed} | | |")
            continue
        std = f"{statistics.stdev(accs):.2f}" if len(accs) > 1 else "—"  # one seed (--quick): no spread
        print(f"| {method} | {statistics.mean(accs):.2f} ± {std}{failed} | "
              f"{', '.join(f'{a:.2f}' for a in accs)} | {statistics.mean(agree):.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: write and run in a temporary folder, 1 epoch, students on 128 images")
    sub = p.add_subparsers(dest="cmd")
    w = sub.add_parser("write")
    w.add_argument("root", type=Path)
    r = sub.add_parser("run")
    r.add_argument("root", type=Path)
    r.add_argument("--out", type=Path, default=Path("runs/digits"))
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--student", default="resnet8")
    r.add_argument("--methods", nargs="+", default=["ce", "kd"])
    r.add_argument("--student-subset", type=int, default=None,
                   help="students train on the first N training images (the teacher on all of them)")
    a = p.parse_args()
    if a.quick:
        if a.cmd:
            p.error("--quick takes no command: it runs write and run itself")
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp) / "digits")
            run(Path(tmp) / "digits", Path(tmp) / "runs", [0], "resnet8", ["ce", "kd"], 128,
                ("optim.epochs=1", "optim.milestones=[]", "data.test_subset=128"))
    elif a.cmd is None:
        p.error("a command (write or run) or --quick is required")
    elif a.cmd == "write":
        write(a.root)
    else:
        run(a.root, a.out, a.seeds, a.student, a.methods, a.student_subset)


if __name__ == "__main__":
    main()
