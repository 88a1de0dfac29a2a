"""Random weights in the native format for a packaged card: for tests, benchmarks and demos without downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..registry import get_card
from .native import SubjectMetadata, projection_path, readout_path, save_arrays, write_subject_metadata

MNI_2MM_AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


def write_synthetic_model(berg_dir: str | Path, model_id: str = "fmri-bmd-s3d", subject: int = 1,
                          n_components: int = 2, roi_size: int = 200, seed: int = 0) -> Path:
    """Write native files with random weights for one subject of a packaged projection model.

    The subject gets the card's voxel count and ROI names (``roi_size`` random voxels each), and a full-width
    (n_components x feature size) projection. Metadata records ``provenance: {"synthetic": True}``.

    Returns
    -------
    Path
        The model folder.
    """
    rng = np.random.default_rng(seed)
    card = get_card(model_id)
    model_dir = Path(berg_dir) / card.folder
    blocks = {f"weight.{n}": rng.standard_normal((n_components, d), dtype=np.float32) * 1e-3
              for n, d in card.backbone.feature_sizes.items()}
    save_arrays(projection_path(model_dir), {**blocks, "bias": np.zeros(n_components, np.float32)})
    n_voxels, volume = card.n_voxels[subject], card.space.volume_shape
    flat = np.sort(rng.choice(int(np.prod(volume)), size=n_voxels, replace=False))
    save_arrays(readout_path(model_dir, subject),
                {"weight": rng.standard_normal((n_voxels, n_components), dtype=np.float32),
                 "bias": np.zeros(n_voxels, np.float32)})
    rois = {name: np.sort(rng.choice(n_voxels, size=roi_size, replace=False)) for name in card.rois}
    arrays = {"voxel_ijk": np.stack(np.unravel_index(flat, volume), 1).astype(np.int32),
              "row_voxel": np.arange(n_voxels, dtype=np.int64), **{f"roi.{k}": v for k, v in rois.items()}}
    info = {"model_id": model_id, "subject": subject, "n_voxels": n_voxels, "n_rows": n_voxels,
            "volume_shape": list(volume), "affine": MNI_2MM_AFFINE.tolist(), "rois": list(rois), "accuracy": {},
            "space": card.space.name, "provenance": {"synthetic": True}}
    write_subject_metadata(model_dir, subject, SubjectMetadata(info=info, arrays=arrays))
    return model_dir
