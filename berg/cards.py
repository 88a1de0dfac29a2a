"""Model cards: one YAML file per model, validated against one schema when loaded."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import InvalidSubjectError, ModelCardError

_INT_LIST = {"type": "array", "items": {"type": "integer"}}
_NUM_TRIPLE = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
_PAIR = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2}

CARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model_id", "description", "modality", "train_dataset", "model", "stimulus", "backbone",
                 "preprocessing", "readout", "subjects", "space", "rois", "sources"],
    "properties": {
        "model_id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
        "description": {"type": "string"},
        "modality": {"enum": ["fmri", "eeg"]},
        "train_dataset": {"type": "string"},
        "model": {"type": "string"},
        "units": {"type": "string"},
        "stimulus": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind"],
            "properties": {
                "kind": {"enum": ["image", "video"]},
                "n_frames": {"type": "integer", "minimum": 1},
                "frame_sampling": {"enum": ["linspace"]},
                "recommended_duration_s": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "backbone": {
            "type": "object",
            "additionalProperties": False,
            "required": ["architecture", "weights", "return_nodes"],
            "properties": {
                "architecture": {"enum": ["resnet18", "s3d"]},
                "weights": {"type": "string"},
                "return_nodes": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "feature_shapes": {"type": "object", "additionalProperties": _INT_LIST},
            },
        },
        "preprocessing": {
            "type": "object",
            "additionalProperties": False,
            "required": ["resize", "mean", "std"],
            "properties": {
                "resize": _PAIR,
                "crop": {"oneOf": [{"type": "null"}, _PAIR]},
                "mean": _NUM_TRIPLE,
                "std": _NUM_TRIPLE,
                "antialias": {"type": "boolean"},
                "resize_backend": {"enum": ["tensor", "pil"]},
            },
        },
        "readout": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind"],
            "properties": {
                "kind": {"enum": ["scaler-svd-linear", "scaler-pca-ridge", "ridge", "linear"]},
                "n_components": {"type": "integer", "minimum": 1},
            },
        },
        "subjects": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
        "group": {"type": "boolean"},
        "n_voxels": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
        "space": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind"],
            "properties": {
                "kind": {"enum": ["subject", "fsaverage", "MNI152"]},
                "volume_shape": _INT_LIST,
                "template": {"type": "string"},
            },
        },
        "rois": {"type": "array", "items": {"type": "string"}},
        "accuracy": {"type": "array", "items": {"type": "string"}},
        "legacy_files": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"shared": {"type": "array", "items": {"type": "string"}},
                           "subject": {"type": "array", "items": {"type": "string"}}},
        },
        "sources": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["kind"],
                "properties": {"kind": {"enum": ["s3", "pypi-wheel", "local"]}},
            },
        },
        "references": {"type": "array", "items": {"type": "string"}},
    },
}


@dataclass(frozen=True)
class ModelCard:
    """A validated model card.

    Attributes
    ----------
    data : dict
        The card's content, as in its YAML file.
    path : str
        Where the card was read from (for error messages).
    """

    data: dict[str, Any]
    path: str

    @property
    def model_id(self) -> str:
        return self.data["model_id"]

    @property
    def stimulus_kind(self) -> str:
        return self.data["stimulus"]["kind"]

    @property
    def subjects(self) -> list[int]:
        return list(self.data["subjects"])

    @property
    def has_group(self) -> bool:
        return bool(self.data.get("group", False))

    @property
    def has_projection(self) -> bool:
        """True when a shared scaler + PCA/SVD projection precedes the per-subject regression."""
        return "n_components" in self.data["readout"]

    @property
    def folder(self) -> Path:
        """The model's folder, relative to berg_dir, in BERG's layout."""
        d = self.data
        return Path("encoding_models", f"modality-{d['modality']}", f"train_dataset-{d['train_dataset']}",
                    f"model-{d['model']}")

    def check_subject(self, subject: int | str) -> int | str:
        """Return ``subject`` normalised (int or ``"group"``), or raise :class:`InvalidSubjectError`."""
        valid = self.subjects + (["group"] if self.has_group else [])
        if isinstance(subject, str) and subject.strip().lower() == "group" and self.has_group:
            return "group"
        if hasattr(subject, "__index__") and not isinstance(subject, (bool, str)) and int(subject) in self.subjects:
            return int(subject)
        raise InvalidSubjectError(
            f"subject={subject!r} is not valid for model {self.model_id!r}: valid subjects are "
            f"{', '.join(map(str, valid))}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the card's content."""
        return copy.deepcopy(self.data)


def validate_card(data: Any, path: str) -> ModelCard:
    """Validate card content against :data:`CARD_SCHEMA` and cross-field rules.

    Raises
    ------
    ModelCardError
        Naming the file and the field that is wrong.
    """
    errors = sorted(jsonschema.Draft202012Validator(CARD_SCHEMA).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        field = ".".join(str(p) for p in err.path) or "(top level)"
        raise ModelCardError(f"model card {path}: field {field!r}: {err.message}")
    stim = data["stimulus"]
    if stim["kind"] == "video" and "n_frames" not in stim:
        raise ModelCardError(f"model card {path}: field 'stimulus.n_frames' is required for video models")
    shapes = data["backbone"].get("feature_shapes", {})
    unknown = set(shapes) - set(data["backbone"]["return_nodes"])
    if unknown:
        raise ModelCardError(f"model card {path}: field 'backbone.feature_shapes' names nodes that are not "
                             f"return nodes: {sorted(unknown)}")
    counts = data.get("n_voxels", {})
    extra = set(counts) - set(data["subjects"])
    if extra:
        raise ModelCardError(f"model card {path}: field 'n_voxels' names subjects not in 'subjects': {sorted(extra)}")
    return ModelCard(data=data, path=path)


def _parse_card(text: str, path: str) -> ModelCard:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelCardError(f"model card {path}: cannot be read as YAML: {exc}") from exc
    return validate_card(data, path)


def load_card(path: str | Path) -> ModelCard:
    """Read and validate one YAML model card."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ModelCardError(f"model card {path}: cannot be read: {exc}") from exc
    return _parse_card(text, str(path))


def packaged_cards() -> list[ModelCard]:
    """The cards that ship with berg (the ``berg.model_cards`` package), sorted by model id.

    Read through :mod:`importlib.resources`, so they are found in a wheel, a zip or an editable install alike.
    """
    folder = resources.files("berg.model_cards")
    cards = [_parse_card(entry.read_text(), f"berg/model_cards/{entry.name}")
             for entry in folder.iterdir() if entry.name.endswith(".yaml")]
    return sorted(cards, key=lambda c: c.model_id)
