"""BERG's fwRF files on NSD: one torch checkpoint and one metadata pickle per subject x ROI, in the subject's own
1.8 mm volume.

``encoding_models_weights/weights_sub-{SS}_roi-{ROI}.pt``
    A ``torch.save`` dict: ``args.`` (an ``argparse.Namespace``), ``best_params`` {``enc``: GNet state dict,
    ``fwrfs``: {subject: fwRF state dict}}, ``stim_mean`` (1, 3, 1, 1), ``betas_info``, training histories. The
    ROIs of the card's ``backbone.options.split_rois`` have two, ``..._split-1.pt`` and ``..._split-2.pt``, whose
    outputs are the ROI's voxels in two halves (split 1 first). Read by
    :func:`~berg.storage.safe_pickle.restricted_torch_load` when a model is built, never converted.
``metadata/metadata_sub-{SS}_roi-{ROI}.npy``
    ``fmri`` {``roi_mask_volume`` (X, Y, Z) bool, ``fmri_affine`` (4, 4), ``ncsnr``}, ``encoding_models``
    {``r2``, ``noise_ceiling``, ``explained_variance``, image numbers}: read by the restricted unpickler.

Every ROI's metadata is converted once into native subject metadata: outputs are the voxels of the union of the
ROI masks (C order); readout rows are each ROI's voxels (C order within the ROI, ROIs in the card's order), so a
voxel in several ROIs has one row per ROI network; ``row_roi`` and ``row_local`` say which ROI network and which
of its outputs a row is; each ROI network's accuracy (BERG's ``r2``, ``noise_ceiling`` and ``explained_variance``,
as fractions) is kept per row. The ROI is required, as in BERG.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidSelectionError, ModelFormatError
from .legacy import _field, load_legacy_npy
from .native import NativeFormat, SubjectMetadata, metadata_paths, write_subject_metadata

WEIGHTS = "encoding_models_weights/weights_sub-{SS}_roi-{ROI}{SPLIT}.pt"
METADATA = "metadata/metadata_sub-{SS}_roi-{ROI}.npy"


def _name(pattern: str, subject: int, roi: str, split: str = "") -> str:
    return pattern.replace("{SS}", f"{int(subject):02d}").replace("{ROI}", roi).replace("{SPLIT}", split)


def checkpoint_names(card: Any, subject: int, roi: str) -> list[str]:
    """The checkpoint files of one ROI network, relative to the model folder (two for a split ROI)."""
    splits = ["_split-1", "_split-2"] if roi in card.backbone.options.get("split_rois", ()) else [""]
    return [_name(WEIGHTS, subject, roi, split) for split in splits]


def _roi_accuracy(meta: Any, n: int, path: Path) -> dict[str, np.ndarray]:
    """berg's fractions from an ROI's BERG accuracy: r2 and the noise ceiling as stored (1e-14, BERG's stand-in
    for zero, back to 0), explained variance from percent to a fraction."""
    encoding = _field(meta, "encoding_models", path)
    values = {}
    for name in ("r2", "noise_ceiling", "explained_variance"):
        array = np.asarray(_field(encoding, name, path), dtype=np.float64).reshape(-1)
        if array.shape != (n,) or not np.isfinite(array).all():
            raise ModelFormatError(f"{path}: encoding_models.{name} must be {n} finite values (one per ROI voxel); "
                                   f"found {array.shape}")
        values[name] = array
    values["noise_ceiling"] = np.where(values["noise_ceiling"] <= 1e-12, 0.0, values["noise_ceiling"])
    values["explained_variance"] = values["explained_variance"] / 100
    return values


def _roi_volume(meta: Any, roi: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    fmri = _field(meta, "fmri", path)
    mask = np.asarray(_field(fmri, "roi_mask_volume", path))
    affine = np.asarray(_field(fmri, "fmri_affine", path), dtype=np.float64)
    if mask.ndim != 3 or mask.dtype != np.bool_ or not mask.any():
        raise ModelFormatError(f"{path}: fmri.roi_mask_volume must be a 3-D boolean mask with voxels of {roi!r}; "
                               f"found {mask.dtype} {mask.shape}")
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ModelFormatError(f"{path}: fmri.fmri_affine must be a finite 4 x 4 matrix; found {affine.shape}")
    return mask, affine


def convert_fwrf_metadata(model_dir: Path, card: Any, subject: int) -> None:
    """Write the subject's native metadata from every ROI's BERG metadata (see the module docstring)."""
    masks, sources, scores, affine = {}, {}, {}, None
    for roi in card.rois:
        rel = _name(METADATA, subject, roi)
        meta, sources[rel] = load_legacy_npy(model_dir / rel)
        masks[roi], roi_affine = _roi_volume(meta, roi, model_dir / rel)
        scores[roi] = _roi_accuracy(meta, int(masks[roi].sum()), model_dir / rel)
        if affine is None:
            affine, shape = roi_affine, masks[roi].shape
        elif masks[roi].shape != shape or not np.allclose(roi_affine, affine):
            raise ModelFormatError(f"{model_dir / rel}: ROI {roi!r} lies on another grid than {card.rois[0]!r} "
                                   f"({masks[roi].shape} vs {shape}); the subject's ROIs must share one volume")
    union = np.logical_or.reduce(list(masks.values()))
    index = np.full(shape, -1, dtype=np.int64)
    index[union] = np.arange(int(union.sum()))
    arrays: dict[str, np.ndarray] = {"voxel_ijk": np.argwhere(union).astype(np.int32)}
    rows, row_roi, row_local, start = [], [], [], 0
    for i, roi in enumerate(card.rois):
        voxels = index[masks[roi]]
        arrays[f"roi.{roi}"] = np.arange(start, start + voxels.size, dtype=np.int64)
        rows.append(voxels)
        row_roi.append(np.full(voxels.size, i, dtype=np.int16))
        row_local.append(np.arange(voxels.size, dtype=np.int64))
        start += voxels.size
    arrays.update(row_voxel=np.concatenate(rows), row_roi=np.concatenate(row_roi),
                  row_local=np.concatenate(row_local))
    for name in ("r2", "noise_ceiling", "explained_variance"):
        arrays[f"row_accuracy.{name}"] = np.concatenate([scores[roi][name] for roi in card.rois]).astype(np.float32)
    info = {"model_id": card.model_id, "subject": subject, "n_voxels": int(union.sum()), "n_rows": start,
            "space": card.space.as_dict(), "rois": list(card.rois),
            "accuracy": {"r2": "squared Pearson r", "noise_ceiling": "fraction",
                         "explained_variance": "r2 / noise_ceiling, capped at 1"},
            "volume_shape": [int(s) for s in shape], "affine": affine.tolist(),
            "provenance": {"converted_from": "BERG fwRF metadata files", "sources": sources}}
    write_subject_metadata(model_dir, subject, SubjectMetadata(info=info, arrays=arrays))


class BergFwrfFormat(NativeFormat):
    """BERG's fwRF checkpoints and metadata per subject x ROI (see the module docstring)."""

    name = "berg-fwrf"

    def source_files(self, card: Any, subject: int) -> list[str]:
        return [name for roi in card.rois
                for name in (*checkpoint_names(card, subject, roi), _name(METADATA, subject, roi))]

    def prepare(self, card: Any, berg_dir: Path, subject: int) -> None:
        model_dir = Path(berg_dir) / card.folder
        if not all(p.is_file() for p in metadata_paths(model_dir, subject)):
            self.require_sources(card, model_dir, subject)
            convert_fwrf_metadata(model_dir, card, subject)

    def require_sources(self, card: Any, model_dir: Path, subject: int) -> None:
        """Raise :class:`~berg.errors.MissingFilesError` naming the BERG files of the subject that are missing."""
        from ..errors import MissingFilesError

        missing = [rel for rel in self.source_files(card, subject) if not (model_dir / rel).is_file()]
        if missing:
            raise MissingFilesError(f"model {card.model_id!r}, subject {subject}: missing {len(missing)} BERG "
                                    f"file(s) under {model_dir}, e.g. {missing[:3]}")

    def needed_files(self, card: Any, model_dir: Path, subject: int | str) -> list[Path]:
        model_dir = Path(model_dir)
        return [*metadata_paths(model_dir, subject),
                *(model_dir / name for roi in card.rois for name in checkpoint_names(card, subject, roi))]

    def has_whole_brain(self, card: Any, model_dir: Path, subject: int) -> bool:
        return False

    def check_request(self, card: Any, subject: int | str, selection: Mapping | None) -> None:
        if not isinstance(selection, Mapping) or selection.get("roi") is None:
            raise InvalidSelectionError(f"selection={selection!r} is not valid for {card.model_id!r}: each ROI is "
                                        "its own network, so an ROI is required, as {'roi': name} or "
                                        f"{{'roi': [names]}}; valid ROIs: {', '.join(card.rois)}")

    def checkpoints(self, card: Any, model_dir: Path, subject: int, roi: str) -> list[Path]:
        """Paths of the checkpoint files of one ROI network."""
        return [Path(model_dir) / name for name in checkpoint_names(card, subject, roi)]
