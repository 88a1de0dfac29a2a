"""The generic encoder: backbone + readout + selection for any card, and streaming ``encode``."""

from __future__ import annotations

import concurrent.futures
import copy
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbones import FeatureExtractor, build_feature_extractor, resolve_device
from .berg_view import berg_metadata_view
from .cards import ModelCard
from .config import berg_version
from . import validation
from .errors import InvalidArgumentError
from .readout import DEFAULT_READOUT_MB, FeatureBuffer, Readout, readout_capacity
from .selection import Selection, resolve_selection
from .stimuli import Batch, as_stimulus_set
from .storage.native import (SubjectMetadata, load_arrays, load_tensors, native_paths, projection_path,
                             read_subject_metadata, readout_path, require_files)

DEFAULT_BATCH_SIZE = {"image": 32, "video": 2}
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EncodingModel:
    """One subject's encoder: feature extractor, readout and selection on one device.

    Built by :func:`berg.get_encoding_model`; use it with :func:`berg.encode`.

    Attributes
    ----------
    card : ModelCard
    subject : int or "group"
    device : torch.device
    extractor : FeatureExtractor
    readout : Readout
    metadata : dict
        Per output column: ``voxel_ijk`` (n_outputs, 3), ``roi_columns`` {roi: columns}, ``accuracy``
        {name: (n_outputs,)}; and ``model_id``, ``subject``, ``selection``, ``n_voxels``, ``volume_shape``,
        ``affine``, ``fill_value``, ``backbone``, ``units``, ``berg_version``.
    """

    def __init__(self, card: ModelCard, subject: int | str, extractor: FeatureExtractor, readout: Readout,
                 metadata: dict[str, Any], device: torch.device, precision: str = "float32"):
        self.card, self.subject, self.extractor, self.readout = card, subject, extractor, readout
        self.metadata, self.device = metadata, device
        self.autocast_dtype = PRECISIONS[precision]

    @property
    def n_outputs(self) -> int:
        """Number of output columns (voxels or vertices)."""
        return int(self.metadata["voxel_ijk"].shape[0])

    def __repr__(self) -> str:
        return (f"EncodingModel({self.card.model_id!r}, subject={self.subject!r}, n_outputs={self.n_outputs}, "
                f"device={str(self.device)!r}, backbone_weights={self.metadata['backbone']['weights']!r})")

    def _to_device(self, batch: Batch) -> Batch:
        if self.device.type == "cpu":
            return batch
        if isinstance(batch, list):
            return [b.pin_memory().to(self.device, non_blocking=True) for b in batch]
        return batch.pin_memory().to(self.device, non_blocking=True)

    def prepare_batch(self, batch: Batch) -> torch.Tensor:
        """Preprocess a loaded batch into the backbone's input, on the CPU when the model is, else on its device."""
        return self.extractor.prepare(self._to_device(batch))

    @property
    def _prepares_on_host(self) -> bool:
        return self.device.type == "cpu"

    def stage_batch(self, batch: Batch) -> Batch:
        """The part of the work a producer thread may do ahead: preprocessing on the CPU (nothing for GPUs)."""
        if not self._prepares_on_host:
            return batch
        with torch.inference_mode():
            return self.prepare_batch(batch)

    def prepare_stimuli(self, batch) -> Batch:
        """Validate one batch given in any accepted stimulus form and stage it (see :meth:`predict_prepared`)."""
        stimuli = as_stimulus_set(batch, self.card.stimulus_kind, self.card.stimulus.n_frames)
        return self.stage_batch(stimuli.load(0, stimuli.n))

    def predict_prepared(self, staged: Batch) -> np.ndarray:
        """Responses (B, n_outputs) float32 for a batch from :meth:`prepare_stimuli` or :meth:`stage_batch`."""
        return self.forward_batch(staged, prepared=self._prepares_on_host).float().cpu().numpy()

    @torch.inference_mode()
    def features_batch(self, batch: Batch, prepared: bool = False) -> dict[str, torch.Tensor]:
        """Backbone features ``{node: (B, ...)}`` on the model's device for one loaded (or prepared) batch."""
        x = batch if prepared else self.prepare_batch(batch)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            return self.extractor.extract(x, prepared=True)

    @torch.inference_mode()
    def forward_batch(self, batch: Batch, prepared: bool = False) -> torch.Tensor:
        """Responses (B, n_outputs) float32 on the model's device for one loaded (or prepared) batch."""
        return self.readout(self.features_batch(batch, prepared))  # the readout always runs in float32

    def predict_stream(self, staged: Iterable[Batch], readout_mb: float = DEFAULT_READOUT_MB) -> Iterator[np.ndarray]:
        """Responses for a stream of staged batches, the readout applied once per readout batch.

        Parameters
        ----------
        staged : iterable of batches from :meth:`stage_batch` or :meth:`prepare_stimuli`
        readout_mb : float
            Memory bound of a readout batch in MiB (features, intermediate and responses of the stimuli it holds;
            see :func:`berg.readout.readout_capacity`). It lives on the model's device.

        Yields
        ------
        responses : (n, n_outputs) float32 array
            For the next ``n`` stimuli of the stream, in order; blocks do not follow the staged batches' sizes.
        """
        buffer = FeatureBuffer(self.readout, readout_capacity(self.readout, readout_mb))
        for batch in staged:
            for block in buffer.push(self.features_batch(batch, prepared=self._prepares_on_host)):
                yield block.float().cpu().numpy()
        if (tail := buffer.flush()) is not None:
            yield tail.float().cpu().numpy()

    def predict_batch(self, batch) -> np.ndarray:
        """Responses (B, n_outputs) float32 for one batch given in any accepted stimulus form."""
        return self.predict_prepared(self.prepare_stimuli(batch))


def encode(model: EncodingModel, stimulus, return_metadata: bool = False, show_progress: bool = True,
           batch_size: int | None = None, out=None, readout_mb: float = DEFAULT_READOUT_MB):
    """In-silico responses of ``model`` to ``stimulus``.

    Parameters
    ----------
    model : EncodingModel
        From :func:`berg.get_encoding_model`.
    stimulus : array, tensor, list of PIL images, or path(s)
        Images (B, 3, H, W) / (B, H, W, 3) or clips (B, T, 3, H, W) / (B, T, H, W, 3): uint8, integers in 0..255
        or floats in [0, 1]; image or video file paths. See :func:`berg.stimuli.as_stimulus_set`.
    return_metadata : bool
        Also return a copy of the model's metadata: berg's per output column (voxel coordinates, ROI columns,
        accuracy …) and, for subject models, BERG's nested ``fmri`` / ``encoding_models`` view of the subject
        (see :mod:`berg.berg_view`).
    show_progress : bool
        Show a progress bar over stimuli (on by default, as in BERG).
    batch_size : int, optional
        Stimuli per forward pass (default 32 images or 2 clips).
    out : array-like, optional
        Where to write the responses, batch by batch: anything of shape (n_stimuli, n_outputs) that takes slice
        assignment (a numpy array or memmap, an ``h5py`` dataset), so memory does not grow with the number of
        stimuli. Default: a new float32 array.
    readout_mb : float
        Memory bound of a readout batch in MiB, on the model's device (default 256). Backbone features of
        successive batches are gathered until this bound and the readout is applied once to all of them: on a
        CPU the readout costs about the same for one stimulus as for many. Responses do not depend on it.

    Returns
    -------
    responses : (n_stimuli, n_outputs) float32 array, or ``out``
        In the model's units (``metadata["units"]``).
    metadata : dict, only with ``return_metadata=True``
    """
    if not isinstance(model, EncodingModel):
        raise InvalidArgumentError(f"model={type(model).__name__} is not valid: pass an EncodingModel from "
                                   "berg.get_encoding_model")
    kind = model.card.stimulus_kind
    batch_size = validation.integer("batch_size", batch_size, minimum=1, allow_none=True) or DEFAULT_BATCH_SIZE[kind]
    validation.flag("return_metadata", return_metadata)
    validation.flag("show_progress", show_progress)
    stimuli = as_stimulus_set(stimulus, kind, model.card.stimulus.n_frames)
    if out is None:
        responses = np.empty((stimuli.n, model.n_outputs), dtype=np.float32)
    elif tuple(getattr(out, "shape", ())) != (stimuli.n, model.n_outputs):
        raise InvalidArgumentError(f"out has shape {tuple(getattr(out, 'shape', ()))}; it must be "
                                   f"({stimuli.n}, {model.n_outputs}) for these stimuli and this model")
    else:
        responses = out
    readout_capacity(model.readout, readout_mb)  # a bad bound fails before any work

    # the next batch is decoded (and, on the CPU, preprocessed) in a background thread while one is computed
    def produce(start: int) -> Batch:
        return model.stage_batch(stimuli.load(start, min(start + batch_size, stimuli.n)))

    def staged(pool: concurrent.futures.Executor) -> Iterator[Batch]:
        pending = pool.submit(produce, 0)
        for start in range(0, stimuli.n, batch_size):
            batch = pending.result()
            if start + batch_size < stimuli.n:
                pending = pool.submit(produce, start + batch_size)
            yield batch
            bar.update(min(batch_size, stimuli.n - start))

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool, \
            tqdm(total=stimuli.n, disable=not show_progress, unit=kind) as bar:
        done = 0
        for block in model.predict_stream(staged(pool), readout_mb):
            responses[done:done + len(block)] = block
            done += len(block)
    return (responses, copy.deepcopy(model.metadata)) if return_metadata else responses


def _column_metadata(card: ModelCard, subject, meta: SubjectMetadata, sel: Selection) -> dict[str, Any]:
    roi_columns = {}
    for name in meta.roi_names:
        rows = meta.roi_rows(name)
        member = np.isin(sel.voxels, meta.row_voxel[rows]) if sel.whole_brain else np.isin(sel.rows, rows)
        cols = np.flatnonzero(member)
        if cols.size:
            roi_columns[name] = cols
    return {
        "model_id": card.model_id,
        "subject": subject,
        "selection": sel.description,
        "n_voxels": int(sel.voxels.size),
        "voxel_ijk": meta.voxel_ijk[sel.voxels],
        "voxel_index": sel.voxels,
        "volume_shape": tuple(meta.info["volume_shape"]),
        # a volume without a known affine (some legacy files) is placed with voxel indices as coordinates
        "affine": np.eye(4) if meta.info["affine"] is None else np.asarray(meta.info["affine"], dtype=np.float64),
        "space": meta.info.get("space", card.space.name),
        "fill_value": float("nan"),
        "roi_columns": roi_columns,
        "accuracy": {k: v[sel.voxels] for k, v in meta.accuracy().items()},
        "accuracy_units": meta.info.get("accuracy", {}),
        "units": card.units,
        "provenance": meta.info.get("provenance", {}),
        "berg_version": berg_version(),
        **berg_metadata_view(meta),
    }


def _subject_readout(card: ModelCard, model_dir: Path, arrays: Mapping[str, np.ndarray], sel: Selection,
                     node_dims: Mapping[str, int]) -> Readout:
    prefix = "whole_brain." if sel.whole_brain else ""
    weight = torch.from_numpy(arrays[prefix + "weight"][sel.rows])
    bias = torch.from_numpy(arrays[prefix + "bias"][sel.rows])
    projection = projection_bias = None
    if card.has_projection:
        shared = load_tensors(projection_path(model_dir))
        projection = {n: shared[f"weight.{n}"] for n in node_dims}
        projection_bias = shared["bias"]
    return Readout(weight, bias, node_dims, projection, projection_bias)


def node_dims(card: ModelCard) -> dict[str, int]:
    """Flattened feature size of every return node (the card's ``backbone.feature_sizes``)."""
    return card.backbone.feature_sizes


def _group_model(card: ModelCard, model_dir: Path, selection, sigma: float | None) -> tuple[Readout, dict[str, Any]]:
    """The group-level readout and its column metadata, from the builder the card's ``group.kind`` names."""
    from .card_registries import group_space_builder

    return group_space_builder(card.group.kind)(card, model_dir, selection, sigma)


def _subject_model(card: ModelCard, model_dir: Path, subject: int, selection) -> tuple[Readout, dict[str, Any]]:
    """A subject's readout for the selection and its column metadata."""
    require_files(native_paths(model_dir, subject, card.has_projection), card, subject)
    meta = read_subject_metadata(model_dir, subject)
    arrays = load_arrays(readout_path(model_dir, subject))
    sel = resolve_selection(selection, meta, has_whole_brain="whole_brain.bias" in arrays)
    readout = _subject_readout(card, model_dir, arrays, sel, node_dims(card))
    return readout, _column_metadata(card, subject, meta, sel)


def load_encoding_model(card: ModelCard, berg_dir: Path, subject, selection=None, device="auto",
                        backbone_weights="default", verify_hash: bool = True, sigma: float | None = None,
                        precision: str = "float32", channels_last: bool = False, compile: bool = False
                        ) -> EncodingModel:
    """Build an :class:`EncodingModel` from native files under ``berg_dir`` (see :func:`berg.get_encoding_model`)."""
    subject = card.check_subject(subject)
    device = resolve_device(device)
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision={precision!r} is not valid; valid: {', '.join(PRECISIONS)}")
    if sigma is not None and subject != "group":
        raise InvalidArgumentError(f"sigma={sigma!r} applies to subject='group' only (got subject={subject!r})")
    model_dir = Path(berg_dir) / card.folder
    if subject == "group":
        readout, metadata = _group_model(card, model_dir, selection, sigma)
    else:
        readout, metadata = _subject_model(card, model_dir, subject, selection)
    extractor = build_feature_extractor(card, backbone_weights, verify_hash, device)
    extractor.set_execution(channels_last=channels_last, compile=compile)
    metadata["backbone"] = {"architecture": card.backbone.architecture, **extractor.weights_identity,
                            "precision": precision, "channels_last": channels_last, "compiled": compile}
    return EncodingModel(card, subject, extractor, readout.to(device), metadata, device, precision)

