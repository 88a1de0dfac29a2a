"""BERG's nested metadata dict, as a view of berg's subject metadata (for code written against BERG).

BERG returns ``{"fmri": {...}, "encoding_models": {...}}``. berg's metadata contract
(:class:`~berg.metadata.ModelMetadata`) keeps the subject's stored metadata
(:class:`~berg.storage.native.SubjectMetadata`) and builds this view from it on access, with BERG's values and
units:

- ``fmri.sub_mask`` (X, Y, Z) bool: the subject's voxels; the model's response columns are these voxels in C order.
  ``fmri.group_mask`` likewise where the model has one. ``fmri.sub_mask_affine`` / ``group_mask_affine`` (4, 4).
- ``fmri.rois`` {name: (n,) int64}: the response columns of each ROI (what BERG indexes its outputs with).
- ``encoding_models`` {name: (n_voxels,) float}: noise ceilings in percent, as BERG stores them; correlation and r²
  as fractions; ``explained_variance`` as BERG computes it, ``100 * r2 / noise_ceiling_percent`` capped at 100 with
  a zero noise ceiling replaced by 1e-14 (so, despite its percent cap, a fraction where r² is below the ceiling).
  berg's own ``accuracy`` keeps every value as a fraction, with its explained variance capped at 1. Fitting
  hyper-parameters (``alpha``) are not accuracy and are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .storage.native import SubjectMetadata

#: Accuracy names that hold a noise ceiling (stored by berg as a fraction; BERG's view gives percent).
_NOISE_CEILING_PREFIXES = ("noiseceiling", "noise_ceiling")
#: The noise ceiling that explained variance is computed against, in order of preference.
_EXPLAINED_VARIANCE_CEILINGS = ("noiseceiling_task_test_n_10", "noise_ceiling")


def _mask(ijk: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(np.asarray(ijk).T)] = True
    return mask


def _affine(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float64)


def _encoding_models(accuracy: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    view = {name: (values.astype(np.float64) * 100 if name.startswith(_NOISE_CEILING_PREFIXES)
                   else values.astype(np.float64)) for name, values in accuracy.items()}
    ceiling = next((view[n] for n in _EXPLAINED_VARIANCE_CEILINGS if n in view), None)
    if "explained_variance" in view and ceiling is not None and "r2" in view:
        ratio = view["r2"] / np.where(ceiling == 0, 1e-14, ceiling) * 100
        view["explained_variance"] = np.minimum(ratio, 100.0)
    return view


def berg_metadata_view(meta: SubjectMetadata, accuracy: dict[str, np.ndarray]) -> dict[str, Any]:
    """``{"fmri": {...}, "encoding_models": {...}}`` for one subject, as described in the module docstring.

    ``accuracy`` is the subject's accuracy, ``{name: (n_voxels,) fraction}``, without fitting hyper-parameters.
    """
    shape = tuple(meta.info["volume_shape"])
    fmri: dict[str, Any] = {
        "sub_mask": _mask(meta.voxel_ijk, shape),
        "sub_mask_affine": _affine(meta.info.get("affine")),
        "rois": {name: meta.row_voxel[meta.roi_rows(name)].astype(np.int64) for name in meta.roi_names},
    }
    if "group_mask_ijk" in meta.arrays:
        fmri["group_mask"] = _mask(meta.arrays["group_mask_ijk"], shape)
        fmri["group_mask_affine"] = _affine(meta.info.get("group_affine", meta.info.get("affine")))
    return {"fmri": fmri, "encoding_models": _encoding_models(accuracy)}
