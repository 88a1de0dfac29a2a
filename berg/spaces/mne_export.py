"""Sensor-space responses as MNE-Python objects, and their figure (needs the ``eeg`` extra: ``mne``).

The responses of BERG's EEG models are z-scores (current source density, z-scored against the pre-stimulus
baseline), not volts. :func:`to_mne` keeps them unscaled in ``Evoked.data``, so MNE's own plots, which take EEG
data for volts, label their axes in µV of what are z-scores: pass ``scalings=dict(eeg=1), units=dict(eeg="z")``
to them, as :func:`butterfly_figure` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._optional import import_optional
from ..card_registries import space_class
from ..errors import InvalidArgumentError

#: Montage names MNE renamed (the 10-05 positions of the Colin27 head): the card's name -> MNE's newer one.
_RENAMED_MONTAGES = {"standard_1005": "colin27_1005"}
_PURPOSE = "MNE-Python objects of EEG responses"


def _mne():
    return import_optional("mne", "eeg", _PURPOSE)


def _montage(mne: Any, name: str) -> Any:
    builtin = mne.channels.get_builtin_montages()
    chosen = _RENAMED_MONTAGES.get(name) if _RENAMED_MONTAGES.get(name) in builtin else name
    if chosen not in builtin:
        raise InvalidArgumentError(f"metadata['layout']['montage'] is {name!r}, which MNE {mne.__version__} does not "
                                   f"ship; valid: {', '.join(builtin)}")
    return mne.channels.make_standard_montage(chosen)


def _grid(responses: Any, metadata: Mapping) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(data (n_stimuli, repetitions, channels, times), channel names, times (s))`` of sensor responses."""
    kind = (metadata.get("space") or {}).get("kind")
    if kind != "sensors":
        raise InvalidArgumentError(f"metadata describes outputs in the {kind!r} space; MNE objects need a sensors "
                                   "model (EEG, MEG)")
    sensor_space = space_class(kind)
    data = np.asarray(responses, dtype=np.float64)
    if data.ndim == 2:
        data = sensor_space.arrange(data, metadata)
    elif data.ndim == 3:
        data = data[None]
    layout, coordinates = metadata["layout"], metadata["coordinates"]
    grid = tuple(np.unique(np.asarray(coordinates[n])).size for n in sensor_space.coordinate_names)
    if data.ndim != 4 or data.shape[1:] != grid:
        raise InvalidArgumentError(f"responses have shape {np.shape(responses)}; expected (n_stimuli, *{grid}) as "
                                   "berg.encode returns them for this selection")
    per_column = {n: np.asarray(coordinates[n]).reshape(grid) for n in ("channel", "time")}
    names = [layout["ch_names"][i] for i in per_column["channel"][0, :, 0]]
    times = np.asarray(layout["times"], dtype=np.float64)[per_column["time"][0, 0, :]]
    return data, names, times


def to_mne(responses: Any, metadata: Mapping, stimulus: int = 0, average: bool = False) -> Any:
    """One stimulus's responses as ``mne.EvokedArray`` objects with the model's channels, times and montage.

    Parameters
    ----------
    responses : (n_stimuli, repetitions, channels, times) array
        As :func:`berg.encode` returns them (also (n_stimuli, n_outputs) columns, or one stimulus's
        (repetitions, channels, times)).
    metadata : dict
        The metadata that came with them (``encode(..., return_metadata=True)``).
    stimulus : int
        Which stimulus.
    average : bool
        One Evoked of the mean over repetitions (``nave`` = repetitions) instead of one per repetition.

    Returns
    -------
    list of mne.EvokedArray, or mne.EvokedArray
        Channels of type ``eeg`` at the card's montage positions, ``tmin`` the first selected time (s); ``data``
        (channels, times) holds the responses unscaled (z-scores for BERG's EEG models; see the module docstring).

    Raises
    ------
    InvalidArgumentError
        Not a sensors model, responses that do not match the metadata, or a time mask with gaps (an Evoked needs
        evenly spaced samples).
    """
    from .. import validation

    mne = _mne()
    data, names, times = _grid(responses, metadata)
    stimulus = validation.integer("stimulus", stimulus, minimum=0, maximum=data.shape[0] - 1)
    validation.flag("average", average)
    step = float(np.diff(np.asarray(metadata["layout"]["times"], dtype=np.float64)[:2])[0])
    if times.size > 1 and not np.allclose(np.diff(times), step, rtol=1e-6):
        raise InvalidArgumentError("the selection's time points are not contiguous: an Evoked needs evenly spaced "
                                   "samples; select one unbroken stretch of 'timepoints'")
    info = mne.create_info(names, sfreq=1.0 / step, ch_types="eeg")
    if metadata["layout"].get("montage"):
        info.set_montage(_montage(mne, metadata["layout"]["montage"]), on_missing="raise")
    label = f"{metadata.get('model_id')} subject {metadata.get('subject')} stimulus {stimulus}"
    repetitions = data[stimulus]
    if average:
        return mne.EvokedArray(repetitions.mean(axis=0), info, tmin=float(times[0]), nave=repetitions.shape[0],
                               comment=f"{label}, mean of {repetitions.shape[0]} repetitions", verbose=False)
    return [mne.EvokedArray(rep, info, tmin=float(times[0]), nave=1, comment=f"{label}, repetition {r + 1}",
                            verbose=False) for r, rep in enumerate(repetitions)]


def _peak_latencies(evoked: Any, n: int = 3) -> list[float]:
    """Times (s) of the ``n`` highest local maxima of the global field power after onset, in time order."""
    gfp = evoked.data.std(axis=0)
    after = np.flatnonzero(evoked.times >= 0)
    if after.size == 0:
        after = np.arange(gfp.size)
    inner = after[1:-1]
    peaks = inner[(gfp[inner] >= gfp[inner - 1]) & (gfp[inner] > gfp[inner + 1])] if inner.size else inner
    if peaks.size == 0:
        peaks = after[[int(np.argmax(gfp[after]))]]
    return sorted(float(evoked.times[i]) for i in peaks[np.argsort(gfp[peaks])[::-1][:n]])


def butterfly_figure(values: np.ndarray, metadata: Mapping, title: str | None = None, latencies: Any = None):
    """A butterfly plot of the repetition-averaged responses of one stimulus and topomaps at ``latencies``.

    Parameters
    ----------
    values : (n_outputs,) array
        One stimulus's columns.
    metadata : dict
    title : str, optional
    latencies : sequence of float, optional
        Topomap times (s), each within the selected times; default: the three highest peaks of the global field
        power after onset.

    Returns
    -------
    matplotlib.figure.Figure
        The butterfly on top (one line per channel, time in ms), one topomap per latency below (needs the
        card's montage), and a colour bar.
    """
    figure_module = import_optional("matplotlib.figure", "plot", "drawing EEG responses")
    mne = _mne()
    evoked = to_mne(np.asarray(values)[None], metadata, average=True)
    chosen = _peak_latencies(evoked) if latencies is None else [float(t) for t in np.atleast_1d(latencies)]
    first, last = float(evoked.times[0]), float(evoked.times[-1])
    outside = [t for t in chosen if not first - 1e-9 <= t <= last + 1e-9]
    if not chosen or outside:
        raise InvalidArgumentError(f"latencies={latencies!r} is not valid: expected times (s) within the responses' "
                                   f"{first:g} to {last:g} s")
    units = str(metadata.get("units") or "response")
    fig = figure_module.Figure(figsize=(2.4 * max(len(chosen), 3), 6.5))
    grid = fig.add_gridspec(2, len(chosen) + 1, height_ratios=(1.3, 1), width_ratios=[1] * len(chosen) + [0.08])
    butterfly = fig.add_subplot(grid[0, :-1])
    butterfly.plot(evoked.times * 1000, evoked.data.T, lw=0.6, alpha=0.7)
    butterfly.axvline(0, color="k", lw=0.8)
    butterfly.axhline(0, color="k", lw=0.5)
    for t in chosen:
        butterfly.axvline(t * 1000, color="0.4", ls="--", lw=0.8)
    butterfly.set(xlabel="time (ms)", ylabel=units, title=f"{len(evoked.ch_names)} channels, mean of "
                                                         f"{evoked.nave} repetitions")
    limit = float(np.abs(evoked.data).max()) or 1.0
    image = None
    if evoked.get_montage() is not None:
        for i, t in enumerate(chosen):
            ax = fig.add_subplot(grid[1, i])
            sample = int(np.argmin(np.abs(evoked.times - t)))
            image, _ = mne.viz.plot_topomap(evoked.data[:, sample], evoked.info, axes=ax, show=False,
                                            vlim=(-limit, limit), cmap="RdBu_r")
            ax.set_title(f"{evoked.times[sample] * 1000:.0f} ms", fontsize=9)
    if image is not None:
        fig.colorbar(image, cax=fig.add_subplot(grid[1, -1]), label=units)
    fig.suptitle(title or f"{metadata.get('model_id')}, subject {metadata.get('subject')}")
    return fig
