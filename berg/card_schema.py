"""The JSON schema of a model card (see :mod:`berg.cards`, which adds the cross-field rules)."""

from __future__ import annotations

from typing import Any

from .card_registries import FORMAT_READERS, GROUP_SPACES

_INT_LIST = {"type": "array", "items": {"type": "integer"}}
_NUM_TRIPLE = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
#: readout kinds in which a shared scaler + PCA/SVD projection precedes the per-subject regression
PROJECTION_READOUTS = ("scaler-svd-linear", "scaler-pca-ridge")
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
            },
        },
        "backbone": {
            "type": "object",
            "additionalProperties": False,
            "required": ["architecture", "weights", "return_nodes"],
            "properties": {
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
        "format": {"enum": sorted(FORMAT_READERS)},
        "group": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "template", "rois"],
            "properties": {
                "kind": {"enum": sorted(GROUP_SPACES)},
                "template": {"type": "string"},
                "rois": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "sigma_mm": {"type": "number", "exclusiveMinimum": 0},
            },
        },
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
