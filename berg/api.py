"""The public API: the :class:`BERG` facade and the same functions at module level."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import registry, validation
from .cards import ModelCard
from .config import PRECISIONS, default_berg_dir
from .errors import InvalidArgumentError
from .fetch import download, ensure_model_files
from .group_readout import check_group_selection
from .metadata import ModelMetadata, column_fields
from .selection import check_selection, resolve_selection

if TYPE_CHECKING:  # torch loads with the first model, not with the API
    from .encoder import EncodingModel


def _dir(berg_dir) -> Path:
    return Path(berg_dir).expanduser() if berg_dir is not None else default_berg_dir()


def list_models(*, berg_dir: str | os.PathLike | None = None) -> list[str]:
    """Ids of every model in the zoo."""
    return list(registry.available_cards(_dir(berg_dir)))


def get_model_catalog(*, print_format: bool = False, berg_dir: str | os.PathLike | None = None
                      ) -> dict[str, dict]:
    """A summary of every model; with ``print_format=True`` it is also printed as a table."""
    entries = registry.catalog(_dir(berg_dir))
    if print_format:
        print(registry.format_catalog(entries))
    return entries


def describe(model_id: str, *, berg_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The model card of ``model_id`` as a dict."""
    return registry.get_card(model_id, _dir(berg_dir)).to_dict()


def _checked_request(model_id: str, subject, selection, berg_dir: Path) -> tuple[ModelCard, int | str]:
    """The card and normalised subject, once the request agrees with everything the card knows.

    Nothing is read from disk but the cards, and nothing is fetched or written.
    """
    card = registry.get_card(model_id, berg_dir)
    subject = card.check_subject(subject)
    if subject == "group":
        check_group_selection(selection, card.group.rois)
    else:
        check_selection(selection, card, subject)
    return card, subject


def _many(subject) -> bool:
    """True when ``subject`` asks for several subjects (a list, a tuple or ``"all"``)."""
    return isinstance(subject, (list, tuple)) or (isinstance(subject, str) and subject.strip().lower() == "all")


def _check_options(subjects, device, sigma_mm, precision, **flags) -> None:
    """The loading options of :func:`get_encoding_model` for a list of subjects, checked before anything is
    fetched."""
    validation.device_name("device", device)
    validation.choice("precision", precision, PRECISIONS)
    validation.positive_number("sigma_mm", sigma_mm, allow_zero=True, unit="mm", allow_none=True)
    subject = subjects[0] if len(subjects) == 1 else subjects
    if sigma_mm is not None and "group" not in subjects:
        raise InvalidArgumentError(f"sigma_mm={sigma_mm!r} is not valid for subject={subject!r}: "
                                   "expected None (sigma_mm applies to subject='group' only).")
    for name, value in flags.items():
        validation.flag(name, value)


def get_model_metadata(model_id: str, *, subject: int | str, roi: str | list[str] | None = None,
                       berg_dir: str | os.PathLike | None = None) -> ModelMetadata:
    """A subject's whole-brain model metadata (output grid, ROIs, accuracy) without building the backbone.

    Parameters
    ----------
    subject : int or "group"
        A subject the card lists, or ``"group"`` where the model has a group-level readout (its overlap grid and
        ROI columns at the card's default smoothing).
    roi : str or list of str, optional
        The metadata of these ROIs' columns instead (as BERG's ``get_model_metadata(..., roi=...)`` for models
        whose ROIs are separate networks; their accuracy is each network's on its own voxels).

    Returns
    -------
    ModelMetadata
        The contract :func:`encode` returns for the whole brain (``backbone`` is None): ``coordinates`` (such as
        ``voxel_ijk`` (n_voxels, 3)), ``roi_columns`` {name: columns}, ``accuracy`` {name: (n_outputs,)
        fraction} …; and for subjects BERG's nested view (``meta["fmri"]``, ``meta["encoding_models"]``), with
        BERG's values and units.
    """
    from .card_registries import group_builder, model_format

    berg_dir = _dir(berg_dir)
    selection = None if roi is None else {"roi": roi}
    card, subject = _checked_request(model_id, subject, selection, berg_dir)
    if selection is not None and subject == "group":
        raise InvalidArgumentError(f"roi={roi!r} is not valid for subject='group': expected None")
    ensure_model_files(card, berg_dir, subject)
    model_dir = berg_dir / card.folder
    reader = model_format(card.format)
    if subject == "group":
        _, columns = group_builder(card.group.kind)(card, reader, model_dir, None, None)
        return ModelMetadata.build(**columns)
    reader.require(card, model_dir, subject)
    meta = reader.subject_metadata(card, model_dir, subject)
    if selection is None:
        columns = resolve_selection(None, meta, True, card.space.space)
    else:
        columns = resolve_selection(selection, meta, reader.has_whole_brain(card, model_dir, subject),
                                    card.space.space, card.roi_aliases)
    return ModelMetadata.build(**column_fields(card, subject, meta, columns), card_space=card.space.as_dict())


def get_encoding_model(model_id: str, *, subject: int | str, selection: dict | None = None, device: str = "auto",
                       backbone_weights: str | os.PathLike | None = "default", verify_hash: bool = True,
                       berg_dir: str | os.PathLike | None = None, sigma_mm: float | None = None,
                       precision: str = "float32", channels_last: bool = False, compile: bool = False
                       ) -> EncodingModel:
    """Load one subject's encoding model, or several subjects' on one backbone.

    The request (model id, subject, selection keys, ROI names, voxel-mask length) is checked against the model
    card before any file is read, fetched or written.

    Parameters
    ----------
    model_id : str
        A model in the zoo (:func:`list_models`).
    subject : int, "group", list of them, or "all"
        Required. A subject the card lists (``"group"`` where the model offers a group-level prediction). Files
        the subject needs are fetched from the card's sources (S3, PyPI) when missing, unless ``BERG_OFFLINE=1``.
        A list (or ``"all"``, the card's subjects) gives a :class:`~berg.shared_backbone.SharedBackboneModel`:
        one backbone pass (and one pass of a projection the subjects share) for all of them; ``encode`` then
        returns ``{subject: responses}``, each equal to that subject's own model's.
    selection : dict, optional
        ``{"roi": name}``, ``{"roi": [names]}``, or the masks of the model's space: ``{"voxels": binary
        (n_voxels,) vector}`` for volumes, ``{"lh_vertices": ..., "rh_vertices": ...}`` (binary, per hemisphere)
        for surfaces, ``{"channels": [names], "timepoints": binary (n_times,)}`` for sensors; whole brain if
        None. A mask is used only when ``"roi"`` is absent or None.
    device : {"auto", "cpu", "cuda", "cuda:N"}
        ``"auto"`` picks CUDA when available.
    backbone_weights : "default", path or None
        ``"default"``: torchvision's published weights (hash-checked, cached under ``TORCH_HOME``); a path to a
        weights file; ``None`` (or ``"untrained"``): a seeded untrained backbone, recorded as such in the metadata.
    verify_hash : bool
        Check a weights file against the published hash.
    berg_dir : path, optional
        Root of the model files (default :func:`default_berg_dir`).
    sigma_mm : float, optional
        For ``subject="group"`` only: Gaussian smoothing sigma in mm on the MNI grid (default 1, as img2fmri).
    precision : {"float32", "bfloat16", "float16"}
        Autocast dtype of the backbone (the readout stays float32). bfloat16 is for GPUs; measured relative error
        against float32 is in the README.
    channels_last : bool
        Run the backbone in channels-last memory layout (faster convolutions on GPUs; same outputs).
    compile : bool
        Run the backbone through ``torch.compile`` (a slow first batch, then faster on GPUs).
    """
    from .card_registries import model_format
    from .encoder import load_encoding_model
    from .shared_backbone import load_subjects

    berg_dir = _dir(berg_dir)
    if _many(subject):
        card = registry.get_card(model_id, berg_dir)
        subjects = [_checked_request(model_id, s, selection, berg_dir)[1] for s in card.check_subjects(subject)]
    else:
        card, subject = _checked_request(model_id, subject, selection, berg_dir)
        subjects = [subject]
    for one in subjects:  # what the format itself requires of a model (an fwRF model: an ROI)
        model_format(card.format).check_request(card, one, selection)
    _check_options(subjects, device, sigma_mm, precision, verify_hash=verify_hash, channels_last=channels_last,
                   compile=compile)
    for one in subjects:
        ensure_model_files(card, berg_dir, one)
    options = {"selection": selection, "device": device, "backbone_weights": backbone_weights,
               "verify_hash": verify_hash, "sigma_mm": sigma_mm, "precision": precision,
               "channels_last": channels_last, "compile": compile}
    if not _many(subject):
        return load_encoding_model(card, berg_dir, subject, **options)
    return load_subjects(card, berg_dir, subjects, **options)


class BERG:
    """The facade BERG users know: ``BERG(berg_dir).get_encoding_model(...)`` then ``.encode(model, stimulus)``.

    Every public function of :mod:`berg` is a method here too, with ``berg_dir`` filled in where it applies.

    Parameters
    ----------
    berg_dir : path, optional
        Root of the model files, in BERG's layout (``encoding_models/modality-…/train_dataset-…/model-…/``).
        Default: ``$BERG_HOME``, else the per-user cache folder.
    """

    def __init__(self, berg_dir: str | os.PathLike | None = None):
        self.berg_dir = _dir(berg_dir)

    def __repr__(self) -> str:
        return f"BERG(berg_dir={str(self.berg_dir)!r})"

    def list_models(self) -> list[str]:
        return list_models(berg_dir=self.berg_dir)

    # The facade keeps BERG's positional order (``get_model_catalog(print_format)``,
    # ``get_encoding_model(model_id, device, selection)``, ``encode(model, stimulus, return_metadata)``) so that
    # BERG code runs unchanged; the module-level functions take keywords after the first arguments.
    def get_model_catalog(self, print_format: bool = False) -> dict[str, dict]:
        return get_model_catalog(print_format=print_format, berg_dir=self.berg_dir)

    def describe(self, model_id: str) -> dict[str, Any]:
        return describe(model_id, berg_dir=self.berg_dir)

    def get_model_metadata(self, model_id: str, *, subject: int | str, roi: str | list[str] | None = None
                           ) -> ModelMetadata:
        return get_model_metadata(model_id, subject=subject, roi=roi, berg_dir=self.berg_dir)

    def get_encoding_model(self, model_id: str, device: str = "auto", selection: dict | None = None, *,
                           subject: int | str, **options) -> EncodingModel:
        return get_encoding_model(model_id, subject=subject, selection=selection, device=device,
                                  berg_dir=self.berg_dir, **options)

    def download(self, model_id: str, subjects=None, **options) -> list[Path]:
        return download(model_id, subjects, self.berg_dir, **options)

    @staticmethod
    def encode(model: EncodingModel, stimulus, return_metadata: bool = False, **options):
        """:func:`berg.encode`: in-silico responses of ``model`` to ``stimulus``."""
        from .encoder import encode

        return encode(model, stimulus, return_metadata=return_metadata, **options)

    @staticmethod
    def predict_movie(model: EncodingModel, video, *, tr: float, **options):
        """:func:`berg.predict_movie`: predicted BOLD of a film at the scanner's TR."""
        from .movie import predict_movie

        return predict_movie(model, video, tr=tr, **options)

    @staticmethod
    def to_nifti(responses, metadata):
        """:func:`berg.to_nifti`: responses placed at their voxels as a NIfTI image."""
        from .spaces import to_nifti

        return to_nifti(responses, metadata)

    for _name in ("list_models", "get_model_catalog", "describe", "get_model_metadata", "get_encoding_model",
                  "download"):
        locals()[_name].__doc__ = globals()[_name].__doc__
    del _name
