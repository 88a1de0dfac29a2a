"""Output writers: one registered class per kind of file, keyed by the output's suffix.

Every output of berg goes through this table: ``berg encode -o``, :func:`berg.predict_movie` ``output=``, and the
batch engines. A writer declares what it consumes (``roles``): ``"responses"``, one row per stimulus from
:func:`berg.encode`, and/or ``"series"``, one row per scan from a film; and which spaces it can place (``spaces``,
None for any). Every file is written under a temporary name and renamed when complete.

=============  ===========  ========================  =====================================================
suffix         roles        spaces                    writes
=============  ===========  ========================  =====================================================
``.npy``       responses    any                       the (n, n_outputs) float32 array
``.h5``        both         any                       responses or the film's samples and scans, with the
                                                      columns' coordinates and metadata (:mod:`.arrays`)
``.nii[.gz]``  both         volume                    a 4D NIfTI, one volume per row (:mod:`.volume`)
``.func.gii``  both         surface                   one GIFTI per hemisphere, one data array per row
``.tsv[.gz]``  series       any                       ROI-mean predictors per scan, with a JSON sidecar
=============  ===========  ========================  =====================================================

A film's image and table outputs carry a JSON sidecar (:mod:`.sidecars`); outputs that share a stem share it,
and :func:`berg.writers.sidecars.write_series_sidecars` writes each sidecar once with every writer's part.

:func:`register_writer` adds a suffix (a class or a ``"module:attribute"`` string).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from .._io import existing_ancestor
from ..errors import InvalidArgumentError

WRITERS: dict[str, Any] = {
    ".npy": "berg.writers.arrays:NpyWriter",
    ".h5": "berg.writers.arrays:Hdf5Writer",
    ".hdf5": "berg.writers.arrays:Hdf5Writer",
    ".nii": "berg.writers.volume:NiftiWriter",
    ".nii.gz": "berg.writers.volume:NiftiWriter",
    ".func.gii": "berg.writers.surface:GiftiWriter",
    ".tsv": "berg.writers.tables:TableWriter",
    ".tsv.gz": "berg.writers.tables:TableWriter",
}
ROLES = ("responses", "series")


def register_writer(suffix: str, writer: Any) -> None:
    """Write outputs whose names end in ``suffix`` (e.g. ``".mgz"``) with ``writer``: a
    :class:`~berg.writers.base.Writer` subclass, or a ``"module:attribute"`` string naming one."""
    if not isinstance(suffix, str) or not suffix.startswith(".") or len(suffix) < 2:
        raise InvalidArgumentError(f"suffix={suffix!r} is not valid: expected a file suffix such as '.mgz'")
    WRITERS[suffix.lower()] = writer


def suffix_of(path: str | os.PathLike) -> str | None:
    """The longest registered suffix ``path`` ends with, or None."""
    name = Path(path).name.lower()
    matches = [s for s in WRITERS if name.endswith(s) and len(name) > len(s)]
    return max(matches, key=len) if matches else None


def writer_for(path: str | os.PathLike, role: str, metadata: Any = None, parameter: str = "output") -> Any:
    """The writer of ``path`` for ``role``, checked against the model's space when ``metadata`` is given.

    Raises
    ------
    InvalidArgumentError
        Naming ``parameter``: an existing folder, a place that cannot be written, an unknown suffix, a writer that
        does not take this role, or one that cannot place outputs of the model's space; with the suffixes that would
        do.
    """
    if role not in ROLES:
        raise InvalidArgumentError(f"role={role!r} is not valid: expected one of {', '.join(ROLES)}")
    kind = None if metadata is None else (metadata.get("space") or {}).get("kind") or "volume"
    valid = sorted(s for s in WRITERS if _fits(_writer(s), role, kind))
    if Path(path).is_dir():
        raise InvalidArgumentError(f"{parameter}={str(path)!r} is a folder; give a file name in it, ending in "
                                   f"{', '.join(valid)}")
    folder = existing_ancestor(path)
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{parameter}={str(path)!r} cannot be written: {str(folder)!r} is not a folder "
                                   "this process may write in")
    suffix = suffix_of(path)
    if suffix is None or suffix not in valid:
        what = {"responses": "responses to stimuli", "series": "a film's per-scan series"}[role]
        for_space = f" of a {kind} model" if kind else ""
        raise InvalidArgumentError(f"{parameter}={str(path)!r} is not valid: expected a file name ending in "
                                   f"{', '.join(valid)} for {what}{for_space}")
    return _writer(suffix)


def _fits(writer: Any, role: str, kind: str | None) -> bool:
    return role in writer.roles and (kind is None or writer.spaces is None or kind in writer.spaces)


def _writer(suffix: str) -> Any:
    entry = WRITERS[suffix]
    if isinstance(entry, str):
        module, attribute = entry.split(":")
        entry = getattr(importlib.import_module(module), attribute)
    return entry() if isinstance(entry, type) else entry
