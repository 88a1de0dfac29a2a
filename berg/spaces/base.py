"""The output space interface: what selection, the metadata contract, writers, BIDS names and figures ask of the
place a model's outputs live in.

Every model returns a flat row of ``n_outputs`` columns per stimulus. Its space says what each column is
(``coordinates``: per-column arrays such as ``voxel_ijk``, or ``hemisphere`` and ``vertex``), what the whole
grid is (``layout``: volume shape and affine, mesh and vertex counts, channel names and times), which selection
keys besides ``"roi"`` it takes, and how :func:`berg.encode` hands the columns back (an array, BERG's ``(lh, rh)``
tuple, a (B, repetitions, channels, times) array). A new kind of space is one subclass, registered with
:func:`berg.card_registries.register_space`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidSelectionError, ModelCardError, ModelFormatError


def binary_mask(key: str, value: Any, length: int, what: str) -> np.ndarray:
    """Indices (n,) int64 of the ones of a binary vector of ``length`` (0/1 or bool), given as ``selection[key]``.

    Raises
    ------
    InvalidSelectionError
        Wrong shape (naming ``what`` the length counts), values other than 0/1, or no one at all.
    """
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise InvalidSelectionError(f"selection[{key!r}] has shape {arr.shape}; it must be a binary vector of length "
                                    f"{length} ({what})")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            bad = arr[~np.isin(arr, (0, 1))][:3] if np.issubdtype(arr.dtype, np.number) else arr.dtype
            raise InvalidSelectionError(f"selection[{key!r}] must be binary (0/1 or bool); found {bad}")
        arr = arr.astype(bool)
    if not arr.any():
        raise InvalidSelectionError(f"selection[{key!r}] selects nothing (all zeros); select at least one")
    return np.flatnonzero(arr)


def output_lookup(coordinates: Mapping[str, np.ndarray], names: tuple[str, ...], shape: tuple[int, ...]
                  ) -> np.ndarray:
    """An array of ``shape`` holding, at each combination of integer coordinates, the output that has it (-1 where
    none does); ``names`` are the coordinate arrays indexed, in the order of ``shape``'s axes."""
    lookup = np.full(shape, -1, dtype=np.int64)
    index = tuple(np.asarray(coordinates[n], dtype=np.int64) for n in names)
    lookup[index] = np.arange(index[0].size)
    return lookup


class OutputSpace:
    """One kind of space; an instance holds the card's ``space`` section (:class:`~berg.cards.SpaceSpec`).

    Subclasses set the class attributes and implement the methods that raise :class:`NotImplementedError`.

    Attributes
    ----------
    kind : str
        The registry name (``space.kind`` in cards, ``metadata["space"]["kind"]``).
    mask_keys : tuple of str
        Selection keys the space takes besides ``"roi"``.
    named_keys : tuple of str
        Those of ``mask_keys`` given as lists of names (short enough for job files).
    coordinate_names : tuple of str
        The per-column arrays of the space, as stored with the model and given in ``metadata["coordinates"]``.
    fill_value : float
        What writers put where no output column is (NaN: unknown).
    image_suffix : str or None
        The file suffix of a film's per-scan images in batch jobs (``.nii.gz``, ``.func.gii``).
    """

    kind: ClassVar[str] = ""
    mask_keys: ClassVar[tuple[str, ...]] = ()
    named_keys: ClassVar[tuple[str, ...]] = ()
    coordinate_names: ClassVar[tuple[str, ...]] = ()
    fill_value: ClassVar[float] = float("nan")
    #: the suffix of the images a film's series is written as (None: the space has no images, films are refused)
    image_suffix: ClassVar[str | None] = None

    def __init__(self, spec: Any):
        self.spec = spec

    # -- the card, before any file is read ---------------------------------------------------------------------

    def check_card(self, card: Any) -> None:
        """Raise :class:`ModelCardError` when the card's ``space`` section lacks what this space needs."""

    def n_outputs(self, card: Any, subject: int | str) -> int | None:
        """The subject's whole-brain output count, when the card alone tells it (None: only the files do)."""
        return None

    def check_masks(self, selection: Mapping, card: Any, subject: int | str) -> None:
        """Check the mask keys of ``selection`` against what the card knows (lengths, names); no I/O."""

    # -- a subject's stored layout -----------------------------------------------------------------------------

    def check_layout(self, meta: Any, where: str) -> None:
        """Raise :class:`ModelFormatError` when a subject's stored metadata lacks or breaks the space's arrays."""
        for name in self.coordinate_names:
            values = meta.arrays.get(name)
            if values is None:
                raise ModelFormatError(f"{where}: array {name!r} is missing (the {self.kind} space needs "
                                       f"{', '.join(self.coordinate_names)})")
            if values.shape[0] != meta.n_outputs:
                raise ModelFormatError(f"{where}: {name!r} has {values.shape[0]} rows; the model has "
                                       f"{meta.n_outputs} outputs")

    def whole_layout(self, card: Any, subject: int, rng: np.random.Generator
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Coordinates and metadata fields of a subject covering what the card implies (for synthetic models)."""
        raise NotImplementedError

    def mask_outputs(self, selection: Mapping, meta: Any) -> np.ndarray:
        """Whole-brain output indices (n,) int64, in output order, that the mask keys of ``selection`` choose."""
        raise NotImplementedError

    def describe_masks(self, selection: Mapping, outputs: np.ndarray, meta: Any) -> dict:
        """The mask part of a selection in a few words, for the metadata."""
        keys = [k for k in self.mask_keys if selection.get(k) is not None]
        return {keys[0] if len(keys) == 1 else "+".join(keys): f"{outputs.size} of {meta.n_outputs} outputs"}

    def layout(self, meta: Any) -> dict[str, Any]:
        """Space-level descriptors of the subject's grid (the contract's ``layout``)."""
        raise NotImplementedError

    def datatype(self, card: Any) -> str:
        """The BIDS datatype folder the outputs of batch jobs go to (``func`` for images of the brain)."""
        return "func"

    def coordinates(self, meta: Any, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """Per-column coordinates of the chosen whole-brain ``outputs`` (the contract's ``coordinates``)."""
        return {name: meta.arrays[name][outputs] for name in self.coordinate_names}

    @classmethod
    def berg_view(cls, meta: Any, accuracy: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """BERG's nested metadata dict of the subject (from its stored metadata and its accuracy fractions), for
        code written against BERG."""
        raise KeyError(f"BERG's metadata view is not defined for the {cls.kind} space")

    # -- outputs, from the metadata contract alone -------------------------------------------------------------

    @classmethod
    def arrange(cls, responses: np.ndarray, metadata: Mapping) -> Any:
        """What :func:`berg.encode` returns for (n_stimuli, n_outputs) responses (the array itself by default)."""
        return responses

    @classmethod
    def check_card_fields(cls, spec: Any, card: Any, required: Mapping[str, str]) -> None:
        """Raise :class:`ModelCardError` for every ``space`` field in ``required`` (name -> what it must be) that the
        card lacks."""
        missing = [f"{name} ({what})" for name, what in required.items() if spec.fields.get(name) is None]
        if missing:
            raise ModelCardError(f"model card {card.path}: the {cls.kind} space needs field(s) "
                                 + ", ".join(f"'space.{m}'" for m in missing))
