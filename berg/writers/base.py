"""The writer interface of :mod:`berg.writers`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .sidecars import sidecar_path

#: room for a file's header and metadata (bytes); :meth:`Writer.estimate_bytes` adds per-row and per-column room
OVERHEAD_BYTES = 64 << 10
#: ``fill(target)`` computes the (n, n_outputs) responses into ``target`` (a numpy array, memmap or HDF5 dataset
#: of that shape, written block by block) and returns it.
Fill = Callable[[Any], np.ndarray]


class Writer:
    """One kind of output file.

    Attributes
    ----------
    roles : tuple of str
        ``"responses"`` (rows are stimuli, from :func:`berg.encode`) and/or ``"series"`` (rows are scans of a film).
    spaces : tuple of str or None
        The space kinds it can place; None for any.
    stores_samples : bool
        A film's per-sample responses live in this file while the film runs (so that a run can resume).
    bids : bool
        BIDS defines these files (a batch job's ``.bidsignore`` lists the others).

    A film's outputs that share a stem share one sidecar (``pred.nii.gz`` and ``pred.tsv``: ``pred.json``), so
    :meth:`write_series` writes data files only and :meth:`series_sidecar` gives the sidecar's content;
    :func:`berg.predict_movie` merges the contents per sidecar path and writes each once.
    """

    roles: ClassVar[tuple[str, ...]] = ()
    spaces: ClassVar[tuple[str, ...] | None] = None
    stores_samples: ClassVar[bool] = False
    bids: ClassVar[bool] = False

    def data_files(self, path: str | os.PathLike, metadata: Mapping) -> list[Path]:
        """The data files writing ``path`` makes (one, unless the space splits it, as surfaces do by hemisphere)."""
        return [Path(path)]

    def files(self, path: str | os.PathLike, metadata: Mapping, role: str = "responses") -> list[Path]:
        """Every file writing ``path`` in ``role`` makes: the data files, and for a series the JSON sidecar when
        the writer describes one (:meth:`series_sidecar`)."""
        data = self.data_files(path, metadata)
        return [*data, sidecar_path(path)] if role == "series" and self.has_series_sidecar() else data

    @classmethod
    def has_series_sidecar(cls) -> bool:
        """True when the writer describes a sidecar for a film's series (it defines :meth:`series_sidecar`)."""
        return cls.series_sidecar is not Writer.series_sidecar

    def estimate_bytes(self, path: str | os.PathLike, n_rows: int, metadata: Mapping) -> int:
        """An upper bound of what writing ``n_rows`` rows to ``path`` takes on disk (all of its files): float32 rows,
        256 bytes of chunk index a row, 64 bytes of coordinates, ROI and accuracy entries a column."""
        n_outputs = int(metadata.get("n_outputs") or 0)
        return int(n_rows) * (n_outputs * 4 + 256) + n_outputs * 64 + OVERHEAD_BYTES

    def write_responses(self, path: str | os.PathLike, shape: tuple[int, int], metadata: Mapping, fill: Fill
                        ) -> list[Path]:
        """Write responses of ``shape`` (n_stimuli, n_outputs); return the files written."""
        raise NotImplementedError

    def write_series(self, path: str | os.PathLike, bold: np.ndarray, per_scan: Mapping[str, np.ndarray],
                     meta: Mapping) -> list[Path]:
        """Write a film's (n_scans, n_outputs) series (``per_scan``: baselines per scan; ``meta``: the contract plus
        the timing fields of :class:`berg.movie.MovieResult`); return the data files written."""
        raise NotImplementedError

    def series_sidecar(self, path: str | os.PathLike, bold: np.ndarray, per_scan: Mapping[str, np.ndarray],
                       meta: Mapping) -> dict:
        """The JSON sidecar's content for the series written to ``path`` (writers without one do not define it)."""
        raise NotImplementedError
