"""berg's native on-disk model format: safetensors for arrays, JSON for metadata, NIfTI for masks.

A model lives in BERG's folder layout,
``<berg_dir>/encoding_models/modality-{modality}/train_dataset-{dataset}/model-{model}/``,
and the native files sit beside any legacy ones (``{tag}`` is ``sub-01`` … or ``group``):

``encoding_models_weights/berg_projection.safetensors`` (optional, shared by all subjects)
    ``weight.{node}`` (k, d_node) float32 for every backbone return node and ``bias`` (k,) float32:
    ``z = sum_node flatten(f_node) @ weight.{node}.T + bias`` (a scaler and PCA/SVD folded together).
``encoding_models_weights/berg_readout_{tag}.safetensors``
    ``weight`` (n_rows, n_in) and ``bias`` (n_rows,) float32: ``y = x @ weight.T + bias`` where ``x`` is
    ``z`` when a projection exists, else the concatenated flattened features. Optional
    ``whole_brain.weight`` (n_voxels, n_in) and ``whole_brain.bias`` give the whole-brain output when
    rows and voxels differ (several ROI models covering one voxel); without them rows are voxels.
``metadata/berg_metadata_{tag}.json``
    Scalars and small lists: ``format``, ``format_version``, ``model_id``, ``subject``, ``n_voxels``,
    ``n_rows``, ``volume_shape``, ``affine``, ``space``, ``rois`` (ordered names), ``accuracy`` (name ->
    units), ``post`` (an optional nonlinear stage after the readout), ``provenance``.
``metadata/berg_metadata_{tag}.safetensors``
    ``voxel_ijk`` (n_voxels, 3) int32 voxel coordinates in the volume; ``row_voxel`` (n_rows,) int64,
    the voxel of every readout row; ``roi.{name}`` (n,) int64 readout rows of each ROI, in output order;
    ``accuracy.{name}`` (n_voxels,) float32; any ``post.{name}`` arrays the post stage needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from .._io import atomic_path, write_json
from ..card_registries import FormatReader
from ..errors import MissingFilesError, ModelFormatError

FORMAT_NAME = "berg-native"
FORMAT_VERSION = 1
WEIGHTS_DIR = "encoding_models_weights"
METADATA_DIR = "metadata"


def subject_tag(subject: int | str) -> str:
    """File tag of a subject: ``1 -> "sub-01"``, ``"group" -> "group"``."""
    return subject if isinstance(subject, str) else f"sub-{int(subject):02d}"


def projection_path(model_dir: Path) -> Path:
    """Path of the shared projection file of a model directory."""
    return Path(model_dir) / WEIGHTS_DIR / "berg_projection.safetensors"


def readout_path(model_dir: Path, subject: int | str) -> Path:
    """Path of a subject's readout file."""
    return Path(model_dir) / WEIGHTS_DIR / f"berg_readout_{subject_tag(subject)}.safetensors"


def metadata_paths(model_dir: Path, subject: int | str) -> tuple[Path, Path]:
    """Paths of a subject's metadata JSON and metadata arrays."""
    stem = Path(model_dir) / METADATA_DIR / f"berg_metadata_{subject_tag(subject)}"
    return stem.with_suffix(".json"), stem.with_suffix(".safetensors")


def native_paths(model_dir: Path, subject: int | str, has_projection: bool) -> list[Path]:
    """Every native file a subject needs."""
    paths = [readout_path(model_dir, subject), *metadata_paths(model_dir, subject)]
    return ([projection_path(model_dir)] if has_projection else []) + paths


def native_complete(model_dir: str | Path, card: Any, subject: int | str) -> bool:
    """True when every native file the subject needs exists."""
    return all(p.is_file() for p in native_paths(Path(model_dir), subject, card.has_projection))


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write arrays to a safetensors file atomically (contiguous copies are made where needed)."""
    contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=dict(metadata) if metadata else None)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of a safetensors file."""
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own untyped errors
        raise ModelFormatError(f"cannot read model file {path}: {exc}") from exc


def load_tensors(path: str | os.PathLike) -> dict:
    """Read every array of a safetensors file as torch tensors, memory-mapped (no copy until first use)."""
    from safetensors.torch import load_file as load_torch

    try:
        return load_torch(str(path))
    except Exception as exc:  # safetensors raises its own untyped errors
        raise ModelFormatError(f"cannot read model file {path}: {exc}") from exc


@dataclass
class SubjectMetadata:
    """A subject's metadata: the JSON part (``info``) and the arrays part (``arrays``)."""

    info: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_voxels(self) -> int:
        return int(self.info["n_voxels"])

    @property
    def roi_names(self) -> list[str]:
        return list(self.info.get("rois", []))

    def roi_rows(self, name: str) -> np.ndarray:
        """Readout rows of one ROI, in output order."""
        return self.arrays[f"roi.{name}"]

    @property
    def voxel_ijk(self) -> np.ndarray:
        return self.arrays["voxel_ijk"]

    @property
    def row_voxel(self) -> np.ndarray:
        return self.arrays["row_voxel"]

    def accuracy(self) -> dict[str, np.ndarray]:
        """Accuracy arrays, one value per voxel."""
        return {k.split(".", 1)[1]: v for k, v in self.arrays.items() if k.startswith("accuracy.")}


def write_subject_metadata(model_dir: Path, subject: int | str, meta: SubjectMetadata) -> None:
    """Write a subject's metadata (arrays first, JSON last: the JSON marks the pair complete)."""
    info = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **meta.info}
    json_path, arrays_path = metadata_paths(model_dir, subject)
    save_arrays(arrays_path, meta.arrays)
    write_json(json_path, info)


def read_subject_metadata(model_dir: Path, subject: int | str) -> SubjectMetadata:
    """Read a subject's metadata and check its consistency."""
    json_path, arrays_path = metadata_paths(model_dir, subject)
    try:
        info = json.loads(Path(json_path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"cannot read model metadata {json_path}: {exc}") from exc
    if info.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{json_path}: 'format' is {info.get('format')!r}, expected {FORMAT_NAME!r}")
    arrays = load_arrays(arrays_path)
    for key in ("voxel_ijk", "row_voxel"):
        if key not in arrays:
            raise ModelFormatError(f"{arrays_path}: array {key!r} is missing")
    if arrays["voxel_ijk"].shape != (info["n_voxels"], 3):
        raise ModelFormatError(
            f"{arrays_path}: 'voxel_ijk' has shape {arrays['voxel_ijk'].shape}, expected ({info['n_voxels']}, 3)"
        )
    return SubjectMetadata(info=info, arrays=arrays)


def require_files(paths: list[Path], card: Any, subject) -> None:
    """Raise :class:`MissingFilesError` naming every path in ``paths`` that is not a file, and how to get it."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MissingFilesError(
            f"model {card.model_id!r} (subject {subject}) is missing {len(missing)} file(s): "
            + ", ".join(str(p) for p in missing)
            + f". Get them with `berg download {card.model_id} --subject {subject}`")


def _native_source_files(card: Any, subject: int) -> list[str]:
    """The native files of one subject, relative to the model folder (what an S3 source of the format holds)."""
    return [p.as_posix() for p in native_paths(Path(), subject, card.has_projection)]


READER = FormatReader(source_files=_native_source_files, make_native=lambda card, berg_dir, subject: None)
