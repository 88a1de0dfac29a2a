"""The shared argument checks: one behaviour for bools, numpy scalars and strings everywhere.

Every check takes the parameter's ``name`` and the ``value`` given, returns the value normalised
(a python ``int``, ``float``, ``bool``, ``str`` or :class:`pathlib.Path`), and otherwise raises
``error`` (:class:`~berg.errors.InvalidArgumentError` unless the caller names a more specific
:class:`~berg.errors.BergError` subclass) with a message of one form::

    batch_size=True is not valid: expected an integer >= 1, or None.

The rules, the same in every check:

- ``bool`` (and ``numpy.bool_``) is never a number;
- python and numpy integer/floating scalars are numbers, and a numpy integer is an integer;
- strings are never numbers: ``"2"`` is rejected, not coerced;
- NaN and infinity are rejected;
- ``None`` passes (and is returned) only where ``allow_none=True``.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BergError, InvalidArgumentError, InvalidDeviceError, close_matches

__all__ = ["choice", "device_name", "existing_path", "fail", "flag", "integer", "is_integer", "number",
           "positive_number", "probability"]

_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def fail(name: str, value: Any, expected: str, error: type[BergError] = InvalidArgumentError) -> BergError:
    """The error for ``name=value``, in the shared message form (return it and ``raise`` it at the call site)."""
    return error(f"{name}={value!r} is not valid: expected {expected}.")


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def is_integer(value: Any) -> bool:
    """Whether ``value`` is a python or numpy integer (not a bool), for checks of items inside containers."""
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _or_none(expected: str, allow_none: bool) -> str:
    return f"{expected}, or None" if allow_none else expected


def _unit(unit: str) -> str:
    return f" ({unit})" if unit else ""


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum:g}, {maximum:g}]"
    if minimum is not None:
        return f" >= {minimum:g}"
    return "" if maximum is None else f" <= {maximum:g}"


def _finite(name: str, value: Any, expected: str, error: type[BergError]) -> float:
    """``float(value)`` for a finite python or numpy real that is not a bool; else the error for ``expected``."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise fail(name, value, expected, error)
    try:
        result = float(value)
    except OverflowError:  # an int beyond float range
        raise fail(name, value, expected, error) from None
    if not math.isfinite(result):
        raise fail(name, value, expected, error)
    return result


def number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
           unit: str = "", allow_none: bool = False, error: type[BergError] = InvalidArgumentError) -> float | None:
    """A finite real number in ``[minimum, maximum]`` (either bound optional), returned as a python ``float``.

    ``unit`` (e.g. ``"s"``, ``"MiB"``) is only named in the message.
    """
    if value is None and allow_none:
        return None
    expected = _or_none("a finite number" + _bounds(minimum, maximum) + _unit(unit), allow_none)
    result = _finite(name, value, expected, error)
    if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
        raise fail(name, value, expected, error)
    return result


def positive_number(name: str, value: Any, *, allow_zero: bool = False, unit: str = "", allow_none: bool = False,
                    error: type[BergError] = InvalidArgumentError) -> float | None:
    """A finite number ``> 0`` (``>= 0`` with ``allow_zero``), returned as a python ``float``.

    ``unit`` (e.g. ``"s"``, ``"MiB"``) is only named in the message.
    """
    if value is None and allow_none:
        return None
    expected = _or_none(("a finite number >= 0" if allow_zero else "a finite number > 0") + _unit(unit), allow_none)
    result = _finite(name, value, expected, error)
    if result < 0 or (result == 0 and not allow_zero):
        raise fail(name, value, expected, error)
    return result


def probability(name: str, value: Any, *, error: type[BergError] = InvalidArgumentError) -> float:
    """A number in ``[0, 1]``, returned as a python ``float``."""
    return number(name, value, minimum=0.0, maximum=1.0, error=error)


def integer(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
            allow_none: bool = False, error: type[BergError] = InvalidArgumentError) -> int | None:
    """A python or numpy integer in ``[minimum, maximum]`` (either bound optional), returned as a python ``int``.

    Floats are refused even when whole (``2.0``), as are bools and strings.
    """
    if value is None and allow_none:
        return None
    expected = _or_none("an integer" + _bounds(minimum, maximum), allow_none)
    if not is_integer(value):
        raise fail(name, value, expected, error)
    result = int(value)
    if (minimum is not None and result < minimum) or (maximum is not None and result > maximum):
        raise fail(name, value, expected, error)
    return result


def flag(name: str, value: Any, *, error: type[BergError] = InvalidArgumentError) -> bool:
    """``True`` or ``False`` (python or numpy), returned as a python ``bool``; ``0``/``1`` and strings are refused."""
    if not _is_bool(value):
        raise fail(name, value, "True or False", error)
    return bool(value)


def choice(name: str, value: Any, valid: Iterable[Any], *, error: type[BergError] = InvalidArgumentError) -> Any:
    """One of ``valid`` (compared with ``==``; a bool never matches a number), returned as given.

    Strings that are not valid get close-match suggestions.
    """
    options = list(valid)
    matched = any(_same_kind(value, option) and value == option for option in options)
    if not matched:
        hint = close_matches(value, [o for o in options if isinstance(o, str)]) if isinstance(value, str) else ""
        raise error(f"{name}={value!r} is not valid: expected one of {', '.join(map(repr, options))}.{hint}")
    return value


def _same_kind(value: Any, option: Any) -> bool:
    """Whether ``value == option`` may count: bools match bools only, strings match strings only."""
    if _is_bool(value) or _is_bool(option):
        return _is_bool(value) and _is_bool(option)
    return isinstance(value, str) == isinstance(option, str)


def existing_path(name: str, value: Any, *, kind: str = "file",
                  error: type[BergError] = InvalidArgumentError) -> Path:
    """A ``str`` or path-like naming an existing file (``kind="file"``) or folder (``kind="dir"``), as a ``Path``."""
    if kind not in ("file", "dir"):
        raise fail("kind", kind, "'file' or 'dir'")
    what = "an existing file" if kind == "file" else "an existing folder"
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes) or str(value) == "":
        raise fail(name, value, f"a path to {what}", error)
    path = Path(value)
    if not (path.is_file() if kind == "file" else path.is_dir()):
        found = ("nothing there" if not path.exists() else "a folder" if path.is_dir()
                 else "a file" if path.is_file() else "something else")
        raise error(f"{name}={str(value)!r} is not valid: expected a path to {what}; found {found}.")
    return path


def device_name(name: str, value: Any, *, error: type[BergError] = InvalidDeviceError) -> str:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (a ``torch.device`` is taken by its name), as a ``str``.

    Only the spelling is checked here; whether the device exists is :func:`berg.backbones.resolve_device`'s job.
    """
    is_torch_device = hasattr(value, "type") and hasattr(value, "index")  # duck-typed: no torch import here
    text = value if isinstance(value, str) else str(value) if is_torch_device else None
    if text is None or not _DEVICE_NAME.fullmatch(text):
        raise fail(name, value, "'auto', 'cpu', 'cuda' or 'cuda:N'", error)
    return text
