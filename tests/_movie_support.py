"""Fixtures for the movie tests: a tiny fake encoder and synthetic flash videos."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np

from berg.video import write_synthetic_video


class FakeModel:
    """Three "voxels": the mean red, green and blue of each frame (or clip), / 255.

    It has what :class:`berg.movie.MovieModel` asks for and nothing else. ``kill_after`` batches, the process
    kills itself with SIGKILL (to test resuming).
    """

    def __init__(self, kind: str = "image", n_frames: int = 5, kill_after: int | None = None, subject=1):
        self.stimulus_kind = kind
        self.n_frames = n_frames if kind == "video" else None
        self.n_outputs = 3
        self.metadata = {
            "model_id": "fake-rgb", "subject": subject, "units": "fraction of full scale",
            "roi_columns": {"red": [0], "rgb": [0, 1, 2]},
            "voxel_ijk": np.array([[0, 0, 0], [1, 0, 0], [0, 2, 1]]),
            "volume_shape": [2, 3, 2], "affine": np.diag([2.0, 2.0, 2.0, 1.0]),
        }
        self.kill_after = kill_after
        self.calls = 0
        self.seen = 0

    def stage(self, batch: np.ndarray) -> np.ndarray:
        return batch

    def predict_staged(self, staged):
        for batch in staged:
            self.calls += 1
            if self.kill_after is not None and self.calls > self.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            self.seen += len(batch)
            axes = tuple(range(1, batch.ndim - 1))
            yield (batch.mean(axis=axes) / 255.0).astype(np.float32)


def flash_video(path: Path, n_frames: int, fps: float, flashes: dict[int, tuple[int, int, int]], size=(8, 8)) -> Path:
    """A black video whose frames ``flashes`` keys are filled with the given RGB colour."""
    def frame(i: int) -> np.ndarray:
        return np.broadcast_to(np.array(flashes.get(i, (0, 0, 0)), np.uint8), (*size, 3)).copy()

    return write_synthetic_video(path, n_frames, fps, size, frame)


def ramp_level(i):
    """Grey level of frame ``i`` of :func:`ramp_video` (frame indices 0..49 are told apart by it)."""
    return (np.asarray(i) * 5) % 250


def ramp_index(red: np.ndarray) -> np.ndarray:
    """Frame index (0..49) from a decoded mean grey level (codec error is within +-2)."""
    return np.rint(np.asarray(red, dtype=np.float64) / 5.0).astype(np.int64)


def ramp_video(path: Path, n_frames: int, fps: float, size=(8, 8)) -> Path:
    """Frame i is uniformly grey at ``ramp_level(i)`` (grey survives yuv420p coding within +-2)."""
    def frame(i: int) -> np.ndarray:
        v = ramp_level(i)
        return np.full((*size, 3), v, np.uint8)

    return write_synthetic_video(path, n_frames, fps, size, frame)
