"""Random weights in the native format for a packaged card: for tests, benchmarks and demos without downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..registry import get_card
from .native import SubjectMetadata, card_projection_path, readout_path, save_arrays, write_subject_metadata

MNI_2MM_AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


def write_synthetic_model(berg_dir: str | Path, model_id: str, subject: int = 1,
                          n_components: int = 2, roi_size: int = 200, seed: int = 0) -> Path:
    """Write native files with random weights for one subject of a packaged projection model.

    The subject gets the whole layout the card's space implies (its voxel count, both hemispheres' vertices, every
    sensor sample), the card's ROI names (``roi_size`` random outputs each), and a full-width (n_components x feature
    size) projection. Metadata records ``provenance: {"synthetic": True}``.

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
    save_arrays(card_projection_path(card, model_dir, subject), {**blocks, "bias": np.zeros(n_components, np.float32)})
    coordinates, fields = card.space.space.whole_layout(card, subject, rng)
    if "volume_shape" in fields:  # a synthetic grid is placed on the 2 mm MNI grid's axes
        fields.setdefault("affine", MNI_2MM_AFFINE.tolist())
    n = next(iter(coordinates.values())).shape[0]
    save_arrays(readout_path(model_dir, subject), {"weight": rng.standard_normal((n, n_components), dtype=np.float32),
                                                   "bias": np.zeros(n, np.float32)})
    rois = {name: np.sort(rng.choice(n, size=min(roi_size, n), replace=False)) for name in card.rois}
    arrays = {**coordinates, "row_voxel": np.arange(n, dtype=np.int64), **{f"roi.{k}": v for k, v in rois.items()}}
    info = {"model_id": model_id, "subject": subject, "n_voxels": n, "n_rows": n, "rois": list(rois), "accuracy": {},
            "space": card.space.as_dict(), "provenance": {"synthetic": True}, **fields}
    write_subject_metadata(model_dir, subject, SubjectMetadata(info=info, arrays=arrays))
    return model_dir
