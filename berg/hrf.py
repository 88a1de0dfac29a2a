"""Haemodynamic response kernels (SPM's and Glover's difference of two gamma densities), and sampled responses
convolved with them and read at the scanner's acquisition times (:func:`to_scans`).

The same kernels, on the same grid, as nilearn's ``spm_hrf`` and ``glover_hrf``, so movie predictions need no
GLM package at run time (tests compare the two). The time axis is :mod:`berg.movie`'s.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import butter, sosfiltfilt
from scipy.stats import gamma

# (peak delay s, undershoot delay s, peak dispersion, undershoot dispersion, undershoot / peak ratio)
HRF_SHAPES = {"spm": (6.0, 16.0, 1.0, 1.0, 0.167), "glover": (6.0, 12.0, 0.9, 0.9, 0.48)}


def hrf_kernel(name: str, tr: float, oversampling: int, length_s: float = 32.0) -> np.ndarray:
    """The named HRF sampled every ``tr / oversampling`` s over ``length_s`` s, summing to one.

    Parameters
    ----------
    name : {"spm", "glover"}
        Kernel shape (keys of ``HRF_SHAPES``).
    tr : float
        Repetition time (s).
    oversampling : int
        Samples per TR.
    length_s : float
        Kernel length (s).

    Returns
    -------
    numpy.ndarray
        (round(length_s * oversampling / tr),) float64.
    """
    delay, undershoot, dispersion, u_dispersion, ratio = HRF_SHAPES[name]
    dt = tr / oversampling
    t = np.linspace(0.0, length_s, int(np.rint(length_s / dt)))
    peak = gamma.pdf(t, delay / dispersion, loc=dt, scale=dispersion)
    under = gamma.pdf(t, undershoot / u_dispersion, loc=dt, scale=u_dispersion)
    h = peak - ratio * under
    return h / h.sum()


OVERSAMPLING = 50
_LOWPASS_ORDER = 5
_LOWPASS_PAD_TR = 16  # the zero-phase low-pass impulse response has decayed below 1e-6 of its peak by then
_SCAN_BLOCK = 128
_BLOCK_BYTES = 64 << 20


def scan_times(n_scans: int, tr: float, slice_time_ref: float = 0.0) -> np.ndarray:
    """Acquisition times ``(k + slice_time_ref) * tr`` (s), float64 (n_scans,)."""
    return (np.arange(int(n_scans), dtype=np.float64) + float(slice_time_ref)) * float(tr)


@lru_cache(maxsize=8)
def _kernel_cdf(tr: float, hrf: str | None) -> tuple[float, float, np.ndarray]:
    """Cumulative sum of the HRF-then-low-pass kernel on a grid of ``tr / OVERSAMPLING``: ``(u0, dt, K)``."""
    dt = tr / OVERSAMPLING
    if hrf is None:
        h = np.ones(1)
    else:
        h = hrf_kernel(hrf, tr, OVERSAMPLING)
    pad = _LOWPASS_PAD_TR * OVERSAMPLING
    x = np.zeros(2 * pad + h.size)
    x[pad:pad + h.size] = h / h.sum()
    sos = butter(_LOWPASS_ORDER, 1.0 / OVERSAMPLING, output="sos")
    k = sosfiltfilt(sos, x, padtype=None)
    return -pad * dt, dt, np.cumsum(k)


def to_scans(sample_times: np.ndarray, values, frame_times: np.ndarray, tr: float, hrf: str | None,
             hold_s: float, hold_offset_s: float = 0.0) -> np.ndarray:
    """Convolve a sampled series with the HRF and read it at scan times (see the module docstring).

    Parameters
    ----------
    sample_times : numpy.ndarray
        (n_samples,) increasing sample times (s).
    values : array-like
        (n_samples,) or (n_samples, n_cols) values; numpy array or h5py dataset (read in blocks).
    frame_times : numpy.ndarray
        (n_scans,) times to read the result at (s).
    tr : float
        Repetition time (s): sets the kernel grid and the anti-alias cutoff.
    hrf : {"spm", "glover", None}
        None skips the HRF (low-pass and resampling only).
    hold_s, hold_offset_s : float
        Each sample stands for ``[t + hold_offset_s, t + hold_offset_s + hold_s)``.

    Returns
    -------
    numpy.ndarray
        float32, (n_scans,) or (n_scans, n_cols).
    """
    u0, dt, cdf = _kernel_cdf(float(tr), hrf)
    grid = u0 + dt * np.arange(cdf.size)
    starts = np.asarray(sample_times, dtype=np.float64) + hold_offset_s
    frame_times = np.asarray(frame_times, dtype=np.float64)
    one_d = len(values.shape) == 1
    n_cols = 1 if one_d else values.shape[1]
    out = np.zeros((frame_times.size, n_cols), dtype=np.float32)
    for s0 in range(0, frame_times.size, _SCAN_BLOCK):
        t = frame_times[s0:s0 + _SCAN_BLOCK]
        i0 = int(np.searchsorted(starts, t.min() - grid[-1] - hold_s, "left"))
        i1 = int(np.searchsorted(starts, t.max() - grid[0], "right"))
        if i1 <= i0:
            continue
        tau = t[:, None] - starts[None, i0:i1]
        weights = (np.interp(tau, grid, cdf, left=0.0) - np.interp(tau - hold_s, grid, cdf, left=0.0)).astype(np.float32)
        width = max(1, _BLOCK_BYTES // (4 * (i1 - i0)))
        for c0 in range(0, n_cols, width):
            block = values[i0:i1] if one_d else values[i0:i1, c0:c0 + width]
            out[s0:s0 + t.size, c0:c0 + width] = weights @ np.asarray(block, dtype=np.float32).reshape(i1 - i0, -1)
    return out[:, 0] if one_d else out
