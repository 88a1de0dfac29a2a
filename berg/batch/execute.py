"""Doing one unit: load its model, read its stimuli, write its outputs and its completion record.

The same code runs in the local engine and in Ray actors, so both give the same files.

Image shards go to ``..._responses.h5``: ``responses`` (n_images, n_outputs) float32 in the model's units,
``stimuli`` (n_images,) the file paths (or ``ARRAY[index]``), and the column datasets of
:func:`berg.writers.arrays.write_columns` (``voxel_ijk`` among them for volume models). Films go through
:func:`berg.predict_movie` into the space's image series (a 4D NIfTI, or one GIFTI per hemisphere) with its JSON
sidecar, its HDF5 file and BIDS continuous predictors (``_stim.tsv.gz`` + ``_stim.json``).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import h5py
import numpy as np

from .. import api
from .._io import atomic_path, check_room
from ..encoder import encode
from ..movie import predict_movie
from ..writers import writer_for
from ..writers.arrays import write_columns
from .records import write_record
from .units import Unit


def load_model(unit: Unit, berg_dir: str | Path | None):
    """The encoding model ``unit.model`` describes."""
    m = unit.model
    return api.get_encoding_model(m["model_id"], subject=m["subject"], selection=m["selection"], device=m["device"],
                                  backbone_weights=m["backbone_weights"], berg_dir=berg_dir,
                                  precision=m["precision"])


def read_stimulus(unit: Unit):
    """The stimulus of an image unit as ``encode`` takes it: file paths, or the array slice (read now)."""
    src = unit.source
    if "files" in src:
        return list(src["files"])
    if src["array"].lower().endswith(".npy"):
        return np.array(np.load(src["array"], mmap_mode="r", allow_pickle=False)[src["start"]:src["stop"]])
    with h5py.File(src["array"], "r") as handle:
        return handle[src["dataset"]][src["start"]:src["stop"]]


def stimulus_names(unit: Unit) -> list[str]:
    """One name per image of the unit: its file path, or ``ARRAY[index]``."""
    src = unit.source
    if "files" in src:
        return list(src["files"])
    return [f"{src['array']}[{i}]" for i in range(src["start"], src["stop"])]


def run_unit(model, unit: Unit, root: Path, stimulus=None, berg_dir: str | Path | None = None) -> dict:
    """Compute ``unit`` with ``model`` (see :func:`run_units`); return its completion record."""
    return run_units(model, [unit], root, stimulus, berg_dir)[0]


def run_units(model, units: list[Unit], root: Path, stimulus=None, berg_dir: str | Path | None = None) -> list[dict]:
    """Compute ``units``, which share one stimulus, in one pass of ``model``; write each unit's outputs under
    ``root`` (temp then rename), then each one's record.

    Temporary files a killed run left beside the units' outputs are removed first (one run per output root).

    Parameters
    ----------
    model : EncodingModel
        The unit's model; for several units a :class:`~berg.shared_backbone.SharedBackboneModel` keyed by their
        uids.
    units : list of Unit
        Of one kind, with the same source and options.
    root : Path
        Output root.
    stimulus : optional
        An image unit's stimulus already read (by a Ray decode task); default: :func:`read_stimulus`.
    berg_dir : path, optional
        Where the models' files are (for the records' input identity).

    Returns
    -------
    list of dict
        The completion records, in the order of ``units``.
    """
    started = time.perf_counter()
    first = units[0]
    out = {u.uid: {role: Path(root) / rel for role, rel in u.outputs.items()} for u in units}
    for paths in out.values():  # temporaries left by a run that was killed while writing these units
        for path in paths.values():
            for stale in path.parent.glob(f".{path.name}.*"):
                stale.unlink(missing_ok=True)
    keyed = len(units) > 1
    if first.kind == "film":
        o = first.options
        films = {uid: [paths["image"], paths["hdf5"], paths["predictors"]] for uid, paths in out.items()}
        predict_movie(model, first.source["path"], tr=o["tr"], n_scans=o["n_scans"],
                      slice_time_ref=o["slice_time_ref"], hrf=None if o["hrf"] == "none" else o["hrf"],
                      sample_rate_hz=o["sample_rate_hz"] or None, clip_s=o["clip_s"], stride_s=o["stride_s"],
                      batch_size=o["batch_size"], output=films if keyed else films[first.uid], show_progress=False)
    else:
        stimulus = read_stimulus(first) if stimulus is None else stimulus
        names = stimulus_names(first)
        metadata = model.metadata if keyed else {first.uid: model.metadata}
        files = {uid: paths["responses"] for uid, paths in out.items()}
        sizes = [(path, writer_for(path, "responses", metadata[uid]).estimate_bytes(path, len(names), metadata[uid]))
                 for uid, path in files.items()]
        check_room(sizes, first.uid)
        with contextlib.ExitStack() as stack:
            handles, datasets = {}, {}
            for uid, path in files.items():  # closed before each is renamed into place
                handles[uid] = stack.enter_context(h5py.File(stack.enter_context(atomic_path(path)), "w"))
                n_outputs = metadata[uid].n_outputs
                datasets[uid] = handles[uid].create_dataset("responses", shape=(len(names), n_outputs),
                                                            dtype=np.float32,
                                                            chunks=(1, n_outputs) if n_outputs else None)
            encode(model, stimulus, show_progress=False, batch_size=first.options["batch_size"],
                   out=datasets if keyed else datasets[first.uid])
            for uid, h5 in handles.items():
                h5.create_dataset("stimuli", data=np.array(names, dtype=h5py.string_dtype()))
                write_columns(h5, metadata[uid])
    elapsed = (time.perf_counter() - started) / len(units)
    return [write_record(root, unit, elapsed, berg_dir) for unit in units]
