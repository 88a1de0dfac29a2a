"""Output spaces: one class per kind of place outputs live in (volume, surface, sensors), looked up by the name a
card gives (:mod:`berg.card_registries`), and the helpers that place responses there (:func:`to_nifti`,
:func:`to_mne`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import OutputSpace
from .mne_export import to_mne
from .volume import fill_volume, to_nifti

__all__ = ["OutputSpace", "fill_volume", "space_of", "to_mne", "to_nifti"]


def space_of(metadata: Mapping) -> Any:
    """The space class of a model's metadata (``metadata["space"]["kind"]``; a volume when it names none)."""
    from ..card_registries import space_class

    kind = (metadata.get("space") or {}).get("kind") or "volume"
    return space_class(kind)
