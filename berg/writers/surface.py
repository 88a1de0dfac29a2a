"""GIFTI outputs of surface models: one ``.func.gii`` file per hemisphere, one data array per stimulus or scan.

Each file holds every vertex of its hemisphere's mesh (``layout["n_vertices"]``, e.g. 163,842 for fsaverage), the
model's columns at their vertices and NaN elsewhere, so that nibabel and nilearn read it against the mesh as it
is. The hemisphere goes into the file name as the BIDS entity ``hemi-L`` / ``hemi-R`` (:func:`hemisphere_path`).
A film's series records its TR in each file's metadata (``RepetitionTime``, s) and in the ``TimeStep`` of every
data array (ms, the unit FreeSurfer and Connectome Workbench use), and one JSON sidecar without ``hemi`` serves
both files (:func:`berg.writers.sidecars.image_sidecar`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._io import atomic_path
from ..spaces.surface import HEMISPHERES, SurfaceSpace
from .base import OVERHEAD_BYTES, Fill, Writer
from .bids import ENTITY_ORDER
from .sidecars import image_sidecar

SUFFIX = ".func.gii"
_BIDS_LABEL = {"lh": "L", "rh": "R"}
_STRUCTURE = {"lh": "CortexLeft", "rh": "CortexRight"}
#: BIDS entities that come after ``hemi`` in a file name
_AFTER_HEMI = ENTITY_ORDER[ENTITY_ORDER.index("hemi") + 1:]


def hemisphere_path(path: str | os.PathLike, hemisphere: str) -> Path:
    """The file of one hemisphere (``"lh"`` or ``"rh"``): ``hemi-L`` / ``hemi-R`` inserted in BIDS entity order
    (before ``space``, ``desc`` …, or before the suffix), or appended to a name without entities."""
    path = Path(path)
    stem = path.name[: -len(SUFFIX)] if path.name.lower().endswith(SUFFIX) else path.stem
    entity = f"hemi-{_BIDS_LABEL[hemisphere]}"
    parts = stem.split("_")
    if len(parts) == 1 or not all("-" in p for p in parts[:-1]):
        return path.with_name(f"{stem}_{entity}{SUFFIX}")
    at = next((i for i, p in enumerate(parts) if p.split("-")[0] in _AFTER_HEMI), len(parts) - ("-" not in parts[-1]))
    return path.with_name("_".join([*parts[:at], entity, *parts[at:]]) + SUFFIX)


def write_hemispheres(path: str | os.PathLike, rows: np.ndarray, metadata: Mapping, tr: float | None = None
                      ) -> list[Path]:
    """Write (n_rows, n_outputs) values as one GIFTI per hemisphere; return the two files."""
    import nibabel as nib

    values = SurfaceSpace.on_mesh(np.asarray(rows, dtype=np.float32), metadata)
    written = []
    for hemisphere in HEMISPHERES:
        meta = {"AnatomicalStructurePrimary": _STRUCTURE[hemisphere],
                "Mesh": str(metadata["layout"].get("mesh") or ""), "Units": str(metadata.get("units") or "")}
        if tr is not None:
            meta["RepetitionTime"] = f"{tr:g}"
        arrays = [nib.gifti.GiftiDataArray(row, intent="NIFTI_INTENT_NONE", datatype="NIFTI_TYPE_FLOAT32",
                                           meta={} if tr is None else {"TimeStep": f"{tr * 1000:g}"})
                  for row in values[hemisphere]]
        image = nib.gifti.GiftiImage(darrays=arrays, meta=nib.gifti.GiftiMetaData(meta))
        target = hemisphere_path(path, hemisphere)
        with atomic_path(target) as tmp:
            nib.save(image, str(tmp))
        written.append(target)
    return written


class GiftiWriter(Writer):
    """``.func.gii`` for surface models (see the module docstring)."""

    roles = ("responses", "series")
    spaces = ("surface",)
    bids = False  # BIDS 1.11 defines surface data for PET only; the names follow fMRIPrep's ``_bold.func.gii``

    def data_files(self, path: str | os.PathLike, metadata: Mapping) -> list[Path]:
        return [hemisphere_path(path, h) for h in HEMISPHERES]

    def estimate_bytes(self, path: str | os.PathLike, n_rows: int, metadata: Mapping) -> int:
        per_hemisphere = int((metadata.get("layout") or {}).get("n_vertices") or 0)
        return int(n_rows) * 2 * per_hemisphere * 8 + OVERHEAD_BYTES  # base64 in XML: 4 bytes of a value take ~5.4

    def write_responses(self, path: str | os.PathLike, shape: tuple[int, int], metadata: Mapping, fill: Fill
                        ) -> list[Path]:
        return write_hemispheres(path, fill(np.empty(shape, dtype=np.float32)), metadata)

    def write_series(self, path: str | os.PathLike, bold: np.ndarray, per_scan: Mapping[str, np.ndarray],
                     meta: Mapping) -> list[Path]:
        return write_hemispheres(path, bold, meta, tr=float(meta["tr"]))

    def series_sidecar(self, path: str | os.PathLike, bold: np.ndarray, per_scan: Mapping[str, np.ndarray],
                       meta: Mapping) -> dict:
        return image_sidecar(meta)
