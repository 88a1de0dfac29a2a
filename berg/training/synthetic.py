"""Synthetic training data of known accuracy: a linear map from features to voxels plus Gaussian noise.

Every voxel ``v`` responds to stimulus ``s`` on trial ``t`` with ``x_s @ w_v + e_t``, where the signal
``x_s @ w_v`` has variance ``signal_var[v]`` over the stimulus set and ``e_t ~ N(0, noise_var[v])``
(``signal_var`` is 0 on pure-noise voxels). The noise ceiling of responses averaged over ``n_i`` repeats
is then, in closed form, ``signal_var / (signal_var + noise_var * mean(1 / n_i))``: also the best R^2
any model can reach on them (the true map reaches it, in expectation), so the best NC-normalised
explained variance is 1 on signal voxels and 0 on noise voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import yaml

from .._io import atomic_path
from .. import validation
from ..errors import TrainingError

#: MNI152 2 mm grid (91 x 109 x 91), the grid written by :func:`write_dataset`.
MNI_SHAPE = (91, 109, 91)
MNI_AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


@dataclass
class SyntheticData:
    """A synthetic dataset in memory.

    Attributes
    ----------
    features : ndarray (n_stimuli, n_features) float32
    stimulus_ids : list of str, length n_stimuli
    test_ids : list of str
    trials : ndarray (n_trials, n_voxels) float32
    trial_stimulus : ndarray (n_trials,) str
    weights : ndarray (n_features, n_voxels) float64, the true map
    signal_var, noise_var : ndarray (n_voxels,) float64
    noise_ceiling : ndarray (n_voxels,) float64
        Closed-form noise ceiling (fraction) of the repeat-averaged test responses.
    """

    features: np.ndarray
    stimulus_ids: list[str]
    test_ids: list[str]
    trials: np.ndarray
    trial_stimulus: np.ndarray
    weights: np.ndarray
    signal_var: np.ndarray
    noise_var: np.ndarray
    noise_ceiling: np.ndarray

    @property
    def is_signal(self) -> np.ndarray:
        """Voxels that carry signal, (n_voxels,) bool."""
        return self.signal_var > 0

    @property
    def best_r(self) -> np.ndarray:
        """Expected Pearson r of the true map on repeat-averaged test responses: sqrt(noise ceiling)."""
        return np.sqrt(self.noise_ceiling)


def _per_voxel(value, n: int, rng: np.random.Generator, name: str) -> np.ndarray:
    if isinstance(value, tuple):
        if len(value) != 2:
            raise TrainingError(f"{name}={value!r} is not valid: a (low, high) tuple has 2 values")
        out = rng.uniform(*value, n)
    else:
        out = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()
    if np.any(out < 0):
        raise TrainingError(f"{name}={value!r} is not valid: variances must be >= 0")
    return out


def _repeats(value, n: int, name: str) -> np.ndarray:
    counts = np.resize(np.atleast_1d(np.asarray(value, dtype=int)), n)
    if np.any(counts < 1):
        raise TrainingError(f"{name}={value!r} is not valid: repeat counts must be >= 1")
    return counts


def make_synthetic(n_train: int = 400, n_test: int = 200, n_features: int = 20, n_voxels: int = 500,
                   noise_fraction: float = 0.2, signal_var=(0.5, 2.0), noise_var=1.0, train_repeats=1,
                   test_repeats=4, features: np.ndarray | None = None, truth_components: int | None = None,
                   seed: int = 0) -> SyntheticData:
    """Generate a synthetic dataset with a known noise ceiling.

    Parameters
    ----------
    n_train, n_test : int
        Training and test stimuli.
    n_features : int
        Feature dimension when ``features`` is not given (standard normal features).
    n_voxels : int
        Voxels; the first ``round(noise_fraction * n_voxels)`` are pure noise.
    noise_fraction : float
        Fraction of pure-noise voxels, 0 to 1.
    signal_var, noise_var : float, (low, high) tuple or ndarray (n_voxels,)
        Per-voxel variances (a tuple draws uniformly per voxel), in response units squared.
    train_repeats, test_repeats : int or sequence of int
        Repeats per stimulus; a sequence is cycled over stimuli (mixed repeat counts).
    features : ndarray (n_train + n_test, d), optional
        Features of real stimuli (e.g. from a backbone); the true map is drawn on them.
    truth_components : int, optional
        The true map reads only the top ``truth_components`` principal components of the standardised
        features, so a model keeping at least that many components can reach the noise ceiling.
        ``None``: the map reads every feature.
    seed : int
    """
    noise_fraction = validation.probability("noise_fraction", noise_fraction, error=TrainingError)
    rng = np.random.default_rng(seed)
    n_stim = n_train + n_test
    if features is None:
        features = rng.standard_normal((n_stim, n_features))
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    if features.shape[0] != n_stim:
        raise TrainingError(f"features has {features.shape[0]} rows, expected n_train + n_test = {n_stim}")
    sv = _per_voxel(signal_var, n_voxels, rng, "signal_var")
    sv[: int(round(noise_fraction * n_voxels))] = 0.0
    nv = _per_voxel(noise_var, n_voxels, rng, "noise_var")
    centred = features - features.mean(0)
    w = rng.standard_normal((features.shape[1], n_voxels))
    if truth_components is not None:
        sd = centred.std(0)
        sd[sd == 0] = 1.0
        axes = np.linalg.svd(centred / sd, full_matrices=False)[2][:truth_components]
        w = (axes.T @ w[:truth_components]) / sd[:, None]
    signal = centred @ w
    scale = np.sqrt(np.divide(sv, signal.var(0), out=np.zeros(n_voxels), where=signal.var(0) > 0))
    w *= scale
    signal *= scale
    reps = np.concatenate([_repeats(train_repeats, n_train, "train_repeats"),
                           _repeats(test_repeats, n_test, "test_repeats")])
    ids = [f"stim{i:05d}" for i in range(n_stim)]
    order = rng.permutation(int(reps.sum()))
    stim_of_trial = np.repeat(np.arange(n_stim), reps)[order]
    trials = signal[stim_of_trial] + rng.standard_normal((len(order), n_voxels)) * np.sqrt(nv)
    inv_n = np.mean(1.0 / reps[n_train:])
    nc = np.divide(sv, sv + nv * inv_n, out=np.zeros(n_voxels), where=(sv + nv) > 0)
    return SyntheticData(features=features.astype(np.float32), stimulus_ids=ids, test_ids=ids[n_train:],
                         trials=trials.astype(np.float32), trial_stimulus=np.asarray(ids)[stim_of_trial],
                         weights=w, signal_var=sv, noise_var=nv, noise_ceiling=nc)


def _voxel_ijk(n_voxels: int) -> np.ndarray:
    """The first ``n_voxels`` voxels of a block centred in the MNI grid, C order, (n, 3) int32."""
    side = int(np.ceil(n_voxels ** (1 / 3)))
    centre = np.array(MNI_SHAPE) // 2
    block = np.stack(np.unravel_index(np.arange(n_voxels), (side, side, side)), axis=1)
    return (block + centre - side // 2).astype(np.int32)


def write_dataset(data: SyntheticData, folder: str | Path, name: str = "synthetic", stimuli: np.ndarray | None = None,
                  *, template: str, **options) -> Path:
    """Write a dataset spec and its files into ``folder``; return the spec's path.

    Parameters
    ----------
    data : SyntheticData
    folder : path
        Created if needed; receives ``dataset.yaml``, ``responses.h5``, ``trials.tsv``,
        ``stimulus_ids.txt``, ``test_stimuli.txt``, ROI masks ``roi-signal.nii.gz`` / ``roi-noise.nii.gz``
        and the stimuli.
    stimuli : ndarray (n_stimuli, 3, H, W) or (n_stimuli, T, 3, H, W) uint8, optional
        Stimuli written as ``stimuli.npy`` (kind ``array``); without them ``data.features`` is written
        as ``features.npy`` (kind ``features``: the template's return-node features, concatenated).
    template : str
        Model id (or card path) whose stimulus, backbone and preprocessing the trained model reuses.
    **options
        Further top-level spec entries (``fit``, ``nan_policy``, ``noise_ceiling``, ``return_nodes`` ...).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ijk = _voxel_ijk(data.trials.shape[1])
    with atomic_path(folder / "responses.h5") as tmp, h5py.File(tmp, "w") as f:
        f["responses"] = data.trials
        f["voxel_ijk"] = ijk
    rows = "".join(f"{i}\t{s}\n" for i, s in enumerate(data.trial_stimulus))
    with atomic_path(folder / "trials.tsv") as tmp:
        tmp.write_text("trial\tstimulus\n" + rows)
    rois = {}
    for roi, member in (("signal", data.is_signal), ("noise", ~data.is_signal)):
        vol = np.zeros(MNI_SHAPE, dtype=np.uint8)
        vol[tuple(ijk[member].T)] = 1
        with atomic_path(folder / f"roi-{roi}.nii.gz") as tmp:
            nib.save(nib.Nifti1Image(vol, MNI_AFFINE), str(tmp))
        rois[roi] = f"roi-{roi}.nii.gz"
    for filename, ids in (("stimulus_ids.txt", data.stimulus_ids), ("test_stimuli.txt", data.test_ids)):
        with atomic_path(folder / filename) as tmp:
            tmp.write_text("".join(f"{i}\n" for i in ids))
    if stimuli is None:
        stim = {"kind": "features", "path": "features.npy", "ids": "stimulus_ids.txt"}
        arr = data.features
    else:
        stim = {"kind": "array", "path": "stimuli.npy", "ids": "stimulus_ids.txt"}
        arr = np.asarray(stimuli)
    with atomic_path(folder / stim["path"]) as tmp:
        np.save(tmp, arr)
    spec = {"name": name, "template": template, "subject": 1, "stimuli": stim,
            "responses": {"kind": "hdf5", "path": "responses.h5", "dataset": "responses", "voxel_ijk": "voxel_ijk"},
            "trials": "trials.tsv", "split": {"test": "test_stimuli.txt"},
            "grid": {"shape": list(MNI_SHAPE), "affine": MNI_AFFINE.tolist()}, "space": "MNI152", "rois": rois,
            **options}
    with atomic_path(folder / "dataset.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "dataset.yaml"
