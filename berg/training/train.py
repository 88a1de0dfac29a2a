"""Train an encoder from a dataset spec: features, scaler + PCA, per-voxel ridge CV, test metrics, packaging."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cards import ModelCard, feature_sizes, load_card, validate_card
from ..config import default_berg_dir
from ..errors import DatasetError
from ..readout import Readout, fold_scaler_projection
from ..registry import get_card
from .dataset import Dataset, load_dataset
from .features import extract_features
from .metrics import ACCURACY_UNITS, accuracy_metrics, averaged_responses, noise_ceiling
from .package import trained_card, write_model
from .report import check_report_dependencies, write_report
from .ridge import DEFAULT_ALPHAS, fit_projection, fit_ridge_cv

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` made.

    Attributes
    ----------
    model_id : str
    model_dir, card_path, report_dir : Path
    test_ids : list of str
    predictions : ndarray (n_test, n_voxels) float32
        Test predictions of the packaged model (the inference readout on the test features).
    test_responses : ndarray (n_test, n_voxels) float32
        Repeat-averaged test responses.
    metrics : dict name -> ndarray (n_voxels,)
    summary : dict
        The report's JSON summary.
    """

    model_id: str
    model_dir: Path
    card_path: Path
    report_dir: Path
    test_ids: list[str]
    predictions: np.ndarray
    test_responses: np.ndarray
    metrics: dict[str, np.ndarray]
    summary: dict


def template_card(spec: dict, berg_dir) -> ModelCard:
    """The template card, restricted to ``spec['return_nodes']`` when given."""
    name = str(spec["template"])
    card = load_card(Path(spec["_base"]) / name) if name.endswith((".yaml", ".yml")) else get_card(name, berg_dir)
    nodes = spec.get("return_nodes")
    if nodes is None:
        return card
    data = card.to_dict()
    valid = data["backbone"]["return_nodes"]
    bad = [n for n in nodes if n not in valid]
    if bad or not nodes:
        raise DatasetError(f"dataset spec field 'return_nodes' is {nodes!r}; valid: a non-empty subset of {valid}")
    data["backbone"]["return_nodes"] = [n for n in valid if n in nodes]
    data["backbone"]["feature_shapes"] = {n: s for n, s in data["backbone"].get("feature_shapes", {}).items()
                                          if n in nodes}
    return validate_card(data, card.path)


def dataset_features(ds: Dataset, card: ModelCard, berg_dir: Path, fit: dict) -> tuple[dict[str, np.ndarray], dict]:
    """Features per node (n_stimuli, *shape) in ``ds.stimulus_ids`` order, and the backbone weights identity.

    Stimuli are run through the template's backbone (cached under ``<berg_dir>/cache/training_features``,
    which stays after a failed run, being a cache); kind ``features`` reads precomputed features instead.
    """
    stim = ds.spec["stimuli"]
    expected = {"array": card.stimulus_kind, "images": "image", "videos": "video"}.get(stim["kind"])
    if expected is not None and expected != card.stimulus_kind:
        raise DatasetError(f"dataset spec field 'stimuli.kind' is {stim['kind']!r} but template "
                           f"{card.model_id!r} takes {card.stimulus_kind}s; use a template for {expected}s")
    if stim["kind"] != "features":
        return extract_features(card, ds.spec, ds.stimulus_ids, berg_dir / "cache" / "training_features",
                                ds.spec.get("backbone_weights", "default"), bool(ds.spec.get("verify_hash", True)),
                                fit.get("device", "cpu"), int(fit.get("batch_size", 16)))
    x = np.load(Path(ds.spec["_base"]) / stim["path"]).astype(np.float32)
    if x.ndim != 2 or x.shape[0] != len(ds.stimulus_ids):
        raise DatasetError(f"features file {stim['path']} has shape {x.shape}; expected ({len(ds.stimulus_ids)}, "
                           "n_features), one row per id of field 'stimuli.ids'")
    nodes, shapes = list(card.backbone.return_nodes), card.backbone.feature_shapes
    if len(nodes) == 1 and nodes[0] not in shapes:  # one node of unknown shape takes every column
        shapes = {nodes[0]: (x.shape[1],)}
    sizes = feature_sizes({n: shapes[n] for n in nodes if n in shapes})
    if len(sizes) != len(nodes) or sum(sizes.values()) != x.shape[1]:
        raise DatasetError(f"features file {stim['path']} has {x.shape[1]} columns; the return nodes {nodes} "
                           f"need {sum(sizes.values())} (their feature_shapes, concatenated)")
    starts = np.cumsum([0, *sizes.values()])
    feats = {n: x[:, starts[i]:starts[i + 1]].reshape(len(x), *shapes[n]) for i, n in enumerate(nodes)}
    return feats, {"weights": "precomputed features"}


def train(spec_path: str | Path, berg_dir: str | Path | None = None) -> TrainResult:
    """Train, evaluate and package an encoder from the dataset spec at ``spec_path`` into ``berg_dir``.

    ``berg_dir`` defaults to :func:`berg.config.default_berg_dir` (``$BERG_HOME`` or the user cache folder).

    The model goes to ``<berg_dir>/encoding_models/modality-fmri/train_dataset-{name}/model-{arch}/``
    (its accuracy report in ``encoding_models_accuracy/``) and its card to
    ``<berg_dir>/model_cards/{model_id}.yaml``. Nothing is written when an input is bad.
    """
    t0 = time.perf_counter()
    berg_dir = Path(berg_dir) if berg_dir is not None else default_berg_dir()
    ds = load_dataset(spec_path)
    check_report_dependencies(ds.spec.get("space") == "MNI152")
    spec, fit = ds.spec, dict(ds.spec.get("fit") or {})
    card = template_card(spec, berg_dir)
    feats, weights_identity = dataset_features(ds, card, berg_dir, fit)
    nodes = list(feats)
    x = np.concatenate([feats[n].reshape(len(ds.stimulus_ids), -1) for n in nodes], axis=1)
    row = {s: i for i, s in enumerate(ds.stimulus_ids)}
    train_rows = [row[s] for s in ds.train_ids]
    test_rows = [row[s] for s in ds.test_ids]
    y_train, y_test = np.split(averaged_responses(ds.trials, ds.trial_stimulus, ds.train_ids + ds.test_ids),
                               [len(train_rows)])
    n_comp = int(fit.get("n_components", min(100, len(train_rows) - 1, x.shape[1])))
    alphas, n_folds = fit.get("alphas", DEFAULT_ALPHAS), int(fit.get("n_folds", 5))
    proj = fit_projection(x[train_rows], n_comp)
    ridge = fit_ridge_cv(proj.transform(x[train_rows]), y_train, alphas, n_folds, device=fit.get("device", "cpu"))
    feature_shapes = {n: list(feats[n].shape[1:]) for n in nodes}
    dims = feature_sizes(feature_shapes)
    blocks, pbias = fold_scaler_projection(proj.components, proj.mean, proj.scale, dims)
    readout = Readout(torch.from_numpy(ridge.coef), torch.from_numpy(ridge.intercept), dims,
                      {n: torch.from_numpy(b) for n, b in blocks.items()}, torch.from_numpy(pbias))
    with torch.inference_mode():
        pred = readout({n: torch.from_numpy(np.ascontiguousarray(feats[n][test_rows])) for n in nodes}).numpy()
    nc = None
    if spec["noise_ceiling"]:
        in_test = np.isin(ds.trial_stimulus, ds.test_ids)
        nc = noise_ceiling(ds.trials[in_test], ds.trial_stimulus[in_test])
    metrics = {**accuracy_metrics(y_test, pred, nc), "alpha": ridge.alpha}
    arch = card.backbone.architecture
    model_id = str(spec.get("model_id", f"{card.modality}-{spec['name']}-{arch}"))
    mni = spec.get("space") == "MNI152"
    n_vox = ds.trials.shape[1]
    new_card = trained_card(
        card, model_id=model_id, dataset=str(spec["name"]), subject=int(spec["subject"]), n_voxels=n_vox,
        feature_shapes=feature_shapes, n_components=n_comp,
        volume_shape=ds.grid_shape, rois=list(ds.rois), accuracy=list(metrics),
        units=str(spec.get("units", "arbitrary")),
        description=f"Ridge encoder trained on dataset {spec['name']!r} from {arch} features ({', '.join(nodes)}) "
                    f"through a standard scaler and a {n_comp}-component PCA; alpha chosen per voxel by "
                    f"{n_folds}-fold cross-validation.")
    provenance = {"dataset": str(spec["name"]), "spec": str(Path(spec_path).resolve()), "template": card.model_id,
                  "backbone_weights": weights_identity, "n_train": len(train_rows), "n_test": len(test_rows),
                  "n_components": n_comp, "alphas": [float(a) for a in alphas],
                  "n_folds": n_folds, "nan_policy": spec["nan_policy"],
                  "dropped_voxels": ds.dropped_voxels}
    info = {"model_id": model_id, "subject": int(spec["subject"]), "n_voxels": n_vox, "n_rows": n_vox,
            "volume_shape": list(ds.grid_shape), "affine": np.asarray(ds.affine).tolist(),
            "space": "MNI152" if mni else "subject", "rois": list(ds.rois),
            "accuracy": {k: ACCURACY_UNITS[k] for k in metrics}, "units": new_card.units,
            "provenance": provenance}
    arrays = {"voxel_ijk": ds.voxel_ijk.astype(np.int32), "row_voxel": np.arange(n_vox, dtype=np.int64),
              **{f"roi.{k}": v for k, v in ds.rois.items()},
              **{f"accuracy.{k}": v.astype(np.float32) for k, v in metrics.items()}}
    holder: dict = {}

    def report(folder: Path) -> None:
        holder["summary"] = write_report(folder / "encoding_models_accuracy", metrics, ds.rois, ds.voxel_ijk,
                                         ds.grid_shape, ds.affine, mni,
                                         {"model_id": model_id, "dataset": str(spec["name"]),
                                          "n_train": len(train_rows), "n_test": len(test_rows),
                                          "seconds": round(time.perf_counter() - t0, 2)})

    model_dir, card_path = write_model(berg_dir, new_card, subject=int(spec["subject"]), projection=blocks,
                                       projection_bias=pbias, weight=ridge.coef, bias=ridge.intercept, info=info,
                                       arrays=arrays, extra=report)
    log.info("trained %s: %d voxels, median test r %.3f", model_id, n_vox, float(np.median(metrics["correlation"])))
    return TrainResult(model_id=model_id, model_dir=model_dir, card_path=card_path,
                       report_dir=model_dir / "encoding_models_accuracy", test_ids=list(ds.test_ids),
                       predictions=pred, test_responses=y_test, metrics=metrics, summary=holder["summary"])
