"""Atomic file writing: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def _unique_sibling(target: Path, suffix: str, create) -> Path:
    """Create (with ``create(path)``) a new hidden name beside ``target``; the mode given to ``os.open`` /
    ``os.mkdir`` passes through the process umask, so files and folders of a shared berg_dir stay readable."""
    while True:
        path = target.with_name(f".{target.name}.{secrets.token_hex(6)}{suffix}")
        try:
            create(path)
            return path
        except FileExistsError:
            continue


def new_file_mode() -> int:
    """The permission bits a new file gets in this process: ``0o666`` less the umask."""
    try:
        with open("/proc/self/status") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):  # not Linux: read it the portable (not thread-safe) way
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched. The file gets the mode of a
    new file under the process umask, whatever the writer gave it.
    The temporary name keeps the target's suffixes so format-sniffing writers work.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    tmp_path = _unique_sibling(target, f".part{suffix}", lambda p: os.close(os.open(p, _NEW_FILE, 0o666)))
    try:
        yield tmp_path
        os.chmod(tmp_path, new_file_mode())  # some writers (safetensors) replace the file with a private one
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder beside ``target`` to fill; on success it takes ``target``'s place.

    A previous ``target`` is removed only once the new folder is in place (and put back if the swap fails). On any
    exception the new folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    build = _unique_sibling(target, ".part", lambda p: os.mkdir(p, 0o777))
    stale = None
    try:
        yield build
        stale = _unique_sibling(target, ".old", lambda p: os.mkdir(p, 0o700))
        if target.exists():
            os.replace(target, stale / "previous")
        os.replace(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        if stale is not None and (stale / "previous").exists() and not target.exists():
            os.replace(stale / "previous", target)
        raise
    finally:
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(target: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")


def file_identity(path: str | os.PathLike, edge_bytes: int = 1 << 20) -> dict:
    """What tells one version of a file from another cheaply: ``bytes``, ``mtime_ns`` and ``fingerprint``, the
    sha256 of its size and of its first and last ``edge_bytes`` (a film replaced at the same path, even with the
    same size and a restored mtime, almost always differs there)."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256(str(stat.st_size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(edge_bytes))
        if stat.st_size > edge_bytes:
            handle.seek(max(edge_bytes, stat.st_size - edge_bytes))
            digest.update(handle.read(edge_bytes))
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "fingerprint": digest.hexdigest()}


def existing_ancestor(path: str | os.PathLike) -> Path:
    """The nearest folder above ``path`` that exists (what a file written there would be created under)."""
    return next(p for p in Path(path).absolute().parents if p.exists())


def check_room(files: list[tuple[Path, int]], what: str) -> None:
    """Refuse to start writing ``files`` (``(path, estimated bytes)``) that would not fit: the free space of each
    file system against the sum of its files, and the process's file-size limit (``ulimit -f``) against the
    largest file. Estimates are upper bounds; a file system that fills up meanwhile is not foreseen.

    Raises
    ------
    DiskSpaceError
        With ``errno`` ENOSPC or EFBIG, naming ``what``, the folder and the sizes.
    """
    import errno
    import resource

    from .errors import DiskSpaceError

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    for path, size in files:
        if limit != resource.RLIM_INFINITY and size > limit:
            raise DiskSpaceError(errno.EFBIG, f"{what}: {path} would hold about {size:,} bytes, over this process's "
                                              f"file-size limit of {limit:,} bytes (ulimit -f)")
    by_folder: dict[Path, int] = {}
    for path, size in files:
        folder = existing_ancestor(path)
        by_folder[folder] = by_folder.get(folder, 0) + size
    for folder, size in by_folder.items():
        free = shutil.disk_usage(folder).free
        if size > free:
            raise DiskSpaceError(errno.ENOSPC, f"{what}: the outputs need about {size:,} bytes under {folder}, "
                                               f"which has {free:,} free")
