"""Training-step time of every feature method against KD on resnet32x4 → resnet8x4 (CIFAR-shaped), optionally beside
mdistiller's implementation of the same method.

    python benchmarks/feature_step.py                          # batch 64, CRD's bank of 50,000 samples, 16384 negatives
    python benchmarks/feature_step.py --quick                  # a smoke run: batch 16, a bank of 2,000, 512 negatives
    python benchmarks/feature_step.py --mdistiller PATH        # also mdistiller's step (PATH: a checkout of it)
    python benchmarks/feature_step.py --device cuda            # on a GPU

Run time on 2 CPU cores: full ~20+ min, --quick ~80 s.
The full setting was stopped after 20 minutes on one CPU thread (a GPU is advised for it).

A step is what the engine does per batch: ``method(batch, epoch)``, the backward, ``optimizer.step()`` (SGD with
momentum 0.9; ``kd + dot`` is KD stepped by the DOT optimiser, its two backward passes included). Every method is
imported by name from kdlab's registry (fitnet, at, nst, pkt, rkd, sp, vid, kdsvd, ofd, crd, reviewkd); those not
registered in this checkout are left out. The networks are the same for every method (seed-0 weights; the teacher
frozen), with each method's default hyperparameters; CRD's bank has one row per sample of a CIFAR-100-sized training
set. The methods are timed in interleaved rounds (every method once per round, a few steps each) and the median step
is reported, so a slow period of a shared machine hits all alike; "× KD" divides by KD's median.

``--mdistiller PATH`` imports mdistiller's distillers and models from that checkout (nothing of it is copied here),
loads the same weights into its resnet32x4 and resnet8x4, builds the same method with its ``engine/cfg.py`` defaults
(ReviewKD: its resnet32x4 → resnet8x4 config) and times its training step on the same batch (its ``forward_train``,
the summed losses' backward, SGD over ``get_learnable_parameters()``; DOT: its ``DistillationOrientedTrainer`` with
two backward passes). mdistiller's CRD takes its negatives from the data loader, so their sampling is outside its
timed step and inside kdlab's; on CPU its ``AliasMethod.cuda`` is skipped.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from kdlab import methods, models
from kdlab.data.batch import Batch
from kdlab.engine.dot import DOT, dot_backward
from kdlab.engine.environment import describe_machine
from kdlab.teachers.frozen import FrozenTeacher

FEATURE_METHODS = ["fitnet", "at", "nst", "pkt", "rkd", "sp", "vid", "kdsvd", "ofd", "crd", "reviewkd"]
# kdlab name → mdistiller's DISTILLER.TYPE
MDISTILLER_NAMES = {"kd": "KD", "fitnet": "FITNET", "at": "AT", "nst": "NST", "pkt": "PKT", "rkd": "RKD", "sp": "SP",
                    "vid": "VID", "kdsvd": "KDSVD", "ofd": "OFD", "crd": "CRD", "reviewkd": "REVIEWKD", "kd + dot": "KD"}
# mdistiller's engine/cfg.py defaults of the methods timed here (REVIEWKD_WEIGHT: configs/cifar100/reviewkd.yaml)
MDISTILLER_CFG = {
    "KD": {"TEMPERATURE": 4, "LOSS": {"CE_WEIGHT": 0.1, "KD_WEIGHT": 0.9}},
    "AT": {"P": 2, "LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 1000.0}},
    "RKD": {"DISTANCE_WEIGHT": 25, "ANGLE_WEIGHT": 50, "LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 1.0},
            "PDIST": {"EPSILON": 1e-12, "SQUARED": False}},
    "FITNET": {"HINT_LAYER": 2, "INPUT_SIZE": (32, 32), "LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 100.0}},
    "KDSVD": {"K": 1, "LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 1.0}},
    "OFD": {"LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 0.001}, "CONNECTOR": {"KERNEL_SIZE": 1}},
    "NST": {"LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 50.0}},
    "PKT": {"LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 30000.0}},
    "SP": {"LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 3000.0}},
    "VID": {"LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 1.0}, "EPS": 1e-5, "INIT_PRED_VAR": 5.0, "INPUT_SIZE": (32, 32)},
    "CRD": {"MODE": "exact", "FEAT": {"DIM": 128, "STUDENT_DIM": 256, "TEACHER_DIM": 256},
            "LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 0.8}, "NCE": {"K": 16384, "MOMENTUM": 0.5, "TEMPERATURE": 0.07}},
    "REVIEWKD": {"CE_WEIGHT": 1.0, "REVIEWKD_WEIGHT": 5.0, "WARMUP_EPOCHS": 20, "SHAPES": [1, 8, 16, 32],
                 "OUT_SHAPES": [1, 8, 16, 32], "IN_CHANNELS": [64, 128, 256, 256], "OUT_CHANNELS": [64, 128, 256, 256],
                 "MAX_MID_CHANNEL": 512, "STU_PREACT": False},
}
NUM_CLASSES = 100


def _namespace(d: dict) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{k: _namespace(v) if isinstance(v, dict) else v for k, v in d.items()})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class KdlabStep:
    """One kdlab method on the shared networks and batch."""

    def __init__(self, name: str, teacher, student_state, batch, labels, num_negatives, device):
        torch.manual_seed(0)
        student = models.create("resnet8x4", NUM_CLASSES).to(device)
        student.load_state_dict(student_state)
        method_name = "kd" if name in ("kd", "kd + dot") else name
        args = {"num_negatives": num_negatives} if name == "crd" else {}
        data = types.SimpleNamespace(labels=labels, index_offset=0)  # CRD: the training set's size and labels
        self.method = methods.create(method_name, student, teacher, NUM_CLASSES, args, probe=batch.x[:2], data=data)
        self.method.train()
        params = [p for p in self.method.parameters() if p.requires_grad]
        self.params = params
        self.dot = name == "kd + dot"
        self.opt = (DOT(params, lr=0.05, momentum=0.9, delta=0.075, weight_decay=5e-4) if self.dot
                    else torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4))
        self.batch = batch

    def __call__(self) -> None:
        out = self.method(self.batch, 1)
        self.opt.zero_grad(set_to_none=True)
        if self.dot:
            dot_backward(out.losses, self.params, self.opt)
        else:
            self.method.backward(out)
        self.opt.step()


class MdistillerStep:
    """mdistiller's distiller of the same method, with the same network weights and batch."""

    def __init__(self, root: Path, name: str, teacher_state, student_state, batch, labels, num_negatives, device):
        sys.path.insert(0, str(root))
        from mdistiller.distillers import distiller_dict  # noqa: PLC0415 (an optional checkout, imported on demand)
        from mdistiller.models.cifar.resnet import resnet8x4, resnet32x4  # noqa: PLC0415

        crd_module = sys.modules["mdistiller.distillers.CRD"]  # the module (the package exports the class by its name)

        if device.type != "cuda":
            crd_module.AliasMethod.cuda = lambda self: None  # its bank sampler is moved to CUDA at construction
        rename = lambda state: {k.replace("classifier.", "fc."): v for k, v in state.items()}  # noqa: E731
        teacher, student = resnet32x4(num_classes=NUM_CLASSES), resnet8x4(num_classes=NUM_CLASSES)
        teacher.load_state_dict(rename(teacher_state))
        student.load_state_dict(rename(student_state))
        key = MDISTILLER_NAMES[name]
        cfg = _namespace({key: MDISTILLER_CFG[key]})
        if key == "CRD":
            cfg.CRD.NCE.K = num_negatives
        torch.manual_seed(0)
        cls = distiller_dict[key]
        self.distiller = (cls(student, teacher, cfg, len(labels)) if key == "CRD" else cls(student, teacher, cfg))
        self.distiller.to(device).train()
        params = self.distiller.get_learnable_parameters()
        self.dot = name == "kd + dot"
        if self.dot:
            spec = importlib.util.spec_from_file_location("mdistiller_dot", root / "mdistiller" / "engine" / "dot.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self.opt = module.DistillationOrientedTrainer(params, lr=0.05, momentum=0.9 - 0.075,
                                                          momentum_kd=0.9 + 0.075, weight_decay=5e-4)
        else:
            self.opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
        self.x, self.y = batch.x, batch.y
        g = torch.Generator().manual_seed(1)
        negatives = torch.randint(0, len(labels), (len(batch.y), num_negatives), generator=g).to(device)
        self.kwargs = {"index": batch.index, "contrastive_index": torch.cat([batch.index[:, None], negatives], 1)}

    def __call__(self) -> None:
        _, losses = self.distiller.forward_train(image=self.x, target=self.y, epoch=1, **self.kwargs)
        if self.dot:
            self.opt.zero_grad(set_to_none=True)
            losses["loss_kd"].mean().backward(retain_graph=True)
            self.opt.step_kd()
            self.opt.zero_grad(set_to_none=True)
            losses["loss_ce"].mean().backward()
        else:
            self.opt.zero_grad()
            sum(loss.mean() for loss in losses.values()).backward()
        self.opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: batch 16, a small bank, 2 rounds")
    parser.add_argument("--mdistiller", type=Path, default=None, help="a checkout of mdistiller to time beside kdlab")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per method and round (default 3, quick 1)")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch_size = args.batch_size or (16 if args.quick else 64)
    rounds, steps = args.rounds or (2 if args.quick else 5), args.steps or (1 if args.quick else 3)
    num_data, num_negatives = (2000, 512) if args.quick else (50000, 16384)

    torch.manual_seed(0)
    teacher_net = models.create("resnet32x4", NUM_CLASSES).to(device)
    student_state = models.create("resnet8x4", NUM_CLASSES).state_dict()
    teacher = FrozenTeacher(teacher_net)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, NUM_CLASSES, (num_data,), generator=g)
    index = torch.randperm(num_data, generator=g)[:batch_size]
    batch = Batch(x=torch.randn(batch_size, 3, 32, 32, generator=g).to(device), y=labels[index].to(device),
                  index=index.to(device))

    names = ["kd"] + [m for m in FEATURE_METHODS if m in methods.names()] + ["kd + dot"]
    skipped = [m for m in FEATURE_METHODS if m not in methods.names()]
    steps_of = {n: KdlabStep(n, teacher, student_state, batch, labels, num_negatives, device) for n in names}
    theirs = {}
    if args.mdistiller is not None:
        t_state = copy.deepcopy(teacher_net.state_dict())
        theirs = {n: MdistillerStep(args.mdistiller, n, t_state, student_state, batch, labels, num_negatives, device)
                  for n in names}
    runners = {("kdlab", n): s for n, s in steps_of.items()} | {("mdistiller", n): s for n, s in theirs.items()}
    for run in runners.values():  # warm-up: first-step allocations, lazy initialisations (CRD's Z)
        run()
        run()
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                run()
            _sync(device)
            times[key].append(1000 * (time.perf_counter() - start) / steps)
    median = {k: statistics.median(v) for k, v in times.items()}

    print(f"resnet32x4 → resnet8x4, batch {batch_size} of 3×32×32, {device}; CRD: bank of {num_data}, "
          f"{num_negatives} negatives; median of {rounds} rounds × {steps} steps")
    print(describe_machine() + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print()
    kd = median[("kdlab", "kd")]
    if theirs:
        print("| method | kdlab ms / step | × KD | mdistiller ms / step | kdlab / mdistiller |")
        print("|---|---:|---:|---:|---:|")
    else:
        print("| method | kdlab ms / step | × KD |")
        print("|---|---:|---:|")
    for n in names:
        ours = median[("kdlab", n)]
        row = f"| {n} | {ours:.1f} | {ours / kd:.2f} |"
        if theirs:
            ref = median[("mdistiller", n)]
            row += f" {ref:.1f} | {ours / ref:.2f} |"
        print(row)
    if skipped:
        print(f"\nnot registered in this checkout: {', '.join(skipped)}")


if __name__ == "__main__":
    main()
