"""BERG's files of a scaler -> PCA -> one linear regression per hemisphere model on a cortical surface.

The layout BERG's creation code writes for its fsaverage models (``train_dataset-nsd_fsaverage``), one pair of
pickled dicts per subject, named by the card's ``legacy_files.subject`` patterns:

``encoding_models_weights/weights_subject-{SS}.npy``
    ``scaler_param`` {``scale_``, ``mean_`` …}, ``pca_param`` {``components_`` (k, d), ``mean_`` (d,) …},
    ``lh_reg_param`` / ``rh_reg_param`` {``coef_`` (n_vertices, k), ``intercept_`` (n_vertices,)}.
``metadata/metadata_subject-{SS}.npy``
    ``fmri`` {``lh_ncsnr``, ``rh_ncsnr`` (n_vertices,), ``lh_<mesh>_rois`` / ``rh_<mesh>_rois`` {name: vertex
    indices}}, ``encoding_models`` {``train_img_num``, ``val_img_num``, ``test_img_num``, and per hemisphere
    ``correlation``, ``r2``, ``noise_ceiling`` (fractions) and ``explained_variance`` (percent)}.

They are read by the restricted unpickler and converted once into native files beside them: a per-subject
projection (the scaler and the PCA, centring included, folded per backbone node), a readout of both hemispheres'
vertices (left then right), and metadata whose coordinates are ``hemisphere`` and ``vertex``. The chain is kept
factorised: folding PCA and regression into one matrix would be (2 x n_vertices) x d.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from .legacy import BergSubjectPairFormat, _field, fold_projection, load_legacy_npy
from .native import SubjectMetadata, projection_path, readout_path, save_arrays, write_subject_metadata

_SPLITS = ("train_img_num", "val_img_num", "test_img_num")
HEMISPHERES = ("lh", "rh")  # BERG's key prefixes, left first: the order of the outputs
_TINY = 1e-12  # BERG writes a zero noise ceiling as 1e-14


def _hemisphere_arrays(stored: dict, prefix: str, n: int, what: str, path: Path) -> np.ndarray:
    """The left and right arrays ``lh_<prefix>`` and ``rh_<prefix>`` of ``n`` values each, concatenated."""
    parts = []
    for h in HEMISPHERES:
        values = np.asarray(_field(stored, f"{h}_{prefix}", path), dtype=np.float64).reshape(-1)
        if values.shape != (n,):
            raise ModelFormatError(f"{path}: {what}.{h}_{prefix} has {values.size} values, expected {n}")
        parts.append(values)
    return np.concatenate(parts)


def _rois(fmri: dict, mesh: str, card: Any, n: int, path: Path) -> dict[str, np.ndarray]:
    """Readout rows (left vertices, then right ones + n) of every ROI the metadata holds, names as stored."""
    stored = {h: _field(fmri, f"{h}_{mesh}_rois", path) for h in HEMISPHERES}
    names = list(dict.fromkeys([r for r in card.rois if r in stored["lh"]] + sorted(stored["lh"])))
    missing = [r for r in card.rois if r not in stored["lh"]]
    if missing:
        raise ModelFormatError(f"{path}: fmri.lh_{mesh}_rois lacks the card's ROIs {missing}; it has "
                               f"{sorted(stored['lh'])}")
    rois = {}
    for name in names:
        rows = []
        for i, h in enumerate(HEMISPHERES):
            vertices = np.asarray(_field(stored[h], name, path)).reshape(-1)
            if vertices.size and (vertices.dtype.kind not in "iu" or vertices.min() < 0 or vertices.max() >= n):
                raise ModelFormatError(f"{path}: ROI {name!r} ({h}) must hold vertex indices in 0..{n - 1}")
            rows.append(vertices.astype(np.int64) + i * n)
        rois[f"roi.{name}"] = np.concatenate(rows)
    return rois


def _accuracy(encoding: dict, n: int, path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """berg's accuracy fractions from BERG's per-hemisphere entries (explained variance recomputed as r2 over the
    noise ceiling, capped at 1, 0 where the ceiling is 0)."""
    arrays = {name: _hemisphere_arrays(encoding, name, n, "encoding_models", path)
              for name in ("correlation", "r2", "noise_ceiling")}
    nc = np.where(arrays["noise_ceiling"] <= _TINY, 0.0, arrays["noise_ceiling"])
    arrays["noise_ceiling"] = nc
    arrays["explained_variance"] = np.where(nc > 0, np.minimum(arrays["r2"] / np.where(nc > 0, nc, 1.0), 1.0), 0.0)
    units = {"correlation": "Pearson r", "r2": "squared Pearson r", "noise_ceiling": "fraction",
             "explained_variance": "r2 / noise_ceiling, capped at 1"}
    return {f"accuracy.{k}": v.astype(np.float32) for k, v in arrays.items()}, units


class BergHemispheresFormat(BergSubjectPairFormat):
    """BERG's per-subject scaler -> PCA -> per-hemisphere regression files (see the module docstring)."""

    name = "berg-pca-hemispheres"

    def convert(self, model_dir: Path, card: Any, subject: int, rels: list[str], weights_path: Path,
                meta_path: Path) -> None:
        meta, meta_sha = load_legacy_npy(meta_path)
        weights, weights_sha = load_legacy_npy(weights_path)
        n = card.space.space.n_vertices
        projection = fold_projection(_field(weights, "scaler_param", weights_path),
                                     _field(weights, "pca_param", weights_path), card, weights_path, centred=True)
        k = projection["bias"].shape[0]
        coef, intercept = [], []
        for h in HEMISPHERES:
            reg = _field(weights, f"{h}_reg_param", weights_path)
            c = np.asarray(_field(reg, "coef_", weights_path))
            b = np.asarray(_field(reg, "intercept_", weights_path)).reshape(-1)
            if c.shape != (n, k) or b.shape != (n,):
                raise ModelFormatError(f"{weights_path}: {h}_reg_param coef_ {c.shape} and intercept_ {b.shape} do not "
                                       f"match ({n}, {k}) and ({n},)")
            coef.append(c.astype(np.float32))
            intercept.append(b.astype(np.float32))
        del weights
        weight, bias = np.concatenate(coef), np.concatenate(intercept)
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise ModelFormatError(f"{weights_path}: the regressions hold NaN or infinite values")
        fmri, encoding = _field(meta, "fmri", meta_path), _field(meta, "encoding_models", meta_path)
        accuracy, units = _accuracy(encoding, n, meta_path)
        rois = _rois(fmri, card.space.template, card, n, meta_path)
        arrays = {"hemisphere": np.repeat(np.arange(2, dtype=np.int8), n),
                  "vertex": np.tile(np.arange(n, dtype=np.int32), 2),
                  "row_voxel": np.arange(2 * n, dtype=np.int64), **rois, **accuracy,
                  "descriptor.ncsnr": _hemisphere_arrays(fmri, "ncsnr", n, "fmri", meta_path).astype(np.float32),
                  **{f"descriptor.{name}": np.asarray(encoding[name]) for name in _SPLITS if name in encoding}}
        sources = {rels[0]: weights_sha, rels[1]: meta_sha}
        save_arrays(projection_path(model_dir, subject), projection)
        save_arrays(readout_path(model_dir, subject), {"weight": weight, "bias": bias})
        info = {"model_id": card.model_id, "subject": subject, "n_voxels": 2 * n, "n_rows": 2 * n,
                "space": card.space.as_dict(), "rois": [name[4:] for name in rois], "accuracy": units,
                "provenance": {"converted_from": "BERG legacy files", "sources": sources}}
        write_subject_metadata(model_dir, subject, SubjectMetadata(info=info, arrays=arrays))
