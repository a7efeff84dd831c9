"""The cost of gradient-conflict logging (`run.grad_conflict_every`): a DHKD training step on MNIST-1D with and
without the measurement, and what that makes of an epoch at N = 1 and N = 50.

    python benchmarks/grad_conflict.py            # 300 steps of each kind, interleaved
    python benchmarks/grad_conflict.py --quick    # 20 of each (smoke run)

Run time on 2 CPU cores: full ~1 min, --quick ~20 s.

The step is the loop's (``method(batch, epoch)``, ``method.backward``, ``optimizer.step()``) for the shipped recipe
`mnist1d/dhkd` (mnist1d_cnn → mnist1d_cnn_small, nonlinear head with gradient alignment, batch 64, SGD), one thread,
random weights and signals (speed does not depend on them). A measured step adds
:meth:`kdlab.engine.conflict.GradConflict.measure` before the backward: one ``torch.autograd.grad`` per loss term
(here 2), the Gram matrices of the gradients per group. Plain and measured steps alternate, so a load that changes
during the run weighs on both alike; the table gives the median of each (wall and this process's CPU time). An epoch
of the recipe has 63 steps (4,000 signals), of which N = 1 measures all and N = 50 measures 2 (steps 0 and 50): its
cost relative to the option off is (63·plain + k·extra) / (63·plain) for k measured steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdlab import builder, methods, models
from kdlab.data.batch import Batch
from kdlab.engine.conflict import GradConflict
from kdlab.teachers import FrozenTeacher

try:
    from step_time import machine_line
except ImportError:  # pragma: no cover
    from benchmarks.step_time import machine_line

STEPS_PER_EPOCH = 63  # mnist1d/dhkd: 4,000 training signals in batches of 64


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 steps of each kind")
    ap.add_argument("--steps", type=int, default=None, help="steps of each kind (default 300; --quick 20)")
    args = ap.parse_args(argv)
    steps = args.steps or (20 if args.quick else 300)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    recipe = builder.load_config("mnist1d/dhkd")
    teacher = FrozenTeacher(models.create("mnist1d_cnn", 10))
    method = methods.create("dhkd", models.create("mnist1d_cnn_small", 10), teacher, 10, recipe.method.args)
    method.train()
    o = recipe.optim
    optimizer = torch.optim.SGD(method.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    conflict = GradConflict(method.parameter_groups(), every=1)
    batch = Batch(x=torch.randn(64, 40), y=torch.randint(0, 10, (64,)), index=torch.arange(64))

    def step(measure: bool) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = method(batch, 1)
        optimizer.zero_grad(set_to_none=True)
        if measure:
            conflict.measure(out.losses)
        method.backward(out)
        optimizer.step()
        return time.perf_counter() - wall, time.process_time() - cpu

    for _ in range(5):  # warm-up: allocator, first-call paths
        step(False), step(True)
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for i in range(steps):
        for measure in ((False, True) if i % 2 == 0 else (True, False)):
            times[measure].append(step(measure))
    conflict.epoch_summary()
    med = {m: [1000 * statistics.median(t[k] for t in times[m]) for k in (0, 1)] for m in times}
    print(f"machine: {machine_line(torch.device('cpu'))}")
    print(f"mnist1d/dhkd step (batch 64, 2 loss terms, groups {', '.join(conflict.groups)}), {steps} steps of each "
          "kind interleaved, 1 thread; median ms per step\n")
    print("| step | wall ms | CPU ms |")
    print("|---|---:|---:|")
    print(f"| plain | {med[False][0]:.2f} | {med[False][1]:.2f} |")
    print(f"| measured (`GradConflict.measure` before the backward) | {med[True][0]:.2f} | {med[True][1]:.2f} |")
    print(f"| extra per measured step | {med[True][0] - med[False][0]:.2f} | {med[True][1] - med[False][1]:.2f} |")
    print(f"\n| run.grad_conflict_every | measured steps / epoch of {STEPS_PER_EPOCH} | epoch time × off (CPU) |")
    print("|---:|---:|---:|")
    plain, extra = med[False][1], med[True][1] - med[False][1]
    for every in (1, 50):
        k = -(-STEPS_PER_EPOCH // every)
        print(f"| {every} | {k} | {(STEPS_PER_EPOCH * plain + k * extra) / (STEPS_PER_EPOCH * plain):.3f}× |")
    return med


if __name__ == "__main__":
    main()
