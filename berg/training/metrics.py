"""Accuracy per voxel: noise ceilings from single trials (ncsnr) and test metrics.

Noise ceilings are fractions of the variance of repeat-averaged responses (0 to 1), not percent.
"""

from __future__ import annotations

import numpy as np

from ..errors import TrainingError

#: Units of every accuracy array, as written into model metadata.
ACCURACY_UNITS = {
    "correlation": "Pearson r (negative values set to 0)",
    "r2": "squared Pearson r (fraction)",
    "coefficient_of_determination": "R^2 = 1 - SS_res / SS_tot (fraction, may be negative)",
    "noise_ceiling": "fraction of the variance of repeat-averaged test responses (0-1)",
    "explained_variance": "r2 / noise_ceiling, capped at 1 (fraction); 0 where the noise ceiling is 0",
    "alpha": "ridge regularisation strength chosen by cross-validation",
}


def group_trials(stimulus_of_trial: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group trials by stimulus.

    Returns
    -------
    stimuli : ndarray (n_stimuli,)
        Sorted unique stimulus ids.
    inverse : ndarray (n_trials,) int
        Index into ``stimuli`` of every trial.
    counts : ndarray (n_stimuli,) int
        Repeats of every stimulus.
    """
    stimuli, inverse, counts = np.unique(np.asarray(stimulus_of_trial), return_inverse=True, return_counts=True)
    return stimuli, inverse, counts


def average_repeats(trials: np.ndarray, inverse: np.ndarray, n_stimuli: int) -> np.ndarray:
    """Mean response per stimulus: (n_trials, n_voxels) -> (n_stimuli, n_voxels) float32."""
    sums = np.zeros((n_stimuli, trials.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, trials)
    counts = np.bincount(inverse, minlength=n_stimuli)
    return (sums / counts[:, None]).astype(np.float32)


def averaged_responses(trials: np.ndarray, stimulus_of_trial: np.ndarray, ids) -> np.ndarray:
    """Repeat-averaged responses of the stimuli ``ids``, in that order: (len(ids), n_voxels) float32.

    Every id must have at least one trial.
    """
    shown, inverse, _ = group_trials(stimulus_of_trial)
    row = {s: i for i, s in enumerate(shown)}
    return average_repeats(trials, inverse, len(shown))[[row[s] for s in ids]]


def noise_ceiling(trials: np.ndarray, stimulus_of_trial: np.ndarray) -> np.ndarray:
    """Noise ceiling per voxel of repeat-averaged responses, from single trials (ncsnr).

    Each voxel's trials are z-scored; the noise variance is the mean over stimuli with two or more
    repeats of the across-repeat variance (ddof 1); ``ncsnr = sqrt(max(0, 1 - noise_var)) / sqrt(noise_var)``
    and ``NC = ncsnr^2 / (ncsnr^2 + mean(1 / n_i))`` over all stimuli ``i`` of the set.

    Parameters
    ----------
    trials : ndarray, shape (n_trials, n_voxels)
    stimulus_of_trial : ndarray, shape (n_trials,)

    Returns
    -------
    ndarray, shape (n_voxels,) float64, fractions in [0, 1]
    """
    stimuli, inverse, counts = group_trials(stimulus_of_trial)
    if counts.max(initial=0) < 2:
        raise TrainingError(f"a noise ceiling needs stimuli shown at least twice: the {len(stimuli)} stimuli given "
                            f"have {counts.max(initial=0)} repeat(s) at most")
    x = np.asarray(trials, dtype=np.float64)
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    keep = counts[inverse] >= 2
    means = average_repeats(z[keep], inverse[keep], len(stimuli)).astype(np.float64)
    resid = (z[keep] - means[inverse[keep]]) ** 2
    per_stim = np.zeros((len(stimuli), x.shape[1]))
    np.add.at(per_stim, inverse[keep], resid)
    repeated = counts >= 2
    noise_var = (per_stim[repeated] / (counts[repeated, None] - 1)).mean(axis=0)
    signal_var = np.maximum(0.0, 1.0 - noise_var)
    # ncsnr^2 / (ncsnr^2 + mean(1/n)), multiplied through by noise_var (exact also where noise_var is 0)
    nc = signal_var / (signal_var + np.mean(1.0 / counts) * noise_var)
    return nc


def pearson(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pearson r per column of two (n, v) arrays; 0 where either column is constant."""
    yc = y - y.mean(0)
    pc = pred - pred.mean(0)
    den = np.sqrt((yc ** 2).sum(0) * (pc ** 2).sum(0))
    return np.divide((yc * pc).sum(0), den, out=np.zeros(y.shape[1]), where=den > 0)


def accuracy_metrics(y: np.ndarray, pred: np.ndarray, nc: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Accuracy of test predictions per voxel.

    Parameters
    ----------
    y, pred : ndarray, shape (n_test_stimuli, n_voxels)
        Repeat-averaged test responses and predictions.
    nc : ndarray, shape (n_voxels,), optional
        Noise ceiling (fraction) of ``y``; adds ``noise_ceiling`` and ``explained_variance``.

    Returns
    -------
    dict of ndarray (n_voxels,) float64
        ``correlation`` (r, negative set to 0), ``r2`` (its square), ``coefficient_of_determination``
        and, with ``nc``, ``noise_ceiling`` and ``explained_variance`` (r2 / nc capped at 1, 0 where nc is 0).
    """
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    r = np.maximum(pearson(y, pred), 0.0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    ss_res = ((y - pred) ** 2).sum(0)
    cod = 1.0 - np.divide(ss_res, ss_tot, out=np.ones_like(ss_tot), where=ss_tot > 0)
    out = {"correlation": r, "r2": r ** 2, "coefficient_of_determination": cod}
    if nc is not None:
        out["noise_ceiling"] = np.asarray(nc, dtype=np.float64)
        out["explained_variance"] = np.minimum(1.0, np.divide(r ** 2, nc, out=np.zeros_like(r), where=nc > 0))
    return out
