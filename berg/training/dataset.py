"""Dataset specs (YAML): stimuli, single-trial responses, trial table, split, voxel grid and ROI masks.

A spec, with paths relative to the spec's folder::

    name: mydata                       # train_dataset name of the trained model
    model_id: fmri-mydata-resnet18     # optional; default {modality}-{name}-{architecture}
    template: MODEL_ID                 # card (model id or YAML path) whose stimulus/backbone/preprocessing is reused
    return_nodes: [avgpool]            # optional subset of the template's return nodes
    subject: 1
    stimuli: {kind: array, path: stimuli.npy, ids: [a, b, ...]}   # or ids: ids.txt (one per line)
             # kind: images | videos with files: [..] (id = file stem); kind: features, path: x.npy (n, d)
    responses: {kind: hdf5, path: resp.h5, dataset: responses, voxel_ijk: voxel_ijk}   # (trials, voxels)
             # or {kind: nifti, path: bold.nii.gz, mask: mask.nii.gz}                 # 4D, last axis = trials
    trials: trials.tsv                 # columns: trial (row of the responses, 0-based), stimulus (id)
    split: {test: [id, ...]}           # or a file of ids; every other stimulus of the trial table trains
    grid: {shape: [X, Y, Z], affine: 4x4}   # hdf5 only; NIfTI responses take the mask's grid
    space: MNI152                      # optional: the grid is MNI152 (adds a glass-brain map to the report)
    rois: {name: roi.nii.gz}           # masks on the grid (value > 0)
    nan_policy: raise                  # raise | drop (remove voxels with any NaN) | zero (NaN -> 0)
    noise_ceiling: true                # needs test stimuli with repeats
    units: z-scored BOLD
    backbone_weights: default          # default | path of a weights file | null (untrained, seeded)
    verify_hash: true
    fit: {n_components: 100, alphas: [...], n_folds: 5, batch_size: 16, device: cpu}
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np

from .. import validation
from .._yaml import UnsafeYamlError, read_yaml
from ..errors import DatasetError, MissingFilesError, close_matches

NAN_POLICIES = ("raise", "drop", "zero")
STIMULUS_KINDS = ("array", "images", "videos", "features")


@dataclass
class Dataset:
    """A validated dataset, responses in memory.

    Attributes
    ----------
    spec : dict
        The spec as read (paths resolved to absolute strings).
    stimulus_ids : list of str
        Ids in the order of the stimulus source.
    trials : ndarray (n_trials, n_voxels) float32
    trial_stimulus : ndarray (n_trials,) str
    test_ids, train_ids : list of str
        Stimuli of each set that have trials, in ``stimulus_ids`` order.
    voxel_ijk : ndarray (n_voxels, 3) int32
    grid_shape : tuple of int
    affine : ndarray (4, 4)
    rois : dict name -> ndarray of voxel indices
    dropped_voxels : int
        Voxels removed by ``nan_policy: drop``.
    """

    spec: dict[str, Any]
    stimulus_ids: list[str]
    trials: np.ndarray
    trial_stimulus: np.ndarray
    test_ids: list[str]
    train_ids: list[str]
    voxel_ijk: np.ndarray
    grid_shape: tuple[int, ...]
    affine: np.ndarray
    rois: dict[str, np.ndarray] = field(default_factory=dict)
    dropped_voxels: int = 0


def _require(spec: dict, key: str, where: str):
    if key not in spec:
        raise DatasetError(f"dataset spec {where}: field {key!r} is missing")
    return spec[key]


def _file(base: Path, value, field_name: str) -> Path:
    path = (base / str(value)).resolve()
    if not path.is_file():
        raise MissingFilesError(f"dataset spec field {field_name!r}: file {str(value)!r} does not exist "
                                f"(looked in {base})")
    return path


def _id_list(base: Path, value, field_name: str) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [line.strip() for line in _file(base, value, field_name).read_text().splitlines() if line.strip()]


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read a spec YAML and check its fields (not yet the files)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFilesError(f"dataset spec {str(path)!r} does not exist")
    try:
        spec = read_yaml(path)
    except UnsafeYamlError as exc:
        raise DatasetError(f"dataset spec {path}: {exc}") from exc
    if not isinstance(spec, dict):
        raise DatasetError(f"dataset spec {path}: expected a mapping of fields, got {type(spec).__name__}")
    for key in ("name", "template", "stimuli", "responses", "trials", "split"):
        _require(spec, key, str(path))
    fit = spec.get("fit") or {}
    for key, value in {"stimuli": spec["stimuli"], "responses": spec["responses"], "split": spec["split"],
                       "fit": fit, "grid": spec.get("grid") or {}, "rois": spec.get("rois") or {}}.items():
        if not isinstance(value, dict):
            raise DatasetError(f"dataset spec field {key!r} is {value!r}; valid: a mapping of fields")
    validation.choice("stimuli.kind", spec["stimuli"].get("kind"), STIMULUS_KINDS, error=DatasetError)
    validation.choice("nan_policy", spec.setdefault("nan_policy", "raise"), NAN_POLICIES, error=DatasetError)
    spec.setdefault("noise_ceiling", True)
    validation.integer("subject", spec.setdefault("subject", 1), error=DatasetError)
    for key, minimum in (("n_components", 1), ("n_folds", 2), ("batch_size", 1)):
        if key in fit:
            validation.integer(f"fit.{key}", fit[key], minimum=minimum, error=DatasetError)
    if "alphas" in fit:
        try:
            np.asarray(fit["alphas"], dtype=np.float64)
        except (TypeError, ValueError):
            raise DatasetError(f"dataset spec field 'fit.alphas' is {fit['alphas']!r}; valid: a list of positive "
                               "numbers") from None
    spec["_base"] = str(path.parent.resolve())
    return spec


def stimulus_ids(spec: dict) -> list[str]:
    """Stimulus ids in source order: ``stimuli.ids`` for arrays, file stems for image/video files."""
    base, stim = Path(spec["_base"]), spec["stimuli"]
    if stim["kind"] in ("images", "videos"):
        ids = [Path(f).stem for f in _require(stim, "files", "stimuli")]
    else:
        ids = _id_list(base, _require(stim, "ids", "stimuli"), "stimuli.ids")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise DatasetError(f"dataset spec field 'stimuli': stimulus ids must be unique; repeated: {dup}")
    return ids


def _read_responses(spec: dict) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], np.ndarray]:
    base, resp = Path(spec["_base"]), spec["responses"]
    kind = resp.get("kind")
    if kind == "hdf5":
        path = _file(base, _require(resp, "path", "responses"), "responses.path")
        grid = _require(spec, "grid", "(hdf5 responses)")
        with h5py.File(path, "r") as f:
            for key in (_require(resp, "dataset", "responses"), _require(resp, "voxel_ijk", "responses")):
                if key not in f:
                    raise DatasetError(f"responses file {path}: dataset {key!r} is missing; it holds {sorted(f)}")
            trials = np.asarray(f[resp["dataset"]], dtype=np.float32)
            ijk = np.asarray(f[resp["voxel_ijk"]], dtype=np.int32)
        shape, affine = _require(grid, "shape", "grid"), _require(grid, "affine", "grid")
        try:
            shape, affine = tuple(int(s) for s in shape), np.asarray(affine, dtype=np.float64)
        except (TypeError, ValueError):
            shape, affine = (), np.empty(0)
        if len(shape) != 3 or affine.shape != (4, 4):
            raise DatasetError(f"dataset spec field 'grid' is {grid!r}; valid: shape (3 integers) and affine (4 x 4 "
                               "numbers)")
    elif kind == "nifti":
        img = nib.load(str(_file(base, _require(resp, "path", "responses"), "responses.path")))
        mask_img = nib.load(str(_file(base, _require(resp, "mask", "responses"), "responses.mask")))
        mask = np.asanyarray(mask_img.dataobj) > 0
        if img.ndim != 4 or img.shape[:3] != mask.shape:
            raise DatasetError(f"responses: NIfTI shape {img.shape} must be 4-D with the mask's grid {mask.shape} "
                               "first and trials last")
        trials = np.asarray(np.asanyarray(img.dataobj)[mask], dtype=np.float32).T
        ijk = np.argwhere(mask).astype(np.int32)
        shape, affine = mask.shape, mask_img.affine
    else:
        raise DatasetError(f"dataset spec field 'responses.kind' is {kind!r}; valid: hdf5, nifti")
    if trials.ndim != 2 or ijk.shape != (trials.shape[1], 3):
        raise DatasetError(f"responses have shape {trials.shape} and voxel_ijk {ijk.shape}; expected "
                           "(n_trials, n_voxels) and (n_voxels, 3)")
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(shape)):
        raise DatasetError(f"responses: voxel_ijk has coordinates outside the grid shape {list(shape)}")
    return trials, ijk, shape, affine


def _read_trial_table(spec: dict, n_trials: int, ids: list[str]) -> np.ndarray:
    path = _file(Path(spec["_base"]), spec["trials"], "trials")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or not {"trial", "stimulus"} <= set(rows[0]):
        raise DatasetError(f"trial table {path}: needs tab-separated columns 'trial' and 'stimulus'")
    if len(rows) != n_trials:
        raise DatasetError(f"trial table {path} has {len(rows)} trials but the responses hold {n_trials} trials: "
                           "each response row needs exactly one trial-table row")
    try:
        order = np.array([int(r["trial"]) for r in rows])
    except ValueError as exc:
        raise DatasetError(f"trial table {path}: column 'trial' must hold integers: {exc}") from exc
    if not np.array_equal(np.sort(order), np.arange(n_trials)):
        raise DatasetError(f"trial table {path}: column 'trial' must number the response rows 0 to {n_trials - 1} "
                           "once each")
    stim = np.empty(n_trials, dtype=object)
    stim[order] = [r["stimulus"] for r in rows]
    unknown = sorted(set(stim) - set(ids))
    if unknown:
        raise DatasetError(f"trial table {path} names {len(unknown)} unknown stimuli, e.g. {unknown[0]!r}."
                           f"{close_matches(unknown[0], ids)} Valid: the ids of field 'stimuli' ({len(ids)} ids)")
    return stim.astype(str)


def _apply_nan_policy(trials: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (trials, kept voxel mask) after the NaN policy."""
    bad = np.isnan(trials)
    keep = np.ones(trials.shape[1], dtype=bool)
    if not bad.any():
        return trials, keep
    if policy == "raise":
        raise DatasetError(f"responses hold {int(bad.sum())} NaN values in {int(bad.any(0).sum())} voxels and "
                           f"{int(bad.any(1).sum())} trials; set nan_policy to 'drop' (remove those voxels) or "
                           "'zero' (replace NaN by 0); nan_policy is 'raise'")
    if policy == "drop":
        keep = ~bad.any(0)
        if not keep.any():
            raise DatasetError("nan_policy 'drop' removes every voxel: each voxel holds a NaN; use 'zero'")
        return trials[:, keep], keep
    return np.nan_to_num(trials, nan=0.0), keep


def load_dataset(path: str | Path) -> Dataset:
    """Read and validate a dataset spec and its responses.

    Raises
    ------
    DatasetError
        Unknown stimuli in the trial table, response/trial count mismatch, NaN responses under
        ``nan_policy: raise``, unknown test ids, test stimuli without repeats when a noise ceiling is asked for.
    MissingFilesError
        A file the spec names does not exist.
    """
    spec = load_spec(path)
    ids = stimulus_ids(spec)
    trials, ijk, shape, affine = _read_responses(spec)
    stim = _read_trial_table(spec, trials.shape[0], ids)
    test = set(_id_list(Path(spec["_base"]), spec["split"].get("test", []), "split.test"))
    unknown = sorted(test - set(ids))
    if unknown:
        raise DatasetError(f"dataset spec field 'split.test' names unknown stimuli, e.g. {unknown[0]!r}."
                           f"{close_matches(unknown[0], ids)}")
    shown, counts = np.unique(stim, return_counts=True)
    repeats = dict(zip(shown.tolist(), counts.tolist()))
    test_ids = [i for i in ids if i in test and i in repeats]
    train_ids = [i for i in ids if i not in test and i in repeats]
    if not test_ids or not train_ids:
        raise DatasetError(f"split: {len(train_ids)} training and {len(test_ids)} test stimuli have trials; "
                           "both sets need at least one")
    if spec["noise_ceiling"] and max(repeats[i] for i in test_ids) < 2:
        raise DatasetError(f"noise_ceiling is true but none of the {len(test_ids)} test stimuli has repeats (each "
                           "has 1 trial); a noise ceiling needs test stimuli shown at least twice, or set "
                           "noise_ceiling: false")
    trials, keep = _apply_nan_policy(trials, spec["nan_policy"])
    ijk = ijk[keep]
    rois = {}
    for name, roi_path in (spec.get("rois") or {}).items():
        mask_img = nib.load(str(_file(Path(spec["_base"]), roi_path, f"rois.{name}")))
        if mask_img.shape[:3] != tuple(shape):
            raise DatasetError(f"ROI mask {name!r} has shape {mask_img.shape}, expected the grid shape {list(shape)}")
        rois[str(name)] = np.flatnonzero(np.asanyarray(mask_img.dataobj)[tuple(ijk.T)] > 0).astype(np.int64)
    return Dataset(spec=spec, stimulus_ids=ids, trials=trials, trial_stimulus=stim, test_ids=test_ids,
                   train_ids=train_ids, voxel_ijk=ijk, grid_shape=tuple(shape), affine=affine, rois=rois,
                   dropped_voxels=int((~keep).sum()))
