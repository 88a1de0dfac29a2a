"""The sensors space: outputs are samples of sensor time courses (EEG, MEG), repeated per model repetition.

Coordinates: ``repetition``, ``channel`` and ``time`` (n,) int indices. Layout: ``ch_names`` (the card's
``space.channels``), ``times`` (s, from the card's ``space.times``: ``{start, step, count}``) and
``repetitions``, and the card's optional ``space.montage`` (a montage MNE ships, such as ``standard_1005``). The
whole-brain outputs are repetition-major, then channel, then time. Selection, as BERG's: ``{"channels": [names,
in the order wanted], "timepoints": binary (n_times,)}``. :func:`berg.encode` returns (n_stimuli, repetitions,
channels, times) arrays; :func:`berg.to_mne` turns them into MNE-Python ``Evoked`` objects. The space has no
scanner images: films are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, InvalidSelectionError, ModelCardError, ModelFormatError, close_matches
from .base import OutputSpace, binary_mask, output_lookup


def _grid_size(values: np.ndarray) -> int:
    return int(np.unique(values).size)


class SensorSpace(OutputSpace):
    """Channels x time points x repetitions (see the module docstring)."""

    kind = "sensors"
    mask_keys = ("channels", "timepoints")
    named_keys = ("channels",)
    coordinate_names = ("repetition", "channel", "time")

    @property
    def channels(self) -> list[str]:
        return list(self.spec.fields["channels"])

    @property
    def times(self) -> np.ndarray:
        t = self.spec.fields["times"]
        return float(t["start"]) + float(t["step"]) * np.arange(int(t["count"]))

    @property
    def repetitions(self) -> int:
        return int(self.spec.fields.get("repetitions", 1))

    def check_card(self, card: Any) -> None:
        self.check_card_fields(self.spec, card, {"channels": "channel names", "times": "{start, step, count} in s"})
        channels, times = self.spec.fields["channels"], self.spec.fields["times"]
        if (not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels)
                or len(set(channels)) != len(channels)):
            raise ModelCardError(f"model card {card.path}: field 'space.channels' must be a list of distinct names")
        if (not isinstance(times, dict) or set(times) != {"start", "step", "count"}
                or not isinstance(times["count"], int) or times["count"] < 1 or not times["step"] > 0):
            raise ModelCardError(f"model card {card.path}: field 'space.times' must be {{start, step, count}} with "
                                 f"step > 0 and count >= 1; got {times!r}")
        montage = self.spec.fields.get("montage")
        if montage is not None and (not isinstance(montage, str) or not montage):
            raise ModelCardError(f"model card {card.path}: field 'space.montage' is {montage!r}; expected the name "
                                 "of a montage MNE ships (such as standard_1005)")
        repetitions = self.spec.fields.get("repetitions", 1)
        if not isinstance(repetitions, int) or isinstance(repetitions, bool) or repetitions < 1:
            raise ModelCardError(f"model card {card.path}: field 'space.repetitions' is {repetitions!r}; expected a "
                                 "positive integer")

    def n_outputs(self, card: Any, subject: int | str) -> int | None:
        return self.repetitions * len(self.channels) * self.times.size

    def _channel_indices(self, chosen: Any) -> np.ndarray:
        names = [chosen] if isinstance(chosen, str) else list(chosen) if isinstance(chosen, (list, tuple)) else None
        if not names:
            raise InvalidSelectionError(f"selection['channels'] = {chosen!r} is not valid: expected a list of one or "
                                        "more channel names")
        valid = self.channels
        for name in names:
            if not isinstance(name, str) or name not in valid:
                raise InvalidSelectionError(f"selection['channels'] holds {name!r}, which is not a channel of this "
                                            f"model.{close_matches(str(name), valid)} Valid channels: "
                                            f"{', '.join(valid)}")
        if len(set(names)) != len(names):
            raise InvalidSelectionError(f"selection['channels'] names a channel twice: {names}")
        return np.array([valid.index(n) for n in names], dtype=np.int64)

    def check_masks(self, selection: Mapping, card: Any, subject: int | str) -> None:
        if selection.get("channels") is not None:
            self._channel_indices(selection["channels"])
        if selection.get("timepoints") is not None:
            binary_mask("timepoints", selection["timepoints"], self.times.size, "the model's time points")

    def whole_layout(self, card: Any, subject: int, rng: np.random.Generator) -> tuple[dict, dict]:
        """Every sample: repetition-major, then channel, then time."""
        shape = (self.repetitions, len(self.channels), self.times.size)
        grid = np.unravel_index(np.arange(int(np.prod(shape))), shape)
        return {name: index.astype(np.int16) for name, index in zip(self.coordinate_names, grid)}, {}

    def mask_outputs(self, selection: Mapping, meta: Any) -> np.ndarray:
        shape = (self.repetitions, len(self.channels), self.times.size)
        lookup = output_lookup(meta.arrays, self.coordinate_names, shape)
        channels = (np.arange(shape[1]) if selection.get("channels") is None
                    else self._channel_indices(selection["channels"]))
        times = (np.arange(shape[2]) if selection.get("timepoints") is None
                 else binary_mask("timepoints", selection["timepoints"], shape[2], "the model's time points"))
        outputs = lookup[:, channels][:, :, times].reshape(-1)
        if (outputs < 0).any():
            raise InvalidSelectionError("the selection chooses sensor samples the model has no output for")
        return outputs

    def describe_masks(self, selection: Mapping, outputs: np.ndarray, meta: Any) -> dict:
        described = {}
        if selection.get("channels") is not None:
            described["channels"] = list(np.atleast_1d(selection["channels"]))
        if selection.get("timepoints") is not None:
            described["timepoints"] = f"{int(np.sum(selection['timepoints']))} of {self.times.size} time points"
        return described

    def check_layout(self, meta: Any, where: str) -> None:
        super().check_layout(meta, where)
        for name, size in zip(self.coordinate_names, (self.repetitions, len(self.channels), self.times.size)):
            values = meta.arrays[name]
            if values.size and (values.min() < 0 or values.max() >= size):
                raise ModelFormatError(f"{where}: {name!r} must lie in 0..{size - 1}, as the card's space says")

    def layout(self, meta: Any) -> dict[str, Any]:
        layout = {"ch_names": self.channels, "times": self.times, "repetitions": self.repetitions}
        if self.spec.fields.get("montage"):
            layout["montage"] = self.spec.fields["montage"]
        return layout

    def datatype(self, card: Any) -> str:
        """BIDS datatype folder of the outputs: the card's modality where BIDS has one (eeg, meg, ieeg)."""
        return card.modality if card.modality in ("eeg", "meg", "ieeg") else "eeg"

    @classmethod
    def berg_view(cls, meta: Any, accuracy: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """BERG's ``{"eeg": {...}, "encoding_models": {...}}`` for a subject.

        ``eeg``: ``ch_names`` and ``times`` (s). ``encoding_models``: ``correlation_single_repetitions``
        (repetitions, channels, times) from the per-output ``correlation``, every ``*_averaged_repetitions``
        accuracy as (channels, times), any other accuracy per repetition, and the stored image lists
        (``train_img_info``, ``test_img_info``). NaN where the model has no output. Read from the layout stored
        with the subject (``sensor_layout`` of its metadata).
        """
        stored = meta.info.get("sensor_layout")
        if not isinstance(stored, dict):
            raise KeyError("BERG's view needs the subject's stored 'sensor_layout' (channel names, times)")
        channels, times = list(stored["ch_names"]), np.asarray(stored["times"], dtype=np.float64)
        shape = (int(stored.get("repetitions", 1)), len(channels), times.size)
        index = tuple(np.asarray(meta.arrays[n], dtype=np.int64) for n in cls.coordinate_names)
        encoding_models: dict[str, Any] = {}
        for name, values in accuracy.items():
            grid = np.full(shape, np.nan)
            grid[index] = values
            if name.endswith("_averaged_repetitions"):
                encoding_models[name] = np.nanmean(grid, axis=0) if np.isfinite(grid).any() else grid[0]
            else:
                encoding_models["correlation_single_repetitions" if name == "correlation" else name] = grid
        encoding_models.update(meta.info.get("image_info") or {})
        return {"eeg": {"ch_names": channels, "times": times}, "encoding_models": encoding_models}

    @classmethod
    def plot(cls, values: np.ndarray, metadata: Mapping, title: str | None = None, latencies: Any = None):
        """A butterfly plot of every channel's repetition-averaged time course and topomaps at ``latencies`` (s;
        default the three highest peaks of the global field power after onset), with the card's montage. Returns a
        matplotlib Figure."""
        from .mne_export import butterfly_figure

        return butterfly_figure(values, metadata, title=title, latencies=latencies)

    @classmethod
    def arrange(cls, responses: np.ndarray, metadata: Mapping) -> np.ndarray:
        """(n_stimuli, repetitions, channels, times): the selected columns, which form that grid in that order."""
        coordinates = metadata.get("coordinates") or {}
        if "channel" not in coordinates:
            raise InvalidArgumentError("metadata describes no sensor outputs")
        grid = tuple(_grid_size(np.asarray(coordinates[n])) for n in cls.coordinate_names)
        if int(np.prod(grid)) != responses.shape[1]:
            raise InvalidArgumentError(f"the {responses.shape[1]} columns do not form a repetitions x channels x "
                                       f"times grid {grid}")
        return responses.reshape(responses.shape[0], *grid)
