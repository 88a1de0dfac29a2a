"""berg's native on-disk model format: safetensors for arrays, JSON for metadata, NIfTI for masks.

A model lives in BERG's folder layout,
``<berg_dir>/encoding_models/modality-{modality}/train_dataset-{dataset}/model-{model}/``,
and the native files sit beside any legacy ones (``{tag}`` is ``sub-01`` … or ``group``):

``encoding_models_weights/berg_projection.safetensors`` (shared by all subjects), or
``berg_projection_{tag}.safetensors`` (one per subject, when the card's ``readout.projection`` is ``subject``)
    ``weight.{node}`` (k, d_node) float32 for every backbone return node and ``bias`` (k,) float32:
    ``z = sum_node flatten(f_node) @ weight.{node}.T + bias`` (a scaler and PCA/SVD folded together).
``encoding_models_weights/berg_readout_{tag}.safetensors``
    ``weight`` (n_rows, n_in) and ``bias`` (n_rows,) float32: ``y = x @ weight.T + bias`` where ``x`` is
    ``z`` when a projection exists, else the concatenated flattened features. Optional
    ``whole_brain.weight`` (n_outputs, n_in) and ``whole_brain.bias`` give the whole-brain output when
    rows and outputs differ (several ROI models covering one voxel); without them rows are outputs.
``metadata/berg_metadata_{tag}.json``
    Scalars and small lists: ``format``, ``format_version``, ``model_id``, ``subject``, ``n_voxels`` (the number
    of outputs, whatever the space), ``n_rows``, ``space``, ``rois`` (ordered names), ``accuracy`` (name ->
    units), ``post`` (an optional nonlinear stage after the readout), ``provenance``, and what the space needs
    (a volume: ``volume_shape``, ``affine``).
``metadata/berg_metadata_{tag}.safetensors``
    The space's coordinates of every output (a volume: ``voxel_ijk`` (n_outputs, 3) int32; a surface:
    ``hemisphere`` and ``vertex``; sensors: ``repetition``, ``channel``, ``time``); ``row_voxel`` (n_rows,)
    int64, the output of every readout row; ``roi.{name}`` (n,) int64 readout rows of each ROI, in output order;
    ``accuracy.{name}`` (n_outputs,) float32, or ``row_accuracy.{name}`` (n_rows,) float32 where each readout row
    has its own score (several ROI networks covering one voxel); ``descriptor.{name}`` arrays the dataset gives
    (such as a noise-ceiling SNR per output); any ``post.{name}`` arrays the post stage needs.
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
from ..errors import ModelFormatError
from .formats import ModelFormat, ReadoutArrays

FORMAT_NAME = "berg-native"
FORMAT_VERSION = 1
WEIGHTS_DIR = "encoding_models_weights"
METADATA_DIR = "metadata"


def subject_tag(subject: int | str) -> str:
    """File tag of a subject: ``1 -> "sub-01"``, ``"group" -> "group"``."""
    return subject if isinstance(subject, str) else f"sub-{int(subject):02d}"


def projection_path(model_dir: Path, subject: int | None = None) -> Path:
    """Path of a model folder's projection: the shared one, or ``subject``'s own."""
    name = "berg_projection" + ("" if subject is None else f"_{subject_tag(subject)}")
    return Path(model_dir) / WEIGHTS_DIR / f"{name}.safetensors"


def readout_path(model_dir: Path, subject: int | str) -> Path:
    """Path of a subject's readout file."""
    return Path(model_dir) / WEIGHTS_DIR / f"berg_readout_{subject_tag(subject)}.safetensors"


def metadata_paths(model_dir: Path, subject: int | str) -> tuple[Path, Path]:
    """Paths of a subject's metadata JSON and metadata arrays."""
    stem = Path(model_dir) / METADATA_DIR / f"berg_metadata_{subject_tag(subject)}"
    return stem.with_suffix(".json"), stem.with_suffix(".safetensors")


def card_projection_path(card: Any, model_dir: Path, subject: int) -> Path | None:
    """The projection file a card's subject reads (None when its readout has no projection)."""
    if not card.has_projection:
        return None
    return projection_path(model_dir, subject if card.readout.projection == "subject" else None)


def native_paths(model_dir: Path, subject: int, card: Any) -> list[Path]:
    """Every native file a subject of ``card`` needs."""
    projection = card_projection_path(card, model_dir, subject)
    return ([] if projection is None else [projection]) + [readout_path(model_dir, subject),
                                                           *metadata_paths(model_dir, subject)]


def native_complete(model_dir: str | os.PathLike, card: Any, subject: int) -> bool:
    """True when every native file the subject needs exists."""
    return all(p.is_file() for p in native_paths(Path(model_dir), subject, card))


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
    def n_outputs(self) -> int:
        """Number of whole-brain outputs (voxels, vertices, sensor samples)."""
        return int(self.info["n_voxels"])

    n_voxels = n_outputs

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
        """The whole-brain output of every readout row."""
        return self.arrays["row_voxel"]

    def accuracy(self) -> dict[str, np.ndarray]:
        """Accuracy arrays, one value per output."""
        return self._prefixed("accuracy.")

    def row_accuracy(self) -> dict[str, np.ndarray]:
        """Accuracy arrays, one value per readout row (models whose rows are not their outputs: one network per
        ROI, each scored on its own voxels); empty for the others."""
        return self._prefixed("row_accuracy.")

    def descriptors(self) -> dict[str, np.ndarray]:
        """The dataset's own arrays (``descriptor.{name}``), as stored."""
        return self._prefixed("descriptor.")

    def _prefixed(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}


def write_subject_metadata(model_dir: Path, subject: int | str, meta: SubjectMetadata) -> None:
    """Write a subject's metadata (arrays first, JSON last: the JSON marks the pair complete)."""
    info = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **meta.info}
    json_path, arrays_path = metadata_paths(model_dir, subject)
    save_arrays(arrays_path, meta.arrays)
    write_json(json_path, info)


def _integer_count(info: dict, key: str, where: Path) -> int:
    value = info.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ModelFormatError(f"{where}: {key!r} is {value!r}; expected a non-negative integer")
    return value


def read_subject_metadata(model_dir: Path, subject: int | str) -> SubjectMetadata:
    """Read a subject's metadata and check what every space relies on (counts, readout rows, ROI rows)."""
    json_path, arrays_path = metadata_paths(model_dir, subject)
    try:
        info = json.loads(Path(json_path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"cannot read model metadata {json_path}: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise ModelFormatError(f"{json_path}: 'format' is {found!r}, expected {FORMAT_NAME!r}")
    n_outputs = _integer_count(info, "n_voxels", json_path)
    arrays = load_arrays(arrays_path)
    rows = arrays.get("row_voxel")
    if rows is None:
        raise ModelFormatError(f"{arrays_path}: array 'row_voxel' is missing")
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= n_outputs)):
        raise ModelFormatError(f"{arrays_path}: 'row_voxel' must map each readout row to an output in "
                               f"0..{n_outputs - 1}")
    for name, values in arrays.items():
        if name.startswith("row_accuracy.") and values.shape != rows.shape:
            raise ModelFormatError(f"{arrays_path}: {name!r} has shape {values.shape}; expected one value per "
                                   f"readout row {rows.shape}")
    for name in info.get("rois", []):
        roi = arrays.get(f"roi.{name}")
        if roi is None or roi.ndim != 1 or (roi.size and (roi.min() < 0 or roi.max() >= rows.size)):
            raise ModelFormatError(f"{arrays_path}: ROI {name!r} must hold readout rows in 0..{rows.size - 1} "
                                   f"({'missing' if roi is None else f'found {roi.shape}'})")
    return SubjectMetadata(info=info, arrays=arrays)


def read_readout(model_dir: Path, subject: int, rows: np.ndarray, whole_brain: bool, n_in: int,
                 n_rows: int) -> tuple[Any, Any]:
    """The chosen rows of a subject's readout file as float32 torch tensors ``(weight, bias)``, checked against the
    ``n_in`` inputs and ``n_rows`` rows the model expects."""
    import torch

    path = readout_path(model_dir, subject)
    arrays = load_arrays(path)
    prefix = "whole_brain." if whole_brain else ""
    weight, bias = arrays.get(prefix + "weight"), arrays.get(prefix + "bias")
    if weight is None or bias is None:
        raise ModelFormatError(f"{path}: arrays {prefix}weight and {prefix}bias are required; found {sorted(arrays)}")
    if weight.ndim != 2 or weight.shape != (n_rows, n_in) or bias.shape != (n_rows,):
        raise ModelFormatError(f"{path}: {prefix}weight {weight.shape} and {prefix}bias {bias.shape} do not match "
                               f"({n_rows}, {n_in}) and ({n_rows},)")
    weight, bias = weight[rows], bias[rows]
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise ModelFormatError(f"{path}: {prefix}weight or {prefix}bias holds NaN or infinite values")
    return torch.from_numpy(weight), torch.from_numpy(bias)


def read_projection(path: Path, nodes: Mapping[str, int], n_components: int | None = None) -> tuple[dict, Any]:
    """A projection file's per-node blocks ``{node: (k, d_node)}`` and bias ``(k,)`` as torch tensors, memory-mapped,
    checked against the card's feature sizes."""
    shared = load_tensors(path)
    bias = shared.get("bias")
    if bias is None or bias.ndim != 1:
        raise ModelFormatError(f"{path}: array 'bias' (k,) is missing")
    blocks = {}
    for node, dim in nodes.items():
        block = shared.get(f"weight.{node}")
        if block is None or tuple(block.shape) != (bias.shape[0], dim):
            raise ModelFormatError(f"{path}: 'weight.{node}' must be ({bias.shape[0]}, {dim}); found "
                                   f"{None if block is None else tuple(block.shape)}")
        blocks[node] = block
    return blocks, bias


class NativeFormat(ModelFormat):
    """berg's own files (see the module docstring), as ``berg train`` writes them and an S3 source may hold them."""

    name = "native"

    def source_files(self, card: Any, subject: int) -> list[str]:
        if card.source("s3") is None:
            return []
        return [p.as_posix() for p in native_paths(Path(), subject, card)]

    def needed_files(self, card: Any, model_dir: Path, subject: int | str) -> list[Path]:
        subjects = card.subjects if subject == "group" else [subject]
        return [p for s in subjects for p in native_paths(model_dir, s, card)]

    def subject_metadata(self, card: Any, model_dir: Path, subject: int) -> SubjectMetadata:
        meta = read_subject_metadata(model_dir, subject)
        card.space.space.check_layout(meta, str(metadata_paths(model_dir, subject)[1]))
        return meta

    def has_whole_brain(self, card: Any, model_dir: Path, subject: int) -> bool:
        from safetensors import safe_open

        path = readout_path(model_dir, subject)
        try:
            with safe_open(str(path), framework="numpy") as handle:
                return "whole_brain.bias" in handle.keys()
        except Exception as exc:  # safetensors raises its own untyped errors
            raise ModelFormatError(f"cannot read model file {path}: {exc}") from exc

    def readout_arrays(self, card: Any, model_dir: Path, subject: int, meta: SubjectMetadata, rows: np.ndarray,
                       whole_brain: bool) -> ReadoutArrays:
        n_rows = meta.n_outputs if whole_brain else int(meta.row_voxel.size)
        sizes = card.backbone.feature_sizes
        projection = card_projection_path(card, model_dir, subject)
        blocks = bias = None
        if projection is not None:
            blocks, bias = read_projection(projection, sizes)
        n_in = sum(sizes.values()) if bias is None else int(bias.shape[0])
        weight, row_bias = read_readout(model_dir, subject, rows, whole_brain, n_in, n_rows)
        return ReadoutArrays(weight, row_bias, blocks, bias)
