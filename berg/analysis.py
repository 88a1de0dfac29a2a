"""Analysis helpers for predicted (or measured) TR x voxel time series: timepoint similarity and event boundaries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import validation
from ._optional import import_optional
from .errors import InvalidDataError


def _as_series(data) -> np.ndarray:
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 2:
        raise InvalidDataError(f"data must be (n_timepoints >= 2, n_voxels >= 2); got shape {data.shape}.")
    return data


def dct_basis(n_timepoints: int, tr: float, cutoff_s: float) -> np.ndarray:
    """Orthonormal DCT-II regressors with periods longer than ``cutoff_s`` (constant included).

    Parameters
    ----------
    n_timepoints : int
        Number of scans.
    tr : float
        Repetition time (s).
    cutoff_s : float
        High-pass cutoff period (s); components with frequency ``k / (2 n tr)`` below ``1 / cutoff_s`` are kept.

    Returns
    -------
    numpy.ndarray
        (n_timepoints, n_components) float64; column 0 is the constant.
    """
    tr = validation.positive_number("tr", tr, error=InvalidDataError)
    cutoff_s = validation.positive_number("cutoff_s", cutoff_s, error=InvalidDataError)
    n_comp = min(n_timepoints, int(np.floor(2.0 * n_timepoints * tr / cutoff_s)) + 1)
    t = (np.arange(n_timepoints) + 0.5)[:, None]
    basis = np.cos(np.pi * t * np.arange(n_comp)[None, :] / n_timepoints)
    return basis / np.linalg.norm(basis, axis=0)


def detrend(data, tr: float, cutoff_s: float) -> np.ndarray:
    """Remove the mean and slow drifts (DCT high-pass at ``cutoff_s`` seconds) from each column.

    Parameters
    ----------
    data : array-like
        (n_timepoints, n_voxels).

    Returns
    -------
    numpy.ndarray
        (n_timepoints, n_voxels) float64 residuals.
    """
    data = _as_series(data)
    basis = dct_basis(data.shape[0], tr, cutoff_s)
    return data - basis @ (basis.T @ data)


def timepoint_similarity(data, tr: float | None = None, high_pass_s: float | None = None) -> np.ndarray:
    """Pearson correlation across voxels between every pair of timepoints.

    Parameters
    ----------
    data : array-like
        (n_timepoints, n_voxels) responses; voxels with any non-finite value are left out.
    tr : float or None
        Repetition time (s); needed with ``high_pass_s``.
    high_pass_s : float or None
        DCT high-pass cutoff period (s) applied to each voxel first; None for none.

    Returns
    -------
    numpy.ndarray
        (n_timepoints, n_timepoints) float64, ones on the diagonal (NaN for a constant timepoint).
    """
    data = _as_series(data)
    data = data[:, np.isfinite(data).all(axis=0)]
    if data.shape[1] < 2:
        raise InvalidDataError("data has fewer than 2 voxels with finite values at every timepoint.")
    if high_pass_s is not None:
        if tr is None:
            raise InvalidDataError(f"high_pass_s={high_pass_s!r} needs tr (s); give tr.")
        data = detrend(data, tr, high_pass_s)
    centred = data - data.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = centred / norms[:, None]
    return z @ z.T


@dataclass
class BoundaryAverage:
    """Boundary-triggered average of adjacent-timepoint similarity.

    Attributes
    ----------
    lags : numpy.ndarray
        (2 * window + 1,) int, scans relative to each boundary.
    curve : numpy.ndarray
        (2 * window + 1,) mean over boundaries of ``similarity[b + lag - 1, b + lag]``.
    statistic : float
        ``curve`` at lag 0: similarity between the scan before and the scan at the boundary.
    null : numpy.ndarray
        (n_permutations,) the statistic under circular shifts of all boundaries together.
    p_value : float
        Permutation p-value, ``(1 + #null as extreme) / (1 + n_permutations)``.
    """

    lags: np.ndarray
    curve: np.ndarray
    statistic: float
    null: np.ndarray
    p_value: float


def boundary_triggered_average(similarity, boundaries, window: int = 5, n_permutations: int = 1000,
                               alternative: str = "less", seed: int | None = 0) -> BoundaryAverage:
    """Average the similarity of consecutive timepoints around event boundaries, with a permutation p-value.

    Parameters
    ----------
    similarity : array-like
        (n, n) timepoint similarity (:func:`timepoint_similarity`).
    boundaries : array-like of int
        Scan indices at which a new event starts (1 .. n - 1).
    window : int
        Scans on each side of the boundary.
    n_permutations : int
        Circular shifts of the boundary set (spacing kept) drawn for the null distribution.
    alternative : {"less", "greater", "two-sided"}
        "less" tests whether similarity drops at boundaries.
    seed : int or None
        Random seed of the shifts.

    Returns
    -------
    BoundaryAverage
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 3:
        raise InvalidDataError(f"similarity must be a square (n, n) matrix with n >= 3; got shape {sim.shape}.")
    n = sim.shape[0]
    b = np.asarray(boundaries).reshape(-1)
    if b.size == 0 or not np.issubdtype(b.dtype, np.integer) or b.min() < 1 or b.max() > n - 1:
        raise InvalidDataError(f"boundaries must be integer scan indices in 1..{n - 1}; got {b.tolist()}.")
    validation.choice("alternative", alternative, ("less", "greater", "two-sided"), error=InvalidDataError)
    window = validation.integer("window", window, minimum=0, error=InvalidDataError)
    n_permutations = validation.integer("n_permutations", n_permutations, minimum=1, error=InvalidDataError)
    adjacent = np.full(n, np.nan)
    adjacent[1:] = np.diagonal(sim, offset=1)  # adjacent[t] = sim[t - 1, t]
    lags = np.arange(-int(window), int(window) + 1)
    idx = b[:, None] + lags[None, :]
    valid = (idx >= 1) & (idx < n)
    values = np.where(valid, adjacent[np.clip(idx, 0, n - 1)], np.nan)
    curve = np.nanmean(values, axis=0)
    statistic = float(np.nanmean(adjacent[b]))
    rng = np.random.default_rng(seed)
    shifts = rng.integers(1, n - 1, size=int(n_permutations))
    shifted = (b[None, :] - 1 + shifts[:, None]) % (n - 1) + 1  # circular over scans 1..n-1
    null = np.nanmean(adjacent[shifted], axis=1)
    if alternative == "less":
        extreme = null <= statistic
    elif alternative == "greater":
        extreme = null >= statistic
    else:
        centre = np.nanmean(null)
        extreme = np.abs(null - centre) >= abs(statistic - centre)
    p_value = float((1 + extreme.sum()) / (1 + null.size))
    return BoundaryAverage(lags=lags, curve=curve, statistic=statistic, null=null, p_value=p_value)


def plot_similarity(similarity, tr: float | None = None, boundaries=None, title: str | None = None, ax=None):
    """Draw a timepoint-similarity matrix (and event boundaries as lines); return the figure.

    Parameters
    ----------
    similarity : array-like
        (n, n) matrix.
    tr : float or None
        With a TR, axes are in seconds; else in scans.
    boundaries : array-like of int or None
        Scan indices drawn as dashed lines.
    title : str or None
        Figure title.
    ax : matplotlib Axes or None
        Axes to draw in (a new figure if None).

    Returns
    -------
    matplotlib.figure.Figure
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise InvalidDataError(f"similarity must be a square matrix; got shape {sim.shape}.")
    if ax is None:  # a pyplot-free Figure: the caller's backend and figure list stay untouched
        fig = import_optional("matplotlib.figure", "plot", "plot_similarity").Figure(figsize=(5, 4.5))
        ax = fig.subplots()
    else:
        fig = ax.figure
    scale = tr if tr else 1.0
    extent = (-0.5 * scale, (sim.shape[0] - 0.5) * scale, (sim.shape[0] - 0.5) * scale, -0.5 * scale)
    image = ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1, extent=extent, interpolation="nearest")
    for b in [] if boundaries is None else np.asarray(boundaries).tolist():
        ax.axvline((b - 0.5) * scale, color="k", ls="--", lw=0.8)
        ax.axhline((b - 0.5) * scale, color="k", ls="--", lw=0.8)
    unit = "time (s)" if tr else "scan"
    ax.set_xlabel(unit)
    ax.set_ylabel(unit)
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, label="Pearson r across voxels")
    return fig


def plot_responses(responses, metadata, index: int = 0, title: str | None = None, **options):
    """Draw one stimulus's (or scan's) responses where the model's outputs live, as its space draws them.

    Parameters
    ----------
    responses : array, or BERG's ``(lh, rh)`` tuple
        What :func:`berg.encode` returned, (n_stimuli, n_outputs), or one (n_outputs,) row; a film's ``bold``.
    metadata : dict
        The metadata that came with the responses.
    index : int
        Which row to draw.
    title : str, optional
    **options
        The space's own figure options (sensors: ``latencies``, topomap times in s).

    Returns
    -------
    matplotlib.figure.Figure
        A glass brain or slices for volumes; fsaverage5 views (bundled with nilearn, no download) for surfaces;
        a butterfly plot and topomaps for sensors.
    """
    from .spaces import space_of

    if isinstance(responses, tuple):
        responses = np.concatenate([np.atleast_2d(np.asarray(part)) for part in responses], axis=1)
    rows = np.asarray(responses, dtype=np.float32)
    if rows.ndim >= 3:  # sensors: (n_stimuli, repetitions, channels, times), or one stimulus's grid
        rows = rows.reshape(rows.shape[0] if rows.ndim == 4 else 1, -1)
    rows = np.atleast_2d(rows)
    index = validation.integer("index", index, minimum=0, maximum=rows.shape[0] - 1, error=InvalidDataError)
    space = space_of(metadata)
    if not hasattr(space, "plot"):
        raise InvalidDataError(f"the {space.kind} space has no figure")
    return space.plot(rows[index], metadata, title=title, **options)
