"""Helpers shared by the tests: packaged cards, tiny model directories in the native format."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import yaml

from berg.cards import packaged_cards
from berg.readout import fold_scaler_projection
from berg.storage.native import SubjectMetadata, projection_path, readout_path, save_arrays, write_subject_metadata
from berg.storage.synthetic import MNI_2MM_AFFINE as AFFINE

VOLUME_SHAPE = (6, 7, 5)


def packaged_card_data(model_id: str) -> dict:
    """A fresh, editable copy of the packaged card ``model_id``'s YAML content (the one way tests load one)."""
    return copy.deepcopy(next(c.data for c in packaged_cards() if c.model_id == model_id))


def write_test_model(berg_dir: Path, model_id: str = "test-resnet18", n_voxels: int = 60, n_components: int | None = None,
                     subjects=(1, 2), seed: int = 0, template: str = "fmri-bold5000-resnet18") -> dict:
    """Write a card and native files with random weights; return the raw parameters per subject.

    With ``n_components`` the readout is scaler -> SVD -> linear (folded on disk as berg does), else ridge.
    ROIs: ``lA`` (first third of voxels), ``rA`` (second third), ``B`` (every 4th voxel).
    """
    rng = np.random.default_rng(seed)
    card = packaged_card_data(template)
    card.update(model_id=model_id, train_dataset="test", model=model_id, subjects=list(subjects),
                rois=["lA", "rA", "B"], n_voxels={s: n_voxels for s in subjects}, sources=[{"kind": "local"}])
    card.pop("group", None)
    card["accuracy"] = ["correlation"]
    card["readout"] = {"kind": "scaler-svd-linear", "n_components": n_components} if n_components else {"kind": "ridge"}
    (berg_dir / "model_cards").mkdir(parents=True, exist_ok=True)
    (berg_dir / "model_cards" / f"{model_id}.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    model_dir = berg_dir / "encoding_models" / "modality-fmri" / "train_dataset-test" / f"model-{model_id}"
    shapes = card["backbone"]["feature_shapes"]
    node_dims = {n: int(np.prod(shapes[n])) for n in card["backbone"]["return_nodes"]}
    d = sum(node_dims.values())
    raw: dict = {"card": card, "model_dir": model_dir, "node_dims": node_dims}
    n_in = d
    if n_components:
        raw["mean"] = rng.normal(size=d)
        raw["scale"] = rng.uniform(0.5, 2.0, size=d)
        raw["components"] = rng.normal(size=(n_components, d)) / np.sqrt(d)
        blocks, bias = fold_scaler_projection(raw["components"], raw["mean"], raw["scale"], node_dims)
        save_arrays(projection_path(model_dir), {**{f"weight.{n}": b for n, b in blocks.items()}, "bias": bias})
        n_in = n_components
    flat = rng.choice(int(np.prod(VOLUME_SHAPE)), size=n_voxels, replace=False)
    ijk = np.stack(np.unravel_index(np.sort(flat), VOLUME_SHAPE), axis=1).astype(np.int32)
    third = n_voxels // 3
    rois = {"lA": np.arange(third), "rA": np.arange(third, 2 * third), "B": np.arange(0, n_voxels, 4)}
    for s in subjects:
        coef = (rng.normal(size=(n_voxels, n_in)) / np.sqrt(n_in)).astype(np.float32)
        intercept = rng.normal(size=n_voxels).astype(np.float32)
        save_arrays(readout_path(model_dir, s), {"weight": coef, "bias": intercept})
        arrays = {"voxel_ijk": ijk, "row_voxel": np.arange(n_voxels, dtype=np.int64),
                  "accuracy.correlation": rng.uniform(0, 1, n_voxels).astype(np.float32),
                  **{f"roi.{k}": v.astype(np.int64) for k, v in rois.items()}}
        info = {"model_id": model_id, "subject": s, "n_voxels": n_voxels, "n_rows": n_voxels,
                "volume_shape": list(VOLUME_SHAPE), "affine": AFFINE.tolist(), "rois": list(rois),
                "accuracy": {"correlation": "Pearson r"}, "space": {"kind": "subject"}}
        write_subject_metadata(model_dir, s, SubjectMetadata(info=info, arrays=arrays))
        raw[s] = {"coef": coef.astype(np.float64), "intercept": intercept.astype(np.float64), "voxel_ijk": ijk,
                  "rois": rois}
    return raw
