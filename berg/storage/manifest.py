"""The model folder's manifest: what each file berg fetched or converted was when it was written.

``.berg_manifest.json`` maps a path relative to the model folder to ``size`` (bytes), ``mtime_ns`` and ``sha256``
(fetched files also keep their ``etag`` and ``source``). :func:`changed_files` is what every load runs: a file
whose size and mtime still match its entry costs one ``stat``; one whose mtime differs is re-hashed, and counts
as changed only when its sha256 differs too (a copy with ``cp -p`` or a touch keeps its entry, with the new
mtime recorded). Files without an entry (a model trained or placed by hand) are trusted as they are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._io import sha256_file, write_json

MANIFEST = ".berg_manifest.json"
log = logging.getLogger(__name__)


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """The manifest's entries (empty when there is none, or it cannot be read)."""
    try:
        entries = json.loads((Path(model_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def write_manifest(model_dir: Path, entries: dict[str, Any]) -> None:
    """Replace the manifest (atomically)."""
    write_json(Path(model_dir) / MANIFEST, entries)


def stat_entry(path: Path, name: str) -> dict[str, Any]:
    """``{"file": name, "bytes", "mtime_ns"}`` of ``path`` (``{"file": name, "missing": True}`` when it is not
    there): which version of a file it is, at the cost of one ``stat``."""
    try:
        stat = Path(path).stat()
    except OSError:
        return {"file": name, "missing": True}
    return {"file": name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def files_identity(model_dir: Path, paths: Iterable[Path]) -> list[dict[str, Any]]:
    """:func:`stat_entry` of each of ``paths``, named relative to ``model_dir``."""
    return [stat_entry(p, Path(p).relative_to(model_dir).as_posix()) for p in paths]


def entry_for(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """A manifest entry for ``path`` as it is now (``sha256`` when the caller has it already)."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256 or sha256_file(path)}


def record_files(model_dir: Path, paths: Iterable[Path]) -> None:
    """Add (or refresh) the entries of ``paths``, files berg has just written in ``model_dir``."""
    model_dir = Path(model_dir)
    entries = read_manifest(model_dir)
    for path in paths:
        entries[Path(path).relative_to(model_dir).as_posix()] = entry_for(Path(path))
    write_manifest(model_dir, entries)


def is_changed(model_dir: Path, rel: str, entries: dict[str, Any]) -> bool:
    """True when the file ``rel`` is missing, or no longer what its entry records (see the module docstring)."""
    path, entry = Path(model_dir) / rel, entries.get(rel)
    if not path.is_file():
        return True
    if entry is None:
        return False
    stat = path.stat()
    if stat.st_size != entry.get("size"):
        return True
    if stat.st_mtime_ns == entry.get("mtime_ns"):
        return False
    if sha256_file(path) != entry.get("sha256"):
        return True
    entry["mtime_ns"] = stat.st_mtime_ns  # the same bytes, touched: remember the new mtime
    return False


def changed_files(model_dir: Path, paths: Iterable[Path]) -> list[Path]:
    """The files of ``paths`` that are missing or differ from their manifest entries; the manifest learns the new
    mtimes of files found unchanged."""
    model_dir = Path(model_dir)
    entries = read_manifest(model_dir)
    before = json.dumps(entries, sort_keys=True)
    changed = [Path(p) for p in paths if is_changed(model_dir, Path(p).relative_to(model_dir).as_posix(), entries)]
    if json.dumps(entries, sort_keys=True) != before:
        try:
            write_manifest(model_dir, entries)
        except OSError as exc:  # a read-only model folder: the next load re-hashes again
            log.debug("cannot update %s: %s", Path(model_dir) / MANIFEST, exc)
    for path in changed:
        if path.is_file():
            log.warning("%s no longer matches the size and sha256 berg recorded for it", path)
    return changed
