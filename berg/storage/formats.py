"""The file format interface: everything berg knows about one way of laying out a model's files.

A card's ``format`` names one registered :class:`ModelFormat` (:mod:`berg.card_registries`). The format alone
names files: which ones a subject needs from the card's S3 source, how to turn what was fetched into readable
files, a subject's metadata, the readout arrays of a selection, and the per-subject inputs of a group-level
readout. The rest of berg asks it and never builds a path inside a model folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingFilesError, ModelFormatError


@dataclass
class ReadoutArrays:
    """A subject's readout for the chosen rows: ``y = (sum_node f_node @ projection[node].T + projection_bias)
    @ weight.T + bias``, or ``y = concat_node(f_node) @ weight.T + bias`` without a projection.

    Attributes
    ----------
    weight : (n_rows, n_in) float32 tensor
    bias : (n_rows,) float32 tensor
    projection : dict node -> (k, d_node) float32 tensor, or None
    projection_bias : (k,) float32 tensor, or None
    """

    weight: Any
    bias: Any
    projection: dict[str, Any] | None = None
    projection_bias: Any = None


@dataclass
class GroupSubject:
    """One subject's part of a group-level readout: its stored metadata, its readout arrays (numpy, every row), and
    the format's extra arrays for the group (such as a subject -> template index map)."""

    subject: int
    metadata: Any
    readout: dict[str, Any]
    extras: dict[str, Any]


class ModelFormat:
    """One way of laying out a model folder (``<berg_dir>/<card.folder>``); subclasses name its files.

    Every method takes the card; ``model_dir`` is the model's folder, ``subject`` an int from the card.
    """

    name = ""

    def source_files(self, card: Any, subject: int) -> list[str]:
        """Paths relative to the model folder that the card's S3 source holds for one subject (shared files
        first); empty when the format brings its files by itself (:meth:`prepare` does all)."""
        return []

    def prepare(self, card: Any, berg_dir: Path, subject: int) -> None:
        """Turn what was fetched into the files :meth:`subject_metadata` and :meth:`readout_arrays` read
        (convert, import); nothing to do when they are read as fetched."""

    def check_request(self, card: Any, subject: int | str, selection: Any) -> None:
        """Raise :class:`~berg.errors.InvalidSelectionError` for a request the format cannot answer, from the card
        alone (nothing is read); every request is valid by default."""

    def needed_files(self, card: Any, model_dir: Path, subject: int | str) -> list[Path]:
        """Every file the subject's model is read from (``"group"``: those of every subject the group sums)."""
        raise NotImplementedError

    def is_ready(self, card: Any, model_dir: Path, subject: int | str) -> bool:
        """True when every file the subject's model is read from exists."""
        return all(p.is_file() for p in self.needed_files(card, Path(model_dir), subject))

    def require(self, card: Any, model_dir: Path, subject: int | str) -> None:
        """Raise :class:`MissingFilesError` naming every file of :meth:`needed_files` that is not there, and how to
        get it."""
        missing = [p for p in self.needed_files(card, Path(model_dir), subject) if not p.is_file()]
        if missing:
            how = (f"`berg download {card.model_id}`" if subject == "group"
                   else f"`berg download {card.model_id} --subject {subject}`")
            raise MissingFilesError(f"model {card.model_id!r} (subject {subject}) is missing {len(missing)} file(s): "
                                    + ", ".join(str(p) for p in missing) + f". Get them with {how}")

    def subject_metadata(self, card: Any, model_dir: Path, subject: int) -> Any:
        """The subject's :class:`~berg.storage.native.SubjectMetadata`."""
        raise NotImplementedError

    def has_whole_brain(self, card: Any, model_dir: Path, subject: int) -> bool:
        """Whether the subject's readout has a whole-brain map apart from its rows (rows and outputs differ)."""
        return False

    def readout_arrays(self, card: Any, model_dir: Path, subject: int, meta: Any, rows: Any, whole_brain: bool
                       ) -> ReadoutArrays:
        """The readout of the chosen ``rows`` (of the whole-brain map when ``whole_brain``) as torch tensors;
        ``meta`` is the subject's :meth:`subject_metadata`."""
        raise NotImplementedError

    def group_subjects(self, card: Any, model_dir: Path) -> list[GroupSubject]:
        """The inputs of the card's group-level readout, one per subject of the card."""
        raise ModelFormatError(f"model {card.model_id!r}: format {self.name!r} holds no group-level inputs")

    def files(self, card: Any, model_dir: Path, subject: int) -> list[Path]:
        """The files a download of one subject leaves (what :func:`berg.download` returns)."""
        rels = self.source_files(card, subject)
        return [Path(model_dir) / r for r in rels] if rels else self.needed_files(card, Path(model_dir), subject)
