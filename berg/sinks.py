"""A film's resumable HDF5 store: per-sample responses while the film runs, the per-scan series when it ends.

HDF5 layout of a movie (one file; ``OUT.h5`` once complete, ``.OUT.h5.partial`` while a run is going):

``samples/responses`` (n_samples, n_outputs) float32
    Encoder output per sample (frame or clip), in the model's units.
``samples/times`` (n_samples,) float64
    Sample time stamps (s): frame sample time, or clip centre.
``samples/baselines/{name}`` (n_samples,) float32
    Low-level baselines per sample (:mod:`berg.baselines`).
``bold`` (n_scans, n_outputs) float32, ``frame_times`` (n_scans,) float64, ``baselines_tr/{name}`` (n_scans,)
    The per-scan series, written when the run completes.
the column layout of :mod:`berg.writers.arrays`
    ``output_index``, the space's coordinates (``voxel_ijk`` …), ``affine`` and other layout arrays,
    ``roi_columns/{name}``, ``accuracy/{name}`` and the contract's attributes, written when the run completes.
attributes
    ``params`` (JSON: the run's parameters, checked on resume), ``n_done`` (samples committed), ``complete``
    (bool), and the timing fields (``tr``, ``n_scans``, ``slice_time_ref``, ``hrf``, ``hold_s`` …) as scalars.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from .errors import ResumeError
from .writers.arrays import write_columns

log = logging.getLogger(__name__)

_CHUNK_ROWS = 64
_CHUNK_COLS = 1024
#: contract keys the column layout holds (the other scalar metadata of a film are its timing fields)
_LAYOUT_KEYS = {"coordinates", "layout", "roi_columns", "accuracy", "accuracy_units", "fitting", "voxel_ijk",
                "voxel_index", "volume_shape", "affine", "n_voxels", "n_outputs"}


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
            try:
                old, new = json.loads(stored), json.loads(params_json)
            except (TypeError, ValueError) as exc:
                f.close()
                raise ResumeError(f"resume=True but {str(self.path)!r} is damaged (its params are not JSON: {exc}); "
                                  "rerun without resume to start over.") from exc
            diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
            f.close()
            raise ResumeError(
                f"resume=True but the interrupted run in {str(self.path)!r} used other parameters "
                f"(stored, given): {diff}; rerun with the same parameters, or without resume to start over."
            )
        names = ["samples/responses", "samples/times", *(f"samples/baselines/{b}" for b in self.baselines)]
        n = int(f.attrs.get("n_done", -1))
        short = [name for name in names if name not in f or f[name].shape[0] < n]
        if n < 0 or short:
            f.close()
            raise ResumeError(f"resume=True but {str(self.path)!r} is damaged (n_done={n}; missing or shorter "
                              f"datasets: {short}); rerun without resume to start over.")
        for name in names:
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

    @staticmethod
    def estimate_bytes(n_samples: int, n_outputs: int, n_baselines: int, n_scans: int) -> int:
        """An upper bound of the finished file's size: sample datasets rounded up to whole chunks, the scans, the
        column layout, 64 KiB of header and metadata."""
        def whole(n: int, chunk: int) -> int:
            return -(-max(int(n), 1) // chunk) * chunk

        cols = whole(n_outputs, min(max(int(n_outputs), 1), _CHUNK_COLS))
        return (whole(n_samples, _CHUNK_ROWS) * cols * 4 + whole(n_samples, 4096) * (8 + 4 * n_baselines)
                + int(n_scans) * (int(n_outputs) * 4 + 256) + int(n_outputs) * 64 + (64 << 10))

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
        for key, value in metadata.items():
            if key not in _LAYOUT_KEYS and isinstance(value, (str, int, float, bool)):
                f.attrs[key] = value
        f.attrs["complete"] = True
        f.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file.id.valid:
            self._file.close()


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
            "metadata": {k: _attribute(k, v) for k, v in f.attrs.items() if k not in ("params", "n_done")},
            "params": json.loads(f.attrs["params"]),
        }


def _attribute(key: str, value):
    """An HDF5 attribute as a python value (the JSON ones decoded)."""
    if key in ("space", "selection", "backbone", "provenance"):
        return json.loads(value)
    return value.item() if isinstance(value, np.generic) else value.tolist() if isinstance(value, np.ndarray) else value
