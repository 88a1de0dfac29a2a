"""Small registries chosen from card fields: on-disk format readers and group-level spaces.

A card's ``format`` names the reader of the files its sources hold; its ``group.kind`` names the builder of its
group-level readout. Entries are ``"module:attribute"`` strings, imported when first used, so that reading a
card imports nothing heavy. A new format or group space is one entry here and one module that provides it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelCardError

FORMAT_READERS = {
    "native": "berg.storage.native:READER",
    "berg-legacy": "berg.storage.legacy:READER",
    "img2fmri-wheel": "berg.storage.img2fmri:READER",
}
GROUP_SPACES = {
    "mni-warp-sum": "berg.group_readout:build_group_model",
}


@dataclass(frozen=True)
class FormatReader:
    """What :mod:`berg.fetch` needs of a format.

    Attributes
    ----------
    source_files : callable (card, subject) -> list of str
        Paths, relative to the model folder, to fetch from the card's S3 source (empty when the format brings
        its files by itself).
    make_native : callable (card, berg_dir, subject) -> None
        Write the native files of one subject from what was fetched (nothing to do for the native format).
    """

    source_files: Callable[[Any, int], list[str]]
    make_native: Callable[[Any, Path, int], None]


def _resolve(table: dict[str, str], name: str, field: str) -> Any:
    if name not in table:
        raise ModelCardError(f"field {field!r} is {name!r}; valid: {', '.join(sorted(table))}")
    module, attribute = table[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def format_reader(name: str) -> FormatReader:
    """The reader registered for format ``name``."""
    return _resolve(FORMAT_READERS, name, "format")


def group_space_builder(kind: str) -> Any:
    """The builder of the group-level readout of kind ``kind``: ``(card, model_dir, selection, sigma_mm)``."""
    return _resolve(GROUP_SPACES, kind, "group.kind")
