"""Stimuli: arrays, tensors, PIL images and files -> validated batches in one layout.

Images come out as (B, 3, H, W) and clips as (B, T, 3, H, W) torch tensors, uint8 or float32 in [0, 1]; images of
different sizes come out as a list of (3, H, W) tensors. Clips are cut to the card's frames
(``linspace(0, T - 1, n_frames)``) before they leave this module.

Image files are read with PIL and converted to RGB; 16-bit greyscale files (PNG, TIFF) are scaled by their full
range, 0..65535 onto 0..255 (``round(value / 257)``), rather than clipped as PIL's own conversion would clip them.
Files larger than PIL's decompression-bomb limit are refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import video
from .errors import InvalidStimulusError
from .video import sample_frame_indices

Batch = torch.Tensor | list[torch.Tensor]
_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}


def _layout_error(shape: tuple[int, ...], kind: str) -> InvalidStimulusError:
    expected = ("(batch, 3, H, W) or (batch, H, W, 3)" if kind == "image"
                else "(batch, frames, 3, H, W) or (batch, frames, H, W, 3)")
    hint = " (add a batch axis, e.g. stimulus[None])" if len(shape) == (3 if kind == "image" else 4) else ""
    return InvalidStimulusError(f"stimulus has shape {shape}; a {kind} model expects {expected}{hint}")


def _check_values(array: np.ndarray, what: str = "stimulus") -> np.ndarray:
    """Validate dtype and range; return uint8 (integers) or float32 (floats in [0, 1])."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InvalidStimulusError(f"{what} has dtype {array.dtype}; valid: uint8, other integers in 0..255, "
                                   "or floats in [0, 1]")
    if array.size == 0:
        return array
    lo, hi = array.min(), array.max()
    if np.issubdtype(array.dtype, np.integer):
        if lo < 0 or hi > 255:
            raise InvalidStimulusError(f"{what} has integer values in [{lo}, {hi}]; integers must lie in 0..255")
        return array.astype(np.uint8)
    if not np.isfinite(lo) or not np.isfinite(hi) or not np.isfinite(array).all():
        raise InvalidStimulusError(f"{what} contains NaN or inf values; valid: finite floats in [0, 1]")
    if lo < 0 or hi > 1:
        raise InvalidStimulusError(f"{what} has float values in [{lo:.4g}, {hi:.4g}]; floats must lie in [0, 1] "
                                   "(for 0..255 data pass uint8)")
    return array.astype(np.float32, copy=False)


def _channels_first(array: np.ndarray, kind: str) -> np.ndarray:
    """Move the colour axis to just before (H, W)."""
    ndim = 4 if kind == "image" else 5
    if array.ndim != ndim:
        raise _layout_error(array.shape, kind)
    axis = ndim - 3
    if array.shape[axis] == 3:
        return array
    if array.shape[-1] == 3:
        return np.moveaxis(array, -1, axis)
    raise InvalidStimulusError(f"stimulus has shape {array.shape} with no colour axis of size 3; "
                               f"valid: RGB {'images' if kind == 'image' else 'clips'} with 3 channels, "
                               "first or last")


@dataclass
class StimulusSet:
    """A validated stimulus set that yields batches; it never holds more than one batch of decoded data.

    Attributes
    ----------
    n : int
        Number of stimuli.
    load : callable
        ``load(start, stop) -> Batch`` for stimuli ``start:stop``.
    """

    n: int
    load: Callable[[int, int], Batch]


def _array_set(array: np.ndarray, kind: str, n_frames: int | None) -> StimulusSet:
    array = _channels_first(array, kind)
    if array.shape[0] == 0:
        raise InvalidStimulusError("stimulus is an empty batch (0 items); pass at least one")
    if 0 in array.shape[-2:]:
        raise InvalidStimulusError(f"stimulus frames are {array.shape[-2]} x {array.shape[-1]} pixels; each image "
                                   "needs at least 1 x 1")
    if kind == "video":
        if array.shape[1] < n_frames:
            raise InvalidStimulusError(f"stimulus clips have {array.shape[1]} frames; this model needs at least "
                                       f"{n_frames} frames per clip (about 3 s)")
        array = array[:, sample_frame_indices(array.shape[1], n_frames)]
    array = _check_values(array)

    def load(start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(np.require(array[start:stop], requirements=["C", "W"]))  # memmaps are read-only

    return StimulusSet(n=array.shape[0], load=load)


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _rgb_array(image) -> np.ndarray:
    """(H, W, 3) uint8 of a PIL image; 16-bit greyscale scaled by its full range (module docstring)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(image).astype(np.float64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise InvalidStimulusError(f"image has 32-bit values in [{grey.min():.0f}, {grey.max():.0f}]; valid: "
                                       "8-bit images, or 16-bit greyscale in 0..65535")
        return np.repeat(np.rint(grey / 257.0).astype(np.uint8)[..., None], 3, axis=2)
    return np.array(image.convert("RGB"))


def _image_to_chw(image, where: str) -> torch.Tensor:
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as handle:
                array = _rgb_array(handle)
        except Image.DecompressionBombError as exc:
            raise InvalidStimulusError(f"image file {str(where)!r} is larger than PIL's limit of "
                                       f"{Image.MAX_IMAGE_PIXELS} pixels (a decompression bomb?): {exc}") from exc
        except (OSError, ValueError) as exc:
            raise InvalidStimulusError(f"image file {str(where)!r} cannot be read: {exc}") from exc
    elif isinstance(image, Image.Image):
        array = _rgb_array(image)
    else:
        raise InvalidStimulusError(f"{where} is a {type(image).__name__}; valid list items: PIL images or file paths")
    if 0 in array.shape[:2]:
        raise InvalidStimulusError(f"{where} is {array.shape[1]} x {array.shape[0]} pixels; each image needs at "
                                   "least 1 x 1")
    return torch.from_numpy(array).permute(2, 0, 1)


def _check_file(path, what: str) -> None:
    if Path(path).is_dir():
        raise InvalidStimulusError(f"{what} file {str(path)!r} is a folder; give the files in it (a list of paths)")
    if not Path(path).is_file():
        raise InvalidStimulusError(f"{what} file {str(path)!r} does not exist")


def _image_list_set(items: Sequence) -> StimulusSet:
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            _check_file(item, "image")

    def load(start: int, stop: int) -> Batch:
        images = [_image_to_chw(items[i], str(items[i]) if isinstance(items[i], (str, os.PathLike))
                                else f"stimulus[{i}]") for i in range(start, stop)]
        same = all(img.shape == images[0].shape for img in images)
        return torch.stack(images) if same else images

    return StimulusSet(n=len(items), load=load)


def _video_file_set(paths: Sequence, n_frames: int) -> StimulusSet:
    indices = []
    for path in paths:
        _check_file(path, "video")
        total = video.probe(path).n_frames
        if total < n_frames:
            raise InvalidStimulusError(f"video file {str(path)!r} has {total} frames; this model needs at least "
                                       f"{n_frames} frames per clip (about 3 s)")
        indices.append(sample_frame_indices(total, n_frames))

    def load(start: int, stop: int) -> torch.Tensor:
        clips = [video.read_frames(paths[i], indices[i]) for i in range(start, stop)]
        shapes = {c.shape for c in clips}
        if len(shapes) > 1:
            raise InvalidStimulusError(f"video files in one batch differ in frame size {sorted(shapes)}; "
                                       "use batch_size=1 or resize the videos")
        return torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3)

    return StimulusSet(n=len(paths), load=load)


def as_stimulus_set(stimulus, kind: str, n_frames: int | None = None) -> StimulusSet:
    """Validate ``stimulus`` for an ``"image"`` or ``"video"`` model and return a :class:`StimulusSet`.

    Parameters
    ----------
    stimulus : array, tensor, PIL image list or path(s)
        numpy/torch arrays (B, 3, H, W) / (B, H, W, 3) for images, (B, T, 3, H, W) / (B, T, H, W, 3) for clips:
        uint8, other integers in 0..255, or floats in [0, 1]. Lists of PIL images or image paths. Video paths.
    kind : {"image", "video"}
    n_frames : int
        Frames per clip for video models.

    Raises
    ------
    InvalidStimulusError
        Wrong ndim or channel count, empty batch, NaN/inf, values out of range, too few frames, unreadable files.
    """
    if isinstance(stimulus, torch.Tensor):
        stimulus = stimulus.detach().cpu()
        if stimulus.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16; the values fit float32
            stimulus = stimulus.float()
        stimulus = stimulus.numpy()
    if isinstance(stimulus, (str, os.PathLike)):
        stimulus = [stimulus]
    if isinstance(stimulus, np.ndarray):
        return _array_set(stimulus, kind, n_frames)
    if isinstance(stimulus, (list, tuple)):
        if len(stimulus) == 0:
            raise InvalidStimulusError("stimulus is an empty list; pass at least one image, clip or file")
        if kind == "video":
            if all(isinstance(s, (str, os.PathLike)) for s in stimulus):
                return _video_file_set(list(stimulus), n_frames)
            raise InvalidStimulusError("a video model takes a (B, T, 3, H, W) array or a list of video file paths")
        if all(isinstance(s, (str, os.PathLike)) and Path(s).suffix.lower() in _VIDEO_SUFFIXES for s in stimulus):
            raise InvalidStimulusError("stimulus names video files, but this is an image model; "
                                       "use berg.predict_movie for films, or a video model")
        return _image_list_set(list(stimulus))
    raise InvalidStimulusError(f"stimulus of type {type(stimulus).__name__} is not supported; valid: numpy arrays, "
                               "torch tensors, lists of PIL images, image or video file paths")
