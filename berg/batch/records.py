"""What a run leaves beside its outputs: completion records and the failures table (the dataset files are
:mod:`berg.batch.derivatives`).

Layout under the output root::

    logs/units/<uid>.json             one completion record per finished unit
    logs/failures.tsv                 unit, row, stimulus, error type, message (this run's failures)

A completion record holds the unit's parameters (:meth:`Unit.params`: model, options, each stimulus's size and
mtime), its inputs (:func:`input_identity`: the size and mtime of every model file it read and of a backbone
weights file), and each output's size, mtime and sha256. A unit counts as done when its record exists, its
parameters and inputs equal the job's, and every output has its recorded size and mtime: a re-run costs a
directory listing and a few ``stat`` calls. ``berg batch --verify`` also re-hashes every output. Anything else (a
missing, changed or damaged output, a changed stimulus, option or model file) makes the next run redo the unit.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .._io import atomic_path, sha256_file, write_json
from ..card_registries import model_format
from ..config import berg_version, default_berg_dir
from ..registry import get_card
from ..storage.manifest import files_identity, stat_entry
from .units import Unit

FAILURE_COLUMNS = ("unit", "row", "stimulus", "error_type", "message")


def record_path(root: Path, unit: Unit) -> Path:
    """Where the completion record of ``unit`` lives."""
    return Path(root) / "logs" / "units" / f"{unit.uid}.json"


def input_identity(unit: Unit, berg_dir: str | os.PathLike | None) -> dict:
    """What the unit's result depends on besides its parameters, at the cost of a few ``stat`` calls: the size and
    mtime of every model file it reads (the card's format names them) and of a backbone weights file."""
    card = get_card(unit.model["model_id"], berg_dir)
    model_dir = Path(berg_dir if berg_dir is not None else default_berg_dir()) / card.folder
    paths = model_format(card.format).needed_files(card, model_dir, unit.model["subject"])
    identity = {"model_files": files_identity(model_dir, paths)}  # what the model's metadata calls readout_files
    weights = unit.model.get("backbone_weights")
    if weights not in (None, "default"):
        identity["backbone_weights"] = stat_entry(Path(weights), str(weights))
    return identity


def is_done(root: Path, unit: Unit, berg_dir: str | os.PathLike | None = None, verify: bool = False) -> bool:
    """True when ``unit`` has a record with the same parameters and inputs, and every output has the size and
    mtime recorded (``verify``: and the same sha256, re-read)."""
    path = record_path(root, unit)
    try:
        record = json.loads(path.read_text())
        if record["params"] != json.loads(json.dumps(unit.params())):
            return False
        if record["inputs"] != json.loads(json.dumps(input_identity(unit, berg_dir))):
            return False
        return all(_output_matches(Path(root) / rel, entry, verify) for rel, entry in record["outputs"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _output_matches(path: Path, entry: dict, verify: bool) -> bool:
    stat = path.stat()
    if (stat.st_size, stat.st_mtime_ns) != (entry["bytes"], entry["mtime_ns"]):
        return False
    return not verify or sha256_file(path) == entry["sha256"]


def write_record(root: Path, unit: Unit, seconds: float, berg_dir: str | os.PathLike | None = None) -> dict:
    """Hash the unit's outputs and write its completion record (atomically); return the record."""
    outputs = {}
    for rel in unit.files():
        stat = (Path(root) / rel).stat()
        outputs[rel] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(Path(root) / rel)}
    record = {"params": unit.params(), "inputs": input_identity(unit, berg_dir), "outputs": outputs,
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
