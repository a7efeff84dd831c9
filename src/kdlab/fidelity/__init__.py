"""Fidelity: does the student really match the teacher? (Stanton et al., NeurIPS 2021; docs/reference/fidelity.md)

``sources`` — the fidelity report on named sources and the independent-student control; ``experiments`` — the
paper's experiments at MNIST-1D scale (``kdlab experiment NAME``). The distillation-data policies the experiments
vary are part of the data layer (:mod:`kdlab.data.policies`).
"""

from kdlab.fidelity.sources import SOURCES, evaluate_sources, fidelity_with_control, read_distill_stream

__all__ = ["SOURCES", "evaluate_sources", "fidelity_with_control", "read_distill_stream"]
