"""Backbone adapters: networks torchvision does not have, built with their readout from a model's own files.

A card names one with ``backbone: {adapter: NAME, options: {...}}`` (:mod:`berg.card_registries`); the encoder
knows no more than that. An adapter builds, for a subject and the readout rows a selection chose, a
:class:`~berg.backbones.FeatureExtractor` (the card's preprocessing in front of its network, returning named
feature maps) and a readout module over those maps, which :class:`~berg.encoder.EncodingModel` runs as it runs any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class BackboneAdapter:
    """One family of networks built from a model's files; subclasses set ``name`` and implement :meth:`build`."""

    name = ""

    def build(self, card: Any, model_format: Any, model_dir: Path, subject: int, meta: Any, sel: Any,
              device: Any) -> tuple[Any, Any]:
        """``(extractor, readout)`` for the selection's rows, on ``device``.

        The extractor is a :class:`~berg.backbones.FeatureExtractor` (``weights_identity`` names the files its
        weights came from); the readout maps its features to the responses (B, n_selected), one column per row of
        ``sel.rows`` in order, and has ``nodes``, ``bias`` (for its device and dtype) and ``bytes_per_stimulus``.
        """
        raise NotImplementedError
