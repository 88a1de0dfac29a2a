"""The registries chosen from card fields: file formats, output spaces and group-level readouts.

A card's ``format`` names the reader of the files its sources hold (:class:`berg.storage.formats.ModelFormat`),
its ``space.kind`` the class of the space its outputs live in (:class:`berg.spaces.base.OutputSpace`), its
``group.kind`` the builder of its group-level readout, and its ``backbone.adapter`` the class that builds a
backbone torchvision does not have (:class:`berg.adapters.BackboneAdapter`). Entries are ``"module:attribute"``
strings, imported when first used, so that reading a card imports nothing heavy; :func:`register_format`,
:func:`register_space` and :func:`register_adapter` add entries (a class, an instance or such a string) for
formats, spaces and adapters that live outside berg.

>>> from berg.card_registries import register_format
>>> register_format("my-lab-format", "my_lab.berg_format:FORMAT")   # then `format: my-lab-format` in a card
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import InvalidArgumentError, ModelCardError

FORMATS: dict[str, Any] = {
    "native": "berg.storage.native:NativeFormat",
    "berg-legacy": "berg.storage.legacy:BergSvdFormat",
    "berg-pca-hemispheres": "berg.storage.berg_surface:BergHemispheresFormat",
    "berg-pca-repetitions": "berg.storage.berg_sensors:BergRepetitionsFormat",
    "img2fmri-wheel": "berg.storage.img2fmri:Img2fmriFormat",
    "berg-fwrf": "berg.storage.fwrf:BergFwrfFormat",
}
SPACES: dict[str, Any] = {
    "volume": "berg.spaces.volume:VolumeSpace",
    "surface": "berg.spaces.surface:SurfaceSpace",
    "sensors": "berg.spaces.sensors:SensorSpace",
}
GROUP_BUILDERS: dict[str, Any] = {
    "mni-warp-sum": "berg.group_readout:build_group_readout",
}
ADAPTERS: dict[str, Any] = {
    "gnet-fwrf": "berg.adapters.gnet_fwrf:GNetFwrfAdapter",
}
_RESOLVED: dict[tuple[int, str], Any] = {}


def _register(table: dict[str, Any], name: Any, entry: Any, what: str) -> None:
    if not isinstance(name, str) or not name or name != name.strip():
        raise InvalidArgumentError(f"name={name!r} is not valid: expected a non-empty {what} name")
    table[name] = entry
    _RESOLVED.pop((id(table), name), None)


def register_format(name: str, model_format: Any) -> None:
    """Register a file format under ``name`` (a :class:`~berg.storage.formats.ModelFormat` subclass, an instance,
    or a ``"module:attribute"`` string naming one); cards then select it with ``format: name``."""
    _register(FORMATS, name, model_format, "format")


def register_space(name: str, space: Any) -> None:
    """Register an output space class under ``name`` (an :class:`~berg.spaces.base.OutputSpace` subclass or a
    ``"module:attribute"`` string naming one); cards then select it with ``space: {kind: name}``."""
    _register(SPACES, name, space, "space")


def _resolve(table: dict[str, Any], name: str, field: str) -> Any:
    if name not in table:
        raise ModelCardError(f"field {field!r} is {name!r}; valid: {', '.join(sorted(table))}")
    key = (id(table), name)
    if key not in _RESOLVED:
        entry = table[name]
        if isinstance(entry, str):
            module, attribute = entry.split(":")
            entry = getattr(importlib.import_module(module), attribute)
        _RESOLVED[key] = entry
    return _RESOLVED[key]


def model_format(name: str) -> Any:
    """The format registered as ``name``, as an instance (a registered class is instantiated once)."""
    entry = _resolve(FORMATS, name, "format")
    if isinstance(entry, type):
        entry = _RESOLVED[(id(FORMATS), name)] = entry()
    return entry


def space_class(kind: str) -> Any:
    """The output space class registered as ``kind``."""
    return _resolve(SPACES, kind, "space.kind")


def register_adapter(name: str, adapter: Any) -> None:
    """Register a backbone adapter under ``name`` (a :class:`~berg.adapters.BackboneAdapter` subclass or a
    ``"module:attribute"`` string naming one); cards then select it with ``backbone: {adapter: name}``."""
    _register(ADAPTERS, name, adapter, "adapter")


def backbone_adapter(name: str) -> Any:
    """The backbone adapter registered as ``name``, as an instance."""
    entry = _resolve(ADAPTERS, name, "backbone.adapter")
    if isinstance(entry, type):
        entry = _RESOLVED[(id(ADAPTERS), name)] = entry()
    return entry


def group_builder(kind: str) -> Any:
    """The builder of the group-level readout of kind ``kind``: ``(card, model_format, model_dir, selection,
    sigma_mm) -> (GroupReadout, column fields)``."""
    return _resolve(GROUP_BUILDERS, kind, "group.kind")
