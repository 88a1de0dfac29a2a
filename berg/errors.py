"""The error hierarchy: every error berg raises on bad input derives from :class:`BergError`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BergError(Exception):
    """Base class of every error berg raises on purpose."""


class UnknownModelError(BergError, KeyError):
    """A model id that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidSubjectError(BergError, ValueError):
    """A subject that the model card does not list."""


class InvalidSelectionError(BergError, ValueError):
    """A bad ``selection``: unknown key, unknown ROI, or a bad voxel mask."""


class InvalidStimulusError(BergError, ValueError):
    """A stimulus of the wrong shape, dtype, range or length, or an unreadable file."""


class InvalidDeviceError(BergError, ValueError):
    """A device that is unknown or not available on this machine."""


class InvalidArgumentError(BergError, ValueError):
    """Any other argument outside its valid values (batch sizes, rates, output paths …)."""


class ModelCardError(BergError, ValueError):
    """A model card that does not follow the schema."""


class UnsafeYamlError(BergError, ValueError):
    """A YAML document berg will not read: an alias, too large, nested too deeply, or not YAML."""


class MissingFilesError(BergError, FileNotFoundError):
    """Model files that are not on disk (and could not, or may not, be fetched)."""


class BackboneWeightsError(BergError, RuntimeError):
    """Backbone weights that cannot be had or fail their hash check."""


class ModelFormatError(BergError, ValueError):
    """A model file on disk that is malformed or inconsistent with its card."""


class UnsafePickleError(BergError, ValueError):
    """A legacy pickle that asks for anything but arrays and plain containers."""


class IntegrityError(BergError, RuntimeError):
    """A downloaded or cached file whose size or checksum does not match."""


class FetchError(MissingFilesError):
    """Model files could not be fetched from their source (no network, a refused request, a missing object)."""


class OfflineError(MissingFilesError):
    """Files are missing and ``BERG_OFFLINE=1`` forbids fetching them."""


class DiskSpaceError(BergError, OSError):
    """The outputs would not fit: too little free space (``errno`` ENOSPC) or a file-size limit (EFBIG)."""


class JobError(BergError, ValueError):
    """A batch job description with a bad row or field; ``row`` (1-based, or None for the job) and ``field``."""

    def __init__(self, message: str, row: int | None = None, field: str | None = None):
        super().__init__(message)
        self.row, self.field = row, field


class IncompatibleModelError(InvalidArgumentError):
    """A model asked for something its outputs cannot give (a film's BOLD from a model of sensors x time)."""


class InvalidDataError(InvalidArgumentError):
    """Time-series data or analysis parameters of the wrong shape or range (:mod:`berg.analysis`)."""


class ResumeError(InvalidArgumentError):
    """A ``resume`` request that does not match the interrupted run's parameters."""


class DatasetError(BergError, ValueError):
    """A training dataset spec, or a file it names, that is malformed or inconsistent."""


class TrainingError(BergError, ValueError):
    """Training inputs that cannot be fitted (too few stimuli, bad options, bad arrays)."""


class OptionalDependencyError(BergError, ImportError):
    """A feature that needs an optional extra which is not installed (the message says how to install it)."""


def close_matches(given: str, valid: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean: a, b?"`` for the closest valid names, or ``""``."""
    matches = difflib.get_close_matches(str(given), [str(v) for v in valid], n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""
