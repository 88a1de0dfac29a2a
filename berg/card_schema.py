"""The JSON schema of a model card (see :mod:`berg.cards`, which adds the cross-field rules)."""

from __future__ import annotations

from typing import Any

from .card_registries import ADAPTERS, FORMATS, GROUP_BUILDERS, SPACES

_INT_LIST = {"type": "array", "items": {"type": "integer"}}
_NUM_TRIPLE = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
#: readout kinds in which a shared scaler + PCA/SVD projection precedes the per-subject regression
PROJECTION_READOUTS = ("scaler-svd-linear", "scaler-pca-linear", "scaler-pca-ridge")
_PAIR = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2}

#: card space kinds of earlier cards, and the (space class, template) each one means
LEGACY_SPACE_KINDS = {"subject": ("volume", None), "MNI152": ("volume", "MNI152"), "fsaverage": ("surface", "fsaverage")}
_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.+-]*$"}
# a path inside the model folder: "/"-separated segments that do not start with a dot (no "..", no absolute path)
_SEGMENT = "[A-Za-z0-9_{}+-][A-Za-z0-9_.{}+-]*"
_RELATIVE_PATH = {"type": "string", "pattern": f"^{_SEGMENT}(/{_SEGMENT})*$"}

CARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model_id", "description", "modality", "train_dataset", "model", "stimulus", "backbone",
                 "preprocessing", "readout", "subjects", "space", "rois", "sources"],
    "properties": {
        "model_id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"},
        "description": {"type": "string"},
        "modality": {"enum": ["fmri", "eeg"]},
        "train_dataset": _NAME,
        "model": _NAME,
        "units": {"type": "string"},
        "stimulus": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind"],
            "properties": {
                "kind": {"enum": ["image", "video"]},
                "n_frames": {"type": "integer", "minimum": 1},
            },
        },
        "backbone": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "adapter": {"type": "string"},
                "options": {"type": "object"},
                "architecture": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
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
                "resize": {"oneOf": [{"type": "integer", "minimum": 1}, _PAIR]},
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
                "kind": {"enum": [*PROJECTION_READOUTS, "ridge", "linear", "adapter"]},  # adapter: built by it
                "n_components": {"type": "integer", "minimum": 1},
                "projection": {"enum": ["shared", "subject"]},
            },
        },
        "subjects": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
        "format": {"type": "string"},
        "group": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "template", "rois"],
            "properties": {
                "kind": {"type": "string"},
                "template": {"type": "string"},
                "rois": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "sigma_mm": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "n_voxels": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
        "space": {
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": {"type": "string"},
                "template": {"type": "string"},
                "volume_shape": {**_INT_LIST, "minItems": 3, "maxItems": 3},
            },
        },
        "rois": {"type": "array", "items": {"type": "string"}},
        "roi_aliases": {"type": "object", "additionalProperties": {"type": "string"}},
        "accuracy": {"type": "array", "items": {"type": "string"}},
        "legacy_files": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"shared": {"type": "array", "items": _RELATIVE_PATH},
                           "subject": {"type": "array", "items": _RELATIVE_PATH}},
        },
        "sources": {
            "type": "array",
            "minItems": 1,
            "items": {"oneOf": [
                {"type": "object", "additionalProperties": False, "required": ["kind", "bucket"],
                 "properties": {"kind": {"const": "s3"}, "bucket": {"type": "string"}, "region": {"type": "string"},
                                "prefix": {"type": "string"}, "unsigned": {"type": "boolean"},
                                "endpoint_url": {"type": "string"}}},
                {"type": "object", "additionalProperties": False,
                 "required": ["kind", "name", "version", "filename", "sha256"],
                 "properties": {"kind": {"const": "pypi-wheel"}, "name": {"type": "string"},
                                "version": {"type": "string"}, "filename": {"type": "string"},
                                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
                {"type": "object", "additionalProperties": False, "required": ["kind"],
                 "properties": {"kind": {"const": "local"}}},
            ]},
        },
        "references": {"type": "array", "items": {"type": "string"}},
    },
}


def registered_names() -> dict[str, list[str]]:
    """The names each registry holds now (formats and spaces may be registered after import)."""
    return {"format": sorted(FORMATS), "space.kind": sorted(SPACES) + sorted(LEGACY_SPACE_KINDS),
            "group.kind": sorted(GROUP_BUILDERS), "backbone.adapter": sorted(ADAPTERS)}
