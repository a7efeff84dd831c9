"""Typed configs (pydantic) loaded from YAML with ``key=value`` overrides."""

from kdlab.config.load import (
    RECIPES_DIR,
    ConfigError,
    apply_overrides,
    load_config,
    read_yaml,
    recipe_names,
    resolve_config_path,
    validate,
)
from kdlab.config.schema import (
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelFactory,
    OptimConfig,
    RunConfig,
    RunOptions,
    StudentConfig,
    TeacherConfig,
)

__all__ = [
    "RECIPES_DIR", "ConfigError", "apply_overrides", "load_config", "read_yaml", "recipe_names",
    "resolve_config_path", "validate", "DataConfig", "EvalConfig", "MethodConfig", "ModelFactory", "OptimConfig",
    "RunConfig", "RunOptions", "StudentConfig", "TeacherConfig",
]
