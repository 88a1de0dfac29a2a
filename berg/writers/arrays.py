"""Array outputs: ``.npy`` and HDF5, and the one HDF5 layout of what output columns are.

Column layout (:func:`write_columns`; every ``.h5`` file berg writes has it, readable with ``h5py`` alone):

``output_index`` (n_outputs,) int64
    The column's index among the subject's whole-brain outputs (among the group grid's for group models).
the space's coordinates, (n_outputs, ...)
    ``voxel_ijk`` (n, 3) int32 for volumes (column c is voxel ``voxel_ijk[c]`` of the grid); ``hemisphere`` (n,)
    int (0 left, 1 right) and ``vertex`` (n,) int for surfaces; ``repetition``, ``channel`` and ``time`` (n,)
    indices for sensors.
the space's layout arrays
    ``affine`` (4, 4) float64 voxel -> mm; ``ch_names`` (n_channels,) str and ``times`` (n_times,) float64 (s);
    the layout's scalars and short lists are attributes (``volume_shape``, ``mesh``, ``n_vertices`` …).
``roi_columns/{name}`` (m,) int64
    The columns of each ROI.
``accuracy/{name}`` (n_outputs,) float32
    Accuracy per column (fractions); its attribute ``units`` says of what.
attributes
    ``model_id``, ``subject``, ``units``, ``berg_version``, ``fill_value`` as scalars or strings; ``space``,
    ``selection``, ``backbone`` and ``provenance`` as JSON text.

Responses to stimuli (``.h5``): the dataset ``responses`` (n_stimuli, n_outputs) float32 beside that layout. A
film's HDF5 file is :class:`berg.sinks.SampleSink`'s, with the same layout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from .._io import atomic_path
from .base import Fill, Writer

_JSON_ATTRS = ("space", "selection", "backbone", "provenance")
_SCALAR_ATTRS = ("model_id", "subject", "units", "berg_version")


def jsonable(obj):
    """``json.dumps`` default for numpy values (and ``str`` for anything else)."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def _replace(h5: h5py.Group, name: str, data) -> None:
    if name in h5:
        del h5[name]
    h5.create_dataset(name, data=data)


def write_columns(h5: h5py.Group, metadata: Mapping) -> None:
    """Store what each output column is (the layout in the module docstring) in an open file or group.

    ``metadata`` is a model's metadata contract (a :class:`~berg.metadata.ModelMetadata` or a dict with its
    keys); each entry is written where present, and entries of these names already in ``h5`` are replaced.
    """
    coordinates = dict(metadata.get("coordinates") or {})
    if not coordinates and metadata.get("voxel_ijk") is not None:  # a plain dict in the volume keys
        coordinates = {"voxel_ijk": metadata["voxel_ijk"]}
    for name, values in coordinates.items():
        values = np.asarray(values)
        _replace(h5, name, values.astype(np.int32) if name == "voxel_ijk" else values)
    layout = dict(metadata.get("layout") or {})
    for key in ("volume_shape", "affine"):
        if key not in layout and metadata.get(key) is not None:
            layout[key] = metadata[key]
    for name, value in layout.items():
        values = np.asarray(value)
        if values.ndim >= 2 or (values.ndim == 1 and values.dtype.kind in "fUS"):  # grids, times, names
            _replace(h5, name, values.astype(h5py.string_dtype()) if values.dtype.kind in "US" else values)
        else:  # counts, shapes and labels
            h5.attrs[name] = values.tolist() if values.ndim else values.item()
    for group_name, arrays in (("roi_columns", metadata.get("roi_columns")), ("accuracy", metadata.get("accuracy"))):
        if group_name in h5:
            del h5[group_name]
        group = h5.create_group(group_name)
        for name, values in (arrays or {}).items():
            group.create_dataset(name, data=np.asarray(values, dtype=np.int64 if group_name == "roi_columns"
                                                       else np.float32))
            if group_name == "accuracy" and (metadata.get("accuracy_units") or {}).get(name):
                group[name].attrs["units"] = metadata["accuracy_units"][name]
    for key in _SCALAR_ATTRS:
        if metadata.get(key) is not None:
            h5.attrs[key] = str(metadata[key])
    if metadata.get("fill_value") is not None:
        h5.attrs["fill_value"] = float(metadata["fill_value"])
    for key in _JSON_ATTRS:
        if key in metadata:
            h5.attrs[key] = json.dumps(metadata[key], default=jsonable)


class NpyWriter(Writer):
    """``.npy``: the (n_stimuli, n_outputs) float32 responses, memory-mapped while they are computed."""

    roles = ("responses",)

    def write_responses(self, path: str | os.PathLike, shape: tuple[int, int], metadata: Mapping, fill: Fill
                        ) -> list[Path]:
        with atomic_path(path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            fill(out)
            out.flush()
            del out
        return [Path(path)]


class Hdf5Writer(Writer):
    """HDF5: ``responses`` beside the column layout (the module docstring); a film's samples and scans."""

    roles = ("responses", "series")
    stores_samples = True

    def write_responses(self, path: str | os.PathLike, shape: tuple[int, int], metadata: Mapping, fill: Fill
                        ) -> list[Path]:
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as h5:
                out = h5.create_dataset("responses", shape=shape, dtype=np.float32,
                                        chunks=(1, shape[1]) if shape[0] and shape[1] else None)
                fill(out)
                write_columns(h5, metadata)
        return [Path(path)]
