"""Pinned wheels from PyPI as model sources: found in a given path, pip's record of an installed copy or berg's cache,
else fetched with pip, and always checked against the card's sha256."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from .._io import sha256_file
from ..errors import IntegrityError, MissingFilesError, ModelFormatError, OfflineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelSpec:
    """The wheel a card's ``pypi-wheel`` source names: ``name==version``, its file name and sha256."""

    name: str
    version: str
    filename: str
    sha256: str

    @classmethod
    def of(cls, card: Any, needed_by: str) -> "WheelSpec":
        """The card's first ``pypi-wheel`` source (``needed_by`` names what needs it, for the error)."""
        source = card.source("pypi-wheel")
        if source is None:
            raise ModelFormatError(f"model card {card.path}: {needed_by} needs a 'pypi-wheel' source")
        return cls(source.name, source.version, source.filename, source.sha256)

    @property
    def pip_command(self) -> tuple[str, ...]:
        return (sys.executable, "-m", "pip", "download", f"{self.name}=={self.version}", "--no-deps",
                "--only-binary=:all:")


def _verified(path: Path, spec: WheelSpec) -> Path:
    got = sha256_file(path)
    if got != spec.sha256:
        raise IntegrityError(f"wheel {path} has sha256 {got}, expected {spec.sha256} ({spec.filename}); "
                             "delete it and fetch it again")
    return path


def _installed_wheel(spec: WheelSpec) -> Path | None:
    """The wheel an installed img2fmri was installed from, when pip recorded a local file for it."""
    from importlib import metadata

    try:
        direct = json.loads(metadata.distribution(spec.name).read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, json.JSONDecodeError):
        return None
    url = urllib.parse.urlparse(direct.get("url", ""))
    path = Path(urllib.request.url2pathname(url.path)) if url.scheme == "file" else None
    return path if path is not None and path.name == spec.filename and path.is_file() else None


def locate_wheel(spec: WheelSpec, wheel: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 offline: bool | None = None) -> Path:
    """Find (or fetch) a pinned wheel and verify its sha256.

    Parameters
    ----------
    spec : WheelSpec
        The wheel (a card's ``pypi-wheel`` source).
    wheel : path, optional
        Use this file.
    cache_dir : path, optional
        Where fetched wheels live (default ``berg.config.cache_dir() / "wheels"``).
    offline : bool, optional
        Forbid fetching (default: ``BERG_OFFLINE``).

    Returns
    -------
    Path of the verified wheel.

    Raises
    ------
    MissingFilesError
        ``wheel`` does not exist, or pip failed to fetch it.
    OfflineError
        Not found locally and fetching is forbidden.
    IntegrityError
        The file's sha256 is not the card's.
    """
    if wheel is not None:
        path = Path(wheel)
        if not path.is_file():
            raise MissingFilesError(f"wheel={str(wheel)!r} is not a file; give the path of {spec.filename}")
        return _verified(path, spec)
    installed = _installed_wheel(spec)
    if installed is not None:
        return _verified(installed, spec)
    cache = Path(cache_dir) if cache_dir is not None else config.cache_dir() / "wheels"
    cached = cache / spec.filename
    if cached.is_file():
        return _verified(cached, spec)
    command = " ".join(spec.pip_command[1:]) + f" -d {cache}"
    if offline if offline is not None else config.is_offline():
        raise OfflineError(f"{spec.filename} is not in the cache {cache} and BERG_OFFLINE is set; fetch it with "
                           f"`python {command}` or pass its path (wheel=PATH, or --wheel PATH)")
    return _download(cache, command, spec)


def _download(cache: Path, command: str, spec: WheelSpec) -> Path:
    from filelock import FileLock

    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"{spec.filename}.lock")):
        target = cache / spec.filename
        if target.is_file():  # another process fetched it meanwhile
            return _verified(target, spec)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            log.info("fetching %s with pip", spec.filename)
            done = subprocess.run([*spec.pip_command, "-d", tmp], capture_output=True, text=True)
            fetched = Path(tmp) / spec.filename
            if done.returncode != 0 or not fetched.is_file():
                raise MissingFilesError(f"`python {command}` failed (exit {done.returncode}): "
                                        f"{done.stderr.strip()[-500:]}")
            _verified(fetched, spec)
            os.replace(fetched, target)
    return target
