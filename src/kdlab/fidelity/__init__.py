"""Fidelity: does the student really match the teacher? (Stanton et al., NeurIPS 2021; docs/reference/fidelity.md)

``sources`` — the fidelity report on named sources and the independent-student control; ``policies`` — the
distillation-data policies applied to training batches;
``experiments`` — the paper's experiments at MNIST-1D scale (``kdlab experiment NAME``).
"""

from kdlab.fidelity.policies import PRESETS, augment_preset, build_policy, select_split
from kdlab.fidelity.sources import SOURCES, evaluate_sources, fidelity_with_control, read_distill_stream

__all__ = ["PRESETS", "SOURCES", "augment_preset", "build_policy", "evaluate_sources", "fidelity_with_control",
           "read_distill_stream", "select_split"]
