"""berg's settings: where it keeps its files, whether it may use the network (environment variables), and the
precisions a backbone may run in."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import platformdirs

#: Backbone precisions (autocast dtype names; the readout always runs in float32).
PRECISIONS = ("float32", "bfloat16", "float16")


def default_berg_dir() -> Path:
    """Root of the model files: ``$BERG_HOME`` if set, else the per-user cache folder ``berg``."""
    home = os.environ.get("BERG_HOME")
    return Path(home).expanduser() if home else Path(platformdirs.user_cache_dir("berg"))


def cache_dir() -> Path:
    """berg's download cache (wheels …): ``$BERG_CACHE`` if set, else the per-user cache folder ``berg``."""
    cache = os.environ.get("BERG_CACHE")
    return Path(cache).expanduser() if cache else Path(platformdirs.user_cache_dir("berg"))


def berg_version() -> str:
    """The installed berg version ("unknown" when berg runs from a source tree without metadata)."""
    try:
        return metadata.version("berg")
    except metadata.PackageNotFoundError:
        return "unknown"


def is_offline() -> bool:
    """True when ``BERG_OFFLINE`` is 1, true, yes or on (any case): berg then makes no network call."""
    return os.environ.get("BERG_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
