"""How stiff each logit-distillation term is, by class count: the largest eigenvalue of its Hessian in the student's
logits, at a student a little off the teacher. docs/methods/README.md ("Defaults on small data") quotes it: it is why
R2KD's value weight follows the KL's C/100 rule and why DIST's and CMKD's Pearson terms get no such rule.

    python benchmarks/curvature.py           # C = 3, 10, 30, 100; teacher logit spreads 0.3 (soft), 1 and 3
    python benchmarks/curvature.py --quick   # C = 3, 10; one spread

Teacher logits: spread·N(0, 1) per class, plus 8 on a random target class when spread ≥ 1 (a trained teacher's
margin; spread 0.3 has none: a soft, near-uniform teacher); N = 16 samples, student = teacher + 0.1·N(0, 1), T = 4,
float64, each term with unit weight (its paper's T² factor included). Each column is the eigenvalue at C divided by
the one at the largest C of the run: a term whose stiffness falls as 1/C reads ≈ 33 at C = 3 and ≈ 10 at C = 10.

Run time on 2 CPU cores: full ~35 s, --quick ~9 s.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.autograd.functional import hessian

from kdlab.losses import cmkd_loss, dist_loss, kd_loss, r2kd_value_loss

try:
    from step_time import machine_line
except ImportError:  # pragma: no cover
    from benchmarks.step_time import machine_line

TERMS = {
    "KL (KD, T²·KL)": lambda z, v: kd_loss(z, v, temperature=4.0),
    "R2KD value (cosine)": lambda z, v: r2kd_value_loss(z, v, temperature=4.0),
    "DIST inter (Pearson per sample)": lambda z, v: dist_loss(z, v, beta=1.0, gamma=0.0, temperature=4.0),
    "DIST intra (Pearson per class)": lambda z, v: dist_loss(z, v, beta=0.0, gamma=1.0, temperature=4.0),
    "CMKD": lambda z, v: cmkd_loss(z, v, temperature=4.0),
}
N = 16


def top_eigenvalue(term, classes: int, spread: float) -> float:
    g = torch.Generator().manual_seed(classes)
    v = spread * torch.randn(N, classes, dtype=torch.float64, generator=g)
    if spread >= 1:
        v = v + 8.0 * F.one_hot(torch.randint(0, classes, (N,), generator=g), classes)
    z = v + 0.1 * torch.randn(N, classes, dtype=torch.float64, generator=g)
    h = hessian(lambda x: term(x, v), z).reshape(N * classes, N * classes)
    return torch.linalg.eigvalsh(h).max().item()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="C = 3 and 10, spread 3 only")
    args = parser.parse_args(argv)
    classes = [3, 10] if args.quick else [3, 10, 30, 100]
    spreads = [3.0] if args.quick else [0.3, 1.0, 3.0]
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for spread in spreads:
        for name, term in TERMS.items():
            tops = [top_eigenvalue(term, c, spread) for c in classes]
            rows.append((spread, name, tops))
    print(f"machine: {machine_line(torch.device('cpu'))}; {time.perf_counter() - start:.0f} s of wall time")
    print("\n| teacher spread | term | " + " | ".join(f"λ_max at C={c} (× C={classes[-1]})" for c in classes) + " |")
    print("|---|---|" + "---:|" * len(classes))
    for spread, name, tops in rows:
        cells = [f"{t:.3g} ({t / tops[-1]:.2g}×)" for t in tops]
        print(f"| {spread:g} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
