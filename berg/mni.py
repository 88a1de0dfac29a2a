"""Subject -> MNI152 warping without FSL or AFNI: index maps, resampling and smoothing operators (numpy, scipy).

img2fmri's group pipeline, re-expressed as fixed index maps and linear operators:

1. subject volume -> the subject's 1 mm T1 grid: nearest neighbour in world coordinates (header only);
2. T1 -> MNI152 2 mm grid: nearest neighbour through the FNIRT coefficient field (read with fslpy);
3. Gaussian smoothing in MNI space, ``sigma = sigma_mm / 2`` voxels, mode constant, truncate 4, NaN as 0;
4. overlap mask: union over subjects, hemispheres and chosen ROIs of the smoothed ROI masks
   (always smoothed with 1 mm, as img2fmri's shipped ``s_bool_masks``) thresholded at 0.15 x their max;
5. per stimulus: z-score each subject within the overlap, sum the subjects, z-score the sum.

Steps 1-4 are linear in the 512 features and fold, per subject, into one (overlap voxels x 512) map
(:func:`berg.group_readout.group_readout`); step 5 is :func:`berg.group_readout.group_zscore`. This module is
what the importer needs at import time; the run-time group readout lives in :mod:`berg.group_readout`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse
from scipy.ndimage import gaussian_filter

from ._optional import import_optional

HEMISPHERES = ("LH", "RH")
MNI_VOXEL_MM = 2.0
TRUNCATE = 4.0
MASK_SIGMA_MM = 1.0
MASK_THRESHOLD = 0.15


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
