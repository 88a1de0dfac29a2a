"""Streaming video access with PyAV: probe, pick frames, iterate frames or clips, write test videos.

Nothing here holds a whole film in memory: frames are decoded in order and dropped as soon as no
requested frame or clip needs them. Times are in seconds on the video stream's own clock, starting
at 0 for the first frame; frame ``i`` of a constant-rate video is shown over ``[i / fps, (i + 1) / fps)``.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from . import validation
from ._io import atomic_path
from .errors import InvalidStimulusError

_EPS = 1e-9
_LOOKAHEAD = 16  # packets on each side searched for a frame's successor in presentation order (B-frames reorder)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds.

    Attributes
    ----------
    n_frames : int
        Number of video frames.
    fps : float
        Average frame rate (frames/s).
    duration_s : float
        ``n_frames / fps`` (s): the time the last frame stops being shown.
    width, height : int
        Frame size (pixels).
    """

    n_frames: int
    fps: float
    duration_s: float
    width: int
    height: int


def _open(path: str | os.PathLike):
    """Open ``path`` and return ``(container, video_stream)``; missing or unreadable files raise InvalidStimulusError."""
    path = validation.existing_path("video", path, error=InvalidStimulusError)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InvalidStimulusError(
            f"video={str(path)!r} cannot be read as a video file ({exc}); give a path to a file PyAV/FFmpeg can decode "
            "(e.g. .mp4, .mkv, .avi, .mov)."
        ) from exc
    if not container.streams.video:
        container.close()
        raise InvalidStimulusError(f"video={str(path)!r} holds no video stream; give a file with one.")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise InvalidStimulusError(f"video stream of {stream.container.name!r} has no frame rate; cannot place frames in time.")
    return float(rate)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's frame count, rate and size without decoding it.

    The frame count comes from the container when it states one, otherwise from counting the
    stream's packets.

    Parameters
    ----------
    path : str or PathLike
        Video file.

    Returns
    -------
    VideoInfo

    Raises
    ------
    InvalidStimulusError
        If the file cannot be opened, has no video stream or no frames.
    """
    container, stream = _open(path)
    try:
        fps = _fps(stream)
        n_frames = int(stream.frames or 0)
        if n_frames <= 0:
            n_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    except av.FFmpegError as exc:
        raise InvalidStimulusError(f"video={str(path)!r} is damaged and cannot be demuxed ({exc}).") from exc
    finally:
        container.close()
    if n_frames <= 0:
        raise InvalidStimulusError(f"video={str(path)!r} holds no frames; give a video with at least one frame.")
    return VideoInfo(n_frames=n_frames, fps=fps, duration_s=n_frames / fps, width=width, height=height)


def _decoded(path: str | os.PathLike, start_s: float = 0.0, needed: Callable[[float, float], bool] | None = None
             ) -> Iterator[tuple[float, av.VideoFrame]]:
    """Yield ``(time_s, frame)`` for every frame from ``start_s`` on (seeking to a keyframe first).

    ``needed(time_s, shown_s)`` is asked for each frame before it is decoded, with the time it is shown for (up to
    the next frame in presentation order, among the packets around it). Where it answers False the decoder drops
    the frame if no other frame refers to it (FFmpeg's ``skip_frame="NONREF"``: the non-reference B-frames of most
    films), and it is not yielded. Reference frames are always decoded, so every frame yielded is exactly the one
    a full decode gives. A frame whose successor is not among them is always decoded.
    """
    container, stream = _open(path)

    def decode(packet: av.Packet, window: deque) -> Iterator[tuple[float, av.VideoFrame]]:
        nonlocal count
        if needed is not None:
            later = [] if packet.pts is None else [p.pts for p in window if p.pts is not None and p.pts > packet.pts]
            droppable = bool(later) and not needed(float(packet.pts * packet.time_base) - t0,
                                                   float((min(later) - packet.pts) * packet.time_base))
            stream.codec_context.skip_frame = "NONREF" if droppable else "DEFAULT"
        for frame in packet.decode():
            time_s = frame.time - t0 if frame.time is not None else count / fps
            count += 1
            yield time_s, frame

    try:
        t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        if start_s > 0:
            container.seek(int((start_s + t0) / stream.time_base), stream=stream, backward=True, any_frame=False)
        fps = _fps(stream)
        count = 0
        window: deque = deque()  # packets in decode order: up to _LOOKAHEAD on each side of the one decoded next
        for packet in container.demux(stream):
            window.append(packet)
            if len(window) > _LOOKAHEAD:
                yield from decode(window[len(window) - _LOOKAHEAD - 1], window)
                if len(window) > 2 * _LOOKAHEAD:
                    window.popleft()
        for packet in list(window)[-_LOOKAHEAD:]:
            yield from decode(packet, window)
    except av.FFmpegError as exc:
        raise InvalidStimulusError(f"video={str(path)!r} could not be decoded ({exc}).") from exc
    finally:
        container.close()


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> np.ndarray:
    """Decode a video once and keep only the frames at ``indices`` (in decode order, 0-based).

    Parameters
    ----------
    path : str or PathLike
        Video file.
    indices : sequence of int
        Frame indices, any order, repeats allowed; each in ``[0, n_frames)``.

    Returns
    -------
    numpy.ndarray
        uint8, shape (len(indices), H, W, 3), RGB.
    """
    wanted = np.asarray(indices).reshape(-1)
    if wanted.size == 0 or not np.issubdtype(wanted.dtype, np.integer) or wanted.min() < 0:
        raise validation.fail("indices", indices, "a non-empty sequence of integer frame indices >= 0")
    wanted = wanted.astype(np.int64)
    needed = set(wanted.tolist())
    found: dict[int, np.ndarray] = {}
    last = int(wanted.max())
    index = -1
    for index, (_, frame) in enumerate(_decoded(path)):
        if index in needed:
            found[index] = frame.to_ndarray(format="rgb24")
        if index >= last:
            break
    if len(found) < len(needed):
        raise InvalidStimulusError(
            f"indices reach frame {last} but video={str(path)!r} has {index + 1} frames; valid indices are 0..{index}."
        )
    return np.stack([found[i] for i in wanted.tolist()])


def iter_frames(
    path: str | os.PathLike, rate_hz: float | None = None, start_s: float = 0.0, *, drop_unneeded: bool = True
) -> Iterator[tuple[float, np.ndarray]]:
    """Stream a video's frames, all of them or sampled at a fixed rate.

    Parameters
    ----------
    path : str or PathLike
        Video file.
    rate_hz : float or None
        None yields every frame, stamped with its start time. A rate yields, for each sample time
        ``j / rate_hz`` (s, on the film's clock) before the end of the film, the frame whose
        presentation interval contains that time, stamped with the sample time.
    start_s : float
        Skip everything before this time (s); sample times stay on the ``j / rate_hz`` grid.
    drop_unneeded : bool
        With a rate, let the decoder skip frames that no sample time falls on (or near: within a quarter of a
        frame) and that no other frame refers to. The frames yielded are the same either way; False decodes
        every frame.

    Returns
    -------
    iterator of (time_s, frame)
        ``time_s`` (float, s) and ``frame`` (uint8, shape (H, W, 3), RGB). Arguments are checked at the call,
        before anything is decoded.
    """
    rate_hz = validation.positive_number("rate_hz", rate_hz, unit="Hz", allow_none=True)
    start_s = validation.positive_number("start_s", start_s, allow_zero=True, unit="s")
    validation.flag("drop_unneeded", drop_unneeded)
    return _sampled_frames(path, rate_hz, start_s, drop_unneeded)


def _sample_finder(rate_hz: float, first: int) -> Callable[[float, float], bool]:
    """``needed(time_s, shown_s)``: whether a sample time ``j / rate_hz`` (``j >= first``) falls within a quarter
    of a frame of ``[time_s, time_s + shown_s)`` (the margin absorbs timestamp rounding)."""
    def needed(time_s: float, shown_s: float) -> bool:
        margin = shown_s / 4.0
        j = max(first, math.ceil((time_s - margin) * rate_hz - _EPS))
        return j / rate_hz < time_s + shown_s + margin
    return needed


def _sampled_frames(path: str | os.PathLike, rate_hz: float | None, start_s: float, drop_unneeded: bool
                    ) -> Iterator[tuple[float, np.ndarray]]:
    """The generator behind :func:`iter_frames`, on checked arguments."""
    if rate_hz is None:
        for time_s, frame in _decoded(path, start_s):
            if time_s >= start_s - _EPS:
                yield time_s, frame.to_ndarray(format="rgb24")
        return
    info = probe(path)
    j = max(0, math.ceil(start_s * rate_hz - _EPS))
    needed = _sample_finder(rate_hz, j) if drop_unneeded else None
    previous: tuple[float, av.VideoFrame] | None = None
    for time_s, frame in _decoded(path, start_s, needed):
        if previous is not None:
            while j / rate_hz < time_s - _EPS:
                if j / rate_hz >= previous[0] - _EPS:
                    yield j / rate_hz, previous[1].to_ndarray(format="rgb24")
                j += 1
        previous = (time_s, frame)
    if previous is not None:
        end = min(info.duration_s, previous[0] + 1.0 / info.fps)
        while j / rate_hz < end - _EPS:
            if j / rate_hz >= previous[0] - _EPS:
                yield j / rate_hz, previous[1].to_ndarray(format="rgb24")
            j += 1


def sample_frame_indices(n_available: int, n_frames: int) -> np.ndarray:
    """Frame indices ``linspace(0, n_available - 1, n_frames)`` truncated to int, shape (n_frames,).

    The one rule by which berg picks a clip's frames, for clip arrays, video files and sliding clips of a film.
    """
    return np.linspace(0, n_available - 1, n_frames).astype(np.int64)


def clip_plan(info: VideoInfo, clip_s: float, n_frames: int, stride_s: float) -> list[tuple[float, np.ndarray]]:
    """Centre times and frame indices of every sliding clip that fits in the film.

    Clip ``j`` covers ``[j * stride_s, j * stride_s + clip_s)``; its frames are those whose start time
    falls in that window, of which ``n_frames`` are taken by :func:`sample_frame_indices` (T frames in the window).

    Returns
    -------
    list of (centre_time_s, frame_indices (n_frames,) int64)
    """
    clip_s = validation.positive_number("clip_s", clip_s, unit="s")
    stride_s = validation.positive_number("stride_s", stride_s, unit="s")
    n_frames = validation.integer("n_frames", n_frames, minimum=1)
    if clip_s > info.duration_s + _EPS:
        raise InvalidStimulusError(
            f"clip_s={clip_s} s is longer than the video ({info.duration_s:.3f} s); give clip_s <= the video's duration."
        )
    plan = []
    j = 0
    while j * stride_s + clip_s <= info.duration_s + _EPS:
        start = j * stride_s
        lo = math.ceil(start * info.fps - _EPS)
        hi = min(info.n_frames, math.ceil((start + clip_s) * info.fps - _EPS))
        if hi <= lo:
            raise InvalidStimulusError(f"clip_s={clip_s} s holds no frame at {info.fps:.3f} frames/s; give a longer clip.")
        picks = lo + sample_frame_indices(hi - lo, int(n_frames))
        plan.append((start + clip_s / 2.0, picks))
        j += 1
    return plan


def iter_clips(
    path: str | os.PathLike, clip_s: float = 3.0, n_frames: int = 14, stride_s: float = 1.0, start_index: int = 0
) -> Iterator[tuple[float, np.ndarray]]:
    """Stream sliding clips of a video (see :func:`clip_plan` for which frames each clip takes).

    At most the frames picked by clips that overlap the current one are held in memory.

    Parameters
    ----------
    path : str or PathLike
        Video file.
    clip_s : float
        Clip length (s).
    n_frames : int
        Frames per clip.
    stride_s : float
        Time between clip starts (s).
    start_index : int
        Skip the first ``start_index`` clips (they are not decoded into arrays).

    Yields
    ------
    centre_time_s : float
        Centre of the clip's window (s).
    clip : numpy.ndarray
        uint8, shape (n_frames, H, W, 3), RGB.
    """
    plan = clip_plan(probe(path), clip_s, n_frames, stride_s)[start_index:]
    if not plan:
        return
    remaining: dict[int, int] = {}
    for _, picks in plan:
        for i in picks.tolist():
            remaining[i] = remaining.get(i, 0) + 1
    held: dict[int, np.ndarray] = {}
    next_clip = 0
    for index, (_, frame) in enumerate(_decoded(path)):
        if index in remaining:
            held[index] = frame.to_ndarray(format="rgb24")
        while next_clip < len(plan) and int(plan[next_clip][1][-1]) <= index:
            centre, picks = plan[next_clip]
            yield centre, np.stack([held[i] for i in picks.tolist()])
            for i in picks.tolist():
                remaining[i] -= 1
                if remaining[i] == 0:
                    del remaining[i], held[i]
            next_clip += 1
        if next_clip == len(plan):
            return
    raise InvalidStimulusError(f"video={str(path)!r} ended before its stated {plan[-1][1][-1] + 1} frames.")


def write_synthetic_video(
    path: str | os.PathLike,
    n_frames: int,
    fps: float,
    size: tuple[int, int],
    frame_fn: Callable[[int], np.ndarray],
    codec: str = "libx264",
    crf: int = 10,
    b_frames: int = 0,
) -> Path:
    """Encode a video from a frame function (for tests and benchmarks), written atomically.

    Parameters
    ----------
    path : str or PathLike
        Output file (.mp4, .mkv, ...).
    n_frames : int
        Number of frames.
    fps : float
        Frame rate (frames/s).
    size : (height, width)
        Frame size in pixels; both even (yuv420p).
    frame_fn : callable
        ``frame_fn(i) -> uint8 (height, width, 3)`` RGB frame ``i``.
    codec : str
        FFmpeg encoder name.
    crf : int
        x264 constant rate factor (lower is closer to lossless); ignored by other codecs.
    b_frames : int
        Most B-frames between reference frames, as films are coded (x264 makes some of them references, the
        others frames no other frame refers to); 0 codes I- and P-frames only.

    Returns
    -------
    pathlib.Path
    """
    sides = tuple(size) if isinstance(size, Sequence) and not isinstance(size, str) else ()
    if len(sides) != 2 or not all(validation.is_integer(s) and s > 0 and s % 2 == 0 for s in sides):
        raise validation.fail("size", size, "two positive even integers (height, width)")
    height, width = (int(s) for s in sides)
    n_frames = validation.integer("n_frames", n_frames, minimum=1)
    fps = validation.positive_number("fps", fps, unit="frames/s")
    b_frames = validation.integer("b_frames", b_frames, minimum=0)
    rate = Fraction(fps).limit_denominator(1001)
    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.max_b_frames = b_frames
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": "ultrafast"}
            for i in range(int(n_frames)):
                image = np.asarray(frame_fn(i), dtype=np.uint8)
                if image.shape != (height, width, 3):
                    raise InvalidStimulusError(f"frame_fn({i}) returned shape {image.shape}; expected {(height, width, 3)}.")
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode(None))
    return path
