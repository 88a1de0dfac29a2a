"""NIfTI outputs: responses or a film's scans placed at their voxels, streamed one volume at a time.

Placement follows :class:`berg.spaces.volume.VolumePlacer` (a voxel holds the mean of the columns at it, and the
metadata's ``fill_value`` where none is), the same rule as :func:`berg.to_nifti`: for the same responses every
path writes the same volumes. One stimulus gives a 3D image, several a 4D one; a film's series is always 4D with
the TR in ``pixdim[4]`` and a JSON sidecar (:func:`berg.writers.sidecars.image_sidecar`). gzip headers carry no time stamp and no file name, so equal data give equal bytes.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .._io import atomic_path
from ..errors import InvalidArgumentError
from ..spaces.volume import VolumePlacer, nifti_header
from .base import OVERHEAD_BYTES, Fill, Writer
from .sidecars import image_sidecar


def _volume_fields(metadata: Mapping, path: str | os.PathLike) -> tuple:
    missing = [k for k in ("voxel_ijk", "volume_shape", "affine") if metadata.get(k) is None]
    if missing:
        raise InvalidArgumentError(f"output={str(path)!r} needs a volume, but the model's metadata lacks {missing}")
    return metadata["voxel_ijk"], metadata["volume_shape"], metadata["affine"]


def write_volumes(path: str | os.PathLike, rows: Iterable[np.ndarray], n_rows: int, metadata: Mapping,
                  tr: float | None = None, always_4d: bool = False) -> Path:
    """Write (n_outputs,) rows as the volumes of one NIfTI-1 file, one at a time.

    Parameters
    ----------
    path : path
        ``.nii`` or ``.nii.gz``.
    rows : iterable of (n_outputs,) arrays
        ``n_rows`` of them, in order.
    metadata : dict
        The model's metadata (``voxel_ijk``, ``volume_shape``, ``affine``, ``fill_value``, ``space``).
    tr : float, optional
        Seconds between volumes (``pixdim[4]``).
    always_4d : bool
        Write a 4D image even for one row.
    """
    ijk, shape, affine = _volume_fields(metadata, path)
    placer = VolumePlacer(ijk, shape, metadata.get("fill_value", np.nan))
    dims = (*placer.shape, n_rows) if (n_rows != 1 or always_4d) else placer.shape
    header = nifti_header(affine, dims, (metadata.get("space") or {}).get("template"), tr)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw:
            gz = path.name.lower().endswith(".gz")
            handle = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if gz else raw
            handle.write(header.binaryblock)
            handle.write(b"\x00" * 4)  # no extensions
            written = 0
            for row in rows:
                handle.write(placer.place(row).astype("<f4").tobytes(order="F"))
                written += 1
            if gz:
                handle.close()
        if written != n_rows:
            raise InvalidArgumentError(f"output={str(path)!r}: {written} rows were given for {n_rows} volumes")
    return path


class NiftiWriter(Writer):
    """``.nii`` / ``.nii.gz`` for volume models (see the module docstring)."""

    roles = ("responses", "series")
    spaces = ("volume",)
    bids = True

    def estimate_bytes(self, path: str | os.PathLike, n_rows: int, metadata: Mapping) -> int:
        shape = metadata.get("volume_shape") or ()
        return int(n_rows) * int(np.prod(shape)) * 4 + OVERHEAD_BYTES  # uncompressed: gzip only shrinks it

    def write_responses(self, path: str | os.PathLike, shape: tuple[int, int], metadata: Mapping, fill: Fill
                        ) -> list[Path]:
        _volume_fields(metadata, path)  # before any work
        responses = fill(np.empty(shape, dtype=np.float32))
        return [write_volumes(path, responses, shape[0], metadata)]

    def write_series(self, path: str | os.PathLike, bold: np.ndarray, per_scan: Mapping[str, np.ndarray],
                     meta: Mapping) -> list[Path]:
        return [write_volumes(path, np.asarray(bold), len(bold), meta, tr=float(meta["tr"]), always_4d=True)]

    def series_sidecar(self, path: str | os.PathLike, bold: np.ndarray, per_scan: Mapping[str, np.ndarray],
                       meta: Mapping) -> dict:
        return image_sidecar(meta)
