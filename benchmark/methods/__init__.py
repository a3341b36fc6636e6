"""Methods, one module per family, registered by name; every module here is imported on load."""

import importlib
import pkgutil

from .base import (
    DivergedError,
    MultiTaskModule,
    method_class,
    method_names,
    register,
    registration_order,
    resolve_config,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DivergedError", "MultiTaskModule", "method_class", "method_names", "register", "registration_order",
           "resolve_config"]
