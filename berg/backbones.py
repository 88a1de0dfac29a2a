"""Backbones: torchvision builders, weight resolution, preprocessing and feature extraction at return nodes."""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.transforms import functional as TF

from . import validation
from ._io import sha256_file
from .cards import ModelCard
from .config import is_offline
from .errors import BackboneWeightsError, InvalidDeviceError, ModelCardError

log = logging.getLogger(__name__)

_HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")
UNTRAINED_SEED = 0


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into an available :class:`torch.device`."""
    name = validation.device_name("device", device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InvalidDeviceError(
            f"device={name!r} was requested but CUDA is not available on this machine; "
            "valid devices here: 'cpu', 'auto'"
        )
    return torch.device(name)


def _builder(card: ModelCard) -> Any:
    """The torchvision builder named by ``backbone.architecture`` (any classification or video model)."""
    name = card.backbone.architecture
    try:
        return torchvision.models.get_model_builder(name)
    except ValueError as exc:
        raise BackboneWeightsError(f"model card {card.path}: field 'backbone.architecture' is {name!r}, which is not "
                                   "a torchvision model; see torchvision.models.list_models()") from exc


def published_weights(card: ModelCard) -> Any:
    """The torchvision weights enum member named by the card (e.g. ``ResNet18_Weights.IMAGENET1K_V1``)."""
    _builder(card)
    valid = torchvision.models.get_model_weights(card.backbone.architecture)
    try:
        weights = torchvision.models.get_weight(card.backbone.weights)
    except (ValueError, AttributeError, KeyError):
        weights = None
    if not isinstance(weights, valid):
        raise BackboneWeightsError(
            f"model card {card.path}: field 'backbone.weights' is {card.backbone.weights!r}; valid for "
            f"{card.backbone.architecture}: {', '.join(f'{valid.__name__}.{w.name}' for w in valid)}")
    return weights


def _load_state_dict(path: Path, expected_prefix: str | None) -> tuple[dict[str, torch.Tensor], str]:
    """Load a weights file (no arbitrary unpickling) after checking its sha256 against ``expected_prefix``."""
    digest = sha256_file(path)
    if expected_prefix is not None and not digest.startswith(expected_prefix):
        raise BackboneWeightsError(
            f"backbone_weights={str(path)!r} has sha256 {digest[:16]}…, but the published weights start with "
            f"{expected_prefix}; pass verify_hash=False to use other weights on purpose"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneWeightsError(f"backbone_weights={str(path)!r} cannot be read as a state dict: {exc}") from exc
    if not isinstance(state, dict):
        raise BackboneWeightsError(f"backbone_weights={str(path)!r} does not hold a state dict (got {type(state).__name__})")
    return state, digest


def resolve_weights(card: ModelCard, backbone_weights: str | os.PathLike | None, verify_hash: bool = True
                    ) -> tuple[dict[str, torch.Tensor] | None, dict[str, str]]:
    """Find the backbone's state dict.

    Parameters
    ----------
    card : ModelCard
    backbone_weights : "default", path or None
        ``"default"``: torchvision's published weights (cached under ``TORCH_HOME``; fetched unless offline).
        A path: a local weights file. ``None`` or ``"untrained"``: no weights (random, seeded, deterministic).
    verify_hash : bool
        Check a local file's sha256 against the published hash prefix.

    Returns
    -------
    state_dict : dict or None
    identity : dict
        ``{"weights": <enum name | "untrained" | "file">, "sha256": ..., "source": ...}`` for the metadata.
    """
    if backbone_weights is None or backbone_weights == "untrained":
        return None, {"weights": "untrained", "seed": str(UNTRAINED_SEED)}
    weights = published_weights(card)
    filename = Path(weights.url).name
    match = _HASH_PREFIX.search(filename)
    prefix = match.group(1) if match else None
    if backbone_weights == "default":
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        cached = folder / filename
        if not cached.exists():
            how = (f"backbone weights {filename} are not in {folder}. Download {weights.url} into that folder "
                   f"(or pass backbone_weights=PATH)")
            if is_offline():
                raise BackboneWeightsError(f"{how}; BERG_OFFLINE is set, so berg will not fetch it")
            try:
                torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True)
            except Exception as exc:  # network failures come in many types
                raise BackboneWeightsError(f"{how}: fetching it failed ({exc})") from exc
        state, digest = _load_state_dict(cached, prefix)
        return state, {"weights": card.backbone.weights, "sha256": digest, "source": weights.url}
    path = Path(backbone_weights)
    if not path.is_file():
        raise BackboneWeightsError(
            f"backbone_weights={str(backbone_weights)!r} is not a file; valid values: 'default', None/'untrained', "
            "or the path of a weights file"
        )
    state, digest = _load_state_dict(path, prefix if verify_hash else None)
    name = card.backbone.weights if verify_hash else "file"
    return state, {"weights": name, "sha256": digest, "source": str(path.resolve())}


def build_backbone(card: ModelCard, state_dict: dict[str, torch.Tensor] | None) -> torch.nn.Module:
    """Build the card's torchvision architecture, load ``state_dict`` (or seed an untrained one), eval mode."""
    builder = _builder(card)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        model = builder(weights=None)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise BackboneWeightsError(f"backbone weights do not fit {card.backbone.architecture}: {exc}") from exc
    return model.eval()


def _pil_image(image: torch.Tensor) -> Any:
    """uint8 (3, H, W) on the CPU as a PIL RGB image, with no transposing copy whether its memory is laid out
    (H, W, 3) or (3, H, W) (three planes merged by PIL: half the time of interleaving them in numpy first)."""
    from PIL import Image

    pixels = image.permute(1, 2, 0)
    if pixels.is_contiguous():
        return Image.fromarray(pixels.numpy())
    return Image.merge("RGB", [Image.fromarray(np.ascontiguousarray(plane)) for plane in image.numpy()])


def _pil_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, 3, H, W) resized one by one with PIL's bilinear filter (what ``transforms.Resize`` does to a PIL
    image), on the CPU; returned on the input's device."""
    from PIL import Image

    height, width = size
    frames = [np.asarray(_pil_image(img).resize((width, height), Image.BILINEAR)) for img in images.cpu()]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(images.device)


@dataclass
class Preprocessing:
    """Resize, centre crop, scale to [0, 1], normalise; from a card's ``preprocessing``.

    ``resize_backend: "tensor"`` resizes with ``torchvision.transforms.functional.resize`` (for uint8 it
    interpolates in float and rounds, as torchvision's preset transforms do); ``"pil"`` resizes uint8 images with
    PIL's bilinear filter, as ``transforms.Resize`` does to a PIL image (float inputs use the tensor path).
    """

    resize: tuple[int, ...]
    crop: tuple[int, int] | None
    mean: torch.Tensor
    std: torch.Tensor
    antialias: bool
    backend: str = "tensor"

    @classmethod
    def from_card(cls, card: ModelCard) -> "Preprocessing":
        p = card.preprocessing
        return cls(resize=p.resize, crop=p.crop, mean=torch.tensor(p.mean).view(3, 1, 1),
                   std=torch.tensor(p.std).view(3, 1, 1), antialias=p.antialias, backend=p.resize_backend)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W), uint8 or float in [0, 1] -> normalised float32 (N, 3, h, w).

        A one-number ``resize`` scales the shorter side to it (as torchvision's classification presets do, which
        resize every image, whatever its size); a pair resizes to (h, w) unless the images have that size.
        """
        if len(self.resize) == 1:
            images = TF.resize(images, list(self.resize), antialias=self.antialias)
        elif tuple(images.shape[-2:]) != self.resize:
            if self.backend == "pil" and images.dtype == torch.uint8:
                images = _pil_resize(images, self.resize)
            else:
                images = TF.resize(images, list(self.resize), antialias=self.antialias)
        if self.crop is not None:
            images = TF.center_crop(images, list(self.crop))
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images - mean) / std


class FeatureExtractor(torch.nn.Module):
    """A backbone truncated to the card's return nodes, with the card's preprocessing.

    Parameters
    ----------
    card : ModelCard
    backbone : torch.nn.Module
        The full torchvision model (weights loaded).
    weights_identity : dict
        What :func:`resolve_weights` says about the weights, for the metadata.
    body : torch.nn.Module, optional
        Instead of truncating ``backbone``: a module mapping the preprocessed batch to ``{node: features}`` (a
        backbone adapter's networks, :mod:`berg.adapters`), whose nodes are ``nodes``.
    """

    def __init__(self, card: ModelCard, backbone: torch.nn.Module | None, weights_identity: dict[str, Any],
                 body: torch.nn.Module | None = None, nodes: list[str] | None = None):
        super().__init__()
        self.weights_identity = weights_identity
        self.nodes: list[str] = list(card.backbone.return_nodes if nodes is None else nodes)
        self.is_video = card.stimulus_kind == "video"
        self.preprocess = Preprocessing.from_card(card)
        self.body = (create_feature_extractor(backbone, return_nodes={n: n for n in self.nodes}) if body is None
                     else body).eval()
        self.memory_format = torch.contiguous_format

    def set_execution(self, channels_last: bool = False, compile: bool = False) -> None:
        """Run in channels-last memory layout and/or through ``torch.compile`` (outputs equal within float error)."""
        if channels_last:
            self.memory_format = torch.channels_last_3d if self.is_video else torch.channels_last
            self.body = self.body.to(memory_format=self.memory_format)
        if compile:
            self.body = torch.compile(self.body)

    def prepare(self, batch: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Preprocess a batch into the backbone's input, on the batch's device.

        ``batch`` is (B, 3, H, W) images or (B, T, 3, H, W) clips (frames already sampled), uint8 or float in
        [0, 1]; a list of (3, H, W) images of different sizes is also accepted. Returns (B, 3, h, w) or
        (B, 3, T, h, w) float32.
        """
        if isinstance(batch, list):
            x = torch.stack([self.preprocess(img[None])[0] for img in batch])
        elif self.is_video:
            b, t = batch.shape[:2]
            x = self.preprocess(batch.flatten(0, 1))
            x = x.view(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)
        else:
            x = self.preprocess(batch)
        return x.contiguous(memory_format=self.memory_format)

    def extract(self, batch: torch.Tensor | list[torch.Tensor], prepared: bool = False) -> dict[str, torch.Tensor]:
        """Features at each return node: ``{node: (B, *node_shape) float32}``.

        ``batch`` as for :meth:`prepare`, or its output with ``prepared=True``.
        """
        return self.body(batch if prepared else self.prepare(batch))

    forward = extract


def build_feature_extractor(card: ModelCard, weights: str | os.PathLike | None = "default", verify_hash: bool = True,
                            device: str | torch.device = "cpu") -> FeatureExtractor:
    """Build the card's feature extractor on ``device`` (its ``weights_identity`` says which weights)."""
    device = resolve_device(device)
    state, identity = resolve_weights(card, weights, verify_hash)
    return FeatureExtractor(card, build_backbone(card, state), identity).to(device)


def backbone_input_shape(card: ModelCard) -> tuple[int, ...] | None:
    """The backbone's input shape for one stimulus after preprocessing, (1, 3, h, w) or (1, 3, T, h, w); None when
    it follows each image's size (a shorter-side resize without a crop)."""
    p = card.preprocessing
    size = p.crop or (p.resize if len(p.resize) == 2 else None)
    if size is None:
        return None
    frames = (card.stimulus.n_frames,) if card.stimulus_kind == "video" else ()
    return (1, 3, *frames, *size)


@functools.lru_cache(maxsize=32)
def _node_shapes(architecture: str, nodes: tuple[str, ...], input_shape: tuple[int, ...]) -> dict[str, tuple]:
    """Per-stimulus output shapes of ``nodes``, from a forward on the meta device (no memory, no arithmetic)."""
    with torch.device("meta"):
        net = torchvision.models.get_model_builder(architecture)(weights=None).eval()
        body = create_feature_extractor(net, return_nodes={n: n for n in nodes})
        with torch.no_grad():
            out = body(torch.empty(input_shape))
    return {n: tuple(out[n].shape[1:]) for n in nodes}


def check_feature_shapes(card: ModelCard) -> None:
    """Check the card's ``backbone.feature_shapes`` against what its backbone gives (once per architecture, nodes
    and input size; :meth:`berg.encoder.EncodingModel.predict_staged` runs it before sizing a readout batch).

    Raises
    ------
    ModelCardError
        A node whose declared size differs from the backbone's (which would size the readout wrongly).
    """
    shape = backbone_input_shape(card)
    if shape is None or card.backbone.adapter is not None:  # an adapter's networks are checked by their files
        return
    try:
        actual = _node_shapes(card.backbone.architecture, tuple(card.backbone.return_nodes), shape)
    except (RuntimeError, NotImplementedError) as exc:  # an operation without a meta kernel: checked when run
        log.debug("feature shapes of %s not checked on the meta device: %s", card.model_id, exc)
        return
    declared = card.backbone.feature_sizes
    wrong = {n: (list(card.backbone.feature_shapes[n]), list(actual[n])) for n in declared
             if declared[n] != math.prod(actual[n])}
    if wrong:
        detail = "; ".join(f"{n}: card {c}, backbone {a}" for n, (c, a) in wrong.items())
        raise ModelCardError(f"model card {card.path}: field 'backbone.feature_shapes' does not match "
                             f"{card.backbone.architecture} on {tuple(shape[1:])} inputs ({detail})")
