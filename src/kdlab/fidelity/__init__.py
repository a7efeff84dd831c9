"""Fidelity: does the student really match the teacher? (Stanton et al., NeurIPS 2021; docs/reference/fidelity.md)

``sources`` — the fidelity report on named sources and the independent-student control; ``experiments`` — the
paper's experiments on any recipe (``kdlab experiment NAME``), and the named experiments of the other papers
(``specs``: configs/experiments/NAME.yaml; ``study``: a spec's rows × seeds as one resumable sweep and its table).
The distillation-data policies the experiments vary are part of the data layer (:mod:`kdlab.data.policies`).
"""

from kdlab.fidelity.sources import SOURCES, evaluate_sources, fidelity_with_control, read_distill_stream

__all__ = ["SOURCES", "evaluate_sources", "fidelity_with_control", "read_distill_stream"]
