"""The generic encoder: backbone + readout + selection for any card, and streaming ``encode``."""

from __future__ import annotations

import concurrent.futures
import functools
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbones import FeatureExtractor, build_feature_extractor, check_feature_shapes, resolve_device
from .cards import ModelCard
from . import validation
from .errors import InvalidArgumentError
from .metadata import ModelMetadata, column_fields
from .readout import DEFAULT_READOUT_MB, FeatureBuffer, Readout, readout_capacity
from .selection import Selection, resolve_selection
from .spaces import space_of
from .stimuli import Batch, as_stimulus_set
from .storage.formats import ReadoutArrays
from .storage.manifest import files_identity

DEFAULT_BATCH_SIZE = {"image": 32, "video": 2}
AUTOCAST_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}  # config.PRECISIONS


class EncodingModel(torch.nn.Module):
    """One subject's encoder: feature extractor and readout (submodules), and the metadata of its columns.

    Built by :func:`berg.get_encoding_model`; use it with :func:`berg.encode`, or call :meth:`predict` on a batch.
    ``.to(device)`` moves the backbone and the readout; the model then prepares and predicts on that device.

    Attributes
    ----------
    card : ModelCard
    subject : int or "group"
    extractor : FeatureExtractor
    readout : Readout
    """

    def __init__(self, card: ModelCard, subject: int | str, extractor: FeatureExtractor, readout: Readout,
                 metadata: ModelMetadata, precision: str = "float32"):
        super().__init__()
        self.card, self.subject = card, subject
        self.extractor, self.readout = extractor, readout
        self._metadata = metadata
        self.autocast_dtype = AUTOCAST_DTYPES[precision]
        self.eval()

    @property
    def device(self) -> torch.device:
        """Where the readout (and the backbone) live."""
        return self.readout.bias.device

    @property
    def metadata(self) -> ModelMetadata:
        """A copy of the :class:`~berg.metadata.ModelMetadata` of the output columns."""
        return self._metadata.copy()

    @property
    def n_outputs(self) -> int:
        """Number of output columns (voxels, vertices or sensor samples)."""
        return self._metadata.n_outputs

    @property
    def stimulus_kind(self) -> str:
        """``"image"`` or ``"video"``."""
        return self.card.stimulus_kind

    @property
    def n_frames(self) -> int | None:
        """Frames per clip for video models, else None."""
        return self.card.stimulus.n_frames

    def __repr__(self) -> str:
        return (f"EncodingModel({self.card.model_id!r}, subject={self.subject!r}, n_outputs={self.n_outputs}, "
                f"device={str(self.device)!r}, backbone_weights={self._metadata.backbone['weights']!r})")

    def forward(self, prepared: torch.Tensor) -> torch.Tensor:
        """Responses (B, n_outputs) float32 on the model's device for preprocessed inputs on that device.

        ``prepared`` is the backbone's input, (B, 3, h, w) or (B, 3, T, h, w) float32, as
        :meth:`FeatureExtractor.prepare` makes it. The backbone runs in the model's precision, the readout in
        float32.
        """
        return self.readout(self._features(prepared))

    def _features(self, prepared: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            return self.extractor.extract(prepared, prepared=True)

    def _stage_loaded(self, batch: Batch) -> Batch:
        """Preprocess a loaded batch when the model is on the CPU (a producer thread does it ahead)."""
        if self.device.type != "cpu":
            return batch
        with torch.inference_mode():
            return self.extractor.prepare(batch)

    def _prepared(self, staged: Batch) -> torch.Tensor:
        if self.device.type == "cpu":
            return staged
        if isinstance(staged, list):
            return self.extractor.prepare([b.pin_memory().to(self.device, non_blocking=True) for b in staged])
        return self.extractor.prepare(staged.pin_memory().to(self.device, non_blocking=True))

    def stage(self, batch) -> Batch:
        """Validate and load one batch in any accepted stimulus form, ready for :meth:`predict_staged`.

        On the CPU this includes preprocessing; on a GPU that happens on the device. Safe to run in a thread
        ahead of :meth:`predict_staged` (what :func:`berg.encode` and :func:`berg.predict_movie` do).
        """
        stimuli = as_stimulus_set(batch, self.stimulus_kind, self.n_frames)
        return self._stage_loaded(stimuli.load(0, stimuli.n))

    def predict_staged(self, staged: Iterable[Batch], *, readout_mb: float = DEFAULT_READOUT_MB,
                       flush_after_s: float | None = None) -> Iterator[np.ndarray]:
        """Responses for a stream of staged batches, the readout applied once per readout batch.

        Parameters
        ----------
        staged : iterable of batches from :meth:`stage`
        readout_mb : float
            Memory bound of a readout batch in MiB (features, intermediate and responses of the stimuli it holds;
            see :func:`berg.readout.readout_capacity`). It lives on the model's device.
        flush_after_s : float, optional
            Also apply the readout once the oldest stimulus held has waited this long (s), so that a long stream
            yields (and a film commits) its responses every so often; None: only when the batch is full.

        Yields
        ------
        responses : (n, n_outputs) float32 array
            For the next ``n`` stimuli of the stream, in order; blocks do not follow the staged batches' sizes.
        """
        check_feature_shapes(self.card)  # before a readout batch is sized by them
        buffer = FeatureBuffer(self.readout, readout_capacity(self.readout, readout_mb))
        waiting_since = None
        for batch in staged:
            yield from self._answer(buffer, batch)
            if buffer.n == 0:
                waiting_since = None
                continue
            waiting_since = time.monotonic() if waiting_since is None else waiting_since
            if flush_after_s is not None and time.monotonic() - waiting_since >= flush_after_s:
                yield from self._answer(buffer, None)
                waiting_since = None
        yield from self._answer(buffer, None)

    @torch.inference_mode()
    def _answer(self, buffer: FeatureBuffer, staged: Batch | None) -> list[np.ndarray]:
        """Response blocks the buffer completes with one more staged batch (its remainder when ``staged`` is None)."""
        if staged is None:
            blocks = [] if (tail := buffer.flush()) is None else [tail]
        else:
            blocks = list(buffer.push(self._features(self._prepared(staged))))
        return [self._host(block) for block in blocks]

    def _host(self, block: torch.Tensor) -> np.ndarray:
        """A readout block as float32 numpy on the host."""
        return block.float().cpu().numpy()

    def output_members(self) -> dict[Any, tuple[int, ModelMetadata]]:
        """``{key: (n_outputs, metadata)}`` of the models this one answers for: ``{None: ...}`` for itself alone."""
        return {None: (self.n_outputs, self.metadata)}

    def predict(self, batch, *, readout_mb: float = DEFAULT_READOUT_MB) -> np.ndarray:
        """Responses (B, n_outputs) float32 for one batch given in any accepted stimulus form (see :func:`encode`)."""
        blocks = list(self.predict_staged([self.stage(batch)], readout_mb=readout_mb))
        return np.concatenate(blocks) if len(blocks) != 1 else blocks[0]


def encode(model: EncodingModel, stimulus, *, return_metadata: bool = False, show_progress: bool = True,
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
        Also return a copy of the model's :class:`~berg.metadata.ModelMetadata`: what each output column is
        (voxel coordinates, ROI columns, accuracy …) and, for subject models, BERG's nested ``fmri`` /
        ``encoding_models`` view of the subject (see :mod:`berg.berg_view`).
    show_progress : bool
        Show a progress bar over stimuli (on by default, as in BERG).
    batch_size : int, optional
        Stimuli per forward pass (default 32 images or 2 clips).
    out : array-like, or dict of them for several models, optional
        Where to write the responses, batch by batch: anything of shape (n_stimuli, n_outputs) that takes slice
        assignment (a numpy array or memmap, an ``h5py`` dataset), so memory does not grow with the number of
        stimuli; for a model of several subjects (:class:`~berg.shared_backbone.SharedBackboneModel`), one per
        subject, ``{subject: array}``. Default: new float32 arrays.
    readout_mb : float
        Memory bound of a readout batch in MiB, on the model's device (default 256). Backbone features of
        successive batches are gathered until this bound and the readout is applied once to all of them: on a
        CPU the readout costs about the same for one stimulus as for many. Responses do not depend on it.

    Returns
    -------
    responses : array, tuple of arrays, or ``out``
        In the model's units (``metadata["units"]``), as the model's space hands them back: (n_stimuli, n_outputs)
        float32 for volumes; BERG's ``(lh, rh)`` tuple of (n_stimuli, n_selected) arrays for surfaces;
        (n_stimuli, repetitions, channels, times) for sensors. ``out``, when given, holds the (n_stimuli,
        n_outputs) columns in the metadata's column order.
    metadata : ModelMetadata, only with ``return_metadata=True``

    A model of several subjects gives ``{subject: responses}`` (and ``{subject: metadata}``), from one backbone
    pass; each subject's responses are those its own model gives.
    """
    if not isinstance(model, EncodingModel):
        raise InvalidArgumentError(f"model={type(model).__name__} is not valid: pass an EncodingModel from "
                                   "berg.get_encoding_model")
    kind = model.stimulus_kind
    batch_size = validation.integer("batch_size", batch_size, minimum=1, allow_none=True) or DEFAULT_BATCH_SIZE[kind]
    validation.flag("return_metadata", return_metadata)
    validation.flag("show_progress", show_progress)
    stimuli = as_stimulus_set(stimulus, kind, model.n_frames)
    members = model.output_members()
    targets = _targets(out, {key: size for key, (size, _) in members.items()}, stimuli.n)
    readout_capacity(model.readout, readout_mb)  # a bad bound fails before any work

    # the next batch is decoded (and, on the CPU, preprocessed) in a background thread while one is computed
    def produce(start: int) -> Batch:
        return model._stage_loaded(stimuli.load(start, min(start + batch_size, stimuli.n)))

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
        for block in model.predict_staged(staged(pool), readout_mb=readout_mb):
            parts = block if isinstance(block, dict) else {None: block}
            for key, part in parts.items():
                targets[key][done:done + len(part)] = part
            done += len(next(iter(parts.values())))
    responses = {key: targets[key] if out is not None else space_of(meta).arrange(targets[key], meta)
                 for key, (_, meta) in members.items()}
    metadata = {key: meta for key, (_, meta) in members.items()}
    if list(members) == [None]:
        responses, metadata = responses[None], metadata[None]
    return (responses, metadata) if return_metadata else responses


def _targets(out, sizes: Mapping[Any, int], n: int) -> dict[Any, Any]:
    """Where each model's (n, n_outputs) responses go: ``out`` checked (one array, or one per key of ``sizes``), or
    new float32 arrays."""
    if out is None:
        return {key: np.empty((n, size), dtype=np.float32) for key, size in sizes.items()}
    given = {None: out} if list(sizes) == [None] else out
    if not isinstance(given, Mapping) or set(given) != set(sizes):
        raise InvalidArgumentError(f"out={type(out).__name__} is not valid for a model of several subjects: give a "
                                   f"dict with one array per subject, keys {sorted(sizes, key=str)}")
    for key, size in sizes.items():
        shape = tuple(getattr(given[key], "shape", ()))
        if shape != (n, size):
            where = "out" if key is None else f"out[{key!r}]"
            raise InvalidArgumentError(f"{where} has shape {shape}; it must be ({n}, {size}) for these stimuli and "
                                       "this model")
    return dict(given)


def _readout(arrays: ReadoutArrays, node_dims: Mapping[str, int], post=None) -> Readout:
    return Readout(arrays.weight, arrays.bias, node_dims, arrays.projection, arrays.projection_bias, post=post)


def _group_model(card: ModelCard, model_format, model_dir: Path, selection, sigma_mm: float | None
                 ) -> tuple[Readout, dict[str, Any]]:
    """The group-level readout and its column fields, from the builder the card's ``group.kind`` names."""
    from .card_registries import group_builder
    from .group_readout import group_zscore

    group, columns = group_builder(card.group.kind)(card, model_format, model_dir, selection, sigma_mm)
    readout = Readout(torch.from_numpy(group.weight), torch.from_numpy(group.bias), card.backbone.feature_sizes,
                      post=functools.partial(group_zscore, segments=group.segments))
    return readout, columns


def subject_columns(card: ModelCard, model_format, model_dir: Path, subject: int, selection
                    ) -> tuple[Any, Selection, dict[str, Any]]:
    """A subject's stored metadata, the selection resolved against it, and the contract's column fields."""
    meta = model_format.subject_metadata(card, model_dir, subject)
    sel = resolve_selection(selection, meta, model_format.has_whole_brain(card, model_dir, subject),
                            card.space.space, card.roi_aliases)
    return meta, sel, column_fields(card, subject, meta, sel)


def _subject_model(card: ModelCard, model_format, model_dir: Path, subject: int, selection
                   ) -> tuple[Readout, dict[str, Any]]:
    """A subject's readout for the selection and its column fields."""
    model_format.require(card, model_dir, subject)
    meta, sel, columns = subject_columns(card, model_format, model_dir, subject, selection)
    arrays = model_format.readout_arrays(card, model_dir, subject, meta, sel.rows, sel.whole_brain)
    return _readout(arrays, card.backbone.feature_sizes), columns


def _adapter_model(card: ModelCard, model_format, model_dir: Path, subject: int, selection, device
                   ) -> tuple[FeatureExtractor, Any, dict[str, Any]]:
    """A subject's extractor and readout built by the card's backbone adapter, and the column fields."""
    from .card_registries import backbone_adapter

    model_format.require(card, model_dir, subject)
    meta, sel, columns = subject_columns(card, model_format, model_dir, subject, selection)
    extractor, readout = backbone_adapter(card.backbone.adapter).build(card, model_format, model_dir, subject, meta,
                                                                        sel, resolve_device(device))
    return extractor, readout, columns


def load_encoding_model(card: ModelCard, berg_dir: Path, subject, *, selection=None, device="auto",
                        backbone_weights="default", verify_hash: bool = True, sigma_mm: float | None = None,
                        precision: str = "float32", channels_last: bool = False, compile: bool = False,
                        extractor: FeatureExtractor | None = None) -> EncodingModel:
    """Build an :class:`EncodingModel` from the model's files under ``berg_dir`` (read by the card's format); the
    options are those of :func:`berg.get_encoding_model`, which checks them first. ``extractor``: a feature
    extractor built for the same card and options, to use instead of building one."""
    from .card_registries import model_format

    subject = card.check_subject(subject)
    device = resolve_device(device)
    model_dir = Path(berg_dir) / card.folder
    reader = model_format(card.format)
    if card.backbone.adapter is not None:  # the network and its readout come from the model's files
        extractor, readout, columns = _adapter_model(card, reader, model_dir, subject, selection, device)
        extractor.set_execution(channels_last=channels_last, compile=compile)
    elif subject == "group":
        readout, columns = _group_model(card, reader, model_dir, selection, sigma_mm)
    else:
        readout, columns = _subject_model(card, reader, model_dir, subject, selection)
    if extractor is None:
        extractor = build_feature_extractor(card, backbone_weights, verify_hash, device)
        extractor.set_execution(channels_last=channels_last, compile=compile)
    backbone = {"architecture": card.backbone.architecture, **extractor.weights_identity,
                "precision": precision, "channels_last": channels_last, "compiled": compile}
    # which version of the model's files this is (a resumed film refuses samples made with other files)
    files = files_identity(model_dir, reader.needed_files(card, model_dir, subject))
    columns["provenance"] = {**(columns.get("provenance") or {}), "readout_files": files}
    metadata = ModelMetadata.build(**{**columns, "backbone": backbone}, card_space=card.space.as_dict()
                                   if subject != "group" else None)
    return EncodingModel(card, subject, extractor, readout.to(device), metadata, precision)
