"""Naturalistic movies: stream a film through an encoder into predicted BOLD at the scanner's TR.

The time axis, in seconds from the film's first frame:

* Samples. Image models see frames sampled at ``sample_rate_hz`` (or every frame); sample ``j`` is stamped
  ``j / sample_rate_hz`` (or the frame's start time) and stands for the interval ``[t, t + 1 / rate)``.
  Video models see sliding clips of ``clip_s`` seconds every ``stride_s`` seconds; a clip is stamped at its
  centre ``c`` and stands for ``[c - stride_s / 2, c + stride_s / 2)``.
* Each sample's response is held over its interval (zero before the film and after it), convolved with the
  HRF (the "spm" or "glover" kernel of :mod:`berg.hrf`, as nilearn's, unit area) on a grid of TR / 50, low-passed
  against aliasing (5th-order Butterworth at the scan Nyquist frequency 1 / (2 TR), run forward and backward:
  zero phase),
  and read at the acquisition times ``t_k = (k + slice_time_ref) * TR``, ``k = 0 .. n_scans - 1``.
  For a single event this equals nilearn's ``compute_regressor`` up to the low-pass and grid quantisation.

Decoding: frames no sample needs are not converted to RGB, and where the film is coded with B-frames the decoder
drops those of them that no other frame refers to (:func:`berg.video.iter_frames`); the samples are the same.

Memory: per-sample responses stream to an HDF5 sink; the per-scan series are computed from it in blocks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from . import baselines as _baselines
from . import validation
from ._io import file_identity
from .errors import IncompatibleModelError, InvalidArgumentError
from .film_record import FilmRecord, MovieResult
from .hrf import scan_times, to_scans
from .video import clip_plan, iter_clips, iter_frames, probe
from .writers import writer_for

__all__ = ["MovieModel", "MovieResult", "predict_movie", "scan_times", "to_scans"]


log = logging.getLogger(__name__)

HRF_MODELS = ("spm", "glover", None)


class MovieModel(Protocol):
    """What :func:`predict_movie` needs from a model; :class:`~berg.encoder.EncodingModel` has it all (and
    ``output_members``, the models it answers for, with which ``predict_staged`` yields ``{key: block}``).

    ``stage`` runs in the decoding thread on uint8 frames (B, H, W, 3) or clips (B, T, H, W, 3); ``predict_staged``
    answers the staged batches in order with float32 (n, n_outputs) blocks, which may group samples its own way,
    but holds none longer than ``flush_after_s`` seconds (so that the film's progress is committed that often).
    """

    @property
    def stimulus_kind(self) -> str: ...

    @property
    def n_frames(self) -> int | None: ...

    @property
    def n_outputs(self) -> int: ...

    @property
    def metadata(self) -> Mapping[str, Any]: ...

    def stage(self, batch: np.ndarray) -> Any: ...

    def predict_staged(self, staged: Iterable[Any], *, flush_after_s: float | None = None
                       ) -> Iterator[np.ndarray]: ...


def _batched(stream: Iterable[tuple[float, np.ndarray]], size: int, names: Sequence[str], is_clip: bool,
             prepare) -> Iterator[tuple[np.ndarray, object, dict]]:
    """``(times, prepare(stacked batch), baselines)`` of ``size`` samples at a time."""
    times, items = [], []
    for t, item in stream:
        times.append(t)
        items.append(item)
        if len(items) == size:
            batch = np.stack(items)
            yield np.asarray(times), prepare(batch), _baselines.compute(names, batch, is_clip)
            times, items = [], []
    if items:
        batch = np.stack(items)
        yield np.asarray(times), prepare(batch), _baselines.compute(names, batch, is_clip)


def _prefetched(items: Iterator) -> Iterator:
    """Yield from ``items`` while a background thread already produces the next one (decoding overlaps encoding)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def _answered(batches: Iterator[tuple[np.ndarray, object, dict]], predict_staged
              ) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """``(times, float32 responses, baselines)`` of samples in order, as the encoder answers them.

    ``predict_staged(staged batches)`` (:meth:`MovieModel.predict_staged`) yields response blocks in order but may
    group samples its own way (an :class:`~berg.encoder.EncodingModel` gathers several batches into one readout
    batch); each block is paired with the times and baselines of the samples it answers.
    """
    pending: deque[tuple[np.ndarray, dict]] = deque()

    def prepared() -> Iterator[object]:
        for times, batch, low_level in batches:
            pending.append((times, low_level))
            yield batch

    for responses in predict_staged(prepared()):
        if isinstance(responses, dict):  # several models' blocks for the same samples
            responses = {key: np.asarray(block, dtype=np.float32) for key, block in responses.items()}
            n = len(next(iter(responses.values())))
        else:
            responses = np.asarray(responses, dtype=np.float32)
            n = len(responses)
        parts = []
        while n > 0 and pending:
            times, low_level = pending.popleft()
            if len(times) > n:
                pending.appendleft((times[n:], {k: v[n:] for k, v in low_level.items()}))
                times, low_level = times[:n], {k: v[:n] for k, v in low_level.items()}
            parts.append((times, low_level))
            n -= len(times)
        times = np.concatenate([p[0] for p in parts]) if parts else np.empty(0)
        yield times, responses, {k: np.concatenate([p[1][k] for p in parts]) for k in (parts[0][1] if parts else {})}


#: a film's samples are committed (and a killed run can resume from them) at least this often (s of work)
COMMIT_EVERY_S = 5.0
#: the shortest repetition time accepted (s); one scan per 10 ms is beyond any fMRI scanner
MIN_TR_S = 0.01


def _check_args(tr, n_scans, slice_time_ref, hrf, sample_rate_hz, clip_s, stride_s, batch_size) -> tuple:
    """The arguments of :func:`predict_movie`, in this order, checked and as python numbers."""
    tr = validation.positive_number("tr", tr, unit="s")
    if tr < MIN_TR_S:
        raise InvalidArgumentError(f"tr={tr!r} s is not valid: scanners repeat every {MIN_TR_S} s or slower "
                                   f"(a film would need {1 / tr:.3g} scans per second)")
    return (tr,
            validation.integer("n_scans", n_scans, minimum=1, allow_none=True),
            validation.probability("slice_time_ref", slice_time_ref),
            validation.choice("hrf", hrf, HRF_MODELS),
            validation.positive_number("sample_rate_hz", sample_rate_hz, unit="Hz", allow_none=True),
            validation.positive_number("clip_s", clip_s, unit="s"),
            validation.positive_number("stride_s", stride_s, unit="s", allow_none=True),
            validation.integer("batch_size", batch_size, minimum=1, allow_none=True))


def _check_series_model(metadata: Mapping) -> None:
    """Raise :class:`IncompatibleModelError` for a model whose space has no scanner images (sensors x time)."""
    from .spaces import space_of

    space = space_of(metadata)
    if space.image_suffix is None:
        raise IncompatibleModelError(
            f"model={metadata.get('model_id')!r} predicts {space.kind} outputs (a time course after each image), "
            "not brain images sampled by a scanner, so a film has no BOLD series for it; give this model images "
            "with berg.encode (a film's frames, for example)")


def _member_outputs(output, members: Mapping) -> list:
    """The ``output`` of each model answered for: the argument itself for one model; for several, the entries of
    a ``{key: path or paths}`` dict (a model missing from it writes nothing)."""
    if list(members) == [None]:
        return [output]
    if output is None:
        return [None] * len(members)
    if not isinstance(output, Mapping) or not set(output) <= set(members):
        raise InvalidArgumentError(f"output={output!r} is not valid for a model of several subjects: give a dict "
                                   f"{{subject: path or paths}} with keys among {list(members)}")
    return [output.get(key) for key in members]


def _outputs(output, metadata: Mapping) -> list[tuple[Path, Any]]:
    """``(path, writer)`` of every output, checked against the model's space before any work."""
    paths = [] if output is None else [output] if isinstance(output, (str, os.PathLike)) else list(output)
    outputs = [(Path(p), writer_for(p, "series", metadata)) for p in paths]
    stores = [str(p) for p, w in outputs if w.stores_samples]
    if len(stores) > 1:
        raise InvalidArgumentError(f"output names {len(stores)} files that hold the film's samples ({stores}); "
                                   "give at most one.")
    made: dict[Path, Path] = {}
    for path, writer in outputs:
        for file in writer.data_files(path, metadata):
            if file in made:
                raise InvalidArgumentError(f"output={str(path)!r} would write {str(file)!r}, which "
                                           f"output={str(made[file])!r} writes too; give them other names.")
            made[file] = path
    return outputs


def predict_movie(model: MovieModel, video: str | os.PathLike, *, tr: float, n_scans: int | None = None,
                  slice_time_ref: float = 0.0,
                  hrf: str | None = "spm", sample_rate_hz: float | None = 2.0, clip_s: float = 3.0,
                  stride_s: float | None = None, batch_size: int | None = None, output=None, resume: bool = False,
                  show_progress: bool = True, baselines: Sequence[str] = ("brightness", "luminance")) -> MovieResult:
    """Predict BOLD time series for a film, streamed from disk (see the module docstring for the time axis).

    Parameters
    ----------
    model : MovieModel
        An :class:`~berg.encoder.EncodingModel`, or anything with what :class:`MovieModel` lists.
    video : str or PathLike
        Video file (anything PyAV decodes).
    tr : float
        Repetition time (s).
    n_scans : int or None
        Number of scans; None gives ``floor(duration / tr)``.
    slice_time_ref : float
        Acquisition time within each TR, as a fraction in [0, 1] (0 = start, 0.5 = middle).
    hrf : {"spm", "glover", None}
        HRF kernel; None skips the convolution.
    sample_rate_hz : float or None
        Image models: frames per second sampled (None = every frame).
    clip_s : float
        Video models: clip length (s); frames per clip come from the card.
    stride_s : float or None
        Video models: time between clip starts (s); None = ``tr``.
    batch_size : int or None
        Samples per encoder call (None: 16 frames or 2 clips).
    output : path or list of paths or None
        Files to write, kind by extension (:mod:`berg.writers`): ``.nii``/``.nii.gz`` (4D volume, volume models),
        ``.func.gii`` (one GIFTI per hemisphere, surface models), ``.h5``/``.hdf5`` (everything),
        ``.tsv``/``.tsv.gz`` (ROI-mean predictors + JSON sidecar). For a model of several subjects
        (:class:`~berg.shared_backbone.SharedBackboneModel`), ``{subject: path or paths}``.
    resume : bool
        Continue an interrupted run with the same parameters from its in-progress HDF5 file.
    show_progress : bool
        Show a progress bar over the film.
    baselines : sequence of str
        Low-level baselines computed on the same frames (:mod:`berg.baselines`).

    Returns
    -------
    MovieResult, or dict of them
        ``{subject: MovieResult}`` for a model of several subjects: the film decoded once and the backbone run
        once, each subject's series those of its own model.
    """
    members = (model.output_members() if hasattr(model, "output_members")
               else {None: (model.n_outputs, model.metadata)})
    for _, meta in members.values():
        _check_series_model(meta)
    tr, n_scans, slice_time_ref, hrf, sample_rate_hz, clip_s, stride_s, batch_size = _check_args(
        tr, n_scans, slice_time_ref, hrf, sample_rate_hz, clip_s, stride_s, batch_size)
    validation.flag("resume", resume)
    validation.flag("show_progress", show_progress)
    names = _baselines.check_names(baselines)
    outputs = {key: _outputs(given, meta) for (key, (_, meta)), given in zip(members.items(),
                                                                              _member_outputs(output, members))}
    if resume and not all(outputs.values()):
        raise InvalidArgumentError("resume=True needs an output path (the run's progress is kept beside it); give output=.")
    info = probe(video)
    is_clip = model.stimulus_kind == "video"
    n_scans = int(n_scans) if n_scans is not None else math.floor(info.duration_s / tr + 1e-9)
    if n_scans < 1:
        raise InvalidArgumentError(f"video={str(video)!r} lasts {info.duration_s:.3f} s, shorter than tr={tr}; give n_scans.")
    frame_times = scan_times(n_scans, tr, slice_time_ref)
    if is_clip:
        stride_s = float(stride_s or tr)
        n_clip_frames = int(model.n_frames)
        n_total = len(clip_plan(info, clip_s, n_clip_frames, stride_s))
        hold_s, hold_offset_s = stride_s, -stride_s / 2.0
        sampling = {"clip_s": clip_s, "stride_s": stride_s, "clip_frames": n_clip_frames}
    else:
        rate = sample_rate_hz
        n_total = info.n_frames if rate is None else math.ceil(info.duration_s * rate - 1e-9)
        hold_s, hold_offset_s = 1.0 / (rate or info.fps), 0.0
        sampling = {"sample_rate_hz": rate}
    film = {"video": os.path.abspath(video), "video_file": file_identity(video), "video_frames": info.n_frames,
            "video_fps": info.fps, "stimulus_kind": "video" if is_clip else "image", "baselines": list(names),
            **sampling}
    with contextlib.ExitStack() as stack:
        recordings = {key: FilmRecord.open(stack, meta, n_outputs, outputs[key], film, names, n_total, n_scans,
                                           resume, video)
                      for key, (n_outputs, meta) in members.items()}
        done = min(r.sink.n_done for r in recordings.values())
        for recording in recordings.values():
            recording.skip = recording.sink.n_done - done  # samples it holds beyond the others' (resumed runs)
        first = min(recordings.values(), key=lambda r: r.sink.n_done).sink
        if is_clip:
            stream = iter_clips(video, clip_s, n_clip_frames, stride_s, start_index=done)
        elif rate is None:
            stream = iter_frames(video, None, start_s=float(first.times()[-1]) + 0.5 / info.fps if done else 0.0)
        else:
            stream = iter_frames(video, rate, start_s=done / rate)
        size = batch_size or (2 if is_clip else 16)
        with tqdm(total=n_total, initial=done, disable=not show_progress, unit="clip" if is_clip else "frame",
                  desc="movie") as bar:
            batches = _prefetched(_batched(stream, size, names, is_clip, model.stage))  # decoding runs ahead
            answer = functools.partial(model.predict_staged, flush_after_s=COMMIT_EVERY_S)
            for times, responses, low_level in _answered(batches, answer):
                parts = responses if isinstance(responses, dict) else {None: responses}
                for key, recording in recordings.items():
                    recording.append(times, parts[key], low_level)
                bar.update(len(times))
        timing = {"tr": float(tr), "n_scans": n_scans, "slice_time_ref": float(slice_time_ref), "hrf": hrf,
                  "frame_times": frame_times, "hold_s": hold_s, "hold_offset_s": hold_offset_s}
        results = {key: recording.finish(timing, names) for key, recording in recordings.items()}
    return results[None] if list(results) == [None] else results
