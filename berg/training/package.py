"""Package a trained encoder: native model files and a model card, written all at once or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .._io import atomic_dir, atomic_path
from ..cards import ModelCard, validate_card
from ..storage.native import (SubjectMetadata, projection_path, readout_path, save_arrays,
                              write_subject_metadata)


def trained_card(template: ModelCard, *, model_id: str, dataset: str, subject: int, n_voxels: int,
                 feature_shapes: dict[str, list[int]], n_components: int, volume_shape, rois: list[str],
                 accuracy: list[str], units: str, description: str) -> ModelCard:
    """The card of a trained model: the template's stimulus, backbone and preprocessing, a new readout.

    ``feature_shapes`` gives the return nodes used (a subset of the template's, in its order).
    """
    t = template.to_dict()
    backbone = {**t["backbone"], "return_nodes": list(feature_shapes), "feature_shapes": feature_shapes}
    data: dict[str, Any] = {
        "model_id": model_id, "description": description, "modality": t["modality"], "train_dataset": dataset,
        "model": t["backbone"]["architecture"], "units": units, "stimulus": t["stimulus"], "backbone": backbone,
        "preprocessing": t["preprocessing"], "readout": {"kind": "scaler-pca-ridge", "n_components": n_components},
        "subjects": [subject], "n_voxels": {subject: n_voxels},
        "space": {"kind": "subject", "volume_shape": [int(s) for s in volume_shape]},
        "rois": rois, "accuracy": accuracy, "sources": [{"kind": "local"}],
        "references": [f"Trained with berg.training from dataset {dataset!r}, template card {template.model_id!r}."],
    }
    return validate_card(data, f"<trained card {model_id}>")


def write_model(berg_dir: str | Path, card: ModelCard, *, subject: int, projection: dict[str, np.ndarray],
                projection_bias: np.ndarray, weight: np.ndarray, bias: np.ndarray, info: dict[str, Any],
                arrays: dict[str, np.ndarray], extra=None) -> tuple[Path, Path]:
    """Write a model folder and its card under ``berg_dir``; return (model folder, card path).

    The folder is assembled under a temporary name beside its target and renamed when complete; the card
    is written last. ``extra(folder)`` may add files (the accuracy report) before the rename.

    Parameters
    ----------
    projection : dict node -> (k, d_node) float32, and projection_bias (k,)
    weight : (n_voxels, k) float32, and bias (n_voxels,)
    info, arrays
        The subject's metadata JSON fields and arrays (see :mod:`berg.storage.native`).
    """
    berg_dir = Path(berg_dir)
    target = berg_dir / card.folder
    with atomic_dir(target) as tmp:
        save_arrays(projection_path(tmp), {**{f"weight.{n}": w for n, w in projection.items()},
                                           "bias": projection_bias})
        save_arrays(readout_path(tmp, subject), {"weight": weight, "bias": bias})
        write_subject_metadata(tmp, subject, SubjectMetadata(info=info, arrays=arrays))
        if extra is not None:
            extra(tmp)
    card_path = berg_dir / "model_cards" / f"{card.model_id}.yaml"
    with atomic_path(card_path) as t:
        t.write_text(yaml.safe_dump(card.to_dict(), sort_keys=False))
    return target, card_path
