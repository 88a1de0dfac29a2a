"""Imports of optional dependencies: a missing one raises :class:`OptionalDependencyError` naming its extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import OptionalDependencyError


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``, or an error that says which extra of berg installs it.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"matplotlib.figure"``.
    extra : str
        The berg extra that provides it (``"plot"``, ``"train"``, ``"import"``, ``"ray"``).
    purpose : str
        What needs it, for the start of the message (e.g. ``"training reports"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{purpose}: module {module!r} is not installed ({exc}); install the {extra!r} extra with "
            f"python -m pip install \"berg[{extra}]\"") from exc
