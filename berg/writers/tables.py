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
sidecar field uses, is prefixed with ``berg_`` (repeated until free); the sidecar's ``Columns`` lists the result.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._io import atomic_path, write_json
from ..config import berg_version
from ..errors import InvalidArgumentError
from .base import Writer

TIME_COLUMN = "onset"


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a predictor table: ``NAME.tsv`` or ``NAME.tsv.gz`` -> ``NAME.json``."""
    path = Path(path)
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return path.with_name(Path(name).with_suffix(".json").name)


def write_predictors(path: str | os.PathLike, columns: Mapping[str, np.ndarray], sidecar: Mapping) -> tuple[Path, Path]:
    """Write a predictor table (one row per scan) and its JSON sidecar; the form follows the extension.

    Parameters
    ----------
    path : str or PathLike
        ``.tsv.gz``: BIDS continuous recording, no header row; ``.tsv``: header row (see the module docstring).
    columns : dict
        Column name -> (n_scans,) values, in file order (the time column included for ``.tsv``).
    sidecar : dict
        JSON-able description (model, subject, HRF, TR, ``Columns``, units, column descriptions, ...).

    Returns
    -------
    (table_path, json_path)
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
    json_path = sidecar_path(path)
    write_json(json_path, dict(sidecar))
    return path, json_path


def _free_name(name: str, taken: set) -> str:
    while name in taken:
        name = f"berg_{name}"
    return name


def predictor_table(bold: np.ndarray, per_scan: Mapping, meta: Mapping, with_time: bool) -> tuple[dict, dict]:
    rois = meta.get("roi_columns") or {"all": np.arange(bold.shape[1])}
    hrf = meta["hrf"]
    sidecar = {
        "Description": "Predicted BOLD time courses (mean over each ROI's outputs) and low-level baselines, one row per scan.",
        "model_id": meta.get("model_id"), "subject": meta.get("subject"), "HRF": hrf,
        "RepetitionTime": meta["tr"], "SamplingFrequency": 1.0 / meta["tr"],
        "StartTime": meta["slice_time_ref"] * meta["tr"], "SliceTimeRef": meta["slice_time_ref"],
        "NumberOfScans": int(bold.shape[0]), "Units": meta["units"], "berg_version": berg_version(),
    }
    reserved = set(sidecar) | {"Columns"}
    if reserved & set(rois):
        raise InvalidArgumentError(f"ROI name(s) {sorted(reserved & set(rois))} are sidecar fields of the predictor "
                                   f"table; ROI names other than {sorted(reserved)} are valid")
    taken = reserved | set(rois)
    columns = {}
    if with_time:
        time_name = _free_name(TIME_COLUMN, taken)
        taken.add(time_name)
        columns[time_name] = (np.arange(bold.shape[0]) + meta["slice_time_ref"]) * meta["tr"]
        sidecar[time_name] = {"Description": "Acquisition time of the scan from the film's start.", "Units": "s"}
    for name in rois:
        columns[name] = bold[:, np.asarray(rois[name], dtype=np.int64)].mean(axis=1)
        sidecar[name] = {"Description": f"Mean predicted response over ROI {name}, HRF {hrf}, at scan times.",
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

    def files(self, path: str | os.PathLike, metadata: Mapping) -> list[Path]:
        return [Path(path), sidecar_path(path)]

    def write_series(self, path: str | os.PathLike, bold: np.ndarray, per_scan: Mapping[str, np.ndarray],
                     meta: Mapping) -> list[Path]:
        with_time = not Path(path).name.lower().endswith(".gz")
        return list(write_predictors(path, *predictor_table(bold, per_scan, meta, with_time)))
