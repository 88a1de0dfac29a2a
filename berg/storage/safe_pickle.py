"""The one restricted unpickler of berg, for the foreign pickles its importers read (BERG's ``.npy``, img2fmri).

Every global a pickle may name is listed in :data:`ADMITTED_NUMPY` or :data:`RECORD_CLASSES`; any other global,
and any persistent id, raises :class:`~berg.errors.UnsafePickleError` before anything is called. What is admitted:

- numpy arrays, dtypes and scalars. A ``numpy.memmap`` (what ``nib.load(<file>.nii).get_fdata()`` returns, and so
  what BERG's metadata masks are) is rebuilt as a plain ``ndarray`` from the pickled bytes: no file is opened.
- ``_codecs.encode`` with latin-1 only (how protocol-2 pickles write bytes).
- The classes in :data:`RECORD_CLASSES` (nibabel images, headers, array proxies, file holders and extensions;
  scikit-learn's ``Ridge``) load as inert :class:`PickledRecord` values holding their pickled arguments and state.
  Nothing of nibabel or scikit-learn is imported or called, and a file name inside a record is never opened.

A payload that would run code can only do so through a global, so one hidden anywhere (inside a record's state, an
array's state, a tuple) is refused when the unpickler meets its global.
"""

from __future__ import annotations

import codecs
import pickle
from typing import Any, BinaryIO

import numpy as np

from ..errors import UnsafePickleError


class PickledRecord(list):
    """An inert stand-in for an admitted foreign object.

    Attributes
    ----------
    class_name : str
        ``module.Class`` of the object that was pickled.
    args : tuple
        The arguments the pickle passed to the class.
    state : object
        The pickled state (usually the object's ``__dict__``); list items, if any, are the record's own items.
    """

    class_name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "PickledRecord":
        record = super().__new__(cls)
        record.args, record.state = args, None
        return record

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"PickledRecord({self.class_name})"

    def field(self, name: str, default: Any = None) -> Any:
        """One entry of a dict state (``default`` when the state is not a dict or lacks it)."""
        return self.state.get(name, default) if isinstance(self.state, dict) else default


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"the pickle asks for an array of type {subtype!r}; only numpy.ndarray is admitted")
    return np.ndarray.__new__(np.ndarray, shape, np.dtype(dtype))


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError(f"the pickle asks for a numpy scalar of dtype {dtype!r}; only plain dtypes are admitted")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.hasobject or order not in ("C", "F"):
        raise UnsafePickleError(f"the pickle asks for a buffer of dtype {dtype} in order {order!r}")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _encode_latin1(text: str, encoding: str = "utf-8") -> bytes:
    """The one use protocol-2 pickles make of ``_codecs.encode``: bytes written as latin-1 text."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(f"the pickle asks for _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


def _both_numpy_paths(module: str, name: str, value: Any) -> dict[tuple[str, str], Any]:
    """numpy 2 moved ``numpy.core`` to ``numpy._core``; pickles name either."""
    return {(f"numpy.core.{module}", name): value, (f"numpy._core.{module}", name): value}


ADMITTED_NUMPY: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "memmap"): np.ndarray,
    ("_codecs", "encode"): _encode_latin1,
    **_both_numpy_paths("multiarray", "_reconstruct", _reconstruct),
    **_both_numpy_paths("multiarray", "scalar", _scalar),
    **_both_numpy_paths("numeric", "_frombuffer", _frombuffer),
}

RECORD_CLASSES: frozenset[tuple[str, str]] = frozenset({
    ("nibabel.nifti1", "Nifti1Image"), ("nibabel.nifti1", "Nifti1Pair"), ("nibabel.nifti2", "Nifti2Image"),
    ("nibabel.nifti1", "Nifti1Header"), ("nibabel.nifti1", "Nifti1PairHeader"),
    ("nibabel.nifti2", "Nifti2Header"), ("nibabel.nifti2", "Nifti2PairHeader"),
    ("nibabel.nifti1", "Nifti1Extensions"), ("nibabel.nifti1", "Nifti1Extension"),
    ("nibabel.arrayproxy", "ArrayProxy"), ("nibabel.fileholders", "FileHolder"),
    ("sklearn.linear_model._ridge", "Ridge"),
})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ADMITTED_NUMPY:
            return ADMITTED_NUMPY[(module, name)]
        if (module, name) in RECORD_CLASSES:
            return type(name, (PickledRecord,), {"class_name": f"{module}.{name}"})
        raise UnsafePickleError(
            f"refused to load {self._source}: its pickle asks for the global {module}.{name}; admitted are numpy "
            "arrays, dtypes and scalars, plain containers, and inert records of nibabel images, headers and array "
            "proxies and of scikit-learn's Ridge")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused to load {self._source}: its pickle uses persistent ids")


def restricted_load(file: BinaryIO, source: str) -> Any:
    """Unpickle one object from ``file`` admitting only the globals listed in this module.

    Parameters
    ----------
    file : binary file-like
        Positioned at the start of the pickle.
    source : str
        What to call the file in error messages.

    Raises
    ------
    UnsafePickleError
        The pickle names a global that is not admitted, or uses persistent ids. Nothing it holds has run.
    """
    return _RestrictedUnpickler(file, source).load()


def _torch_checkpoint_globals() -> list:
    """What :func:`restricted_torch_load` admits besides torch's own tensors and containers: argparse's Namespace
    (built as plain data: ``object.__new__`` and its ``__dict__``), numpy's array and scalar reconstruction under
    both of numpy's module paths, and the plain dtypes (booleans, numbers, strings)."""
    import argparse

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    admitted: list = [argparse.Namespace, np.ndarray, np.dtype]
    for name in ("_reconstruct", "scalar"):
        function = getattr(multiarray, name)
        admitted += [(function, f"numpy.core.multiarray.{name}"), (function, f"numpy._core.multiarray.{name}")]
    admitted += [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGUS"]
    return admitted


def restricted_torch_load(path: str, source: str | None = None) -> Any:
    """Read a ``torch.save`` checkpoint with ``torch.load(weights_only=True)``, admitting besides tensors only the
    globals of :func:`_torch_checkpoint_globals` (what fwRF checkpoints hold: their ``argparse.Namespace`` of
    training options and numpy arrays). Tensors are loaded on the CPU.

    Raises
    ------
    UnsafePickleError
        The checkpoint names any other global (a payload that would run code): refused before it runs.
    """
    import torch

    source = source or str(path)
    try:
        with torch.serialization.safe_globals(_torch_checkpoint_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
        reasons = [part.replace("WeightsUnpickler error:", "").strip() for part in str(exc).split("\n\n")]
        reasons = [r for r in reasons if r and not r.startswith(boilerplate)]
        raise UnsafePickleError(f"refused to load {source}: {reasons[0] if reasons else exc} (admitted are tensors, "
                                "plain containers, numpy arrays and scalars, and argparse.Namespace)") from exc
