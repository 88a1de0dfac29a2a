"""Spaces: responses (one value per output column) back into volumes."""

from __future__ import annotations

from collections.abc import Mapping

import nibabel as nib
import numpy as np

from .errors import InvalidArgumentError


def fill_volume(values: np.ndarray, voxel_ijk: np.ndarray, volume_shape, fill_value: float = np.nan) -> np.ndarray:
    """Scatter column values into volumes.

    Parameters
    ----------
    values : (n_columns,) or (n_volumes, n_columns) array
    voxel_ijk : (n_columns, 3) int array
        Voxel of each column. Where several columns share a voxel, their mean is written.
    volume_shape : 3 ints
    fill_value : float
        Value outside the columns' voxels.

    Returns
    -------
    (*volume_shape) or (*volume_shape, n_volumes) float32 array
    """
    values = np.asarray(values, dtype=np.float64)
    stacked = values[None] if values.ndim == 1 else values
    n_vol = stacked.shape[0]
    flat_index = np.ravel_multi_index(tuple(np.asarray(voxel_ijk).T), tuple(volume_shape))
    size = int(np.prod(volume_shape))
    sums = np.zeros((n_vol, size))
    counts = np.bincount(flat_index, minlength=size)
    for v in range(n_vol):
        sums[v] = np.bincount(flat_index, weights=stacked[v], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(counts > 0, sums / np.maximum(counts, 1), fill_value).astype(np.float32)
    out = out.reshape(n_vol, *volume_shape)
    return out[0] if values.ndim == 1 else np.moveaxis(out, 0, -1)


def to_nifti(responses: np.ndarray, metadata: Mapping) -> nib.Nifti1Image:
    """Put responses at their voxels in the model's space.

    Parameters
    ----------
    responses : (n_outputs,) or (n_stimuli, n_outputs) array
        As returned by :func:`berg.encode`. One stimulus gives a 3D image, several a 4D image.
    metadata : dict
        The metadata returned with the responses (``encode(..., return_metadata=True)``).

    Returns
    -------
    nibabel.Nifti1Image
        float32, with the model's affine. Voxels outside the model's outputs hold ``metadata["fill_value"]``:
        NaN in subject space, 0 in group MNI space.
    """
    responses = np.asarray(responses)
    ijk = np.asarray(metadata["voxel_ijk"])
    if responses.ndim == 2 and responses.shape[0] == 1:
        responses = responses[0]
    if responses.ndim not in (1, 2) or responses.shape[-1] != ijk.shape[0]:
        raise InvalidArgumentError(f"responses have shape {responses.shape}; expected (n_stimuli, {ijk.shape[0]}) or "
                        f"({ijk.shape[0]},) to match metadata['voxel_ijk']")
    data = fill_volume(responses, ijk, metadata["volume_shape"], metadata.get("fill_value", np.nan))
    image = nib.Nifti1Image(data, np.asarray(metadata["affine"], dtype=np.float64))
    image.header.set_xyzt_units("mm", "sec")
    return image
