"""Predictor tables: ROI-mean predicted BOLD and low-level baselines, one row per scan, with a JSON sidecar.

Two forms, by extension:

``.tsv.gz``
    A BIDS continuous recording (as ``_stim.tsv.gz`` / ``_physio.tsv.gz``): gzipped, no header row; the JSON
    sidecar (``NAME.json``) gives ``Columns``, ``SamplingFrequency`` (1 / TR) and ``StartTime`` (s, the first
    scan's acquisition time relative to the film's start). This is what BIDS tools read without help.
``.tsv``
    For spreadsheets and ``pandas.read_csv``: a header row whose first column ``onset`` is each scan's acquisition
    time (s), so rows carry their time without the sidecar (``NAME.json``, the same fields).

Column names never collide: a berg column (``onset``, a baseline) whose name an ROI already has, or that a
sidecar field uses, is prefixed with ``berg_`` (repeated until free), and so is an ROI whose name BIDS reads as an
entity (``run``, ``task`` …; :data:`berg.writers.bids.ENTITY_NAMES`); the sidecar's ``Columns`` lists the result.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._io import atomic_path
from ..errors import InvalidArgumentError
from .base import Writer
from .bids import ENTITY_NAMES, is_entity_name
from .sidecars import model_fields, timing_fields

TIME_COLUMN = "onset"


def write_table(path: str | os.PathLike, columns: Mapping[str, np.ndarray]) -> Path:
    """Write a predictor table, one row per scan; the form follows the extension.

    Parameters
    ----------
    path : str or PathLike
        ``.tsv.gz``: BIDS continuous recording, no header row; ``.tsv``: header row (see the module docstring).
    columns : dict
        Column name -> (n_scans,) values, in file order (the time column included for ``.tsv``).
    """
    names = list(columns)
    data = np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in names])
    path = Path(path)
    gz = path.name.lower().endswith(".gz")
    lines = [] if gz else ["\t".join(names)]
    lines += ["\t".join("n/a" if not np.isfinite(v) else f"{v:.9g}" for v in row) for row in data]
    text = ("\n".join(lines) + "\n").encode()
    with atomic_path(path) as tmp:
        # mtime=0: the same table gives the same bytes (and sha256) on every run
        tmp.write_bytes(gzip.compress(text, mtime=0) if gz else text)
    return path


def _free_name(name: str, taken: set) -> str:
    while name in taken:
        name = f"berg_{name}"
    return name


def predictor_table(bold: np.ndarray, per_scan: Mapping, meta: Mapping, with_time: bool) -> tuple[dict, dict]:
    rois = meta.get("roi_columns") or {"all": np.arange(bold.shape[1])}
    hrf = meta["hrf"]
    sidecar = {"Description": "Predicted BOLD time courses (mean over each ROI's outputs) and low-level baselines, "
                              "one row per scan.",
               **timing_fields({**meta, "n_scans": bold.shape[0]}), **model_fields(meta)}
    reserved = set(sidecar) | {"Columns"}
    if reserved & set(rois):
        raise InvalidArgumentError(f"ROI name(s) {sorted(reserved & set(rois))} are sidecar fields of the predictor "
                                   f"table; ROI names other than {sorted(reserved)} are valid")
    taken = reserved | set(rois) | ENTITY_NAMES
    columns = {}
    if with_time:
        time_name = _free_name(TIME_COLUMN, taken)
        taken.add(time_name)
        columns[time_name] = (np.arange(bold.shape[0]) + meta["slice_time_ref"]) * meta["tr"]
        sidecar[time_name] = {"Description": "Acquisition time of the scan from the film's start.", "Units": "s"}
    for roi in rois:
        name = _free_name(roi, taken) if is_entity_name(roi) else roi  # a key BIDS would read as an entity
        taken.add(name)
        columns[name] = bold[:, np.asarray(rois[roi], dtype=np.int64)].mean(axis=1)
        sidecar[name] = {"Description": f"Mean predicted response over ROI {roi}, HRF {hrf}, at scan times.",
                         "Units": meta["units"]}
    for name, values in per_scan.items():
        column = _free_name(name, taken)
        taken.add(column)
        columns[column] = values
        sidecar[column] = {"Description": f"{name} of the frames (berg.baselines.{name}), HRF {hrf}, at scan times.",
                           "Units": meta["baseline_units"]}
    sidecar["Columns"] = list(columns)
    return columns, sidecar


class TableWriter(Writer):
    """``.tsv`` and ``.tsv.gz``: a film's ROI-mean predictors per scan and their JSON sidecar (module docstring)."""

    roles = ("series",)
    bids = True

    def write_series(self, path: str | os.PathLike, bold: np.ndarray, per_scan: Mapping[str, np.ndarray],
                     meta: Mapping) -> list[Path]:
        return [write_table(path, predictor_table(bold, per_scan, meta, _with_time(path))[0])]

    def series_sidecar(self, path: str | os.PathLike, bold: np.ndarray, per_scan: Mapping[str, np.ndarray],
                       meta: Mapping) -> dict:
        return predictor_table(bold, per_scan, meta, _with_time(path))[1]


def _with_time(path: str | os.PathLike) -> bool:
    return not Path(path).name.lower().endswith(".gz")
