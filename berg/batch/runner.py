"""``berg.batch.run``: plan, skip what is done, run the rest on an engine, account for it."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import filelock

from .._io import write_json
from ..errors import DiskSpaceError, InvalidArgumentError, JobError
from .job import Job, load_job, ray_settings
from .derivatives import write_dataset_files
from .records import is_done, write_failures
from .units import plan

ENGINES = ("local", "ray")


@dataclass
class BatchResult:
    """What :func:`run` did.

    Attributes
    ----------
    output : Path
        The output root.
    n_units, n_skipped, n_done : int
        Units in the job; already complete before this run (skipped); completed by this run.
    failures : list of dict
        Failures-table rows (``unit``, ``row``, ``stimulus``, ``error_type``, ``message``); also in
        ``logs/failures.tsv``.
    """

    output: Path
    n_units: int
    n_skipped: int
    n_done: int
    failures: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no unit failed."""
        return not self.failures


def run(job: str | os.PathLike | dict | Job, engine: str = "local", address: str | None = None, *,
        actors: int | None = None, num_gpus: float | None = None, show_progress: bool = True,
        command: str | None = None, verify: bool = False) -> BatchResult:
    """Run a batch job: every stimulus x model x subject of ``job``, resumable.

    Parameters
    ----------
    job : path, dict or Job
        A YAML or TSV job file, or the YAML's content as a dict (see :mod:`berg.batch.job`).
    engine : {"local", "ray"}
        ``"local"``: this process (no Ray needed). ``"ray"``: Ray Data, decoding in CPU tasks and encoders in
        actors (``pip install "berg[ray]"``).
    address : str, optional
        Ray engine: a cluster to connect to (``ray://host:10001`` or ``host:6379``); default the running one, or
        a new local cluster bound to 127.0.0.1.
    actors, num_gpus : optional
        Ray engine: encoder actors and GPUs per actor, overriding the job's ``ray`` settings.
    show_progress : bool
        One progress bar over units.
    command : str, optional
        What ran the job, for ``GeneratedBy`` in ``dataset_description.json`` (default: this call).
    verify : bool
        Re-hash the outputs of finished units (by default their size and mtime are compared with the record).

    Returns
    -------
    BatchResult

    Raises
    ------
    JobError
        A bad job (before any work); an output root that cannot be written, or that another run is using.
        OptionalDependencyError: ``engine="ray"`` without Ray installed.
    """
    if engine not in ENGINES:
        raise InvalidArgumentError(f"engine={engine!r} is not valid; valid engines: {', '.join(ENGINES)}")
    job = load_job(job)
    settings = ray_settings({**job.ray, **{k: v for k, v in (("actors", actors), ("num_gpus", num_gpus))
                                           if v is not None}}, job.source)
    if engine == "ray":
        from .ray_engine import import_ray

        import_ray()  # a missing Ray is reported before any work
    units = plan(job)
    root = job.output
    with output_root_lock(root, job.source):
        command = command or f"berg.batch.run({job.source!r}, engine={engine!r})"
        write_dataset_files(root, units, job.berg_dir, command)
        todo = [u for u in units if not is_done(root, u, job.berg_dir, verify)]
        if engine == "ray":
            from .ray_engine import run_ray

            failures = run_ray(todo, root, job.berg_dir, settings, address, show_progress, len(units) - len(todo))
        else:
            from .local import run_local  # loads the encoder (torch) only when a job runs

            failures = run_local(todo, root, job.berg_dir, show_progress, len(units) - len(todo))
        try:
            write_failures(root, failures)
        except OSError as exc:  # a full disk: say what failed where the user sees it
            rows = "; ".join(f"{r['unit']}: {r['error_type']}: {r['message']}" for r in failures) or "none"
            raise DiskSpaceError(exc.errno or errno.ENOSPC, f"{job.source}: logs/failures.tsv could not be written "
                                 f"under {root} ({exc}); failed units: {rows}") from exc
    return BatchResult(output=root, n_units=len(units), n_skipped=len(units) - len(todo),
                       n_done=len(todo) - len(failures), failures=failures)


@contextlib.contextmanager
def output_root_lock(root: Path, source: str) -> Iterator[None]:
    """Hold ``logs/batch.lock`` of an output root for one run; a second run on the same root is refused.

    Raises
    ------
    JobError
        The root cannot be written, or another run holds it (the message names its pid, host and start time, from
        ``logs/batch.owner.json``).
    """
    logs = Path(root) / "logs"
    lock = filelock.FileLock(str(logs / "batch.lock"), timeout=0)
    try:
        logs.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except filelock.Timeout:  # an OSError too: caught first
        try:
            owner = json.loads((logs / "batch.owner.json").read_text())
        except (OSError, ValueError):
            owner = {}
        raise JobError(f"{source}: output root {str(root)!r} is in use by another berg batch run (pid "
                       f"{owner.get('pid', '?')} on host {owner.get('host', '?')}, started "
                       f"{owner.get('started', '?')}); wait for it to finish, or give another output",
                       field="output") from None
    except OSError as exc:
        raise JobError(f"{source}: output root {str(root)!r} cannot be written: {exc}", field="output") from exc
    try:
        write_json(logs / "batch.owner.json", {"pid": os.getpid(), "host": socket.gethostname(),
                                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        yield
    finally:
        lock.release()
