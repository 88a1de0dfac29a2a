"""Check a packaged encoder on its dataset's test stimuli through the public API (load + encode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .dataset import load_dataset
from .metrics import accuracy_metrics, averaged_responses, noise_ceiling
from .report import summarize
from .train import dataset_features, template_card


def prepare(spec_path: str | Path, berg_dir: str | Path) -> dict:
    """Validate a dataset spec and fill the feature cache; return counts (stimuli, trials, voxels, nodes)."""
    ds = load_dataset(spec_path)
    card = template_card(ds.spec, Path(berg_dir))
    feats, _ = dataset_features(ds, card, Path(berg_dir), dict(ds.spec.get("fit") or {}))
    return {"n_stimuli": len(ds.stimulus_ids), "n_train": len(ds.train_ids), "n_test": len(ds.test_ids),
            "n_trials": int(ds.trials.shape[0]), "n_voxels": int(ds.trials.shape[1]),
            "dropped_voxels": ds.dropped_voxels, "features": {n: list(f.shape[1:]) for n, f in feats.items()}}


def evaluate(spec_path: str | Path, berg_dir: str | Path, model_id: str, backbone_weights="default",
             batch_size: int = 16) -> dict:
    """Load ``model_id`` with :func:`berg.get_encoding_model`, encode the test stimuli, score per ROI.

    Returns the per-ROI summary (see :func:`berg.training.report.summarize`) of the test metrics.
    """
    import berg

    ds = load_dataset(spec_path)
    if ds.spec["stimuli"]["kind"] == "features":
        raise DatasetError("dataset spec field 'stimuli.kind' is 'features': evaluating a packaged model needs "
                           "the stimuli themselves (kind array, images or videos)")
    model = berg.get_encoding_model(model_id, subject=int(ds.spec["subject"]), berg_dir=berg_dir,
                                    backbone_weights=backbone_weights)
    stim = ds.spec["stimuli"]
    rows = [ds.stimulus_ids.index(s) for s in ds.test_ids]
    if stim["kind"] == "array":
        stimulus = np.load(Path(ds.spec["_base"]) / stim["path"], mmap_mode="r")[rows]
    else:
        stimulus = [str(Path(ds.spec["_base"]) / stim["files"][r]) for r in rows]
    pred = berg.encode(model, stimulus, batch_size=batch_size)
    in_test = np.isin(ds.trial_stimulus, ds.test_ids)
    y = averaged_responses(ds.trials[in_test], ds.trial_stimulus[in_test], ds.test_ids)
    nc = noise_ceiling(ds.trials[in_test], ds.trial_stimulus[in_test]) if ds.spec["noise_ceiling"] else None
    return summarize(accuracy_metrics(y, pred, nc), ds.rois)
