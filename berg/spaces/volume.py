"""The volume space: outputs are voxels of a 3-D grid (a subject's own, or a template's such as MNI152).

Coordinates: ``voxel_ijk`` (n, 3) int, the voxel of each column. Layout: ``volume_shape`` (X, Y, Z) and
``affine`` (4, 4) voxel -> world mm. Selection: ``{"voxels": binary (n_voxels,) vector}`` besides ROIs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, ModelFormatError
from .base import OutputSpace, binary_mask

#: Accuracy names that hold a noise ceiling (stored by berg as a fraction; BERG's view gives percent).
_NOISE_CEILING_PREFIXES = ("noiseceiling", "noise_ceiling")
#: The noise ceiling that BERG's explained variance is computed against, in order of preference.
_EXPLAINED_VARIANCE_CEILINGS = ("noiseceiling_task_test_n_10", "noise_ceiling")


class VolumePlacer:
    """Columns -> volumes, one row at a time, by the one rule berg uses everywhere.

    The rule: a voxel holds the mean of the columns at it (a card may give several columns one voxel, e.g. ROI
    models that overlap); a voxel no column has holds ``fill_value``.

    Parameters
    ----------
    voxel_ijk : (n_columns, 3) int array
    volume_shape : 3 ints
    fill_value : float
    """

    def __init__(self, voxel_ijk: np.ndarray, volume_shape, fill_value: float = np.nan):
        self.shape = tuple(int(s) for s in volume_shape)
        ijk = np.asarray(voxel_ijk, dtype=np.int64).reshape(-1, 3)
        if len(self.shape) != 3 or (ijk < 0).any() or (ijk >= np.asarray(self.shape)).any():
            raise InvalidArgumentError(f"voxel_ijk must lie inside volume_shape={self.shape}")
        self.flat = np.ravel_multi_index(tuple(ijk.T), self.shape)
        self.size = int(np.prod(self.shape))
        counts = np.bincount(self.flat, minlength=self.size)
        self.inside = counts > 0
        self.counts = np.maximum(counts, 1)
        self.fill_value = float(fill_value)

    def place(self, row: np.ndarray) -> np.ndarray:
        """One (n_columns,) row as a (X, Y, Z) float32 volume."""
        sums = np.bincount(self.flat, weights=np.asarray(row, dtype=np.float64), minlength=self.size)
        out = np.where(self.inside, sums / self.counts, self.fill_value).astype(np.float32)
        return out.reshape(self.shape)


def fill_volume(values: np.ndarray, voxel_ijk: np.ndarray, volume_shape, fill_value: float = np.nan) -> np.ndarray:
    """Scatter column values into volumes (the rule of :class:`VolumePlacer`).

    Parameters
    ----------
    values : (n_columns,) or (n_volumes, n_columns) array
    voxel_ijk : (n_columns, 3) int array
    volume_shape : 3 ints
    fill_value : float
        Value outside the columns' voxels.

    Returns
    -------
    (*volume_shape) or (*volume_shape, n_volumes) float32 array
    """
    values = np.asarray(values)
    placer = VolumePlacer(voxel_ijk, volume_shape, fill_value)
    if values.ndim == 1:
        return placer.place(values)
    return np.stack([placer.place(row) for row in values], axis=-1)


def to_nifti(responses: np.ndarray, metadata: Mapping):
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

    Raises
    ------
    InvalidArgumentError
        The model's outputs are not voxels of a volume, or ``responses`` do not match its columns.
    """
    import nibabel as nib

    if metadata.get("voxel_ijk") is None:
        kind = (metadata.get("space") or {}).get("kind")
        raise InvalidArgumentError(f"metadata describes outputs in the {kind!r} space, not voxels of a volume; "
                                   "to_nifti needs a volume model (write surfaces as .func.gii, sensors as .h5)")
    responses = np.asarray(responses)
    ijk = np.asarray(metadata["voxel_ijk"])
    if responses.ndim == 2 and responses.shape[0] == 1:
        responses = responses[0]
    if responses.ndim not in (1, 2) or responses.shape[-1] != ijk.shape[0]:
        raise InvalidArgumentError(f"responses have shape {responses.shape}; expected (n_stimuli, {ijk.shape[0]}) or "
                                   f"({ijk.shape[0]},) to match metadata['voxel_ijk']")
    data = fill_volume(responses, ijk, metadata["volume_shape"], metadata.get("fill_value", np.nan))
    header = nifti_header(metadata["affine"], data.shape, (metadata.get("space") or {}).get("template"))
    return nib.Nifti1Image(data, header.get_best_affine(), header=header)


def nifti_header(affine, shape: tuple[int, ...], template: str | None, tr: float | None = None):
    """The NIfTI-1 header of a float32 image of ``shape`` on a grid: sform and qform set to ``affine`` (code "mni"
    for an MNI template, else "aligned"), units mm and s, ``pixdim[4]`` the TR where given."""
    import nibabel as nib

    affine = np.asarray(affine, dtype=np.float64)
    code = "mni" if str(template or "").upper().startswith("MNI") else "aligned"
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(tuple(int(s) for s in shape))
    header.set_sform(affine, code=code)
    header.set_qform(affine, code=code)
    zooms = tuple(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    header.set_zooms(zooms + ((float(tr) if tr else 1.0),) * (len(shape) - 3))
    header.set_xyzt_units("mm", "sec")
    header["vox_offset"] = 352
    return header


def _mask(ijk: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(np.asarray(ijk).T)] = True
    return mask


def _affine(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float64)


def bergs_encoding_models(accuracy: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """BERG's ``encoding_models`` entry from berg's accuracy fractions: noise ceilings in percent, and BERG's
    explained variance, ``100 * r2 / noise_ceiling_percent`` capped at 100 with a zero ceiling replaced by 1e-14."""
    view = {name: (values.astype(np.float64) * 100 if name.startswith(_NOISE_CEILING_PREFIXES)
                   else values.astype(np.float64)) for name, values in accuracy.items()}
    ceiling = next((view[n] for n in _EXPLAINED_VARIANCE_CEILINGS if n in view), None)
    if "explained_variance" in view and ceiling is not None and "r2" in view:
        ratio = view["r2"] / np.where(ceiling == 0, 1e-14, ceiling) * 100
        view["explained_variance"] = np.minimum(ratio, 100.0)
    return view


class VolumeSpace(OutputSpace):
    """Voxels of a 3-D grid (see the module docstring)."""

    kind = "volume"
    mask_keys = ("voxels",)
    coordinate_names = ("voxel_ijk",)
    image_suffix = ".nii.gz"

    def n_outputs(self, card: Any, subject: int | str) -> int | None:
        return card.n_voxels.get(subject) if subject != "group" else None

    def check_masks(self, selection: Mapping, card: Any, subject: int | str) -> None:
        n = self.n_outputs(card, subject)
        if selection.get("voxels") is not None and n is not None:
            binary_mask("voxels", selection["voxels"], n, "this subject's voxel count")

    def check_layout(self, meta: Any, where: str) -> None:
        super().check_layout(meta, where)
        shape = meta.info.get("volume_shape")
        ijk = meta.arrays["voxel_ijk"]
        if not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ModelFormatError(f"{where}: 'volume_shape' is {shape!r}; expected three positive integers")
        if ijk.ndim != 2 or ijk.shape[1] != 3:
            raise ModelFormatError(f"{where}: 'voxel_ijk' has shape {ijk.shape}, expected ({meta.n_outputs}, 3)")
        if ijk.size and ((ijk < 0).any() or (ijk >= np.asarray(shape)).any()):
            raise ModelFormatError(f"{where}: 'voxel_ijk' holds voxels outside the volume {tuple(shape)}")
        affine = meta.info.get("affine")
        if affine is None:
            raise ModelFormatError(f"{where}: 'affine' is missing; a volume model needs its voxel-to-world affine "
                                   "(4 x 4)")
        try:
            matrix = np.asarray(affine, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"{where}: 'affine' is not a matrix of numbers: {exc}") from exc
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise ModelFormatError(f"{where}: 'affine' has shape {matrix.shape}; expected a finite (4, 4) matrix")

    def whole_layout(self, card: Any, subject: int, rng: np.random.Generator) -> tuple[dict, dict]:
        """The card's voxel count of random voxels of its volume, in C order."""
        shape = self.spec.volume_shape
        flat = np.sort(rng.choice(int(np.prod(shape)), size=card.n_voxels[subject], replace=False))
        return {"voxel_ijk": np.stack(np.unravel_index(flat, shape), 1).astype(np.int32)}, {"volume_shape": list(shape)}

    def mask_outputs(self, selection: Mapping, meta: Any) -> np.ndarray:
        return binary_mask("voxels", selection["voxels"], meta.n_outputs, "this subject's voxel count")

    def describe_masks(self, selection: Mapping, outputs: np.ndarray, meta: Any) -> dict:
        return {"voxels": f"{outputs.size} of {meta.n_outputs} voxels"}

    def layout(self, meta: Any) -> dict[str, Any]:
        # a volume without a known affine (some legacy files) is placed with voxel indices as coordinates
        affine = meta.info.get("affine")
        return {"volume_shape": tuple(int(s) for s in meta.info["volume_shape"]),
                "affine": np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)}

    @classmethod
    def berg_view(cls, meta: Any, accuracy: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """BERG's ``{"fmri": {...}, "encoding_models": {...}}`` for a volume subject.

        ``fmri.sub_mask`` (X, Y, Z) bool: the subject's voxels, the response columns in C order; ``group_mask``
        likewise where the model has one; ``*_affine`` (4, 4); ``rois`` {name: the ROI's columns of the
        whole-brain responses}. ``encoding_models``: see :func:`bergs_encoding_models`.
        """
        shape = tuple(meta.info["volume_shape"])
        fmri: dict[str, Any] = {
            "sub_mask": _mask(meta.arrays["voxel_ijk"], shape),
            "sub_mask_affine": _affine(meta.info.get("affine")),
            "rois": {name: meta.row_voxel[meta.roi_rows(name)].astype(np.int64) for name in meta.roi_names},
        }
        if "group_mask_ijk" in meta.arrays:
            fmri["group_mask"] = _mask(meta.arrays["group_mask_ijk"], shape)
            fmri["group_mask_affine"] = _affine(meta.info.get("group_affine", meta.info.get("affine")))
        return {"fmri": fmri, "encoding_models": bergs_encoding_models(accuracy)}

    @classmethod
    def plot(cls, values: np.ndarray, metadata: Mapping, title: str | None = None):
        """Draw one row of values: a glass brain on an MNI template's grid, else orthogonal slices of the subject's
        grid. Returns a matplotlib Figure (no pyplot)."""
        from .._optional import import_optional

        figure_module = import_optional("matplotlib.figure", "plot", "drawing responses in a volume")
        plotting = import_optional("nilearn.plotting", "plot", "drawing responses in a volume")
        image = to_nifti(np.asarray(values), {**metadata, "fill_value": 0.0})
        fig = figure_module.Figure(figsize=(8, 3))
        title = title or f"{metadata.get('model_id')}, subject {metadata.get('subject')}"
        if str((metadata.get("space") or {}).get("template") or "").upper().startswith("MNI"):
            plotting.plot_glass_brain(image, figure=fig, colorbar=True, plot_abs=False, title=title)
        else:
            plotting.plot_stat_map(image, bg_img=None, figure=fig, colorbar=True, title=title, draw_cross=False)
        return fig
