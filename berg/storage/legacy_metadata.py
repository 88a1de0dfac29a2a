"""BERG's per-subject metadata dict, read into berg's terms: voxel masks, ROI entries, accuracy and affines.

BERG's creation code stores ``{"fmri": {group_mask, sub_mask, rois, [*_header, *_affine]}, "encoding_models":
{...}}``. Masks are boolean volumes; the model's responses are the ``sub_mask`` voxels in C order ("rows").
An ROI entry comes in any of these forms, and :func:`roi_rows` works out which index space it uses by checking
it against ``sub_mask``:

- a flat integer array, or a 1-tuple holding one (``np.where`` output): response columns when every index is
  below the voxel count, else flat C-order indices into the volume (each must fall inside ``sub_mask``);
- three equal-length integer arrays (``np.where`` over the volume) or an (n, 3) array: volume coordinates;
- the triple of BERG's model card: (3-D indices, flat indices, NIfTI image). The 3-D indices decide the voxels;
  the flat indices must agree with them (as response columns or as flat volume indices), and the image (an inert
  :class:`~berg.storage.safe_pickle.PickledRecord`) must have the volume's shape and, when it holds its data, the
  same voxels.

Anything else, or an entry that contradicts the mask, raises :class:`~berg.errors.ModelFormatError` naming the
ROI and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from .safe_pickle import PickledRecord


class VoxelSpace:
    """The subject's volume and the response row of each of its voxels.

    Parameters
    ----------
    sub_mask : (X, Y, Z) array
        Nonzero where the model has a voxel; rows are these voxels in C order.
    """

    def __init__(self, sub_mask: np.ndarray, where: str = "metadata"):
        if np.ndim(sub_mask) != 3:
            raise ModelFormatError(f"{where}: 'sub_mask' has shape {np.shape(sub_mask)}; expected a 3-D volume")
        self.mask = np.asarray(sub_mask) != 0
        self.shape = self.mask.shape
        self.n_voxels = int(self.mask.sum())
        self.row_of_flat = np.full(self.mask.size, -1, dtype=np.int64)
        self.row_of_flat[np.flatnonzero(self.mask)] = np.arange(self.n_voxels)


def _integers(value: Any, what: str, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ModelFormatError(f"{where}: {what} must hold integer indices, found dtype {arr.dtype}")
    return arr.astype(np.int64)


def _from_flat(value: Any, space: VoxelSpace, where: str) -> np.ndarray:
    """Rows of a flat index array: response columns, or flat volume indices inside the mask."""
    idx = _integers(value, "a flat index array", where).reshape(-1)
    if idx.size == 0 or (idx.min() >= 0 and idx.max() < space.n_voxels):
        return idx
    if idx.min() < 0 or idx.max() >= space.mask.size:
        raise ModelFormatError(f"{where}: indices range {idx.min()}..{idx.max()}, outside both the response "
                               f"columns (0..{space.n_voxels - 1}) and the volume (0..{space.mask.size - 1})")
    rows = space.row_of_flat[idx]
    if (rows < 0).any():
        raise ModelFormatError(f"{where}: {int((rows < 0).sum())} flat volume indices fall outside sub_mask")
    return rows


def _coordinates(value: Any, space: VoxelSpace, where: str) -> np.ndarray:
    """(3, n) volume coordinates from three index arrays or an (n, 3) / (3, n) array."""
    if isinstance(value, (tuple, list)):
        parts = [_integers(v, "a 3-D index array", where).reshape(-1) for v in value]
        if len(parts) != 3 or len({p.size for p in parts}) != 1:
            raise ModelFormatError(f"{where}: 3-D indices must be three arrays of equal length, got "
                                   f"{[p.size for p in parts]}")
        coords = np.stack(parts)
    else:
        arr = _integers(value, "a 3-D index array", where)
        if arr.ndim != 2 or 3 not in arr.shape:
            raise ModelFormatError(f"{where}: 3-D indices must have shape (n, 3) or (3, n), got {arr.shape}")
        coords = arr.T if arr.shape[1] == 3 and arr.shape[0] != 3 else arr
    bounds = np.asarray(space.shape)[:, None]
    if coords.size and ((coords < 0).any() or (coords >= bounds).any()):
        raise ModelFormatError(f"{where}: 3-D indices fall outside the volume {space.shape}")
    return coords


def _rows_at(coords: np.ndarray, space: VoxelSpace, where: str) -> np.ndarray:
    rows = space.row_of_flat[np.ravel_multi_index(tuple(coords), space.shape)]
    if (rows < 0).any():
        raise ModelFormatError(f"{where}: {int((rows < 0).sum())} voxels of its 3-D indices fall outside sub_mask")
    return rows


def _image_shape_and_data(image: PickledRecord) -> tuple[tuple[int, ...] | None, np.ndarray | None]:
    data = image.field("_dataobj")
    if isinstance(data, np.ndarray):
        return data.shape, data
    if isinstance(data, PickledRecord) and data.field("_shape") is not None:
        return tuple(int(n) for n in data.field("_shape")), None
    return None, None


def _check_triple(entry: tuple, space: VoxelSpace, where: str) -> np.ndarray:
    coords = _coordinates(entry[0], space, where + " (item 1, 3-D indices)")
    rows = _rows_at(coords, space, where + " (item 1, 3-D indices)")
    flat_item = entry[1][0] if isinstance(entry[1], tuple) and len(entry[1]) == 1 else entry[1]
    flat = _integers(flat_item, "item 2 (flat indices)", where).reshape(-1)
    volume_flat = np.ravel_multi_index(tuple(coords), space.shape)
    if not (np.array_equal(np.sort(flat), np.sort(rows)) or np.array_equal(np.sort(flat), np.sort(volume_flat))):
        raise ModelFormatError(f"{where}: its flat indices (item 2) disagree with its 3-D indices (item 1)")
    shape, data = _image_shape_and_data(entry[2])
    if shape is not None and tuple(shape[:3]) != space.shape:
        raise ModelFormatError(f"{where}: its NIfTI image (item 3) has shape {shape}, sub_mask has {space.shape}")
    if data is not None and not np.array_equal(np.flatnonzero(np.asarray(data).reshape(space.shape)),
                                               np.sort(volume_flat)):
        raise ModelFormatError(f"{where}: its NIfTI image (item 3) marks other voxels than its 3-D indices")
    return rows


def roi_rows(name: str, entry: Any, space: VoxelSpace, path: Path) -> np.ndarray:
    """Response rows (n,) int64 of one stored ROI entry, in any of the forms in the module docstring."""
    where = f"{path}: ROI {name!r}"
    if isinstance(entry, (tuple, list)) and len(entry) == 3 and isinstance(entry[2], PickledRecord):
        rows = _check_triple(tuple(entry), space, where)
    elif isinstance(entry, (tuple, list)) and len(entry) == 3:
        rows = _rows_at(_coordinates(entry, space, where), space, where)
    elif isinstance(entry, (tuple, list)) and len(entry) == 1:
        rows = _from_flat(entry[0], space, where)
    elif isinstance(entry, np.ndarray) and entry.ndim == 2 and 3 in entry.shape:
        rows = _rows_at(_coordinates(entry, space, where), space, where)
    elif isinstance(entry, np.ndarray):
        rows = _from_flat(entry, space, where)
    else:
        raise ModelFormatError(f"{where}: unrecognised entry ({type(entry).__name__}); expected indices, an "
                               "np.where tuple, or (3-D indices, flat indices, NIfTI image)")
    return rows.astype(np.int64)


def volume_affine(fmri: dict, prefix: str, where: str = "metadata") -> list[list[float]] | None:
    """(4, 4) ``{prefix}_affine`` if stored, else the sform of ``{prefix}_header`` (when its sform code is set),
    else None; a stored affine of another shape is a :class:`ModelFormatError`."""
    if fmri.get(f"{prefix}_affine") is not None:
        affine = np.asarray(fmri[f"{prefix}_affine"], dtype=np.float64)
        if affine.shape not in ((4, 4), (16,)):
            raise ModelFormatError(f"{where}: '{prefix}_affine' has shape {affine.shape}; expected (4, 4)")
        return affine.reshape(4, 4).tolist()
    header = fmri.get(f"{prefix}_header")
    struct = header.field("_structarr") if isinstance(header, PickledRecord) else None
    if isinstance(struct, np.ndarray) and struct.dtype.names and "srow_x" in struct.dtype.names \
            and int(struct["sform_code"]) > 0:
        rows = [np.asarray(struct[f"srow_{a}"], dtype=np.float64).reshape(4) for a in "xyz"]
        return np.vstack(rows + [np.array([0.0, 0.0, 0.0, 1.0])]).tolist()
    return None


_ACCURACY_UNITS = {
    "noiseceiling": "fraction of variance (BERG stores percent; divided by 100)",
    "correlation": "Pearson r on the test set (negative values set to 0)",
    "r2": "squared Pearson r (fraction)",
    "explained_variance": ("fraction of the noise ceiling: r2 / noiseceiling_task_test_n_10, capped at 1, 0 where "
                           "the noise ceiling is 0 (recomputed: BERG stores r2 over the percent noise ceiling, "
                           "times 100, capped at 100)"),
}


def accuracy_arrays(stored: Any, names: list[str], n_voxels: int, path: Path
                    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``{"accuracy.<name>": (n_voxels,) float32}`` in berg's units, and the unit of each name."""
    if not isinstance(stored, dict):
        raise ModelFormatError(f"{path}: 'encoding_models' must be a dict, found {type(stored).__name__}")
    arrays, units = {}, {}
    for name in names:
        if name == "explained_variance":
            continue
        if name not in stored:
            raise ModelFormatError(f"{path}: encoding_models lacks {name!r}; it has {sorted(stored)}")
        arr = np.asarray(stored[name], dtype=np.float64).reshape(-1)
        if arr.shape != (n_voxels,):
            raise ModelFormatError(f"{path}: encoding_models.{name} has {arr.size} values, expected {n_voxels}")
        kind = "noiseceiling" if name.startswith("noiseceiling") else name
        arrays[name] = arr / 100.0 if kind == "noiseceiling" else arr
        units[name] = _ACCURACY_UNITS.get(kind, "as stored by BERG")
    if "explained_variance" in names:
        nc, r2 = arrays.get("noiseceiling_task_test_n_10"), arrays.get("r2")
        if nc is None or r2 is None:
            raise ModelFormatError(f"{path}: explained_variance needs r2 and noiseceiling_task_test_n_10")
        safe = np.where(nc > 0, nc, 1.0)
        arrays["explained_variance"] = np.where(nc > 0, np.minimum(r2 / safe, 1.0), 0.0)
        units["explained_variance"] = _ACCURACY_UNITS["explained_variance"]
    return {f"accuracy.{k}": v.astype(np.float32) for k, v in arrays.items()}, units
