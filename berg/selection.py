"""Selection: ``{"roi": name | [names]}`` or ``{"voxels": binary vector}`` -> the readout rows to compute."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import InvalidSelectionError, close_matches
from .storage.native import SubjectMetadata

VALID_KEYS = ("roi", "voxels")


@dataclass(frozen=True)
class Selection:
    """Which outputs to compute.

    Attributes
    ----------
    whole_brain : bool
        Rows index the whole-brain readout (one row per voxel) instead of the per-ROI readout rows.
    rows : (n_out,) int64 array
        Rows of the chosen readout, in output order.
    voxels : (n_out,) int64 array
        The subject voxel of each output column.
    description : dict
        The selection as given, normalised (for metadata).
    """

    whole_brain: bool
    rows: np.ndarray
    voxels: np.ndarray
    description: dict


def _check_keys(selection) -> Mapping:
    if selection is None:
        return {}
    if not isinstance(selection, Mapping):
        raise InvalidSelectionError(f"selection={selection!r} must be None or a dict with key 'roi' or 'voxels'")
    unknown = [k for k in selection if k not in VALID_KEYS]
    if unknown:
        raise InvalidSelectionError(f"selection has unknown key(s) {unknown}; valid keys: 'roi', 'voxels'")
    return selection


def _roi_names(roi, valid: list[str]) -> list[str]:
    names = [roi] if isinstance(roi, str) else list(roi) if isinstance(roi, (list, tuple)) else [roi]
    if not names:
        raise InvalidSelectionError("selection['roi'] is an empty list; name at least one ROI")
    for name in names:
        if not isinstance(name, str) or name not in valid:
            raise InvalidSelectionError(
                f"selection['roi'] = {name!r} is not an ROI of this model.{close_matches(str(name), valid)} "
                f"Valid ROIs: {', '.join(valid)}")
    return names


def _roi_rows(names: list[str], meta: SubjectMetadata) -> np.ndarray:
    rows = np.concatenate([meta.roi_rows(name) for name in names])
    _, first = np.unique(rows, return_index=True)
    return rows[np.sort(first)]


def _voxel_mask(mask, n: int) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidSelectionError(
            f"selection['voxels'] has shape {arr.shape}; it must be a binary vector of length {n} "
            "(this subject's voxel count)")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            bad = arr[~np.isin(arr, (0, 1))][:3] if np.issubdtype(arr.dtype, np.number) else arr.dtype
            raise InvalidSelectionError(f"selection['voxels'] must be binary (0/1 or bool); found {bad}")
        arr = arr.astype(bool)
    if not arr.any():
        raise InvalidSelectionError("selection['voxels'] selects no voxel (all zeros); select at least one")
    return np.flatnonzero(arr)


def check_selection(selection, rois: list[str], n_voxels: int | None) -> None:
    """Check a selection against what a model card knows, before any file is read.

    Parameters
    ----------
    selection : dict or None
        As for :func:`resolve_selection`.
    rois : list of str
        The ROI names the card lists.
    n_voxels : int or None
        The subject's voxel count from the card (None: not known until the files are read).

    Raises
    ------
    InvalidSelectionError
        Unknown keys, unknown ROI names (with close matches), or a voxel mask of the wrong length or values.
    """
    selection = _check_keys(selection)
    if selection.get("roi") is not None:
        _roi_names(selection["roi"], rois)
    elif selection.get("voxels") is not None and n_voxels is not None:
        _voxel_mask(selection["voxels"], n_voxels)


def resolve_selection(selection: Mapping | None, meta: SubjectMetadata, has_whole_brain: bool) -> Selection:
    """Turn a user's ``selection`` into readout rows.

    Parameters
    ----------
    selection : dict or None
        ``None`` (whole brain), ``{"roi": name}``, ``{"roi": [names]}`` (union, in the order given, duplicates
        dropped) or ``{"voxels": binary (n_voxels,) vector}``; ``"voxels"`` is used only when ``"roi"`` is absent
        or None.
    meta : SubjectMetadata
    has_whole_brain : bool
        Whether the readout has a separate whole-brain map (rows differ from voxels).
    """
    selection = _check_keys(selection)
    roi = selection.get("roi")
    if roi is not None:
        names = _roi_names(roi, meta.roi_names)
        rows = _roi_rows(names, meta)
        return Selection(False, rows, meta.row_voxel[rows], {"roi": roi if isinstance(roi, str) else names})
    if selection.get("voxels") is not None:
        voxels = _voxel_mask(selection["voxels"], meta.n_voxels)
        if has_whole_brain:
            rows = voxels
        else:
            row_of_voxel = np.empty(meta.n_voxels, dtype=np.int64)
            row_of_voxel[meta.row_voxel] = np.arange(meta.row_voxel.size)
            rows = row_of_voxel[voxels]
        return Selection(has_whole_brain, rows, voxels, {"voxels": f"{voxels.size} of {meta.n_voxels} voxels"})
    if has_whole_brain:
        voxels = np.arange(meta.n_voxels)
        return Selection(True, voxels, voxels, {})
    rows = np.arange(meta.row_voxel.size)
    return Selection(False, rows, meta.row_voxel, {})
