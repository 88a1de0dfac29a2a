"""One model's record of a film: its samples' sink, its per-scan series, and the files it writes.

:func:`berg.predict_movie` keeps one :class:`FilmRecord` per model it answers for (several when one backbone pass
serves several subjects or models) and feeds each the same samples.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import baselines as _baselines
from . import sinks
from ._io import check_room
from .errors import InvalidArgumentError
from .hrf import to_scans
from .metadata import columns_digest
from .writers.sidecars import write_series_sidecars


@dataclass
class MovieResult:
    """What :func:`berg.predict_movie` returns for one model.

    Attributes
    ----------
    bold : numpy.ndarray
        (n_scans, n_outputs) float32 predicted BOLD at ``frame_times``, model units (HRF has unit area).
    frame_times : numpy.ndarray
        (n_scans,) float64 acquisition times (s).
    sample_times : numpy.ndarray
        (n_samples,) float64 sample time stamps (s).
    samples : numpy.ndarray or None
        (n_samples, n_outputs) float32 encoder responses per sample; None when an HDF5 output holds them
        (read it with :func:`berg.sinks.read_h5`).
    baselines : dict
        name -> (n_samples,) float32 per-sample baselines.
    baselines_tr : dict
        name -> (n_scans,) float32 baselines convolved and resampled like ``bold``.
    metadata : dict
        The model's metadata contract (:class:`~berg.metadata.ModelMetadata`, as a dict) plus the timing
        parameters: ``tr``, ``n_scans``, ``slice_time_ref``, ``hrf``, ``n_samples``, ``hold_s``,
        ``hold_offset_s``, ``baseline_units`` and the sampling parameters.
    outputs : list of pathlib.Path
        Files written.
    """

    bold: np.ndarray
    frame_times: np.ndarray
    sample_times: np.ndarray
    samples: np.ndarray | None
    baselines: dict = field(default_factory=dict)
    baselines_tr: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    outputs: list = field(default_factory=list)


class FilmRecord:
    """One model's samples of a film in a :class:`~berg.sinks.SampleSink`, then its series and files.

    Attributes
    ----------
    skip : int
        Samples of the coming stream this record already holds (a resumed run in which it got further than the
        other models); :meth:`append` drops them.
    """

    def __init__(self, meta: dict, n_outputs: int, outputs: list[tuple[Path, Any]], sink: sinks.SampleSink,
                 sink_path: Path, params: dict):
        self.meta, self.n_outputs, self.outputs, self.params = meta, n_outputs, outputs, params
        self.sink, self.sink_path, self.skip = sink, sink_path, 0
        self.h5_out = next((p for p, w in outputs if w.stores_samples), None)

    @classmethod
    def open(cls, stack: contextlib.ExitStack, meta: Mapping, n_outputs: int, outputs: list[tuple[Path, Any]],
             film: Mapping, names: Sequence[str], n_total: int, n_scans: int, resume: bool, video: Any
             ) -> "FilmRecord":
        """Check room for every output and open (or resume) the sample sink; ``stack`` closes it, and removes it
        when the run fails without ``resume``. ``film``: the film's and the sampling's identity."""
        meta = dict(meta)
        # everything the samples depend on: a resumed run refuses a partial file made under any other value
        params = {"model_id": meta.get("model_id"), "subject": meta.get("subject"), "n_outputs": int(n_outputs),
                  "columns": columns_digest(meta), "backbone": meta.get("backbone"),
                  "model_files": (meta.get("provenance") or {}).get("readout_files"), **film}
        h5_out = next((p for p, w in outputs if w.stores_samples), None)
        if h5_out is not None:
            sink_path = sinks.partial_path(h5_out)
        elif outputs:
            sink_path = sinks.partial_path(outputs[0][0], ".samples")
        else:
            sink_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="berg-movie-"))) / "samples.h5"
        sample_bytes = sinks.SampleSink.estimate_bytes(n_total, int(n_outputs), len(names), n_scans)
        check_room([(sink_path, sample_bytes)] + [(p, w.estimate_bytes(p, n_scans, meta)) for p, w in outputs
                                                  if not w.stores_samples], f"video={str(video)!r}")
        sink = sinks.SampleSink(sink_path, int(n_outputs), names, params, resume)
        if not resume:  # nothing will resume from it: a failed run leaves no partial file behind
            stack.push(lambda kind, *_: sink_path.unlink(missing_ok=True) if kind is not None else None)
        stack.callback(sink.close)
        return cls(meta, int(n_outputs), outputs, sink, sink_path, params)

    def append(self, times: np.ndarray, responses: np.ndarray, low_level: Mapping[str, np.ndarray]) -> None:
        """Store the next samples (those already held are dropped, see :attr:`skip`)."""
        if responses.shape != (len(times), self.n_outputs):
            raise InvalidArgumentError(f"the model returned responses of shape {responses.shape}; expected "
                                       f"{(len(times), self.n_outputs)}.")
        drop = min(self.skip, len(times))
        self.skip -= drop
        if drop < len(times):
            self.sink.append(times[drop:], responses[drop:], {k: v[drop:] for k, v in low_level.items()})

    def finish(self, timing: Mapping[str, Any], names: Sequence[str]) -> MovieResult:
        """The per-scan series from the samples, every output written, the sink closed (and renamed into its
        ``.h5`` output). ``timing``: ``tr``, ``n_scans``, ``slice_time_ref``, ``hrf``, ``frame_times``,
        ``hold_s``, ``hold_offset_s``."""
        tr, hrf, frame_times = timing["tr"], timing["hrf"], timing["frame_times"]
        hold = (timing["hold_s"], timing["hold_offset_s"])
        sample_times = self.sink.times()
        bold = to_scans(sample_times, self.sink.responses, frame_times, tr, hrf, *hold)
        per_sample = {name: self.sink.baseline(name) for name in names}
        per_scan = {name: to_scans(sample_times, per_sample[name], frame_times, tr, hrf, *hold) for name in names}
        meta = self.meta
        meta.update(tr=float(tr), n_scans=timing["n_scans"], slice_time_ref=timing["slice_time_ref"],
                    hrf=hrf or "none", n_samples=int(sample_times.size), hold_s=hold[0], hold_offset_s=hold[1],
                    units=meta.get("units") or "model output units", baseline_units=_baselines.UNITS,
                    **{k: v for k, v in self.params.items() if k not in meta})
        written = [f for p, w in self.outputs if not w.stores_samples for f in w.write_series(p, bold, per_scan, meta)]
        written += write_series_sidecars(self.outputs, bold, per_scan, meta)
        samples = None
        if self.h5_out is None:
            samples = np.asarray(self.sink.responses[: sample_times.size])
        else:
            self.sink.finish(bold, frame_times, per_scan, meta)
        self.sink.close()
        if self.h5_out is not None:
            os.replace(self.sink_path, self.h5_out)
            written.append(self.h5_out)
        else:
            self.sink_path.unlink(missing_ok=True)
        return MovieResult(bold=bold, frame_times=frame_times, sample_times=sample_times, samples=samples,
                           baselines=per_sample, baselines_tr=per_scan, metadata=meta, outputs=written)
