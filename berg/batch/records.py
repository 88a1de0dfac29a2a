"""What a run leaves beside its outputs: completion records and the failures table (the dataset files are
:mod:`berg.batch.derivatives`).

Layout under the output root::

    logs/units/<uid>.json             one completion record per finished unit
    logs/failures.tsv                 unit, row, stimulus, error type, message (this run's failures)

A completion record holds the unit's parameters (:meth:`Unit.params`) and the sha256 of each output. A unit counts
as done only when its record exists, its parameters equal the job's and every output's sha256 matches; anything
else (a missing or damaged output, a changed stimulus or option) makes the next run redo it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .._io import atomic_path, sha256_file, write_json
from ..config import berg_version
from .units import Unit

FAILURE_COLUMNS = ("unit", "row", "stimulus", "error_type", "message")


def record_path(root: Path, unit: Unit) -> Path:
    """Where the completion record of ``unit`` lives."""
    return Path(root) / "logs" / "units" / f"{unit.uid}.json"


def is_done(root: Path, unit: Unit) -> bool:
    """True when ``unit`` has a record with the same parameters and every output matches its sha256."""
    path = record_path(root, unit)
    try:
        record = json.loads(path.read_text())
        if record["params"] != json.loads(json.dumps(unit.params())):
            return False
        return all(sha256_file(Path(root) / rel) == digest for rel, digest in record["outputs"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_record(root: Path, unit: Unit, seconds: float) -> dict:
    """Hash the unit's outputs and write its completion record (atomically); return the record."""
    record = {"params": unit.params(), "outputs": {rel: sha256_file(Path(root) / rel) for rel in unit.files()},
              "seconds": round(seconds, 3), "host": socket.gethostname(), "pid": os.getpid(),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "berg_version": berg_version()}
    write_json(record_path(root, unit), record)
    return record


def failure(unit: Unit, exc: BaseException | str, error_type: str | None = None) -> dict:
    """A failures-table row for ``unit``."""
    message = " ".join(str(exc).split())
    return {"unit": unit.uid, "row": unit.row, "stimulus": unit.describe_source(),
            "error_type": error_type or type(exc).__name__, "message": message}


def write_failures(root: Path, rows: list[dict]) -> Path:
    """Write ``logs/failures.tsv`` (header row, one row per failed unit) atomically."""
    path = Path(root) / "logs" / "failures.tsv"
    with atomic_path(path) as tmp:
        lines = ["\t".join(FAILURE_COLUMNS)]
        lines += ["\t".join(str(r[c]).replace("\t", " ") for c in FAILURE_COLUMNS) for r in rows]
        tmp.write_text("\n".join(lines) + "\n")
    return path
