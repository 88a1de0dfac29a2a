"""The metadata contract: what every encoding model says about its output columns, for every model the same.

One :class:`ModelMetadata` serves ``encode(..., return_metadata=True)``, :func:`berg.get_model_metadata`,
:attr:`berg.encoder.EncodingModel.metadata` and the movie outputs. It reads like a dict (``meta["voxel_ijk"]``,
``dict(meta)``) and like an object (``meta.voxel_ijk``); callers always receive their own copy.

Normalised here, whatever the model's files hold:

- ``space`` is always a :class:`Space` dict, ``{"kind": ..., "template": ...}``; what the columns are in that
  space is ``coordinates`` (per column) and ``layout`` (the grid), with the keys the space defines.
- ROI columns are named ``roi_columns`` everywhere.
- ``accuracy`` holds per-column accuracy only, every value a fraction (Pearson r for correlations), and
  ``accuracy_units`` gives each name the unit of its kind (:data:`ACCURACY_UNITS`). Fitting hyper-parameters such
  as the ridge ``alpha`` go to ``fitting``.

BERG's nested ``fmri`` / ``encoding_models`` view (the space's ``berg_view``) is computed on access from the
subject's stored metadata that the contract keeps (``meta["fmri"]``); it is not one of the contract's keys, so
iterating over the contract or writing it to a file never includes it.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict

import numpy as np

from .card_schema import LEGACY_SPACE_KINDS
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

    ``kind`` is the space's class (``"volume"``, ``"surface"``, ``"sensors"``, or another registered one);
    ``template`` the grid it is registered to, as a TemplateFlow identifier where one applies (``MNI152NLin6Asym``,
    ``fsaverage``), ``"individual"`` for a subject's own grid, or None.
    """

    kind: str
    template: str | None


def normalise_space(stored: Any, card_space: Mapping[str, Any] | None = None) -> Space:
    """A :class:`Space` from the card's ``space`` entry, with gaps filled from a stored value (a string or a dict;
    the kinds of earlier files, ``subject``, ``MNI152`` and ``fsaverage``, name their class)."""
    kind, template = None, None
    if isinstance(stored, Mapping):
        kind, template = stored.get("kind"), stored.get("template")
    elif isinstance(stored, str):
        kind = stored
    if kind in LEGACY_SPACE_KINDS:
        kind, implied = LEGACY_SPACE_KINDS[kind]
        template = template or implied
    card_space = dict(card_space or {})
    return Space(kind=str(card_space.get("kind") or kind or "volume"),
                 template=card_space.get("template") or template)


def accuracy_kind(name: str) -> str:
    """The kind of an accuracy name: ``noise_ceiling`` for any noise ceiling, else the name."""
    return "noise_ceiling" if name.replace("_", "").startswith("noiseceiling") else name


def split_accuracy(accuracy: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(accuracy, fitting)``: accuracy arrays as float32, with fitting hyper-parameters set apart."""
    scores = {k: np.asarray(v, dtype=np.float32) for k, v in accuracy.items() if k not in FITTING_NAMES}
    fitting = {k: np.asarray(v) for k, v in accuracy.items() if k in FITTING_NAMES}
    return scores, fitting


#: Keys read from ``coordinates`` and ``layout`` for volume models (None for models in other spaces).
_VOLUME_KEYS = {"voxel_ijk": ("coordinates", "voxel_ijk"), "voxel_index": ("coordinates", "output_index"),
                "volume_shape": ("layout", "volume_shape"), "affine": ("layout", "affine")}


@dataclass(frozen=True)
class ModelMetadata(Mapping):
    """What an encoding model's output columns are (``n`` = ``n_outputs`` columns), the same keys for every space.

    Attributes
    ----------
    model_id : str
    subject : int or "group"
    selection : dict
        The selection the columns come from (``{}`` for the whole brain).
    n_outputs : int
        Number of output columns ``n`` (also ``n_voxels``, BERG's name, whatever the space).
    space : Space
    layout : dict
        The space's grid: a volume's ``volume_shape`` and ``affine`` (4, 4) voxel -> mm; a surface's ``mesh``,
        ``hemispheres`` and ``n_vertices``; sensors' ``ch_names``, ``times`` (s) and ``repetitions``.
    coordinates : dict
        Per-column (n, ...) arrays: ``output_index`` (the column's index among the subject's whole-brain outputs,
        or the group grid's), and the space's own (a volume's ``voxel_ijk`` (n, 3); a surface's ``hemisphere``
        and ``vertex``; sensors' ``repetition``, ``channel`` and ``time`` indices).
    voxel_ijk, voxel_index, volume_shape, affine
        For volume models, ``coordinates["voxel_ijk"]``, ``coordinates["output_index"]``,
        ``layout["volume_shape"]`` and ``layout["affine"]``; None otherwise.
    fill_value : float
        Value where no column is, when placed on the space's grid (NaN for subjects, 0 for group maps).
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
    n_outputs: int
    space: Space
    layout: dict[str, Any]
    coordinates: dict[str, np.ndarray]
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
        for derived in ("n_voxels", *_VOLUME_KEYS):  # read from n_outputs, coordinates and layout
            values.pop(derived, None)
        fitting.update(values.pop("fitting", {}) or {})
        layout = dict(values.pop("layout"))
        if "volume_shape" in layout:
            layout["volume_shape"] = tuple(int(s) for s in layout["volume_shape"])
        if "affine" in layout:
            layout["affine"] = np.asarray(layout["affine"], dtype=np.float64)
        return cls(accuracy=scores, fitting=fitting, space=normalise_space(space, card_space), layout=layout,
                   accuracy_units={k: ACCURACY_UNITS.get(accuracy_kind(k), "as stored") for k in scores},
                   roi_columns={k: np.asarray(v, dtype=np.int64) for k, v in values.pop("roi_columns").items()},
                   **values)

    @property
    def n_voxels(self) -> int:
        """BERG's name for the number of output columns."""
        return self.n_outputs

    def __getattr__(self, name: str) -> Any:
        if name in _VOLUME_KEYS:
            section, key = _VOLUME_KEYS[name]
            return object.__getattribute__(self, section).get(key) if self.space["kind"] == "volume" else None
        raise AttributeError(name)

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
        return tuple(f.name for f in fields(cls) if f.name != "stored") + ("n_voxels", *_VOLUME_KEYS)

    @property
    def fmri(self) -> dict[str, Any]:
        """BERG's ``fmri`` entry for the subject (the space's view); fresh arrays."""
        return self._berg_view()["fmri"]

    @property
    def encoding_models(self) -> dict[str, np.ndarray]:
        """BERG's ``encoding_models`` entry for the subject, in BERG's units; fresh arrays."""
        return self._berg_view()["encoding_models"]

    def berg_view(self) -> dict[str, Any]:
        """BERG's whole nested metadata dict for the subject (its keys depend on the space: ``fmri``,
        ``encoding_models``, ``eeg`` …), as BERG's ``get_model_metadata`` returns it."""
        return self._berg_view()

    def _berg_view(self) -> dict[str, Any]:
        from .spaces import space_of

        if self.stored is None:
            raise KeyError(f"BERG's view exists for subject models only (subject={self.subject!r})")
        return space_of(self).berg_view(self.stored, split_accuracy(self.stored.accuracy())[0])

    def copy(self) -> "ModelMetadata":
        """A deep copy: nothing in it is shared with this one."""
        return copy.deepcopy(self)

    def to_json(self) -> dict[str, Any]:
        """The contract's scalar fields as JSON-ready values (arrays and per-column entries left out)."""
        per_column = ("coordinates", "voxel_ijk", "voxel_index", "roi_columns", "accuracy", "fitting")
        out = {k: getattr(self, k) for k in self._keys() if k not in per_column}
        out["layout"] = {k: np.asarray(v).tolist() if isinstance(v, (np.ndarray, tuple)) else v
                         for k, v in self.layout.items()}
        for key in ("affine", "volume_shape"):
            if out.get(key) is not None:
                out[key] = np.asarray(out[key]).tolist()
        out["roi_names"] = list(self.roi_columns)
        return out


def columns_digest(metadata: Mapping[str, Any]) -> str:
    """sha256 of what the output columns are: the model, subject, selection and every column's coordinates (for
    a metadata dict without ``coordinates``, its ``voxel_ijk``). Two selections of the same size differ here."""
    digest = hashlib.sha256()
    for key in ("model_id", "subject", "selection"):
        digest.update(f"{key}={metadata.get(key)!r};".encode())
    coordinates = metadata.get("coordinates") or {"voxel_ijk": metadata.get("voxel_ijk")}
    for name in sorted(coordinates):
        values = np.ascontiguousarray(np.asarray(coordinates[name]))
        digest.update(f"{name}:{values.dtype.str}:{values.shape};".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def column_fields(card: ModelCard, subject: int, meta: SubjectMetadata, sel: Selection) -> dict[str, Any]:
    """The contract's fields for a subject's selected columns, for :meth:`ModelMetadata.build` (no backbone)."""
    space = card.space.space
    roi_columns = {}
    for name in meta.roi_names:
        rows = meta.roi_rows(name)
        member = np.isin(sel.voxels, meta.row_voxel[rows]) if sel.whole_brain else np.isin(sel.rows, rows)
        cols = np.flatnonzero(member)
        if cols.size:
            roi_columns[name] = cols
    outputs = np.asarray(sel.voxels, dtype=np.int64)
    return {
        "model_id": card.model_id,
        "subject": subject,
        "selection": sel.description,
        "n_outputs": int(outputs.size),
        "layout": space.layout(meta),
        "coordinates": {**space.coordinates(meta, outputs), "output_index": outputs},
        "space": meta.info.get("space"),
        "fill_value": float(space.fill_value),
        "roi_columns": roi_columns,
        "accuracy": ({k: v[sel.rows] for k, v in meta.row_accuracy().items()}
                     if meta.row_accuracy() and not sel.whole_brain
                     else {k: v[outputs] for k, v in meta.accuracy().items()}),
        "fitting": {k: meta.info[k] for k in FITTING_NAMES if k in meta.info},
        "units": card.units,
        "provenance": meta.info.get("provenance", {}),
        "backbone": None,
        "berg_version": berg_version(),
        "stored": meta,
    }
