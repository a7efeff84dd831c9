"""kdlab: knowledge distillation for image classifiers.

Layers, bottom up (docs/architecture.md): ``losses``, ``models``, ``data``, ``config`` → ``teachers`` → ``methods``,
``eval`` → ``engine`` → ``build`` (the composition root) → ``api`` (``fit``), ``sweep`` → ``fidelity``, ``demo`` →
``cli``. ``fit``, ``fidelity_report`` and ``load_model`` (a saved ``model.safetensors`` back as a module) are the
Python entry points; ``fit`` raises ``TrainingDiverged`` on a collapsed run.
"""

from kdlab._version import __version__

__all__ = ["__version__", "TrainingDiverged", "fit", "fidelity_report", "load_model"]


def __dir__():
    # the lazy names too, so that tab completion (notebooks, IPython) offers kdlab.fit and the others
    return sorted({*globals(), *__all__})


def __getattr__(name):
    # Lazy so that `import kdlab.losses` stays light and free of engine imports.
    if name == "fit":
        from kdlab.api import fit

        return fit
    if name == "TrainingDiverged":
        from kdlab.api import TrainingDiverged

        return TrainingDiverged
    if name == "fidelity_report":
        from kdlab.eval.fidelity import fidelity_report

        return fidelity_report
    if name == "load_model":
        from kdlab.models import load_model

        return load_model
    raise AttributeError(f"module 'kdlab' has no attribute {name!r}")
