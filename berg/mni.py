"""Group-level MNI prediction for the img2fmri model, without FSL or AFNI.

img2fmri's group pipeline, re-expressed as fixed index maps and linear operators:

1. subject volume -> the subject's 1 mm T1 grid: nearest neighbour in world coordinates (header only);
2. T1 -> MNI152 2 mm grid: nearest neighbour through the FNIRT coefficient field (read with fslpy);
3. Gaussian smoothing in MNI space, ``sigma = sigma_mm / 2`` voxels, mode constant, truncate 4, NaN as 0;
4. overlap mask: union over subjects, hemispheres and chosen ROIs of the smoothed ROI masks
   (always smoothed with 1 mm, as img2fmri's shipped ``s_bool_masks``) thresholded at 0.15 x their max;
5. per stimulus: z-score each subject within the overlap, sum the subjects, z-score the sum.

Steps 1-4 are linear in the 512 features and fold, per subject, into one (overlap voxels x 512) map
(:func:`group_readout`); step 5 is :func:`group_zscore`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
from scipy.ndimage import gaussian_filter

from ._optional import import_optional
from .errors import InvalidSelectionError, ModelFormatError, close_matches
from .storage.native import load_arrays, metadata_paths, read_subject_metadata, readout_path, subject_tag

ROIS = ("EarlyVis", "OPA", "LOC", "RSC", "PPA")
HEMISPHERES = ("LH", "RH")
MNI_VOXEL_MM = 2.0
TRUNCATE = 4.0
MASK_SIGMA_MM = 1.0
MASK_THRESHOLD = 0.15


def mni_map_path(model_dir: Path, subject: int) -> Path:
    """Path of a subject's subject -> MNI index map (``metadata/berg_mni_sub-0S.safetensors``)."""
    return metadata_paths(model_dir, subject)[0].parent / f"berg_mni_{subject_tag(int(subject))}.safetensors"


def nearest_index(points: np.ndarray) -> np.ndarray:
    """Nearest voxel index of continuous voxel coordinates, halves rounded up (``floor(x + 0.5)``).

    Coordinates are first snapped to 1e-6 voxel so that exact ties on aligned grids stay ties.
    """
    return np.floor(np.round(points, 6) + 0.5).astype(np.int64)


def fnirt_t1_voxels(coeff_img, t1_img, premat: np.ndarray, ref_img) -> np.ndarray:
    """T1 voxel that FSL's nearest-neighbour ``applywarp`` samples for every MNI voxel.

    Parameters
    ----------
    coeff_img : nibabel image
        FNIRT cubic-spline coefficient field (``T1_to_MNI_nonlin_coeff``).
    t1_img : nibabel image
        The full T1 image (its grid is what is sampled).
    premat : (4, 4) array
        FLIRT matrix from the full T1 to FNIRT's source image (a crop), in FSL scaled-voxel mm.
    ref_img : nibabel image
        The MNI reference grid.

    Returns
    -------
    (*ref_shape, 3) int64 array
        T1 voxel indices; they may fall outside the T1 grid.
    """
    fnirt, nonlinear, image = (import_optional(f"fsl.{name}", "import", "the FNIRT warp to MNI")
                               for name in ("transform.fnirt", "transform.nonlinear", "data.image"))
    Image = image.Image

    ref = Image(np.zeros(ref_img.shape[:3], np.float32), xform=ref_img.affine)
    # FNIRT's source image is the T1 cropped by premat; only its affine matters for the transform
    src = Image(np.zeros((1, 1, 1), np.float32), xform=t1_img.affine @ np.linalg.inv(premat))
    field = fnirt.readFnirt(coeff_img, src, ref)
    field.displacements = _GridDisplacements(field)
    absolute = np.asarray(nonlinear.coefficientFieldToDeformationField(field, defType="absolute").data)
    full = Image(np.zeros(t1_img.shape[:3], np.float32), xform=t1_img.affine)
    to_voxel = full.getAffine("fsl", "voxel") @ np.linalg.inv(premat)
    return nearest_index(absolute @ to_voxel[:3, :3].T + to_voxel[:3, 3])


class _GridDisplacements:
    """fslpy's cubic B-spline displacements, evaluated separably when asked for the whole reference grid.

    ``CoefficientField.displacements`` sums 64 knot products point by point (seconds for a 91 x 109 x 91
    grid); on the full grid the same sum factorises into three small matrix products per axis (well under
    a second, equal to 1e-13 mm). Any other request goes to fslpy's own method.
    """

    def __init__(self, field):
        self.field, self.fallback = field, type(field).displacements.__get__(field)

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        to_field = self.field.refToFieldMat
        shape = self.field.ref.shape[:3]
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
        axis_aligned = np.count_nonzero(to_field[:3, :3] - np.diag(np.diag(to_field[:3, :3]))) == 0
        if self.field.fieldType != "cubic" or not axis_aligned or not np.array_equal(coords, grid):
            return self.fallback(coords)
        coef = np.asarray(self.field.data, dtype=np.float64)
        out = coef
        for axis in range(3):
            basis = _spline_basis(shape[axis], to_field[axis, axis], to_field[axis, 3], coef.shape[axis])
            out = np.moveaxis(np.tensordot(basis, out, axes=(1, axis)), 0, axis)
        return out.reshape(-1, 3)


def _spline_basis(n: int, scale: float, offset: float, n_knots: int) -> np.ndarray:
    """(n, n_knots) cubic B-spline weights of grid points ``0..n-1`` mapped to ``scale * x + offset`` knots."""
    f = np.arange(n) * scale + offset
    first, u = np.floor(f).astype(np.int64), np.remainder(f, 1)
    pieces = ((1 - u) ** 3 / 6, (3 * u ** 3 - 6 * u ** 2 + 4) / 6,
              (-3 * u ** 3 + 3 * u ** 2 + 3 * u + 1) / 6, u ** 3 / 6)
    basis = np.zeros((n, n_knots))
    for shift, weight in enumerate(pieces):
        knot = first + shift
        ok = (knot >= 0) & (knot < n_knots)
        basis[np.flatnonzero(ok), knot[ok]] += weight[ok]
    return basis


def resample_index(points_ijk: np.ndarray, from_affine: np.ndarray, to_affine: np.ndarray,
                   to_shape: Sequence[int]) -> np.ndarray:
    """Nearest voxel of one grid for voxel indices of another (world coordinates, header only).

    Parameters
    ----------
    points_ijk : (..., 3) int array
        Voxel indices in the ``from`` grid.
    from_affine, to_affine : (4, 4) arrays
        Voxel -> world (mm) affines.
    to_shape : 3 ints

    Returns
    -------
    (...,) int64 array
        Flat C-order index into the ``to`` grid, -1 where the point falls outside it.
    """
    m = np.linalg.inv(to_affine) @ from_affine
    ijk = nearest_index(points_ijk @ m[:3, :3].T + m[:3, 3])
    inside = np.all((ijk >= 0) & (ijk < np.asarray(to_shape)), axis=-1)
    flat = np.ravel_multi_index(tuple(np.where(inside[..., None], ijk, 0).T), tuple(to_shape)).T
    return np.where(inside, flat, -1)


def gaussian_weights(sigma_mm: float, voxel_mm: float = MNI_VOXEL_MM, truncate: float = TRUNCATE) -> np.ndarray:
    """1-D Gaussian kernel (2r+1,) as ``scipy.ndimage.gaussian_filter`` builds it (``[1.]`` for sigma 0)."""
    sigma = sigma_mm / voxel_mm
    if sigma == 0:
        return np.ones(1)
    radius = int(truncate * sigma + 0.5)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return w / w.sum()


def smooth_volume(volume: np.ndarray, sigma_mm: float = 1.0) -> np.ndarray:
    """Smooth an MNI volume as ``fslmaths -s sigma_mm`` does (NaN counts as 0); float64."""
    data = np.nan_to_num(np.asarray(volume, dtype=np.float64), nan=0.0)
    return gaussian_filter(data, sigma_mm / MNI_VOXEL_MM, mode="constant", truncate=TRUNCATE)


def smoothing_operator(src_flat: np.ndarray, dst_flat: np.ndarray, shape: Sequence[int],
                       sigma_mm: float) -> scipy.sparse.csr_matrix:
    """The smoothing of :func:`smooth_volume` restricted to a few voxels, as a sparse matrix.

    Parameters
    ----------
    src_flat : (m,) int array
        Flat C-order indices of the voxels that may hold non-zero values.
    dst_flat : (n,) int array
        Flat indices of the voxels whose smoothed values are wanted.
    shape : 3 ints
    sigma_mm : float

    Returns
    -------
    (n, m) scipy.sparse.csr_matrix
        ``smooth_volume(v).flat[dst_flat] == S @ v.flat[src_flat]`` for any ``v`` zero elsewhere.
    """
    w = gaussian_weights(sigma_mm)
    r = (w.size - 1) // 2
    offsets = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    weights = np.prod(w[offsets + r], axis=1)
    dst_of = np.full(int(np.prod(shape)), -1, np.int64)
    dst_of[dst_flat] = np.arange(len(dst_flat))
    src_ijk = np.stack(np.unravel_index(np.asarray(src_flat), tuple(shape)), -1)
    target = src_ijk[:, None, :] + offsets[None]
    inside = np.all((target >= 0) & (target < np.asarray(shape)), axis=-1)
    rows = np.full(inside.shape, -1, np.int64)
    rows[inside] = dst_of[np.ravel_multi_index(tuple(target[inside].T), tuple(shape))]
    keep = rows >= 0
    cols = np.broadcast_to(np.arange(len(src_flat))[:, None], rows.shape)[keep]
    vals = np.broadcast_to(weights[None], rows.shape)[keep]
    return scipy.sparse.csr_matrix((vals, (rows[keep], cols)), shape=(len(dst_flat), len(src_flat)))


def nanmean_fold(steps: Sequence[tuple[np.ndarray, np.ndarray]], n_voxels: int,
                 n_rows: int) -> scipy.sparse.csr_matrix:
    """img2fmri's volume filling as one linear map from readout rows to voxels.

    The volume starts empty (NaN); each step writes its rows into its voxels, averaging with what is already
    there (``nanmean`` of the old and the new value). A voxel written ``t`` times thus gives its j-th write
    (j = 1..t) the weight ``2**-(t - j + 1)``, except the first, which gets ``2**-(t - 1)``.

    Parameters
    ----------
    steps : sequence of (rows, voxels) int array pairs
        In filling order; ``rows[i]`` is written into ``voxels[i]`` (a voxel at most once per step).
    n_voxels, n_rows : int

    Returns
    -------
    (n_voxels, n_rows) float64 scipy.sparse.csr_matrix C
        ``volume[voxels] = C @ row_values``; voxels no step touches have empty rows.
    """
    rows = np.concatenate([np.asarray(r, np.int64) for r, _ in steps])
    voxels = np.concatenate([np.asarray(v, np.int64) for _, v in steps])
    order = np.argsort(voxels, kind="stable")  # writes of each voxel, in filling order
    counts = np.bincount(voxels, minlength=n_voxels)
    starts = np.cumsum(counts) - counts
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size) - np.repeat(starts, counts)
    later = counts[voxels] - rank - 1
    weight = 0.5 ** later * np.where(rank > 0, 0.5, 1.0)
    return scipy.sparse.csr_matrix((weight, (voxels, rows)), shape=(n_voxels, n_rows))


def check_rois(rois) -> tuple[str, ...]:
    """Chosen ROI names in img2fmri's filling order (EarlyVis, OPA, LOC, RSC, PPA); ``None`` means all."""
    if rois is None:
        return ROIS
    names = [rois] if isinstance(rois, str) else list(rois)
    for name in names:
        if name not in ROIS:
            raise InvalidSelectionError(f"rois contains {name!r}; valid ROI names are {', '.join(ROIS)}."
                                        + close_matches(str(name), ROIS))
    if not names:
        raise InvalidSelectionError(f"rois is empty; give one or more of {', '.join(ROIS)}")
    return tuple(r for r in ROIS if r in names)


def check_sigma(sigma_mm) -> float:
    """A finite, non-negative smoothing sigma in mm."""
    try:
        value = float(sigma_mm)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0 or isinstance(sigma_mm, bool):
        raise InvalidSelectionError(f"sigma_mm must be a finite number >= 0 (mm), got {sigma_mm!r}")
    return value


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


def read_mni_map(model_dir: Path, subject: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], np.ndarray]:
    """A subject's index map: (mni_voxel, source_voxel, MNI volume shape, MNI affine).

    ``mni_voxel`` (m,) holds flat C-order MNI indices and ``source_voxel`` (m,) the subject voxel (a row of
    ``voxel_ijk``) whose value each takes; every other MNI voxel takes 0.
    """
    from safetensors import safe_open

    path = mni_map_path(model_dir, subject)
    arrays = load_arrays(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = handle.metadata() or {}
        shape, affine = tuple(json.loads(header["volume_shape"])), np.asarray(json.loads(header["affine"]))
        return arrays["mni_voxel"], arrays["source_voxel"], shape, affine
    except (KeyError, ValueError) as exc:
        raise ModelFormatError(f"{path}: malformed subject -> MNI index map ({exc!r})") from exc


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


def group_readout(model_dir: str | Path, rois=None, sigma_mm: float = 1.0,
                  subjects: Sequence[int] = (1, 2, 3)) -> GroupReadout:
    """Fold img2fmri's group pipeline up to the z-scoring into one affine map per subject.

    Parameters
    ----------
    model_dir : path
        The imported model folder (see :func:`berg.storage.img2fmri.import_img2fmri`).
    rois : str or sequence of str, optional
        ROIs among EarlyVis, OPA, LOC, RSC, PPA (default all). They fill the subject volume, and the overlap
        mask, in that fixed order whatever order they are given in.
    sigma_mm : float
        Gaussian smoothing sigma in mm (0: none). The overlap mask always uses 1 mm, as img2fmri does.
    subjects : sequence of int

    Returns
    -------
    GroupReadout
    """
    rois, sigma_mm, model_dir = check_rois(rois), check_sigma(sigma_mm), Path(model_dir)
    parts, masks = [], {}
    for s in subjects:
        meta = read_subject_metadata(model_dir, s)
        readout = load_arrays(readout_path(model_dir, s))
        mni_voxel, source_voxel, shape, affine = read_mni_map(model_dir, s)
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
        subjects=tuple(int(s) for s in subjects), rois=rois, sigma_mm=sigma_mm)


def group_zscore(y: torch.Tensor, segments) -> torch.Tensor:
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
    total = torch.baddbmm(-(scale @ mean), scale, blocks).squeeze(1)  # sum_s (y_s - mean_s) / std_s
    mean, std = _mean_std(total)
    return total.sub_(mean).div_(std)


def _mean_std(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std over the last axis, from two fast reductions (sum and norm)."""
    mean = y.mean(-1, keepdim=True)
    mean_square = torch.linalg.vector_norm(y, dim=-1, keepdim=True).square_().div_(y.shape[-1])
    return mean, (mean_square - mean.square()).clamp_min_(0).sqrt_()
