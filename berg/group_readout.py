"""The run-time group-level readout: subject readouts warped to MNI152, smoothed, summed and z-scored.

Group kind ``mni-warp-sum`` (see :mod:`berg.card_registries`): every subject's readout is folded with its
subject -> MNI index map (:mod:`berg.mni`, given by the model's format) into one (overlap voxels x features) map;
per stimulus, each subject's block is z-scored within the overlap, the blocks summed and the sum z-scored
(:func:`group_zscore`). The map is built with numpy and scipy; the z-scoring runs on the readout's torch tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import validation
from .cards import ModelCard
from .config import berg_version
from .errors import InvalidSelectionError, ModelFormatError, close_matches
from .mni import (HEMISPHERES, MASK_SIGMA_MM, MASK_THRESHOLD, gaussian_weights, nanmean_fold, smooth_volume,
                  smoothing_operator)
from .storage.formats import GroupSubject


def check_rois(rois, valid: Sequence[str]) -> tuple[str, ...]:
    """Chosen ROI names in the filling order of ``valid`` (the card's group ROIs); ``None`` means all of them."""
    if rois is None:
        return tuple(valid)
    names = [rois] if isinstance(rois, str) else list(rois)
    for name in names:
        if name not in valid:
            raise InvalidSelectionError(f"roi={name!r} is not valid: expected a group ROI among {', '.join(valid)}."
                                        + close_matches(str(name), valid))
    if not names:
        raise InvalidSelectionError(f"roi=[] is not valid: expected one or more of {', '.join(valid)}")
    return tuple(r for r in valid if r in names)


def check_group_selection(selection, valid: Sequence[str]) -> tuple[str, ...]:
    """The group ROIs a selection (None or ``{"roi": name or [names]}``) chooses, in filling order."""
    if selection is not None and (not isinstance(selection, dict) or any(k != "roi" for k in selection)):
        raise InvalidSelectionError(f"selection={selection!r} is not valid for subject='group': "
                                    "use {'roi': name or [names]} or None")
    return check_rois((selection or {}).get("roi"), valid)


def check_sigma(sigma_mm) -> float:
    """A finite, non-negative smoothing sigma in mm."""
    return validation.positive_number("sigma_mm", sigma_mm, allow_zero=True, unit="mm")


@dataclass
class GroupReadout:
    """Per-subject maps from 512 features to the overlap voxels, stacked.

    Attributes
    ----------
    weight : (S * n, 512) float32 array
        Rows ``segments[s]:segments[s+1]`` map features to subject ``subjects[s]``'s smoothed MNI values at the
        ``n`` overlap voxels.
    bias : (S * n,) float32 array
    segments : (S + 1,) int64 array
        Row offsets of the subjects' blocks.
    voxel_ijk : (n, 3) int32 array
        Overlap voxels on the MNI grid, in C order.
    affine : (4, 4) float64 array
        Voxel -> MNI mm.
    volume_shape : (91, 109, 91)
    roi_voxels : dict name -> (k,) int64 array
        Overlap voxels (indices into ``voxel_ijk``) of each chosen ROI and of its LH/RH parts.
    subjects, rois : tuples
    sigma_mm : float
    """

    weight: np.ndarray
    bias: np.ndarray
    segments: np.ndarray
    voxel_ijk: np.ndarray
    affine: np.ndarray
    volume_shape: tuple[int, int, int]
    roi_voxels: dict[str, np.ndarray]
    subjects: tuple[int, ...]
    rois: tuple[str, ...]
    sigma_mm: float


def _thresholded_smooth(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Flat indices where a binary mask smoothed with 1 mm exceeds 0.15 x its max (computed on a padded box)."""
    if flat.size == 0:
        return flat
    ijk = np.stack(np.unravel_index(flat, shape), -1)
    r = (gaussian_weights(MASK_SIGMA_MM).size - 1) // 2
    lo = np.maximum(ijk.min(0) - r, 0)
    hi = np.minimum(ijk.max(0) + r + 1, shape)
    box = np.zeros(hi - lo)
    box[tuple((ijk - lo).T)] = 1.0
    smooth = smooth_volume(box, MASK_SIGMA_MM)
    keep = np.argwhere(smooth > MASK_THRESHOLD * smooth.max()) + lo
    return np.ravel_multi_index(tuple(keep.T), shape)


def group_readout(subjects: Sequence[GroupSubject], rois: Sequence[str], sigma_mm: float = 1.0) -> GroupReadout:
    """Fold img2fmri's group pipeline up to the z-scoring into one affine map per subject.

    Parameters
    ----------
    subjects : sequence of GroupSubject
        Each subject's stored metadata, readout arrays and MNI index map (``extras``: ``mni_voxel`` (m,) flat
        C-order MNI indices, ``source_voxel`` (m,) the subject output each takes, ``mni_shape``, ``mni_affine``),
        as the model's format gives them (:meth:`~berg.storage.formats.ModelFormat.group_subjects`).
    rois : sequence of str
        The chosen group ROIs in filling order (see :func:`check_rois`); each fills the subject volume, and the
        overlap mask, from its left- and right-hemisphere rows.
    sigma_mm : float
        Gaussian smoothing sigma in mm (0: none). The overlap mask always uses 1 mm, as img2fmri does.

    Returns
    -------
    GroupReadout
    """
    rois, sigma_mm = tuple(rois), check_sigma(sigma_mm)
    parts, masks = [], {}
    for subject in subjects:
        meta, readout, extras = subject.metadata, subject.readout, subject.extras
        mni_voxel, source_voxel, shape, affine = (extras[k] for k in ("mni_voxel", "source_voxel", "mni_shape",
                                                                         "mni_affine"))
        steps = []
        for roi in rois:
            for h in HEMISPHERES:
                rows = meta.roi_rows(h + roi)
                steps.append((rows, meta.row_voxel[rows]))
                inside = np.isin(source_voxel, meta.row_voxel[rows])
                masks.setdefault(h + roi, []).append(_thresholded_smooth(mni_voxel[inside], shape))
        fold = nanmean_fold(steps, meta.n_voxels, readout["weight"].shape[0])[source_voxel]
        parts.append((mni_voxel, fold, readout))
    overlap = np.unique(np.concatenate([f for fs in masks.values() for f in fs]))
    weights, biases = [], []
    for mni_voxel, fold, readout in parts:
        op = smoothing_operator(mni_voxel, overlap, shape, sigma_mm) @ fold  # (n, n_rows) sparse
        weights.append((op @ readout["weight"].astype(np.float64)).astype(np.float32))
        biases.append((op @ readout["bias"].astype(np.float64)).astype(np.float32))
    roi_voxels = {}
    for roi in rois:
        for name in (roi, *(h + roi for h in HEMISPHERES)):
            flat = np.concatenate([f for h in HEMISPHERES if name in (roi, h + roi) for f in masks[h + roi]])
            roi_voxels[name] = np.flatnonzero(np.isin(overlap, flat))
    n = overlap.size
    return GroupReadout(
        weight=np.concatenate(weights), bias=np.concatenate(biases),
        segments=np.arange(len(parts) + 1, dtype=np.int64) * n,
        voxel_ijk=np.stack(np.unravel_index(overlap, shape), -1).astype(np.int32),
        affine=affine, volume_shape=tuple(int(v) for v in shape), roi_voxels=roi_voxels,
        subjects=tuple(s.subject for s in subjects), rois=rois, sigma_mm=sigma_mm)


def group_zscore(y, segments):
    """img2fmri's group average: per stimulus, z-score each subject's block, sum, z-score the sum.

    Z-scores use the population standard deviation (``ddof=0``, as ``scipy.stats.zscore``); a constant
    block gives NaN, as there.

    Parameters
    ----------
    y : (B, S * n) tensor
        Subject blocks side by side, as ``x @ GroupReadout.weight.T + GroupReadout.bias``.
    segments : (S + 1,) sequence of int
        Block offsets; blocks must have equal width ``n``.

    Returns
    -------
    (B, n) tensor, same dtype and device as ``y``

    Raises
    ------
    ModelFormatError
        ``y`` is not 2-D or ``segments`` do not cut its columns into equal blocks.
    """
    offsets = [int(v) for v in segments]
    widths = {b - a for a, b in zip(offsets[:-1], offsets[1:])}
    if y.ndim != 2 or len(widths) != 1 or offsets[0] != 0 or offsets[-1] != y.shape[1]:
        raise ModelFormatError(f"y of shape {tuple(y.shape)} does not split into equal blocks at segments {offsets}")
    blocks = y.reshape(y.shape[0], len(offsets) - 1, widths.pop())
    mean, std = _mean_std(blocks)  # (B, S, 1)
    scale = std.reciprocal().transpose(1, 2)  # (B, 1, S)
    total = (-(scale @ mean)).baddbmm(scale, blocks).squeeze(1)  # sum_s (y_s - mean_s) / std_s
    mean, std = _mean_std(total)
    return total.sub_(mean).div_(std)


def _mean_std(y):
    """Mean and population std over the last axis of a tensor, from two fast reductions (sum and norm)."""
    mean = y.mean(-1, keepdim=True)
    mean_square = y.norm(dim=-1, keepdim=True).square_().div_(y.shape[-1])
    return mean, (mean_square - mean.square()).clamp_min_(0).sqrt_()


def build_group_readout(card: ModelCard, model_format: Any, model_dir: Path, selection, sigma_mm: float | None
                        ) -> tuple[GroupReadout, dict[str, Any]]:
    """The group-level readout of ``card`` (its ``group`` section) and its column fields for the metadata contract.

    ``selection`` is None or ``{"roi": name or [names]}`` among the card's group ROIs; ``sigma_mm`` the smoothing
    in mm (default: the card's ``group.sigma_mm``). The subjects' inputs come from ``model_format``.
    """
    group_spec = card.group
    chosen = check_group_selection(selection, group_spec.rois)
    model_format.require(card, model_dir, "group")
    group = group_readout(model_format.group_subjects(card, model_dir), rois=chosen,
                          sigma_mm=group_spec.sigma_mm if sigma_mm is None else sigma_mm)
    n = int(group.voxel_ijk.shape[0])
    fields = {
        "model_id": card.model_id, "subject": "group",
        "selection": {"roi": list(group.rois), "sigma_mm": group.sigma_mm}, "n_outputs": n,
        "space": {"kind": "volume", "template": group_spec.template},
        "layout": {"volume_shape": group.volume_shape, "affine": group.affine},
        "coordinates": {"voxel_ijk": group.voxel_ijk, "output_index": np.arange(n, dtype=np.int64)},
        "fill_value": 0.0, "roi_columns": group.roi_voxels, "accuracy": {},
        "units": "z-score across the overlap voxels (group sum of subject z-scores, z-scored)",
        "provenance": {"subjects": list(group.subjects)}, "backbone": None, "berg_version": berg_version(),
    }
    return group, fields
