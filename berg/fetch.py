"""Model distribution: fetch a model's files from its card's sources into a safe, verified cache.

Files land in BERG's folder layout under ``berg_dir`` (``$BERG_HOME``, else the user cache dir ``berg``).
Every download goes to a ``.part`` file (kept across interruptions and resumed with HTTP ranges), is checked
against the object's size and ETag, and is renamed into place. A lock per model folder makes concurrent
processes produce one good copy. A manifest (``.berg_manifest.json``, :mod:`berg.storage.manifest`) records the
size, mtime and sha256 of every file fetched or converted; every load checks the files it reads against it, and
one that no longer matches is set aside as ``NAME.changed`` and fetched or converted again. ``BERG_OFFLINE=1``
forbids fetching.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import filelock
from tqdm.auto import tqdm

from .cards import ModelCard, Source
from .config import default_berg_dir, is_offline
from .errors import FetchError, IntegrityError, MissingFilesError, ModelCardError, OfflineError
from .registry import get_card
from .card_registries import model_format
from .storage.manifest import changed_files, entry_for, is_changed, read_manifest, record_files, write_manifest

log = logging.getLogger(__name__)

PART_SIZE = 16 * 1024 * 1024  # bytes per ranged GET
WORKERS = 8  # parallel ranged GETs per file
_HASH_BLOCK = 1 << 24


def resolve_card(model: str | ModelCard, berg_dir: str | os.PathLike | None = None) -> ModelCard:
    """The card of a model id, packaged or in ``<berg_dir>/model_cards/`` (a :class:`ModelCard` is returned as is).

    Raises
    ------
    UnknownModelError
        ``model`` is not a known model id.
    """
    return model if isinstance(model, ModelCard) else get_card(model, berg_dir)


def _file_digests(path: Path, etag_part_size: int | None = None) -> tuple[str, str | None]:
    """sha256 of a file and, when ``etag_part_size`` is given, the ETag S3 gives it.

    ``etag_part_size=0`` gives a single-part ETag (the md5); ``> 0`` the multipart one (md5 of the parts' md5s,
    ``-N``). None skips the ETag.
    """
    sha, whole, part, digests, filled = hashlib.sha256(), hashlib.md5(), hashlib.md5(), [], 0
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            sha.update(block)
            if etag_part_size == 0:
                whole.update(block)
            view = memoryview(block) if etag_part_size else memoryview(b"")
            while view:
                take = min(len(view), etag_part_size - filled)
                part.update(view[:take])
                view, filled = view[take:], filled + take
                if filled == etag_part_size:
                    digests.append(part.digest())
                    part, filled = hashlib.md5(), 0
    if etag_part_size is None:
        return sha.hexdigest(), None
    if etag_part_size == 0:
        return sha.hexdigest(), whole.hexdigest()
    digests += [part.digest()] if filled else []
    return sha.hexdigest(), hashlib.md5(b"".join(digests)).hexdigest() + f"-{len(digests)}"


def _etag_part_size(client: Any, bucket: str, key: str, etag: str) -> int | None:
    """0 for a single-part ETag, the first part's size for a multipart one, None when it cannot be known."""
    if "-" not in etag:
        return 0
    try:
        return int(client.head_object(Bucket=bucket, Key=key, PartNumber=1)["ContentLength"])
    except Exception:  # not every S3-compatible server answers part-number HEADs
        return None


class _S3Source:
    """One ``s3`` source of a card: an unsigned client (by default) and the key prefix."""

    def __init__(self, spec: Source, endpoint_url: str | None) -> None:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        endpoint = endpoint_url or os.environ.get("BERG_S3_ENDPOINT") or spec.endpoint_url
        config = Config(max_pool_connections=WORKERS, retries={"max_attempts": 5, "mode": "standard"},
                        **({"signature_version": UNSIGNED} if spec.unsigned else {}))
        self.client = boto3.client("s3", region_name=spec.region, endpoint_url=endpoint, config=config)
        self.bucket, self.prefix, self.endpoint = spec.bucket, spec.prefix, endpoint

    def url(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{rel}"

    def fetch(self, rel: str, dest: Path, show_progress: bool) -> dict[str, Any]:
        """Download one object to ``dest`` (resuming a ``.part`` file), verify it, rename it into place."""
        key = self.prefix + rel
        head = self.client.head_object(Bucket=self.bucket, Key=key)
        size, etag = int(head["ContentLength"]), head["ETag"].strip('"')
        part = dest.with_name(f".{dest.name}.{hashlib.sha256(etag.encode()).hexdigest()[:12]}.part")
        for stale in dest.parent.glob(f".{dest.name}.*.part"):
            if stale != part:
                stale.unlink(missing_ok=True)
        start = part.stat().st_size if part.exists() else 0
        if start > size:
            part.unlink()
            start = 0
        with open(part, "ab") as fh, tqdm(total=size, initial=start, unit="B", unit_scale=True, desc=rel,
                                          disable=not show_progress) as bar:
            self._get_ranges(key, fh, start, size, bar)
        got = part.stat().st_size
        if got != size:
            raise IntegrityError(f"{self.url(rel)}: downloaded {got} bytes, the server says {size}")
        sha, computed = _file_digests(part, _etag_part_size(self.client, self.bucket, key, etag))
        if computed is not None and computed != etag:
            part.unlink()
            raise IntegrityError(f"{self.url(rel)}: the downloaded file's ETag {computed} does not match the "
                                 f"server's {etag}; the partial file was removed")
        os.replace(part, dest)
        verified = "size" if computed is None else "size+etag"
        return {"size": size, "sha256": sha, "etag": etag, "verified": verified, "source": self.url(rel)}

    def _get_ranges(self, key: str, fh: Any, start: int, size: int, bar: Any) -> None:
        """Fetch ``[start, size)`` in parallel ranged GETs, appending them to ``fh`` in order."""
        def get(offset: int) -> bytes:
            end = min(offset + PART_SIZE, size) - 1
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{end}")["Body"]
            data = body.read()
            if len(data) != end - offset + 1:
                raise IntegrityError(f"s3://{self.bucket}/{key}: range {offset}-{end} returned {len(data)} bytes")
            return data

        offsets = iter(range(start, size, PART_SIZE))
        with ThreadPoolExecutor(WORKERS) as pool:
            pending = deque(pool.submit(get, o) for _, o in zip(range(2 * WORKERS), offsets))
            try:
                while pending:
                    data = pending.popleft().result()
                    fh.write(data)
                    fh.flush()
                    bar.update(len(data))
                    nxt = next(offsets, None)
                    if nxt is not None:
                        pending.append(pool.submit(get, nxt))
            finally:
                for future in pending:
                    future.cancel()


def _lock(model_dir: Path) -> filelock.FileLock:
    model_dir.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(model_dir / ".berg.lock"))


def _s3_spec(card: ModelCard) -> Source:
    spec = card.source("s3")
    if spec is None:
        kinds = [s.kind for s in card.sources]
        raise MissingFilesError(f"model {card.model_id!r} has no s3 source to fetch its files from (sources: {kinds})")
    return spec


def _outside(model_dir: Path, rels: Iterable[str]) -> list[str]:
    """The names of ``rels`` that would resolve outside ``model_dir`` (an absolute path, ``..``, a symlink out)."""
    root = model_dir.resolve()
    return [r for r in rels if Path(r).is_absolute() or not (model_dir / r).resolve().is_relative_to(root)]


def _check_fetchable(card: ModelCard, model_dir: Path, rels: list[str]) -> None:
    """Before anything is created: every file lies inside the model folder, and none is missing while offline."""
    outside = _outside(model_dir, rels)
    if outside:
        raise ModelCardError(f"model card {card.path}: file names {outside} lie outside the model folder "
                             f"{model_dir}; name files relative to it, without '..'")
    if not is_offline():
        return
    manifest = read_manifest(model_dir)
    todo = [r for r in dict.fromkeys(rels) if is_changed(model_dir, r, manifest)]
    if todo:
        raise OfflineError(
            f"model {card.model_id!r}: files missing or damaged under {model_dir}: {', '.join(todo)}. BERG_OFFLINE "
            f"is set, so they are not fetched: unset it, or run `berg download {card.model_id} --berg-dir "
            f"{model_dir.parents[3]}` where {_s3_spec(card).bucket} is reachable"
        )


def _fetch_locked(card: ModelCard, model_dir: Path, rels: Iterable[str], endpoint_url: str | None,
                  show_progress: bool) -> None:
    """Fetch every file of ``rels`` that is missing or damaged; the caller checked them
    (:func:`_check_fetchable`) and holds the model's lock."""
    manifest = read_manifest(model_dir)
    todo = [r for r in dict.fromkeys(rels) if is_changed(model_dir, r, manifest)]
    if not todo:
        return
    from botocore.exceptions import BotoCoreError, ClientError

    source = _S3Source(_s3_spec(card), endpoint_url)
    for rel in todo:
        dest = model_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            try:
                fetched = source.fetch(rel, dest, show_progress)
            except IntegrityError as exc:  # one fresh attempt after a failed check
                log.warning("%s; fetching again", exc)
                fetched = source.fetch(rel, dest, show_progress)
        except (BotoCoreError, ClientError) as exc:
            raise FetchError(f"model {card.model_id!r}: {source.url(rel)} could not be fetched"
                             f"{f' from {source.endpoint}' if source.endpoint else ''}: {exc}. Check the network, "
                             f"or place the file at {dest} and set BERG_OFFLINE=1") from exc
        manifest[rel] = {**fetched, **entry_for(dest, fetched["sha256"])}
        write_manifest(model_dir, manifest)


def download(model_id: str | ModelCard, subjects: Iterable[int] | None = None, berg_dir: str | os.PathLike | None = None,
             endpoint_url: str | None = None, show_progress: bool = True) -> list[Path]:
    """Fetch a model's files (only those the given subjects need) into ``berg_dir``, verified.

    Parameters
    ----------
    model_id : str or ModelCard
        A model id (:func:`berg.list_models`): packaged, or a card in ``<berg_dir>/model_cards/``.
    subjects : iterable of int, optional
        Subjects to fetch; all of the card's subjects by default.
    berg_dir : path, optional
        Cache root; :func:`default_berg_dir` by default.
    endpoint_url : str, optional
        S3 endpoint of a mirror; else ``$BERG_S3_ENDPOINT``, else the card's ``endpoint_url``, else AWS.
    show_progress : bool
        Show a byte progress bar per file.

    Returns
    -------
    list of Path
        The local files, in BERG's layout.

    Raises
    ------
    OfflineError
        Files are missing or damaged and ``BERG_OFFLINE`` is set.
    IntegrityError
        A file failed its size or ETag check twice.
    """
    berg_dir = Path(berg_dir) if berg_dir is not None else default_berg_dir()
    card = resolve_card(model_id, berg_dir)
    subjects = [card.check_subject(s) for s in (card.subjects if subjects is None else subjects)]
    subjects = list(dict.fromkeys(s for g in subjects for s in (card.subjects if g == "group" else [g])))
    model_dir = berg_dir / card.folder
    reader = model_format(card.format)
    rels = [r for s in subjects for r in reader.source_files(card, s)]
    if not rels:  # the format brings its files by itself (e.g. from a wheel)
        for s in subjects:
            reader.prepare(card, berg_dir, s)
        return list(dict.fromkeys(p for s in subjects for p in reader.files(card, model_dir, s)))
    _check_fetchable(card, model_dir, rels)
    with _lock(model_dir):
        _fetch_locked(card, model_dir, rels, endpoint_url, show_progress)
    return [model_dir / r for r in dict.fromkeys(rels)]


def ensure_model_files(card: ModelCard, berg_dir: str | os.PathLike, subject: int | str) -> None:
    """Make the files of one subject (``"group"``: of every subject the group sums) readable: set aside those
    that no longer match the manifest, fetch the card's source files, let its format prepare them, and enter what
    it made in the manifest.

    Raises
    ------
    OfflineError
        Files are missing (or were set aside) and ``BERG_OFFLINE`` is set; the message lists them and how to get
        them.
    """
    berg_dir, subject = Path(berg_dir), card.check_subject(subject)
    model_dir = berg_dir / card.folder
    reader = model_format(card.format)
    needed = reader.needed_files(card, model_dir, subject)
    _set_aside(changed_files(model_dir, needed))
    if reader.is_ready(card, model_dir, subject):
        return
    for s in card.subjects if subject == "group" else [subject]:
        rels = reader.source_files(card, s)
        local = all(source.kind == "local" for source in card.sources)
        if local and not (rels and all((model_dir / r).is_file() for r in rels)):
            continue  # local files only, and none to convert: the caller reports what is missing
        if not rels:  # the format brings its files by itself (a wheel)
            reader.prepare(card, berg_dir, s)
            continue
        if card.source("s3") is not None:
            _check_fetchable(card, model_dir, rels)
        with _lock(model_dir):
            if reader.is_ready(card, model_dir, s):
                continue
            if card.source("s3") is not None:
                _fetch_locked(card, model_dir, rels, None, show_progress=True)
            reader.prepare(card, berg_dir, s)
            _record_new(model_dir, reader.needed_files(card, model_dir, s))


def _set_aside(changed: list[Path]) -> None:
    """Move files that differ from the manifest to ``NAME.changed`` (kept, never read), so that they are fetched
    or converted again."""
    for path in changed:
        if path.is_file():
            log.warning("%s changed since berg wrote it; it is kept as %s.changed and made again", path, path.name)
            os.replace(path, path.with_name(path.name + ".changed"))


def _record_new(model_dir: Path, paths: list[Path]) -> None:
    """Enter the files berg has just made (those without a manifest entry) in the manifest."""
    known = read_manifest(model_dir)
    new = [p for p in paths if p.is_file() and p.relative_to(model_dir).as_posix() not in known]
    if new:
        record_files(model_dir, new)
