"""Old import paths of moved modules and names, kept for one release (docs/architecture.md,
"Moved modules"): importing one warns and gives the new module itself, so that code
(and a test's monkeypatch) that uses either path sees one module."""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType
from typing import Any, Mapping

#: The release that drops the old paths.
REMOVED_IN = "0.4.0"


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path goes in branchnet {REMOVED_IN}", DeprecationWarning,
                  stacklevel=3)


def alias_module(old: str, new: str) -> ModuleType:
    """Make ``old`` (the calling alias module's ``__name__``) the module ``new``."""
    _warn(old, new)
    module = importlib.import_module(new)
    sys.modules[old] = module
    return module


def moved_attribute(owner: str, name: str, moved: Mapping[str, str]) -> Any:
    """For a module ``__getattr__``: ``name`` from where it moved (``moved[name]``: its new module, or
    ``"module:new_name"`` when it was renamed too), with a warning; AttributeError for any other name."""
    if name not in moved:
        raise AttributeError(f"module '{owner}' has no attribute '{name}'")
    module, _, new_name = moved[name].partition(":")
    new_name = new_name or name
    _warn(f"{owner}.{name}", f"{module}.{new_name}")
    return getattr(importlib.import_module(module), new_name)
