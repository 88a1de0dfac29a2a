"""Selection: ``{"roi": name | [names]}`` or the mask keys of the model's space -> the readout rows to compute.

ROIs are the same for every space: named sets of readout rows. Masks belong to the space (``{"voxels": ...}`` for
volumes, ``{"lh_vertices": ..., "rh_vertices": ...}`` for surfaces, ``{"channels": ..., "timepoints": ...}`` for
sensors); :mod:`berg.spaces` turns them into whole-brain outputs. A mask is used only when ``"roi"`` is absent or
None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidSelectionError, close_matches
from .storage.native import SubjectMetadata


@dataclass(frozen=True)
class Selection:
    """Which outputs to compute.

    Attributes
    ----------
    whole_brain : bool
        Rows index the whole-brain readout (one row per output) instead of the per-ROI readout rows.
    rows : (n_out,) int64 array
        Rows of the chosen readout, in output order.
    voxels : (n_out,) int64 array
        The subject's whole-brain output (voxel, vertex, sensor sample) of each output column.
    description : dict
        The selection as given, normalised (for metadata).
    """

    whole_brain: bool
    rows: np.ndarray
    voxels: np.ndarray
    description: dict


def _check_keys(selection, space: Any) -> Mapping:
    valid = ("roi", *space.mask_keys)
    if selection is None:
        return {}
    if not isinstance(selection, Mapping):
        raise InvalidSelectionError(f"selection={selection!r} must be None or a dict with key(s) "
                                    f"{', '.join(map(repr, valid))}")
    unknown = [k for k in selection if k not in valid]
    if unknown:
        raise InvalidSelectionError(f"selection has unknown key(s) {unknown}; valid keys for a {space.kind} model: "
                                    f"{', '.join(map(repr, valid))}" + close_matches(str(unknown[0]), valid))
    return selection


def roi_names(roi, valid: list[str], aliases: Mapping[str, str] | None = None) -> list[str]:
    """The ROI names of ``selection["roi"]`` (one name or a list), aliases replaced by the names they stand for."""
    names = [roi] if isinstance(roi, str) else list(roi) if isinstance(roi, (list, tuple)) else [roi]
    aliases = aliases or {}
    if not names:
        raise InvalidSelectionError("selection['roi'] is an empty list; name at least one ROI")
    out = []
    for name in names:
        name = aliases.get(name, name) if isinstance(name, str) else name
        if not isinstance(name, str) or name not in valid:
            raise InvalidSelectionError(
                f"selection['roi'] = {name!r} is not an ROI of this model.{close_matches(str(name), valid)} "
                f"Valid ROIs: {', '.join(valid)}")
        out.append(name)
    return out


def _roi_rows(names: list[str], meta: SubjectMetadata) -> np.ndarray:
    rows = np.concatenate([meta.roi_rows(name) for name in names])
    _, first = np.unique(rows, return_index=True)
    return rows[np.sort(first)]


def check_selection(selection, card: Any, subject: int | str) -> None:
    """Check a selection against what the model card knows, before any file is read.

    Raises
    ------
    InvalidSelectionError
        Unknown keys, unknown ROI names (with close matches), or a mask of the wrong length or values.
    """
    space = card.space.space
    selection = _check_keys(selection, space)
    if selection.get("roi") is not None:
        roi_names(selection["roi"], list(card.rois), card.roi_aliases)
    else:
        space.check_masks(selection, card, subject)


def resolve_selection(selection: Mapping | None, meta: SubjectMetadata, has_whole_brain: bool, space: Any,
                      aliases: Mapping[str, str] | None = None) -> Selection:
    """Turn a user's ``selection`` into readout rows.

    Parameters
    ----------
    selection : dict or None
        ``None`` (whole brain), ``{"roi": name}``, ``{"roi": [names]}`` (union, in the order given, duplicates
        dropped), or the space's mask keys.
    meta : SubjectMetadata
    has_whole_brain : bool
        Whether the readout has a separate whole-brain map (rows differ from outputs).
    space : OutputSpace
        The model's space (it reads the mask keys).
    aliases : dict, optional
        Other spellings of ROI names (the card's ``roi_aliases``).
    """
    selection = _check_keys(selection, space)
    roi = selection.get("roi")
    if roi is not None:
        names = roi_names(roi, meta.roi_names, aliases)
        rows = _roi_rows(names, meta)
        if rows.size == 0:
            raise InvalidSelectionError(f"selection['roi'] = {roi!r} holds no outputs for this subject; choose "
                                        "another ROI")
        return Selection(False, rows, meta.row_voxel[rows], {"roi": names[0] if isinstance(roi, str) else names})
    if any(selection.get(k) is not None for k in space.mask_keys):
        outputs = space.mask_outputs(selection, meta)
        if has_whole_brain:
            rows = outputs
        else:
            row_of_output = np.empty(meta.n_outputs, dtype=np.int64)
            row_of_output[meta.row_voxel] = np.arange(meta.row_voxel.size)
            rows = row_of_output[outputs]
        return Selection(has_whole_brain, rows, outputs, space.describe_masks(selection, outputs, meta))
    if has_whole_brain:
        outputs = np.arange(meta.n_outputs)
        return Selection(True, outputs, outputs, {})
    rows = np.arange(meta.row_voxel.size)
    return Selection(False, rows, meta.row_voxel, {})
