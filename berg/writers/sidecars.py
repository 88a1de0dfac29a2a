"""JSON sidecars of a film's outputs, with the keys BIDS asks for and none that BIDS reads as an entity.

An image series (``_bold.nii.gz``, ``_hemi-L_bold.func.gii``) gets ``NAME.json`` (one per image; the two
hemispheres of a surface share the sidecar without ``hemi``): ``Description``, ``RepetitionTime`` (s),
``SkullStripped`` (true: only the model's voxels or vertices carry values), ``Sources`` (the film, as a
``file:`` URI), ``SpatialReference: "orig"`` where the space is a subject's own grid (the grid of the data the
model was trained on) rather than a TemplateFlow template, and the model's fields (:func:`model_fields`). BIDS
tools such as pybids read a sidecar key named like an entity (``subject``, ``task``, ``run`` …) as that entity, so
no berg key uses one of those names (:data:`berg.writers.bids.ENTITY_NAMES`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .._io import write_json
from ..config import berg_version
from ..errors import InvalidArgumentError
from .bids import is_entity_name

#: the space label of a subject's own grid (not a template)
INDIVIDUAL = "individual"


def model_fields(meta: Mapping) -> dict:
    """The model's own sidecar keys: ``EncodingModel`` (model id), ``EncodingModelSubject`` (1, 2 … or
    ``"group"``), ``Units`` and ``berg_version``."""
    return {"EncodingModel": meta.get("model_id"), "EncodingModelSubject": meta.get("subject"),
            "Units": meta.get("units"), "berg_version": berg_version()}


def timing_fields(meta: Mapping) -> dict:
    """A film's scan timing: ``RepetitionTime`` and ``SamplingFrequency`` (1 / TR), ``StartTime`` (s, the first
    scan's time from the film's start), ``SliceTimeRef``, ``NumberOfScans`` and the ``HRF``."""
    tr = float(meta["tr"])
    return {"RepetitionTime": tr, "SamplingFrequency": 1.0 / tr, "StartTime": meta["slice_time_ref"] * tr,
            "SliceTimeRef": meta["slice_time_ref"], "NumberOfScans": int(meta["n_scans"]), "HRF": meta["hrf"]}


def sources(meta: Mapping) -> list[str]:
    """The stimulus the outputs were computed from, as ``file:`` URIs (empty when unknown)."""
    video = meta.get("video")
    return [Path(os.path.abspath(video)).as_uri()] if video else []


def image_sidecar(meta: Mapping) -> dict:
    """The sidecar of a film's image series (module docstring); ``meta`` is the film's metadata."""
    space = meta.get("space") or {}
    sidecar = {"Description": f"In-silico BOLD predicted by the encoding model {meta.get('model_id')} for the "
                              "film named in Sources, one volume per scan.",
               **timing_fields(meta), "SkullStripped": True, "Sources": sources(meta), **model_fields(meta)}
    if space.get("template") in (None, "", INDIVIDUAL):
        sidecar["SpatialReference"] = "orig"  # BIDS' word for the source data's own space: the subject's grid
    return sidecar


def merged(parts: list[Mapping]) -> dict:
    """One sidecar from the contents several outputs give for it (later keys win; distinct ``Description`` texts
    are joined)."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            if key == "Description" and out.get(key) and value not in out[key]:
                value = f"{out[key]} {value}"
            out[key] = value
    return out


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of an output: its name with the writer's suffix (``.nii.gz``, ``.func.gii``, ``.tsv.gz`` …)
    replaced by ``.json``."""
    from . import suffix_of

    path = Path(path)
    suffix = suffix_of(path) or path.suffix
    return path.with_name(path.name[: len(path.name) - len(suffix)] + ".json")


def write_sidecar(path: str | os.PathLike, sidecar: Mapping) -> Path:
    """Write a sidecar (atomically), refusing keys that BIDS would read as entities."""
    clashing = sorted(k for k in sidecar if is_entity_name(k))
    if clashing:
        raise InvalidArgumentError(f"sidecar {str(path)!r} has key(s) {clashing}, which BIDS reads as entities; "
                                   "valid keys are any others")
    write_json(Path(path), dict(sidecar))
    return Path(path)


def write_series_sidecars(outputs, bold, per_scan, meta) -> list[Path]:
    """Write the sidecars of a film's ``outputs`` (``(path, writer)`` pairs), one per sidecar path with the parts
    of every writer that shares it (:func:`berg.writers.sidecars.merged`); return the files written."""
    parts: dict[Path, list] = {}
    for path, writer in outputs:
        if writer.has_series_sidecar():
            parts.setdefault(sidecar_path(path), []).append(writer.series_sidecar(path, bold, per_scan, meta))
    return [write_sidecar(target, merged(contents)) for target, contents in parts.items()]
