"""Any network through its own library: ``{"factory": "timm.create_model", "args": {"model_name": ...}}``.

A *factory* is a callable named by an import string, called with exactly the given keyword arguments, that returns
an ``nn.Module``. Three spellings name it:

* ``package.module:attr.path`` — the module before the colon, then attributes (``transformers:AutoModelForImage
  Classification.from_config``);
* ``package.module.function`` — the longest importable prefix is the module (``timm.create_model``,
  ``torchvision.models.resnet18``);
* ``path/to/file.py:function`` — a Python file of your own, read from that path (relative to the working directory).

The module is imported only when a config names it, so kdlab depends on no model library. A network whose forward
returns an object holding ``.logits`` (Hugging Face image classifiers) gets a forward hook that returns that tensor,
so the rest of kdlab sees logits while the module itself, its state-dict keys and its module paths (for feature
hooks, ``kdlab.models.forward_features``) stay the library's own. An ``arch`` in kdlab is then either a zoo name or
such a mapping (:data:`Arch`); :func:`create_arch` builds either.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Union

from torch import Tensor, nn

from kdlab._checks import SettingError
from kdlab.models.registry import create

__all__ = ["Arch", "arch_name", "create_arch", "from_factory", "is_factory", "resolve"]

#: a zoo name, or ``{"factory": "<import string>", "args": {...}}``
Arch = Union[str, Mapping[str, Any]]


def is_factory(arch: Any) -> bool:
    """Whether ``arch`` names a factory (a mapping with ``factory``), not a zoo name."""
    return isinstance(arch, Mapping) and "factory" in arch


def arch_name(arch: Arch | None) -> str | None:
    """A short name for reports and titles: the zoo name, or ``factory(model_name=...)``-like text."""
    if not is_factory(arch):
        return arch  # type: ignore[return-value]
    first = next(iter((arch.get("args") or {}).values()), None)
    return f"{arch['factory']}({first!r})" if isinstance(first, str) else str(arch["factory"])


def _import(module: str, factory: str, key: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or module
        raise SettingError(f"{{key}}={factory}: no module named {missing!r} (install the library that provides it, "
                           f"e.g. pip install {missing.split('.')[0]}, or fix the name)", key=key) from None


def _from_file(path: str, factory: str, key: str):
    file = Path(path)
    if not file.is_file():
        raise SettingError(f"{{key}}={factory}: no such file {path} (a path is read from the working directory)",
                           key=key)
    name = f"kdlab_factory_{abs(hash(str(file.resolve())))}"
    if name in sys.modules:  # the same file imported once per process, as an import statement would
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        del sys.modules[name]
        raise SettingError(f"{{key}}={factory}: importing {path} failed: {_first_line(exc)}", key=key) from None
    return module


def _attribute(obj: Any, path: str, factory: str, key: str) -> Any:
    for part in path.split("."):
        if not hasattr(obj, part):
            raise SettingError(f"{{key}}={factory}: {getattr(obj, '__name__', type(obj).__name__)} has no "
                               f"attribute {part!r}", key=key)
        obj = getattr(obj, part)
    return obj


def resolve(factory: str, key: str = "arch.factory") -> Callable[..., Any]:
    """The callable an import string names (the three spellings of the module docstring); a one-line
    :class:`SettingError` naming ``key`` when the module, the file or the attribute is missing."""
    if not isinstance(factory, str) or not factory.strip():
        raise SettingError(f"{{key}} must be an import string such as timm.create_model, got {factory!r}", key=key)
    if ":" in factory:
        where, _, attr = factory.rpartition(":")
        module = _from_file(where, factory, key) if where.endswith(".py") else _import(where, factory, key)
        found = _attribute(module, attr, factory, key)
    else:
        parts = factory.split(".")
        if len(parts) < 2:
            raise SettingError(f"{{key}}={factory}: name a module and its function, e.g. timm.create_model or "
                               "my_nets.py:build", key=key)
        found = None
        for i in range(len(parts) - 1, 0, -1):  # the longest importable prefix is the module
            module_name = ".".join(parts[:i])
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name is not None and not module_name.startswith(exc.name):
                    raise SettingError(f"{{key}}={factory}: importing {module_name} failed: {_first_line(exc)}",
                                       key=key) from None
                continue
            found = _attribute(module, ".".join(parts[i:]), factory, key)
            break
        if found is None:
            _import(parts[0], factory, key)  # raises: not even the first part is a module
    if not callable(found):
        raise SettingError(f"{{key}}={factory}: not callable ({type(found).__name__})", key=key)
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _logits_only(module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook: a tensor passes; an output object holding ``.logits`` (Hugging Face) is replaced by it."""
    if isinstance(output, Tensor):
        return None  # unchanged
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise ValueError(f"{type(module).__name__} returned a {type(output).__name__}, neither a logits tensor nor an "
                     "object with .logits; give a factory whose network returns the logits [N, C]")


def from_factory(factory: str, args: Mapping[str, Any] | None = None, key: str = "arch") -> nn.Module:
    """``resolve(factory)(**args)``, checked to be an ``nn.Module`` and given the ``.logits`` adapter
    (:func:`_logits_only`). Errors are one line naming ``key`` (``student.arch``: ``.factory``/``.args``)."""
    fn = resolve(factory, f"{key}.factory")
    args = dict(args or {})
    try:
        model = fn(**args)
    except Exception as exc:  # noqa: BLE001  a library's own error, on the user's arguments
        raise SettingError(f"{{key}}: {factory}(**{{args}}) failed: {_first_line(exc)}", key=f"{key}.factory",
                           args=f"{key}.args") from None
    if not isinstance(model, nn.Module):
        raise SettingError(f"{{key}}: {factory} returned a {type(model).__name__}, not a torch nn.Module",
                           key=f"{key}.factory")
    model.register_forward_hook(_logits_only)
    return model


def create_arch(arch: Arch, num_classes: int, key: str = "arch") -> nn.Module:
    """A zoo network (``create(arch, num_classes)``) or a factory's (called with its own ``args`` only: the class
    count is among them when the library takes one, e.g. ``num_classes`` for timm and torchvision)."""
    if is_factory(arch):
        return from_factory(arch["factory"], arch.get("args"), key)
    return create(arch, num_classes)  # type: ignore[arg-type]
