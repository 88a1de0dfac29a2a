"""Low-level baselines computed on the same frame stream as an encoder, to compare with DNN predictions.

Both are fractions of full scale in [0, 1] (pixel value / 255) of the gamma-encoded RGB values as
decoded; neither is calibrated photometric luminance (cd/m^2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from . import validation
from .errors import InvalidStimulusError

_LUMA = np.array([0.2126, 0.7152, 0.0722])


def _check(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim < 3 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InvalidStimulusError(
            f"frames must be uint8 RGB shaped (..., H, W, 3); got dtype {frames.dtype} shape {frames.shape}."
        )
    return frames


def _pixel_sum(image: np.ndarray) -> np.ndarray:
    """Exact integer sums over H and W of a uint8 (..., H, W, C) array, per channel: float64 (..., C).

    Rows are added first (contiguous uint32 adds, exact below 2**24 rows), then the columns: several times faster
    than one reduction over strided pixels.
    """
    image = np.ascontiguousarray(image)
    h, w, c = image.shape[-3:]
    columns = image.reshape(-1, h, w * c).sum(axis=1, dtype=np.uint32)
    sums = columns.reshape(-1, w, c).sum(axis=1, dtype=np.uint64).astype(np.float64)
    return sums.reshape(*image.shape[:-3], c)


def brightness(frames: np.ndarray) -> np.ndarray:
    """Brightness as pliers/Neuroscout define it: max over R, G, B per pixel, mean over pixels, / 255.

    Parameters
    ----------
    frames : numpy.ndarray
        uint8, shape (..., H, W, 3).

    Returns
    -------
    numpy.ndarray
        float64, shape (...), in [0, 1].
    """
    frames = _check(frames)
    peak = np.maximum(frames[..., 0], frames[..., 1])
    np.maximum(peak, frames[..., 2], out=peak)
    return _pixel_sum(peak[..., None])[..., 0] / (255.0 * peak.shape[-1] * peak.shape[-2])


def luminance(frames: np.ndarray) -> np.ndarray:
    """Relative luminance as img2fmri defines it: 0.2126 R + 0.7152 G + 0.0722 B, mean over pixels, / 255.

    Parameters
    ----------
    frames : numpy.ndarray
        uint8, shape (..., H, W, 3).

    Returns
    -------
    numpy.ndarray
        float64, shape (...), in [0, 1].
    """
    frames = _check(frames)
    return (_pixel_sum(frames) @ _LUMA) / (255.0 * frames.shape[-2] * frames.shape[-3])


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"brightness": brightness, "luminance": luminance}
UNITS = "fraction of full scale (pixel value / 255), in [0, 1]"


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """Validate baseline names; return them as a tuple."""
    names = tuple(names or ())
    for i, name in enumerate(names):
        validation.choice(f"baselines[{i}]", name, BASELINES)
    return names


def compute(names: Sequence[str], batch: np.ndarray, is_clip: bool) -> dict[str, np.ndarray]:
    """Baselines of a batch: (B, H, W, 3) frames, or (B, T, H, W, 3) clips averaged over their T frames.

    Returns
    -------
    dict
        name -> float32 (B,).
    """
    out = {}
    for name in names:
        values = BASELINES[name](batch)
        out[name] = (values.mean(axis=1) if is_clip else values).astype(np.float32)
    return out
