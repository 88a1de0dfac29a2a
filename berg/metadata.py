"""The metadata contract: what every encoding model says about its output columns, for every model the same.

One :class:`ModelMetadata` serves ``encode(..., return_metadata=True)``, :func:`berg.get_model_metadata`,
:attr:`berg.encoder.EncodingModel.metadata` and the movie outputs. It reads like a dict (``meta["voxel_ijk"]``,
``dict(meta)``) and like an object (``meta.voxel_ijk``); callers always receive their own copy.

Normalised here, whatever the model's files hold:

- ``space`` is always a :class:`Space` dict, ``{"kind": ..., "template": ...}``.
- ROI columns are named ``roi_columns`` everywhere.
- ``accuracy`` holds per-column accuracy only, every value a fraction (Pearson r for correlations), and
  ``accuracy_units`` gives each name the unit of its kind (:data:`ACCURACY_UNITS`). Fitting hyper-parameters such
  as the ridge ``alpha`` go to ``fitting``.

BERG's nested ``fmri`` / ``encoding_models`` view (:mod:`berg.berg_view`) is computed on access from the subject's
stored metadata that the contract keeps (``meta["fmri"]``); it is not one of the contract's keys, so iterating over
the contract or writing it to a file never includes it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict

import numpy as np

from .cards import ModelCard
from .config import berg_version
from .selection import Selection
from .storage.native import SubjectMetadata

#: Unit of each accuracy kind; a name's kind is the name itself, or ``noise_ceiling`` for BERG's noise ceilings.
ACCURACY_UNITS = {
    "correlation": "Pearson r (fraction)",
    "r2": "squared Pearson r (fraction)",
    "coefficient_of_determination": "R^2 = 1 - SS_res / SS_tot (fraction, may be negative)",
    "noise_ceiling": "fraction of the variance of repeat-averaged responses (0-1)",
    "explained_variance": "r2 / noise ceiling, capped at 1 (fraction)",
}
#: Names that are fitting hyper-parameters, not accuracy (moved from ``accuracy`` to ``fitting``).
FITTING_NAMES = ("alpha", "ridge_alpha")
_BERG_VIEW_KEYS = ("fmri", "encoding_models")


class Space(TypedDict):
    """The space the output columns live in.

    ``kind`` is ``"subject"`` (a subject's own volume), ``"MNI152"`` or ``"fsaverage"``; ``template`` names the
    template the volume is registered to, or None.
    """

    kind: str
    template: str | None


def normalise_space(stored: Any, card_space: Mapping[str, Any] | None = None) -> Space:
    """A :class:`Space` from a stored value (a string or a dict) over the card's ``space`` entry.

    A string names the kind when it is one of the card's kinds' names, else the template.
    """
    base = dict(card_space or {})
    if isinstance(stored, Mapping):
        base.update(stored)
    elif isinstance(stored, str) and stored != base.get("kind"):
        if stored in ("subject", "fsaverage") or "kind" not in base:
            base["kind"] = stored
        else:
            base["template"] = stored
    return Space(kind=str(base.get("kind", "subject")), template=base.get("template"))


def accuracy_kind(name: str) -> str:
    """The kind of an accuracy name: ``noise_ceiling`` for any noise ceiling, else the name."""
    return "noise_ceiling" if name.replace("_", "").startswith("noiseceiling") else name


def split_accuracy(accuracy: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(accuracy, fitting)``: accuracy arrays as float32, with fitting hyper-parameters set apart."""
    scores = {k: np.asarray(v, dtype=np.float32) for k, v in accuracy.items() if k not in FITTING_NAMES}
    fitting = {k: np.asarray(v) for k, v in accuracy.items() if k in FITTING_NAMES}
    return scores, fitting


@dataclass(frozen=True)
class ModelMetadata(Mapping):
    """What an encoding model's output columns are (``n`` = ``n_voxels`` columns).

    Attributes
    ----------
    model_id : str
    subject : int or "group"
    selection : dict
        The selection the columns come from (``{}`` for the whole brain).
    n_voxels : int
        Number of output columns ``n``.
    voxel_ijk : (n, 3) int array
        Voxel coordinates of each column in the volume.
    voxel_index : (n,) int64 array
        Index of each column among the subject's voxels (the group grid's for ``"group"``).
    volume_shape : tuple of 3 int
    affine : (4, 4) float64 array
        Voxel to world (mm).
    space : Space
    fill_value : float
        Value outside the columns' voxels when placed in a volume (NaN for subjects, 0 for group maps).
    roi_columns : dict
        ``{roi: (m,) int64 columns}``, only ROIs with at least one column.
    accuracy : dict
        ``{name: (n,) float32}``, fractions (see :data:`ACCURACY_UNITS`).
    accuracy_units : dict
        ``{name: unit}`` for every name in ``accuracy``.
    fitting : dict
        Fitting hyper-parameters as stored (e.g. ``alpha`` per voxel or per ROI model).
    units : str
        Units of the responses.
    provenance : dict
    backbone : dict or None
        Architecture, weights, precision and execution options of a built model; None without a backbone.
    berg_version : str
    stored : SubjectMetadata or None
        The subject's stored metadata, from which BERG's view is computed; None for group models.
    """

    model_id: str
    subject: int | str
    selection: dict
    n_voxels: int
    voxel_ijk: np.ndarray
    voxel_index: np.ndarray
    volume_shape: tuple[int, ...]
    affine: np.ndarray
    space: Space
    fill_value: float
    roi_columns: dict[str, np.ndarray]
    accuracy: dict[str, np.ndarray]
    accuracy_units: dict[str, str]
    fitting: dict[str, Any]
    units: str
    provenance: dict[str, Any]
    backbone: dict[str, Any] | None
    berg_version: str
    stored: SubjectMetadata | None = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, *, accuracy: Mapping[str, np.ndarray], space: Any, card_space: Mapping[str, Any] | None = None,
              **values: Any) -> "ModelMetadata":
        """The contract from loosely typed values: space and accuracy normalised, units from the accuracy kinds."""
        scores, fitting = split_accuracy(accuracy)
        values.pop("accuracy_units", None)  # units follow from the accuracy kinds, whatever was stored
        fitting.update(values.pop("fitting", {}) or {})
        return cls(accuracy=scores, fitting=fitting, space=normalise_space(space, card_space),
                   accuracy_units={k: ACCURACY_UNITS.get(accuracy_kind(k), "as stored") for k in scores},
                   volume_shape=tuple(int(s) for s in values.pop("volume_shape")),
                   affine=np.asarray(values.pop("affine"), dtype=np.float64),
                   roi_columns={k: np.asarray(v, dtype=np.int64) for k, v in values.pop("roi_columns").items()},
                   **values)

    def __getitem__(self, key: str) -> Any:
        if key in _BERG_VIEW_KEYS:
            return getattr(self, key)
        if key == "stored" or key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "stored")

    @property
    def fmri(self) -> dict[str, Any]:
        """BERG's ``fmri`` entry for the subject (:func:`berg.berg_view.berg_metadata_view`); fresh arrays."""
        return self._berg_view()["fmri"]

    @property
    def encoding_models(self) -> dict[str, np.ndarray]:
        """BERG's ``encoding_models`` entry for the subject, in BERG's units; fresh arrays."""
        return self._berg_view()["encoding_models"]

    def _berg_view(self) -> dict[str, Any]:
        from .berg_view import berg_metadata_view

        if self.stored is None:
            raise KeyError(f"BERG's view exists for subject models only (subject={self.subject!r})")
        return berg_metadata_view(self.stored, split_accuracy(self.stored.accuracy())[0])

    def copy(self) -> "ModelMetadata":
        """A deep copy: nothing in it is shared with this one."""
        return copy.deepcopy(self)

    def to_json(self) -> dict[str, Any]:
        """The contract's scalar fields as JSON-ready values (arrays and per-column entries left out)."""
        per_column = ("voxel_ijk", "voxel_index", "roi_columns", "accuracy", "fitting")
        out = {k: getattr(self, k) for k in self._keys() if k not in per_column}
        out["affine"] = self.affine.tolist()
        out["volume_shape"] = list(self.volume_shape)
        out["roi_names"] = list(self.roi_columns)
        return out


def column_fields(card: ModelCard, subject: int, meta: SubjectMetadata, sel: Selection) -> dict[str, Any]:
    """The contract's fields for a subject's selected columns, for :meth:`ModelMetadata.build` (no backbone)."""
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
        "voxel_index": np.asarray(sel.voxels, dtype=np.int64),
        "volume_shape": meta.info["volume_shape"],
        # a volume without a known affine (some legacy files) is placed with voxel indices as coordinates
        "affine": np.eye(4) if meta.info["affine"] is None else meta.info["affine"],
        "space": meta.info.get("space", card.space.as_dict()),
        "fill_value": float("nan"),
        "roi_columns": roi_columns,
        "accuracy": {k: v[sel.voxels] for k, v in meta.accuracy().items()},
        "fitting": {k: meta.info[k] for k in FITTING_NAMES if k in meta.info},
        "units": card.units,
        "provenance": meta.info.get("provenance", {}),
        "backbone": None,
        "berg_version": berg_version(),
        "stored": meta,
    }
