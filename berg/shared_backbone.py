"""One backbone pass for several encoding models: subjects of one card, or models whose backbones are the same.

Models share a backbone when their architecture, weights, return nodes, preprocessing, stimulus form, device and
precision are the same (:func:`backbone_key`). :class:`SharedBackboneModel` runs that backbone once per batch and
every member's readout on the same features; members whose readouts start with the same projection (a card's
``readout.projection: shared``) apply it once (:class:`MultiReadout`). Each member's
responses equal those of its own :class:`~berg.encoder.EncodingModel`.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch

from .encoder import EncodingModel
from .errors import InvalidArgumentError
from .readout import Readout


def backbone_key(model: EncodingModel) -> tuple:
    """What must be equal for two models to share a backbone pass (see the module docstring)."""
    card, backbone = model.card, model._metadata.backbone or {}
    # the backbone's identity: architecture, weights (their digest, seed or checkpoint files), precision, execution
    return (json.dumps(backbone, sort_keys=True, default=str), tuple(card.backbone.return_nodes),
            json.dumps(card.data.get("preprocessing"), sort_keys=True), card.stimulus_kind, card.stimulus.n_frames,
            str(model.device))


class MultiReadout(torch.nn.Module):
    """Several readouts on the same features; a projection that several share is applied once per batch.

    Parameters
    ----------
    readouts : list of Readout
        On the same device, over the same return nodes.
    """

    def __init__(self, readouts: list[Readout]):
        super().__init__()
        self.members = torch.nn.ModuleList(readouts)
        self.nodes = list(readouts[0].nodes)
        if any(list(r.nodes) != self.nodes for r in readouts):
            raise InvalidArgumentError("readouts of a shared backbone must read the same return nodes")

    @property
    def bias(self) -> torch.Tensor:
        """The first member's bias: the dtype and device readout batches are allocated with."""
        return self.members[0].bias

    @property
    def bytes_per_stimulus(self) -> int:
        """Bytes one stimulus occupies in a readout batch: features once, each shared intermediate once, and every
        member's responses."""
        first = self.members[0]
        d = sum(b.shape[1] for b in first.blocks.values())
        shared = {id(r.blocks): r.weight.shape[1] for r in self.members if r.weight is not None}
        return 4 * (d + sum(shared.values()) + sum(r.bias.shape[0] for r in self.members))

    def forward(self, features: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Every member's responses (B, n_out_i) float32, in member order."""
        projected: dict[int, torch.Tensor] = {}
        out = []
        for readout in self.members:
            if readout.weight is None:
                out.append(readout(features))
                continue
            key = id(readout.blocks)
            if key not in projected:
                projected[key] = readout.project(features)
            out.append(readout.finish(projected[key]))
        return out


class SharedBackboneModel(EncodingModel):
    """Several encoding models answered from one backbone pass (see the module docstring).

    :func:`berg.encode` on it returns ``{key: responses}`` and :meth:`predict_staged` yields ``{key: (n, n_i)}``
    blocks; each member's responses are those of its own model. Built by :func:`berg.get_encoding_model` with a
    list of subjects (keys: the subjects), or from any models that share a backbone (:meth:`from_models`).

    Attributes
    ----------
    members : dict
        ``{key: EncodingModel}``, in order; they all use this model's feature extractor.
    """

    def __init__(self, members: Mapping[Hashable, EncodingModel]):
        models = list(members.values())
        if not models:
            raise InvalidArgumentError("a shared backbone needs at least one model")
        keys = {backbone_key(m) for m in models}
        if len(keys) != 1:
            raise InvalidArgumentError(f"these models do not share a backbone (architecture, weights, return nodes, "
                                       f"preprocessing, device and precision must be equal); found {len(keys)} "
                                       "different ones")
        first = models[0]
        super().__init__(first.card, tuple(members), first.extractor, MultiReadout([m.readout for m in models]),
                         first._metadata, first._metadata.backbone.get("precision", "float32"))
        for model in models:
            model.extractor = first.extractor
        self.members = dict(members)

    @classmethod
    def from_models(cls, members: Mapping[Hashable, EncodingModel]) -> "SharedBackboneModel":
        """Models loaded on their own, answered from the first one's backbone; readouts of one card that read the
        same shared projection file keep one copy of it."""
        by_card: dict[str, EncodingModel] = {}
        for model in members.values():
            first = by_card.setdefault(model.card.model_id, model)
            if first is not model and model.card.readout.projection == "shared" and model.readout.weight is not None:
                model.readout.share_projection(first.readout)
        return cls(members)

    @property
    def metadata(self) -> dict:
        """``{key: ModelMetadata}`` of the members (copies)."""
        return {key: model.metadata for key, model in self.members.items()}

    @property
    def n_outputs(self) -> dict:
        """``{key: n_outputs}`` of the members."""
        return {key: model.n_outputs for key, model in self.members.items()}

    def __repr__(self) -> str:
        return f"SharedBackboneModel({self.card.backbone.architecture}, members={list(self.members)})"

    def forward(self, prepared: torch.Tensor) -> dict:
        """``{key: (B, n_i) float32 tensor}`` on the model's device for preprocessed inputs (one backbone pass)."""
        return dict(zip(self.members, self.readout(self._features(prepared))))

    def _host(self, blocks: list[torch.Tensor]) -> dict:
        return {key: block.float().cpu().numpy() for key, block in zip(self.members, blocks)}

    def output_members(self) -> dict:
        return {key: (model.n_outputs, model.metadata) for key, model in self.members.items()}

    def predict(self, batch, **options) -> dict:
        """``{key: (B, n_i) float32}`` responses for one batch (see :meth:`EncodingModel.predict`)."""
        blocks = list(self.predict_staged([self.stage(batch)], **options))
        return {key: np.concatenate([b[key] for b in blocks]) for key in self.members}


def load_subjects(card: Any, berg_dir: Any, subjects: list[int], **options: Any) -> SharedBackboneModel:
    """The models of ``subjects`` of one card built on one feature extractor, as a :class:`SharedBackboneModel`
    keyed by subject; ``options`` are :func:`berg.encoder.load_encoding_model`'s."""
    from .encoder import load_encoding_model

    members: dict[int, EncodingModel] = {}
    for subject in subjects:
        extractor = next(iter(members.values())).extractor if members else None
        members[subject] = load_encoding_model(card, berg_dir, subject, extractor=extractor, **options)
    return SharedBackboneModel.from_models(members)
