"""Where predictions go: a resumable HDF5 sample sink, a streamed 4D NIfTI, BIDS continuous predictors.

Voxel order. Every array output has one column per model output, in the order of the model's metadata
``voxel_ijk`` (n_outputs, 3): the (i, j, k) voxel of column c in the volume ``volume_shape`` with ``affine``. For
subject models that is the order of the subject's voxels in the model files (a selection keeps it); for group
models the order of the overlap mask's voxels in C order. HDF5 outputs store it as the dataset ``voxel_ijk``
(with ``affine`` and ``roi_columns/{name}``), so a file can be put back into a volume without berg.

Predictor tables (``.tsv``, ``.tsv.gz``): see :mod:`berg.predictors`.

Responses to a stimulus set (:func:`write_responses`): ``.npy`` (n_stimuli, n_outputs) float32; HDF5 with
``responses`` of that shape plus the columns above and the metadata's scalars as attributes; NIfTI, the responses
placed at their voxels (:func:`berg.spaces.to_nifti`).

HDF5 layout of a movie (one file; ``OUT.h5`` once complete, ``.OUT.h5.partial`` while a run is going):

``samples/responses`` (n_samples, n_outputs) float32
    Encoder output per sample (frame or clip), in the model's units.
``samples/times`` (n_samples,) float64
    Sample time stamps (s): frame sample time, or clip centre.
``samples/baselines/{name}`` (n_samples,) float32
    Low-level baselines per sample (:mod:`berg.baselines`).
``bold`` (n_scans, n_outputs) float32, ``frame_times`` (n_scans,) float64, ``baselines_tr/{name}`` (n_scans,)
    The per-scan series, written when the run completes.
``voxel_ijk`` (n_outputs, 3), ``affine`` (4, 4), ``roi_columns/{name}``
    The voxel of each column (see "Voxel order"), written when the run completes.
attrs ``params`` (JSON: the run's parameters, checked on resume), ``n_done`` (samples committed),
``metadata`` (JSON), ``complete`` (bool).

Every output is written under a temporary name and renamed onto its final name only when complete.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from . import validation
from ._io import atomic_path
from .errors import InvalidArgumentError, ResumeError
from .predictors import predictor_table, write_predictors
from .spaces import to_nifti

log = logging.getLogger(__name__)

OUTPUT_KINDS = {".nii": "nifti", ".nii.gz": "nifti", ".h5": "hdf5", ".hdf5": "hdf5", ".tsv": "tsv",
                ".tsv.gz": "tsv"}
RESPONSE_SUFFIXES = (".npy", ".h5", ".hdf5", ".nii", ".nii.gz")
_CHUNK_ROWS = 64
_CHUNK_COLS = 1024


def output_kind(path: str | os.PathLike) -> str:
    """Output kind of a path from its extension: "nifti", "hdf5" or "tsv"."""
    name = Path(path).name.lower()
    for ext, kind in sorted(OUTPUT_KINDS.items(), key=lambda item: -len(item[0])):
        if name.endswith(ext):
            return kind
    raise validation.fail("output", str(path), f"a file extension among {', '.join(OUTPUT_KINDS)}")


def partial_path(final: str | os.PathLike, tag: str = "") -> Path:
    """The deterministic in-progress name of an output: ``dir/.NAME{tag}.partial``."""
    final = Path(final)
    return final.with_name(f".{final.name}{tag}.partial")


class SampleSink:
    """Append-only HDF5 store of per-sample responses that survives being killed between batches.

    Parameters
    ----------
    path : str or PathLike
        File to write (its in-progress name).
    n_outputs : int
        Columns of ``responses``.
    baselines : sequence of str
        Baseline names stored beside the responses.
    params : dict
        JSON-able run parameters; on resume they must equal the stored ones.
    resume : bool
        Continue from what ``path`` holds (if it exists and is readable) instead of starting over.
    """

    def __init__(self, path: str | os.PathLike, n_outputs: int, baselines: Sequence[str], params: Mapping, resume: bool):
        self.path = Path(path)
        self.baselines = tuple(baselines)
        params_json = json.dumps(dict(params), sort_keys=True)
        self._file = self._open_existing(params_json) if resume and self.path.exists() else None
        if self._file is None:
            self._file = self._create(n_outputs, params_json)

    def _open_existing(self, params_json: str) -> h5py.File | None:
        try:
            f = h5py.File(self.path, "r+", rdcc_nbytes=64 << 20)
            stored = f.attrs["params"]
        except (OSError, KeyError) as exc:  # killed while the file's metadata was being written
            log.warning("cannot resume from %s (%s); starting over", self.path, exc)
            return None
        if stored != params_json:
            old, new = json.loads(stored), json.loads(params_json)
            diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
            f.close()
            raise ResumeError(
                f"resume=True but the interrupted run in {str(self.path)!r} used other parameters "
                f"(stored, given): {diff}; rerun with the same parameters, or without resume to start over."
            )
        n = int(f.attrs["n_done"])
        for name in ["samples/responses", "samples/times", *(f"samples/baselines/{b}" for b in self.baselines)]:
            f[name].resize(n, axis=0)
        log.info("resuming from %s: %d samples done", self.path, n)
        return f

    def _create(self, n_outputs: int, params_json: str) -> h5py.File:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(self.path, "w", rdcc_nbytes=64 << 20)
        cols = min(int(n_outputs), _CHUNK_COLS)
        f.create_dataset("samples/responses", shape=(0, n_outputs), maxshape=(None, n_outputs), dtype="f4",
                         chunks=(_CHUNK_ROWS, cols))
        f.create_dataset("samples/times", shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,))
        for name in self.baselines:
            f.create_dataset(f"samples/baselines/{name}", shape=(0,), maxshape=(None,), dtype="f4", chunks=(4096,))
        f.attrs["params"] = params_json
        f.attrs["n_done"] = 0
        f.attrs["complete"] = False
        f.flush()
        return f

    @property
    def n_done(self) -> int:
        """Samples committed so far."""
        return int(self._file.attrs["n_done"])

    @property
    def responses(self) -> h5py.Dataset:
        """The (n_samples, n_outputs) float32 dataset (read slices of it)."""
        return self._file["samples/responses"]

    def times(self) -> np.ndarray:
        """Sample times (s), float64 (n_samples,)."""
        return self._file["samples/times"][: self.n_done]

    def baseline(self, name: str) -> np.ndarray:
        """One baseline per sample, float32 (n_samples,)."""
        return self._file[f"samples/baselines/{name}"][: self.n_done]

    def append(self, times: np.ndarray, responses: np.ndarray, baselines: Mapping[str, np.ndarray]) -> None:
        """Append a batch, then commit it (``n_done`` moves only after the data is written and flushed)."""
        n0, b = self.n_done, len(times)
        rows = {"samples/times": times, "samples/responses": responses}
        rows.update({f"samples/baselines/{k}": baselines[k] for k in self.baselines})
        for name, values in rows.items():
            dset = self._file[name]
            dset.resize(n0 + b, axis=0)
            dset[n0:] = values
        self._file.flush()
        self._file.attrs["n_done"] = n0 + b
        self._file.flush()

    def finish(self, bold: np.ndarray, frame_times: np.ndarray, baselines_tr: Mapping[str, np.ndarray],
               metadata: Mapping) -> None:
        """Store the per-scan series and metadata and mark the file complete (it stays open)."""
        f = self._file
        for name in ["bold", "frame_times", "baselines_tr"]:
            if name in f:
                del f[name]
        f.create_dataset("bold", data=np.asarray(bold, dtype=np.float32))
        f.create_dataset("frame_times", data=np.asarray(frame_times, dtype=np.float64))
        for name, values in baselines_tr.items():
            f.create_dataset(f"baselines_tr/{name}", data=np.asarray(values, dtype=np.float32))
        write_columns(f, metadata)
        f.attrs["metadata"] = json.dumps(dict(metadata), default=_jsonable)
        f.attrs["complete"] = True
        f.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file.id.valid:
            self._file.close()


def write_columns(h5: h5py.Group, metadata: Mapping) -> None:
    """Store what each output column is: ``voxel_ijk``, ``affine``, ``roi_columns/{name}`` and scalar attributes.

    Parameters
    ----------
    h5 : h5py.File or h5py.Group
        Where to write (existing entries of these names are replaced).
    metadata : dict
        A model's metadata (every encoding model's has ``voxel_ijk``); each entry is written where present.
    """
    arrays = {name: np.asarray(metadata[name], dtype=dtype) for name, dtype in (("voxel_ijk", np.int32),
              ("affine", np.float64)) if metadata.get(name) is not None}
    for name in (*arrays, "roi_columns"):
        if name in h5:
            del h5[name]
    for name, values in arrays.items():
        h5.create_dataset(name, data=values)
    group = h5.create_group("roi_columns")
    for roi, cols in (metadata.get("roi_columns") or {}).items():
        group.create_dataset(roi, data=np.asarray(cols, dtype=np.int64))
    for key in ("model_id", "units", "berg_version", "subject"):
        if metadata.get(key) is not None:
            h5.attrs[key] = str(metadata[key])
    if metadata.get("volume_shape") is not None:
        h5.attrs["volume_shape"] = list(metadata["volume_shape"])
    for key in ("selection", "backbone", "space"):
        if key in metadata:
            h5.attrs[key] = json.dumps(metadata[key], default=_jsonable)


def check_response_path(path: str | os.PathLike, parameter: str = "output") -> Path:
    """``path`` as a Path once its extension is one :func:`write_responses` writes; else InvalidArgumentError."""
    path = Path(path)
    if not path.name.lower().endswith(RESPONSE_SUFFIXES):
        raise InvalidArgumentError(f"{parameter} {str(path)!r} has an unknown extension; "
                                   f"valid: {', '.join(RESPONSE_SUFFIXES)}")
    return path


def write_responses(path: str | os.PathLike, shape: tuple[int, int], metadata: Mapping,
                    fill: Callable[[np.ndarray | h5py.Dataset | None], np.ndarray]) -> Path:
    """Write responses of ``shape`` (n_stimuli, n_outputs) to ``.npy``, ``.h5``/``.hdf5`` or ``.nii``/``.nii.gz``.

    Parameters
    ----------
    path : path
        The output; written under a temporary name and renamed when complete.
    shape : (n_stimuli, n_outputs)
        Shape of the responses.
    metadata : dict
        The model's metadata: voxel columns for HDF5 (:func:`write_columns`), voxel grid for NIfTI.
    fill : callable
        ``fill(out)`` computes the responses. For ``.npy`` and HDF5 it gets a float32 target of ``shape`` (a memmap
        or an HDF5 dataset) and writes into it batch by batch, so memory does not grow with the number of stimuli;
        for NIfTI it gets None and returns the (n_stimuli, n_outputs) array.

    Returns
    -------
    Path
    """
    path = check_response_path(path)
    name = path.name.lower()
    with atomic_path(path) as tmp:
        if name.endswith(".npy"):
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            fill(out)
            out.flush()
            del out
        elif name.endswith((".h5", ".hdf5")):
            with h5py.File(tmp, "w") as h5:
                out = h5.create_dataset("responses", shape=shape, dtype=np.float32,
                                        chunks=(1, shape[1]) if shape[1] > 0 else None)
                fill(out)
                write_columns(h5, metadata)
        else:
            to_nifti(fill(None), metadata).to_filename(tmp)
    return path


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def read_h5(path: str | os.PathLike) -> dict:
    """Read a complete movie HDF5 file into memory (for files that fit).

    Returns
    -------
    dict
        ``samples`` (n_samples, n_outputs), ``sample_times``, ``bold`` (n_scans, n_outputs), ``frame_times``,
        ``baselines_tr`` {name: (n_scans,)}, ``baselines`` {name: (n_samples,)}, ``metadata``, ``params``.
    """
    with h5py.File(path, "r") as f:
        n = int(f.attrs["n_done"])
        return {
            "samples": f["samples/responses"][:n],
            "sample_times": f["samples/times"][:n],
            "baselines": {k: v[:n] for k, v in f["samples/baselines"].items()} if "samples/baselines" in f else {},
            "bold": f["bold"][()],
            "frame_times": f["frame_times"][()],
            "baselines_tr": {k: v[()] for k, v in f["baselines_tr"].items()} if "baselines_tr" in f else {},
            "metadata": json.loads(f.attrs["metadata"]),
            "params": json.loads(f.attrs["params"]),
        }


def write_nifti(path: str | os.PathLike, bold: np.ndarray, voxel_ijk: np.ndarray, volume_shape: Sequence[int],
                affine: np.ndarray, tr: float, fill: float = np.nan) -> Path:
    """Write per-scan responses as a 4D float32 NIfTI-1, one volume at a time.

    Parameters
    ----------
    path : str or PathLike
        ``.nii`` or ``.nii.gz``.
    bold : numpy.ndarray
        (n_scans, n_outputs) responses.
    voxel_ijk : numpy.ndarray
        (n_outputs, 3) int voxel coordinates of each output column.
    volume_shape : (X, Y, Z)
        Grid shape.
    affine : numpy.ndarray
        (4, 4) voxel-to-world (mm) affine, stored as sform and qform.
    tr : float
        Repetition time (s), stored in ``pixdim[4]``; xyzt units are mm and s.
    fill : float
        Value outside the model's voxels: NaN for subject space (outside the brain mask is unknown), 0 for
        group MNI maps (img2fmri's convention: group z-scores are 0 outside the overlap mask).

    Returns
    -------
    pathlib.Path
    """
    bold = np.asarray(bold, dtype=np.float32)
    ijk = np.asarray(voxel_ijk, dtype=np.int64)
    shape = tuple(int(s) for s in volume_shape)
    if bold.ndim != 2 or ijk.shape != (bold.shape[1], 3):
        raise InvalidArgumentError(
            f"bold must be (n_scans, n_outputs) and voxel_ijk (n_outputs, 3); got {bold.shape} and {ijk.shape}."
        )
    if len(shape) != 3 or (ijk < 0).any() or (ijk >= np.array(shape)).any():
        raise InvalidArgumentError(f"voxel_ijk must lie inside volume_shape={shape}.")
    affine = np.asarray(affine, dtype=np.float64)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((*shape, bold.shape[0]))
    header.set_sform(affine, code="scanner")
    header.set_qform(affine, code="scanner")
    header.set_zooms((*np.sqrt((affine[:3, :3] ** 2).sum(axis=0)), float(tr)))
    header.set_xyzt_units("mm", "sec")
    header["vox_offset"] = 352
    flat = np.ravel_multi_index(tuple(ijk.T), shape, order="F")
    volume = np.empty(int(np.prod(shape)), dtype="<f4")
    path = Path(path)
    with atomic_path(path) as tmp:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(tmp, "wb") as fh:
            fh.write(header.binaryblock)
            fh.write(b"\x00" * 4)  # no extensions
            for row in bold:
                volume.fill(fill)
                volume[flat] = row
                fh.write(volume.tobytes())
    return path


def write_outputs(paths: Sequence[Path], bold: np.ndarray, per_scan: Mapping[str, np.ndarray], meta: Mapping) -> list[Path]:
    """Write the NIfTI and TSV outputs among ``paths`` (HDF5 is the sink itself); return the files written.

    ``meta`` needs ``tr``, ``slice_time_ref``, ``hrf``, ``units``, ``baseline_units``, and for NIfTI ``voxel_ijk``,
    ``volume_shape``, ``affine`` (``fill_value`` optional); TSV columns are the means over ``roi_columns``.
    """
    written = []
    for path in paths:
        kind = output_kind(path)
        if kind == "nifti":
            missing = [k for k in ("voxel_ijk", "volume_shape", "affine") if meta.get(k) is None]
            if missing:
                raise InvalidArgumentError(f"output={str(path)!r} needs a volume, but the model's metadata lacks {missing}.")
            fill = meta.get("fill_value", 0.0 if str(meta.get("subject")) == "group" else np.nan)
            written.append(write_nifti(path, bold, meta["voxel_ijk"], meta["volume_shape"], meta["affine"],
                                             meta["tr"], fill=fill))
        elif kind == "tsv":
            with_time = not path.name.lower().endswith(".gz")
            written.extend(write_predictors(path, *predictor_table(bold, per_scan, meta, with_time)))
    return written
