"""BIDS file names: entities in the specification's order, labels of letters and digits.

:data:`ENTITY_ORDER` is the order of the entities' short keys in a file name (BIDS 1.9, the schema's
``rules.entities``); :func:`bids_name` builds a name from any subset of them, as pybids' ``build_path`` does from a
pattern. :data:`ENTITY_NAMES` holds every key BIDS tools read as an entity, full and short forms (pybids reads a
sidecar key with one of these names as that entity, so sidecars avoid them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..errors import InvalidArgumentError

#: (full name, file-name key), in the order the keys appear in a file name
ENTITIES = (
    ("subject", "sub"), ("template", "tpl"), ("session", "ses"), ("cohort", "cohort"), ("sample", "sample"),
    ("task", "task"), ("tracksys", "tracksys"), ("acquisition", "acq"), ("nucleus", "nuc"), ("volume", "voi"),
    ("ceagent", "ce"), ("tracer", "trc"), ("stain", "stain"), ("reconstruction", "rec"), ("direction", "dir"),
    ("run", "run"), ("modality", "mod"), ("echo", "echo"), ("flip", "flip"), ("inversion", "inv"),
    ("mtransfer", "mt"), ("part", "part"), ("processing", "proc"), ("hemisphere", "hemi"), ("space", "space"),
    ("split", "split"), ("recording", "recording"), ("chunk", "chunk"), ("atlas", "atlas"),
    ("segmentation", "seg"), ("scale", "scale"), ("resolution", "res"), ("density", "den"), ("label", "label"),
    ("description", "desc"))
ENTITY_ORDER = tuple(key for _, key in ENTITIES)
#: names pybids' configurations add (derivatives and statistical models)
_PYBIDS_NAMES = ("staining", "mode", "model", "subset", "roi", "from", "to", "suffix", "extension", "datatype",
                 "scans", "fmap")
ENTITY_NAMES = frozenset({name for pair in ENTITIES for name in pair} | set(_PYBIDS_NAMES))


def is_entity_name(key: str) -> bool:
    """True when a sidecar key would be read as a BIDS entity (entity names are lower case; BIDS keys such as
    ``Description`` are not)."""
    return key in ENTITY_NAMES


def label(text: str) -> str:
    """A BIDS label: the letters and digits of ``text``."""
    return re.sub(r"[^A-Za-z0-9]", "", str(text))


def bids_name(entities: Mapping[str, str], suffix: str | None = None, extension: str = "") -> str:
    """``sub-01_task-film_space-individual_desc-x_bold.nii.gz`` from ``{"sub": "01", "desc": "x", "task": "film",
    "space": "individual"}``, ``"bold"`` and ``".nii.gz"``: the entities in :data:`ENTITY_ORDER` (without a
    suffix: the entities alone).

    Raises
    ------
    InvalidArgumentError
        An unknown entity key, or a value with characters other than letters and digits.
    """
    unknown = sorted(set(entities) - set(ENTITY_ORDER))
    if unknown:
        raise InvalidArgumentError(f"entities {unknown} are not BIDS entity keys; valid: {', '.join(ENTITY_ORDER)}")
    bad = {k: v for k, v in entities.items() if not v or label(v) != v}
    if bad:
        raise InvalidArgumentError(f"entity values {bad} are not BIDS labels (letters and digits only)")
    parts = [f"{key}-{entities[key]}" for key in ENTITY_ORDER if key in entities]
    return "_".join(parts if suffix is None else [*parts, suffix]) + extension
