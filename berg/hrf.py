"""Haemodynamic response kernels: SPM's and Glover's difference of two gamma densities.

The same kernels, on the same grid, as nilearn's ``spm_hrf`` and ``glover_hrf``, so movie predictions need no
GLM package at run time (tests compare the two).
"""

from __future__ import annotations

import numpy as np
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
